"""A message pipe to a child process that never blocks the event loop.

Why it is shaped this way:

* The child keeps an ordinary, blocking ``multiprocessing`` ``Connection``
  (``send_bytes`` / ``recv_bytes``): sync code in a child may block, and its
  API stays the standard one. The parent holds the other end of the same
  socket pair, non-blocking, and speaks the ``Connection`` wire format
  itself: a 4-byte big-endian signed length (``-1`` then an 8-byte length
  for messages of 2 GiB or more), then the payload.
* Writes never wait. ``send()`` writes what the socket takes at once and
  keeps the rest (as views of the caller's bytes: no copy) until
  ``loop.add_writer`` says there is room. A 64 MiB argument to a child
  still busy booting costs the loop nothing but the first ``send()``.
* Reads never wait for a whole message. ``loop.add_reader`` wakes the loop
  when bytes arrive, and one wake-up reads at most what the socket holds.
  Small messages are cut out of a shared buffer; a large one is read
  straight into a buffer of its own size (``recv_into``), so a 20 MB error
  crosses in a few hundred wake-ups with the loop running between them, and
  is delivered without a final copy (as a ``bytearray``).
* An error on the socket (the child died) closes the pipe quietly: the end
  of the child is reported from its sentinel, not from here.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from collections.abc import Callable

__all__ = ["MessagePipe", "pipe_pair"]

_HEADER = struct.Struct("!i")
_LONG_HEADER = struct.Struct("!Q")
_SMALL = 16384  # Connection concatenates header and payload up to this size
_LARGE = 65536  # a payload at least this big is read into a buffer of its own
_READ_SIZE = 262144  # at most this much per wake-up for small messages

Message = bytes | bytearray
"""What the pipe delivers: bytes, or a bytearray for a large message (never copied)."""


def pipe_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of sockets: the first for the parent, the second for the child.

    The child's end is blocking (for a ``multiprocessing`` ``Connection``),
    the parent's end non-blocking (for a [`MessagePipe`][]).
    """
    parent, child = socket.socketpair()
    parent.setblocking(False)
    child.setblocking(True)
    return parent, child


def frame(data: bytes) -> list[memoryview | bytes]:
    """``data`` in the ``Connection`` wire format, as the pieces to write in order."""
    size = len(data)
    if size > 0x7FFFFFFF:
        return [_HEADER.pack(-1) + _LONG_HEADER.pack(size), memoryview(data)]
    if size > _SMALL:
        return [_HEADER.pack(size), memoryview(data)]
    return [_HEADER.pack(size) + data]


class MessagePipe:
    """The parent's end of a pipe to a child, driven by the event loop.

    ``on_message`` is called on the loop with each message the child sent.
    ``send()`` never blocks. The pipe stops reading at the end of the stream
    or on an error, and ``close()`` releases the socket.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_fd",
        "_filled",
        "_large",
        "_loop",
        "_on_message",
        "_output",
        "_reading",
        "_sock",
        "_writing",
    )

    def __init__(self, sock: socket.socket, on_message: Callable[[Message], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._on_message = on_message
        self._buffer = bytearray()  # bytes read, not yet cut into messages
        self._large: bytearray | None = None  # the large message being read
        self._filled = 0  # bytes of it read so far
        self._output: deque[memoryview | bytes] = deque()
        self._closed = False
        self._writing = False
        self._reading = True
        self._loop.add_reader(self._fd, self._read)

    @property
    def closed(self) -> bool:
        """True once closed: nothing more is sent or delivered."""
        return self._closed

    @property
    def pending(self) -> int:
        """Bytes accepted by ``send()`` and not yet written to the socket."""
        return sum(len(piece) for piece in self._output)

    def send(self, data: bytes) -> bool:
        """Queue ``data`` as one message; write what the socket takes now.

        Returns:
            False if the pipe is closed (the message is dropped).
        """
        if self._closed:
            return False
        self._output.extend(frame(data))
        if not self._writing:
            self._write()
        return not self._closed

    def read_now(self) -> None:
        """Read and deliver whatever the socket holds already (before a close)."""
        while self._reading and not self._closed and self._read():
            pass

    def close(self) -> None:
        """Stop watching the socket and close it; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._output.clear()
        self._sock.close()

    # ------------------------------------------------------------- writing

    def _write(self) -> None:
        output = self._output
        try:
            while output:
                piece = output[0]
                sent = self._sock.send(piece)
                if sent == len(piece):
                    output.popleft()
                else:
                    output[0] = memoryview(piece)[sent:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # the child is gone: its sentinel will tell
            self.close()
            return
        if output and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write)
        elif not output and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    # ------------------------------------------------------------- reading

    def _read(self) -> bool:
        """One read from the socket; True if it got bytes."""
        try:
            if self._large is not None:
                got = self._sock.recv_into(memoryview(self._large)[self._filled :])
            else:
                data = self._sock.recv(_READ_SIZE)
                got = len(data)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            got = 0
        if not got:  # end of the stream, or an error: the sentinel tells the rest
            self._stop_reading()
            return False
        if self._large is not None:
            self._filled += got
            if self._filled == len(self._large):
                message, self._large = self._large, None
                self._on_message(message)
        else:
            self._buffer += data
            self._cut_messages()
        return True

    def _cut_messages(self) -> None:
        buffer = self._buffer
        while not self._closed and len(buffer) >= 4:
            (size,) = _HEADER.unpack_from(buffer)
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                (size,) = _LONG_HEADER.unpack_from(buffer, 4)
                start = 12
            end = start + size
            if len(buffer) >= end:
                message = bytes(buffer[start:end])
                del buffer[:end]
                self._on_message(message)
            elif size >= _LARGE:  # read the rest straight into its own buffer
                self._large = large = bytearray(size)
                self._filled = len(buffer) - start
                large[: self._filled] = buffer[start:]
                buffer.clear()
                return
            else:
                return

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
