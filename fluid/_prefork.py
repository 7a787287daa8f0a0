"""Prefork: N processes run the same worker and share the master's listening sockets.

Why it is shaped this way:

* The master is a supervising tree of [`ProcessWorker`][fluid.ProcessWorker]s,
  one per child, each running the user's worker on the child's own event
  loop. Everything a prefork master must do is already a property of that
  tree: a child's death is seen at once (its sentinel), it is respawned by
  the ``one_for_one`` restart policy after a [`Backoff`][fluid.Backoff]
  delay, too many deaths in a window stop the master with its error;
  ``startup()`` returns once every child's worker runs; a stop asks all
  children at once to stop gracefully, then sends SIGTERM (the child forces
  its worker, whose ``on_shutdown`` hooks still run), then SIGKILL; and
  ``fluid.run`` gives the master its signals and exit status.
* A clean end is not a crash. The children are ``transient``: one that
  exits with code 0 and no error (its worker ended by itself) is done and is
  not respawned; when every child is done the master stops, and ``fluid
  run`` exits 0, as it does without ``--processes`` for a worker that ends.
  gunicorn and uvicorn respawn any worker that exits, because theirs are
  HTTP servers that end only by crashing or to be recycled; a fluid child
  runs any worker tree, a batch that finishes included, and respawning it
  would run the batch again (and, five times in a minute, fail the master
  with ``TooManyRestarts``). A non-zero exit code, a signal or an error of
  the child's worker is a crash, respawned; each line about it says which.
* Two figures, from one function: each child gets the grace period given
  (``--stopping-grace-period``), then SIGTERM, then SIGKILL ``kill_after``
  later; the master's own grace period (``master_grace_period``) is that
  plus ``kill_after`` plus a second, so that the children's stop, SIGKILL
  included, ends before ``fluid.run`` would force the master (a forced
  master cancels its children's stop, and they would get SIGKILL at once,
  without their ``on_shutdown`` hooks). The master says both figures when it
  stops, and ``fluid run --help`` computes them with the same function.
* Sockets travel by pickling. With the ``spawn`` start method, a socket
  pickled while a child is being started has its descriptor passed to that
  child (``pass_fds``): every child accepts on the very same listening
  socket, nothing is bound twice, and a respawned child gets it again.
* Output: each child slot has two socket pairs that the child puts in place
  of its stdout and stderr (``dup2``: ``print``, logging, tracebacks and
  C-level writes all go there). The master reads them on its loop and copies
  every line to its own stdout or stderr with ``[child N]`` in front. The
  pairs live as long as the master runs, so a respawned child writes to the
  same place; when a child ends, whatever it left is read and a partial last
  line is ended. A spawned child starts without logging configured: it gets
  the level and the formatter of the master's root logger (the formatter
  object, pickled: the standard library offers no public way to read a
  formatter's format string).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from ._child import KILL_AFTER, ProcessWorkerError, describe_exit
from ._lifecycle import Transition
from ._processes import ProcessWorker
from ._runner import check_grace_period, loop_factory
from ._supervision import Backoff
from ._target import build_worker, check_sendable_target, load_target
from ._tree import Workers
from ._validate import check_count, check_seconds
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["Prefork", "PreforkChild", "prefork_child"]

logger = logging.getLogger("fluid")

_FINAL = ("stopped", "force_stopped", "crashed")


@dataclass(frozen=True, slots=True)
class PreforkChild:
    """What a process of a prefork knows about itself: see [`prefork_child`][fluid.prefork_child].

    Attributes:
        id: the child's number, from 1 to ``processes``; a respawned child
            keeps the number of the one it replaces.
        processes: how many children the master runs.
        sockets: the listening sockets the master shared, in the order given.

    Example:
        ```python
        child = fluid.prefork_child()
        if child is not None:
            print(f"child {child.id} of {child.processes}")
        ```
    """

    id: int
    processes: int
    sockets: tuple[socket.socket, ...]


_current: PreforkChild | None = None


def prefork_child() -> PreforkChild | None:
    """In a child of a [`Prefork`][fluid.Prefork], its id and the shared sockets; else None.

    Call it from the worker factory the children run (or later in the
    child): it is set before the factory is called.

    Example:
        ```python
        def build() -> fluid.Worker:
            child = fluid.prefork_child()
            if child is None:
                raise RuntimeError("run me with: fluid run app:build --processes 2 --bind :8000")
            return HttpServer(sock=child.sockets[0])
        ```
    """
    return _current


class Prefork(Workers):
    """A master that runs a worker in ``processes`` child processes sharing its sockets.

    Each child runs the worker made by ``target`` on its own event loop (a
    tree, typically a web server and its background workers), serving the
    listening ``sockets`` the master opened: the kernel spreads connections
    among the children. A child that crashes (an error of its worker, a
    non-zero exit code, a signal such as SIGKILL) is respawned after a
    backoff delay; more than ``max_restarts`` crashes within ``period``
    seconds stop the master with [`TooManyRestarts`][fluid.TooManyRestarts].
    A child whose worker ends by itself (exit code 0, no error) is done: it
    is not respawned, and once every child is done the master stops (exit
    status 0 under [`fluid.run`][fluid.run]). A stop asks every child to
    stop gracefully, sends SIGTERM to those still running when the grace
    period (``stopping_grace_period`` seconds) is over (their workers are
    then cancelled, ``on_shutdown`` hooks still run) and SIGKILL
    ``kill_after`` seconds later.

    The children are [`ProcessWorker`][fluid.ProcessWorker]s named
    ``child-1`` ... ``child-N``: the master is a supervising tree, its status
    shows each child's pid. Run it with [`fluid.run`][fluid.run] (or
    ``fluid run module:attr --processes N --bind HOST:PORT``). In a child,
    [`prefork_child`][fluid.prefork_child] gives its id and the sockets. The
    children's output reaches the master's stdout and stderr, each line
    prefixed with ``[child N]``.

    Args:
        target: what each child runs: ``"package.module:attribute"`` (a
            Worker, or a function returning one, imported in each child) or a
            picklable, module-level function returning a Worker.
        processes: the number of children.
        sockets: listening sockets opened by the caller, shared by all children.
        name: the master's name.
        stopping_grace_period: each child's grace period: seconds it is
            given to stop gracefully before SIGTERM; by default
            [`STOPPING_GRACE_PERIOD`][fluid.STOPPING_GRACE_PERIOD]. The
            master's own grace period (its ``stopping_grace_period``) is
            what the children's stop may take:
            ``master_grace_period(stopping_grace_period, kill_after)``, this
            plus ``kill_after`` plus one second.
        kill_after: seconds between SIGTERM and SIGKILL: not a grace period
            (the worker is already being cancelled), the time a child gets
            to run its ``on_shutdown`` hooks before it is killed.
        backoff: the delay before a respawn; by default 0.5 s doubling up
            to 10 s.
        max_restarts: respawns (crashes) allowed within ``period``, all
            children counted together; by default 5. Not per child: with
            the backoff capped at 10 s, one child crashing in a loop among
            several would never exceed a budget of 5 per child.
        period: the window of ``max_restarts``, in seconds.
        use_uvloop: the children's loop: ``None`` uvloop when installed,
            ``True`` uvloop, ``False`` asyncio's.
        capture_output: prefix the children's output with their id; if
            False they write straight to the master's stdout and stderr.
        grace: the former name of ``stopping_grace_period``; deprecated
            (``DeprecationWarning``).

    Raises:
        TypeError: ``target`` is a Worker, not callable, does not pickle, or
            a socket is not a ``socket.socket``; the grace period is given
            under both names.
        TargetError: ``target`` is a string without ``module:attribute``
            (a ``ValueError``).
        ValueError: ``processes`` < 1, or a negative grace period,
            ``kill_after`` or ``period``.

    Example:
        ```python
        import socket
        import sys
        import fluid

        def build() -> fluid.Worker:  # module level: each child calls it
            child = fluid.prefork_child()
            assert child is not None
            return EchoServer(child.sockets[0])

        if __name__ == "__main__":
            sock = socket.create_server(("127.0.0.1", 8000))
            sys.exit(fluid.run(fluid.Prefork(build, processes=4, sockets=[sock])))
        ```
    """

    __slots__ = ("_capture", "_done", "_entries", "_relays", "_sockets", "_stop_plan", "_why")

    def __init__(
        self,
        target: str | Callable[[], Worker],
        *,
        processes: int,
        sockets: Iterable[socket.socket] = (),
        name: str = "prefork",
        stopping_grace_period: float | None = None,
        kill_after: float = KILL_AFTER,
        backoff: Backoff | None = None,
        max_restarts: int | None = None,
        period: float = 60.0,
        use_uvloop: bool | None = None,
        capture_output: bool = True,
        grace: float | None = None,
    ) -> None:
        check_sendable_target(target)
        processes = check_count("processes", processes, 1)
        shared = tuple(sockets)
        for sock in shared:
            if not isinstance(sock, socket.socket):
                raise TypeError(f"sockets must be socket.socket objects, got {sock!r}")
        grace_period = check_grace_period(stopping_grace_period, grace)
        if grace_period is None:
            grace_period = STOPPING_GRACE_PERIOD
        kill_after = check_seconds("kill_after", kill_after)
        factory = loop_factory(use_uvloop)
        entries = [_ChildEntry(target, i, processes, shared) for i in range(1, processes + 1)]
        children = [
            ProcessWorker(
                worker_factory=entry,
                name=f"child-{entry.child_id}",
                stopping_grace_period=grace_period,
                kill_after=kill_after,
                loop_factory=factory,
                daemon=False,  # a child may start processes of its own
            )
            for entry in entries
        ]
        super().__init__(
            *children,
            name=name,
            # the children stop together: each within its grace period, then
            # SIGTERM, then SIGKILL kill_after later
            stopping_grace_period=master_grace_period(grace_period, kill_after),
            strategy="one_for_one",
            restart="transient",  # a clean end is not a crash: see the module docstring
            max_restarts=5 if max_restarts is None else max_restarts,
            period=period,
            backoff=backoff or Backoff(initial=0.5, maximum=10.0),
            concurrent_stop=True,
        )
        self._entries = entries
        self._stop_plan = (grace_period, kill_after)  # each child's grace, then SIGKILL after
        self._sockets = shared
        self._capture = bool(capture_output)
        self._relays: dict[str, tuple[_Relay, _Relay]] = {}
        self._done: set[str] = set()  # children whose worker ended by itself: not respawned
        self._why: dict[str, str] = {}  # how each child's last process ended
        self.add_observer(self._on_transition)

    @property
    def processes(self) -> int:
        """The number of children."""
        return len(self._entries)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets shared with the children."""
        return self._sockets

    async def on_startup(self) -> None:
        """Tell where the master listens and prepare the children's output relays."""
        for sock in self._sockets:
            logger.info("%s: listening on %s", self._name, describe_socket(sock))
        self._done.clear()
        self._why.clear()
        config = _logging_config()
        loop = asyncio.get_running_loop()
        for entry in self._entries:
            entry.logging = config
            if self._capture:
                prefix = f"[child {entry.child_id}] "
                out, err = _Relay(loop, prefix, "stdout"), _Relay(loop, prefix, "stderr")
                self._relays[f"child-{entry.child_id}"] = (out, err)
                entry.stdout, entry.stderr = out.writer, err.writer

    async def on_shutdown(self) -> None:
        """Copy what the children left and close their output relays."""
        relays, self._relays = self._relays, {}
        for entry in self._entries:
            entry.stdout = entry.stderr = None
        for out, err in relays.values():
            out.close()
            err.close()

    def _on_transition(self, event: Transition) -> None:
        child = event.worker
        if child is self and event.kind == "stopping":
            self._announce_stop()
            return
        if not isinstance(child, ProcessWorker) or child not in self.children:
            return
        name = child.worker_name
        if event.kind in _FINAL:
            for relay in self._relays.get(name, ()):
                relay.flush()
            if not self.is_running():  # stopped by the master: nothing to say
                return
            process = f"pid {child.pid}" if child.pid else "its process (never started)"
            why = self._why[name] = f"{process} {_how_it_ended(event.error)}"
            if event.kind == "crashed":  # respawned, unless too often: the supervisor says
                logger.warning("%s: %s crashed: %s", self._name, name, why)
            elif event.kind == "stopped":
                self._child_done(name, why)
        elif event.kind == "restarted":
            self._done.discard(name)
            logger.info(
                "%s: %s respawned (pid %s) after %.2fs: %s",
                self._name,
                name,
                child.pid,
                event.delay or 0.0,
                self._why.get(name, "it ended"),
            )

    def _announce_stop(self) -> None:
        """Say what the stop of the children may take: the figures ``--help`` gives."""
        grace, kill_after = self._stop_plan
        count = sum(1 for child in self.children if child.has_started() and not child.is_stopped())
        if not count:  # every child ended by itself: nothing left to stop
            return
        logger.info(
            "%s: stopping %d %s: %gs each to stop gracefully, then SIGTERM, "
            "then SIGKILL %gs later (%gs in all)",
            self._name,
            count,
            "child" if count == 1 else "children",
            grace,
            kill_after,
            self.stopping_grace_period,
        )

    def _child_done(self, name: str, why: str) -> None:
        """A child's worker ended by itself: not respawned; the last one stops the master."""
        self._done.add(name)
        running = self.processes - len(self._done)
        logger.info(
            "%s: %s ended by itself (%s): not respawned, a clean end is not a crash; "
            "%d of %d children still running",
            self._name,
            name,
            why,
            running,
            self.processes,
        )
        if not running:
            # Not from inside the child's transition: the tree handles the
            # child's end first, on its own loop turn.
            asyncio.get_running_loop().call_soon(self._stop_if_all_done)

    def _stop_if_all_done(self) -> None:
        if self.is_running() and len(self._done) == self.processes:
            logger.info("%s: every child ended by itself: stopping", self._name)
            self.gracefully_stop()


def master_grace_period(grace: float, kill_after: float = KILL_AFTER) -> float:
    """The grace period of a prefork master whose children each get ``grace`` seconds.

    What the children's stop may take: ``grace``, then SIGTERM, SIGKILL
    ``kill_after`` seconds later, and one second for the master to see them
    end. The one place this figure is computed: ``Prefork`` and ``fluid run
    --help`` both use it.

    Example:
        ```python
        assert master_grace_period(10.0, 0.5) == 11.5
        ```
    """
    return grace + kill_after + 1.0


def describe_socket(sock: socket.socket) -> str:
    """``127.0.0.1:8000``, ``[::1]:8000`` or a unix socket's path."""
    address = sock.getsockname()
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


# ------------------------------------------------------------- internals


def _how_it_ended(error: BaseException | None) -> str:
    """``"exited with code 0"``, ``"was killed by SIGKILL"``, ``"raised ValueError: boom"``."""
    if error is None:
        return describe_exit(0)  # no error: the child's exit code was 0
    if isinstance(error, ProcessWorkerError) and error.exitcode is not None:
        return describe_exit(error.exitcode)
    if isinstance(error, ProcessWorkerError):
        return str(error)
    return f"exited after its worker raised {type(error).__name__}: {error}"


def _logging_config() -> _Logging | None:
    """The level and formatter of the master's root logger, if logging is configured."""
    root = logging.getLogger()
    if not root.handlers:
        return None
    return _Logging(root.level, _sendable(root.handlers[0].formatter))


def _sendable(formatter: logging.Formatter | None) -> bytes | None:
    """The formatter pickled for the children, or None (``logging.BASIC_FORMAT``) if it cannot be.

    The formatter object itself travels, not its format string: the stdlib
    publishes no accessor for the string, and the object carries all of it
    (format, style, date format, a subclass's own behaviour).
    """
    if formatter is None:
        return None
    try:
        return pickle.dumps(formatter)
    except Exception:
        logger.debug("the children log with logging.BASIC_FORMAT: %r does not pickle", formatter)
        return None


@dataclass(frozen=True, slots=True)
class _Logging:
    """How a spawned child configures logging: like the master's root logger."""

    level: int
    formatter: bytes | None  # pickled; None: logging.BASIC_FORMAT

    def apply(self) -> None:
        """In the child: log to stderr at the master's level, with its formatter."""
        formatter = logging.Formatter(logging.BASIC_FORMAT)
        problem: Exception | None = None
        if self.formatter is not None:
            try:
                formatter = pickle.loads(self.formatter)
            except Exception as exc:  # its class does not import in the child
                problem = exc
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        logging.basicConfig(level=self.level, handlers=[handler], force=True)
        if problem is not None:
            logger.warning(
                "the master's log formatter cannot be used here (%s): "
                "logging with logging.BASIC_FORMAT",
                problem,
            )


class _ChildEntry:
    """The worker factory of one child slot, pickled to the child at each (re)start."""

    def __init__(
        self,
        target: str | Callable[[], Worker],
        child_id: int,
        processes: int,
        sockets: tuple[socket.socket, ...],
    ) -> None:
        self.target = target
        self.child_id = child_id
        self.processes = processes
        self.sockets = sockets
        self.stdout: socket.socket | None = None
        self.stderr: socket.socket | None = None
        self.logging: _Logging | None = None

    def __repr__(self) -> str:
        return f"<prefork child {self.child_id} of {self.processes}: {self.target!r}>"

    def __call__(self) -> Worker:
        """In the child: take over the output, configure logging, build the worker."""
        global _current
        _redirect(self.stdout, 1, "stdout")
        _redirect(self.stderr, 2, "stderr")
        self.stdout = self.stderr = None
        if self.logging is not None:
            self.logging.apply()
        _current = PreforkChild(self.child_id, self.processes, self.sockets)
        if isinstance(self.target, str):
            return build_worker(load_target(self.target))
        return build_worker(self.target)


def _redirect(sock: socket.socket | None, fd: int, name: Literal["stdout", "stderr"]) -> None:
    if sock is None:
        return
    stream = getattr(sys, name)
    if stream is not None:
        stream.flush()
    os.dup2(sock.fileno(), fd)
    sock.close()
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(line_buffering=True)  # a line reaches the master at once


class _Relay:
    """Lines a child writes to one of its streams, copied to the master's with a prefix."""

    __slots__ = ("_buffer", "_loop", "_name", "_prefix", "_reader", "writer")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        prefix: str,
        name: Literal["stdout", "stderr"],
    ) -> None:
        self._reader, self.writer = socket.socketpair()
        self._reader.setblocking(False)
        self._loop = loop
        self._prefix = prefix
        self._name = name
        self._buffer = b""
        loop.add_reader(self._reader.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self._reader.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed
                return
            if not data:
                return
            *lines, self._buffer = (self._buffer + data).split(b"\n")
            self._write(lines)

    def flush(self) -> None:
        """Copy what is there now, and end a partial last line (its writer ended)."""
        self._read()
        if self._buffer:
            self._write([self._buffer])
            self._buffer = b""

    def close(self) -> None:
        self.flush()
        self._loop.remove_reader(self._reader.fileno())
        self._reader.close()
        self.writer.close()

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        stream = getattr(sys, self._name)
        text = "".join(f"{self._prefix}{line.decode('utf-8', 'replace')}\n" for line in lines)
        try:
            stream.write(text)
            stream.flush()
        except (AttributeError, OSError, ValueError):  # no stream, or it is closed
            pass
