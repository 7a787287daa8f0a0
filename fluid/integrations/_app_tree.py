"""The tree of an app: made at each start of the app, from a worker or a factory.

Shared by the Starlette and aiohttp integrations. Why it is more than a call
of the factory:

* **Workers made once, put in a tree made at each start.** A worker belongs
  to one tree at a time (``Workers`` refuses a worker that "already belongs
  to tree ..."). An app whose factory wraps a module-level consumer in a new
  tree, ``lambda: Workers(consumer)``, therefore failed at its second start:
  a second ``TestClient`` (the usual testing pattern), a second app made by
  an app factory. The consumer still belonged to the tree of the first
  start, stopped and of no use to anyone.
* **Why on a conflict, and not at every stop.** Emptying a tree once it
  stopped would let its workers go too, but it would empty trees that are
  still wanted: a factory that returns the same tree at every call (a cached
  ``get_workers()``), a test that looks into ``app.state.workers`` after the
  app stopped. So nothing is taken from a stopped tree until a factory
  needs its workers: when the factory raises ``ValueError``, the stopped
  trees that factories made for the integrations let their children go, and
  the factory is called once more. A factory that does not conflict is
  called once; a tree given as is (not a factory) is never emptied.
* **Weakly kept.** The trees are known through a weak set: a tree nobody
  uses any more is collected with its workers, as before.

A tree that is running keeps its children: the conflict is then the user's
(one consumer in two running apps) and the factory's error is raised.
"""

from __future__ import annotations

import contextlib
import glob
import weakref

from .._target import WorkerOrFactory, build_worker
from .._tree import Workers
from .._worker import Worker

__all__ = ["build_app_tree"]

_made: weakref.WeakSet[Workers] = weakref.WeakSet()
"""The trees factories made for an app, in this process: those that may be let go."""


async def build_app_tree(target: WorkerOrFactory) -> Worker:
    """The worker, or what the factory returns (see the module docstring).

    Raises:
        NotAWorker: the factory returned something else than a Worker.
        Exception: whatever the factory raised; a ``ValueError`` only after
            the stopped trees of earlier starts let their workers go and the
            factory failed once more.
    """
    try:
        tree = build_worker(target)
    except ValueError:
        if not await _let_stopped_trees_go():
            raise
        tree = build_worker(target)  # its workers are free now
    if tree is not target and isinstance(tree, Workers):
        _made.add(tree)
    return tree


async def _let_stopped_trees_go() -> bool:
    """Remove the children of every stopped tree a factory made; True if any was."""
    released = False
    for tree in list(_made):
        if tree.is_stopped() and tree.children:
            released = await _let_go(tree) or released
    return released


async def _let_go(tree: Workers) -> bool:
    """Remove the direct children of a stopped ``tree``; True if any was removed.

    ``remove_workers`` matches names at any depth: a child whose name is
    also the name of a deeper worker stays, so that no subtree loses a
    worker of its own (the factory's error is then raised as it was).
    """
    patterns = [glob.escape(child.worker_name) for child in tree.children]
    unique = [pattern for pattern in patterns if len(tree.find(pattern)) == 1]
    if not unique:
        return False
    # They stopped with the tree: removing them stops nothing and awaits
    # nothing. An error one ended with was the tree's, raised when it stopped.
    with contextlib.suppress(Exception):
        await tree.remove_workers(*unique)
    return True
