"""Helpers outside the front door, and the import paths of earlier fluid versions.

``set_uvloop_if_available`` lives here, not in ``fluid``: it changes the
event loop policy of the whole process, which [`fluid.run`][fluid.run] does
not need (it picks uvloop for its own loop) and which Python deprecates from
3.14. It is kept for programs that start their loops with ``asyncio.run``.

The submodules ``fluid.utils.worker``, ``fluid.utils.dispatcher`` and
``fluid.utils.errors`` are the import paths of earlier fluid versions, kept
working; new code imports those names from ``fluid`` directly.
"""

from __future__ import annotations

import asyncio

__all__ = ["set_uvloop_if_available"]


def set_uvloop_if_available() -> bool:
    """Make uvloop the event loop of ``asyncio.run`` and new loops, if it is installed.

    It sets uvloop's event loop policy for the whole process.
    [`fluid.run`][fluid.run] does not need it: it picks uvloop itself,
    without touching the policy (policies are deprecated from Python 3.14,
    where this warns).

    Returns:
        True if uvloop is now the policy, False if it is not installed.

    Example:
        ```python
        import asyncio
        from fluid.utils import set_uvloop_if_available

        async def main() -> None:
            print(type(asyncio.get_running_loop()).__name__)

        set_uvloop_if_available()
        asyncio.run(main())  # Loop, uvloop's, when it is installed
        asyncio.set_event_loop_policy(None)  # back to asyncio's default
        ```
    """
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
