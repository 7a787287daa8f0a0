"""A preforking HTTP server: one listening socket, three processes serving it.

    python examples/prefork_server.py        # or, with the CLI:
    fluid run examples.prefork_server:build --processes 3 --bind 127.0.0.1:8000
    curl localhost:8000                      # "hello from child 2 (pid 4242)"
    kill -9 <a child's pid>                  # it is respawned; requests go on
    kill <the master's pid>                  # or Ctrl-C: everything stops

The master opens the socket; each child runs `build()` on its own event loop
and accepts connections on the shared socket. The children's output reaches
the master's with `[child N]` in front of each line.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import fluid


class HelloServer(fluid.Worker):
    """A tiny HTTP/1.0 server on a socket it was given: answers who it is."""

    def __init__(self, sock: socket.socket, child_id: int) -> None:
        super().__init__(name="hello_server")
        self.sock = sock
        self.child_id = child_id
        self.server: asyncio.Server | None = None

    async def on_startup(self) -> None:
        self.server = await asyncio.start_server(self.answer, sock=self.sock)
        print(f"child {self.child_id} serving (pid {os.getpid()})", flush=True)

    async def run(self) -> None:
        while self.is_running():
            await self.sleep(3600)  # the server works in its own callbacks

    async def on_shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        print(f"child {self.child_id} stopped (pid {os.getpid()})", flush=True)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request line and headers
        body = f"hello from child {self.child_id} (pid {os.getpid()})\n".encode()
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        writer.write(head + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


def build() -> fluid.Worker:
    """What each child runs: the server on the socket its master shared."""
    child = fluid.prefork_child()
    if child is None or not child.sockets:
        raise RuntimeError("run me with --processes N --bind HOST:PORT (see the docstring)")
    return HelloServer(child.sockets[0], child.id)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    sock = socket.create_server(("127.0.0.1", port))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    sys.exit(fluid.run(fluid.Prefork(build, processes=3, sockets=[sock])))
