"""LineServer: a worker type written outside fluid, on its public extension API only.

A TCP server that answers each line a client sends with ``await handler(line)``.
It is an ordinary fluid worker: it lives in trees, is supervised, reports its
status and stops within its grace period. Everything it needs from fluid is
public (see docs/extending.md):

* ``default_name()``: a server is named for its handler, as fluid's own
  function workers are, so two of them in one tree get ``echo``, ``echo-2``;
* ``before_run()``: the ready handshake. ``startup()`` returns once the
  socket listens, so a caller can connect at once (and a port in use fails
  ``startup()`` itself);
* ``on_stop_requested()``: the moment a stop is requested, the listening
  socket closes: no new connection is accepted;
* ``stop_requested()``: ``run()`` waits for it; each connection races its
  next read against it, so idle clients are let go at once while a request
  in progress is answered (the graceful stop drains);
* ``after_run()``: the counterpart of ``before_run()``; it also runs when
  the worker never ran (``on_startup`` failed).

Run it with ``python examples/line_server.py`` and talk to it with
``nc 127.0.0.1 8888``; Ctrl-C stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import fluid

Handler = Callable[[str], Awaitable[str]]


class LineServerStatus(fluid.WorkerStatus):
    """A worker's status plus the server's figure: a type adds its own keys."""

    served: int  # requests answered since the worker was created


class LineServer(fluid.Worker):
    """Serve ``host:port`` and answer each line with ``await handler(line)``.

    Args:
        handler: an async function from a line (without its newline) to the reply.
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``port`` once started).
        name: the worker's name; by default the handler's name.
        stopping_grace_period: seconds requests in progress have to finish.

    Example:
        ```python
        async def shout(line: str) -> str:
            return line.upper()

        async with LineServer(shout) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ```
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "",
        stopping_grace_period: float = fluid.STOPPING_GRACE_PERIOD,
    ) -> None:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler must be an async function, got {handler!r}")
        self.handler = handler  # before super().__init__: default_name() reads it
        self.host = host
        self.port = port
        self.served = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        super().__init__(name, stopping_grace_period)

    def default_name(self) -> str:
        return getattr(self.handler, "__name__", "") or super().default_name()

    async def before_run(self) -> None:
        await super().before_run()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def on_stop_requested(self) -> None:
        super().on_stop_requested()
        if self._server is not None:
            self._server.close()  # no new connections from this moment

    async def run(self) -> None:
        try:
            await self.stop_requested()
            # drain: requests in progress end; a forced stop cancels this wait
            while self._connections:
                await asyncio.wait(set(self._connections))
        finally:
            for connection in self._connections:
                connection.cancel()
            if self._connections:
                await asyncio.wait(set(self._connections))

    def after_run(self) -> None:
        super().after_run()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def status(self) -> LineServerStatus:
        return {**await super().status(), "served": self.served}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        stop = self.stop_requested()
        try:
            await self._answer(reader, writer, stop)
        except ConnectionError:
            pass  # the client went away: nothing to answer
        finally:
            stop.cancel()
            writer.close()
            try:
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            finally:
                self._connections.discard(connection)  # last: run() waits until here

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stop: asyncio.Future[None],
    ) -> None:
        while True:
            read = asyncio.ensure_future(reader.readline())
            either: set[asyncio.Future[Any]] = {read, stop}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                read.cancel()  # nothing if it is done; never left behind if we are cancelled
            if not read.done():  # stopping and the client is idle: let it go
                break
            line = read.result()
            if not line:
                break
            reply = await self.handler(line.decode().rstrip("\r\n"))
            writer.write(reply.encode() + b"\n")
            await writer.drain()
            self.served += 1
            if stop.done():
                break


async def echo(line: str) -> str:
    return line


if __name__ == "__main__":
    fluid.run(LineServer(echo, port=8888))
