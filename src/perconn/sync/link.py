"""One established connection of the synchronous front end (:class:`Connection`),
and the view of it an ``on_connect`` hook gets (:class:`Link`).

:class:`Connection` does the socket I/O and raises the operating system's errors
as they are; the ``Conn`` and the ``Link`` translate them, each at one boundary.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import Any, Protocol

from .._base import LinkBase
from .._errors import ConnectionIOError, peer_closed
from .._reading import DEFAULT_LIMIT, Frame, exactly, some, take, until
from .._validate import check_bytes, check_count, check_separator, check_size, check_timeout, timed_out
from .dialer import wait_fd

__all__ = ["MAX_CHUNK", "Connection", "Link", "Stream", "peek", "send_within"]

MAX_CHUNK = 2**18
"""Bytes: the most one ``recv`` of ``read`` (or of a read into the buffer) asks
for, so ``read(10**12)`` allocates what arrived, not what was asked. (The hot
path of ``readexactly(n)`` asks for all it still needs: what it returns holds
that much anyway.)"""

_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT


class Stream(Protocol):
    """What a :class:`Connection` reads and writes: its socket, or a
    :class:`~perconn.sync.tls.TLSStream` over it."""

    def recv(self, n: int, flags: int = 0, /) -> bytes: ...
    def sendall(self, data: bytes | memoryview, /) -> None: ...
    def fileno(self) -> int: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


def send_within(sock: socket.socket, data: bytes | memoryview, deadline: float | None) -> int:
    """Send *data* on *sock* without blocking past *deadline*; return how many bytes went out."""
    view = memoryview(data)
    sent = 0
    while sent < len(view) and wait_fd(sock.fileno(), select.POLLOUT, deadline):
        with contextlib.suppress(BlockingIOError):
            sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
    return sent


def peek(sock: socket.socket) -> BaseException | None:
    """One non-blocking look at *sock*: its error, ``EOFError`` at end of stream,
    or None (bytes waiting to be read count as alive)."""
    try:
        if sock.recv(1, _PEEK_FLAGS) == b"":
            return peer_closed()
    except BlockingIOError:
        return None
    except OSError as exc:
        return exc
    return None


class Connection:
    """One established connection: its socket, the bytes received but not yet
    returned, and why it ended (``failure``, None while it is up)."""

    __slots__ = (
        "address",
        "buffer",
        "failure",
        "generation",
        "last_write",
        "owes_end",
        "proven",
        "raw",
        "rest",
        "sock",
    )

    def __init__(self, sock: socket.socket, address: str, generation: int, now: float) -> None:
        self.sock: Stream = sock
        self.raw = sock  # the socket under the stream
        self.rest: bytes | None = None  # what the socket did not take of a timeout=0 write
        self.address = address
        self.generation = generation
        self.buffer = bytearray()
        self.last_write = now
        self.failure: BaseException | None = None
        self.owes_end = False
        self.proven = False  # it received bytes (the lifecycle was told)

    def take(self, n: int) -> bytes:
        return take(self.buffer, n)

    def recv(self, n: int, deadline: float | None) -> bytes | None:
        """1 to *n* bytes from the socket, ``b""`` at end of stream, or None if
        nothing arrived by *deadline*. Raises the socket's ``OSError``."""
        if n > MAX_CHUNK:
            n = MAX_CHUNK
        if deadline is None:
            return self.sock.recv(n)
        while wait_fd(self.raw.fileno(), select.POLLIN, deadline):
            with contextlib.suppress(BlockingIOError):
                return self.raw.recv(n, socket.MSG_DONTWAIT)
        return None

    def fill(self, frame: Frame, deadline: float | None) -> int:
        """Receive into the buffer until *frame* finds its end there; return it.

        Returns -1 if *deadline* passed first (what arrived stays buffered).
        Raises the socket's ``OSError``, or :class:`EOFError` at end of stream.
        """
        buf = self.buffer
        while (end := frame(buf)) < 0:
            data = self.recv(MAX_CHUNK, deadline)
            if data is None:
                return -1
            if not data:
                raise peer_closed()
            buf += data
        return end

    def send(self, view: bytes | memoryview, deadline: float | None) -> int:
        """Send *view*, all of it unless *deadline* passes first; return how many
        bytes went out. Raises the socket's ``OSError``."""
        if deadline is None:
            self.sock.sendall(view)
            return len(view)
        return send_within(self.raw, view, deadline)

    def send_now(self, view: bytes | memoryview) -> bool:
        """Hand *view* to the socket without waiting: False if it took nothing;
        what it did not take becomes :attr:`rest`, sent before any later write."""
        try:
            sent = self.raw.send(view, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if sent < len(view):
            self.rest = bytes(view[sent:])
        return True

    def send_rest(self, deadline: float | None) -> bool:
        """Send :attr:`rest` (raw bytes: already encrypted over TLS) until
        *deadline*; True once none is left."""
        rest = self.rest
        if rest is None:
            return True
        if deadline is None:
            self.raw.sendall(rest)
            sent = len(rest)
        else:
            sent = send_within(self.raw, rest, deadline)
        self.rest = rest[sent:] or None
        return self.rest is None

    def peer_gone(self) -> BaseException | None:
        """Why the peer closed or reset the connection, or None if it has not as
        far as one non-blocking peek can tell (unread bytes count as alive)."""
        return peek(self.raw)

    def shutdown(self) -> None:
        """Wake every thread blocked on this socket; the fd stays open."""
        with contextlib.suppress(OSError):  # already reset or not connected: nothing to wake
            self.raw.shutdown(socket.SHUT_RDWR)

    def extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's transport names: ``peername``, ``sockname``, ``socket``."""
        try:
            if name == "peername":
                return self.raw.getpeername()
            if name == "sockname":
                return self.raw.getsockname()
        except OSError:
            return default
        if name == "socket":
            return self.raw
        return default


class Link(LinkBase[Connection]):
    """The fresh connection, as an ``on_connect`` hook sees it: a stream to run a
    handshake on before any caller of the ``Conn`` uses it.

    Every method's default timeout is what is left of ``dial_timeout`` (none if
    that is None). Bytes the hook receives but does not consume are the first
    bytes callers read. I/O failures raise :class:`perconn.ConnectionIOError`
    (the dial then fails, unless the hook handles it).
    """

    def __init__(self, connection: Connection, deadline: float | None) -> None:
        super().__init__(connection)
        self._deadline = deadline

    def _until(self, timeout: object) -> tuple[float | None, float]:
        """The deadline for a call given *timeout*, and the seconds it allows."""
        seconds = check_timeout(timeout)
        now = time.monotonic()
        if seconds is None:
            return self._deadline, 0.0 if self._deadline is None else max(0.0, self._deadline - now)
        return now + seconds, seconds

    def _read(self, frame: Frame, timeout: object) -> bytes:
        deadline, seconds = self._until(timeout)
        try:
            end = self._c.fill(frame, deadline)
        except (OSError, EOFError) as exc:
            raise ConnectionIOError("read", exc, self._c.take(len(self._c.buffer)), address=self.address) from exc
        if end < 0:
            raise timed_out("read", seconds)
        return self._c.take(end)

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read 1 to *n* bytes (``b""`` if *n* is 0)."""
        n = check_count("n", n)
        return self._read(some(n), timeout) if n else b""

    def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes."""
        n = check_count("n", n)
        return self._read(exactly(n), timeout) if n else b""

    def readuntil(self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT, timeout: float | None = None) -> bytes:
        """Read up to and including *separator*, within *limit* bytes."""
        return self._read(until(check_separator(separator), check_size("limit", limit)), timeout)

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Write all of *data*; returns ``len(data)``."""
        view = check_bytes("data", data)
        deadline, seconds = self._until(timeout)
        try:
            sent = self._c.send(view, deadline)
        except OSError as exc:
            raise ConnectionIOError("write", exc, address=self.address) from exc
        if sent < len(view):
            raise timed_out("write", seconds)
        return len(view)
