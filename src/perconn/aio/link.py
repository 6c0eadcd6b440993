"""One established connection of the asyncio front end (:class:`Connection`, an
:class:`asyncio.Protocol`), and the view of it an ``on_connect`` hook gets (:class:`Link`).

A :class:`Connection` buffers what it receives (pausing the transport while
more than twice :data:`perconn.DEFAULT_LIMIT` is unread, as asyncio streams
do) and tells the ``Conn`` the moment
the transport reports the peer gone, so redialing starts even while nobody reads.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._base import LinkBase
from .._errors import ConnectionIOError, peer_closed
from .._reading import DEFAULT_LIMIT, Frame, exactly, some, take, until
from .._sockopts import SockOpt
from .._validate import check_bytes, check_count, check_separator, check_size, check_timeout, timed_out

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["Connection", "Link", "within"]

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None, timeout: Callable[[], BaseException]) -> T:
    """Await *aw* for at most *seconds*; on expiry raise ``timeout()`` (a ``TimeoutError``)."""
    if seconds is None:
        return await aw
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await aw
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
        error = timeout()
        error.__suppress_context__ = True  # keep the error's own __cause__, if it has one
        raise error  # noqa: B904


PAUSE_AT = 2 * DEFAULT_LIMIT
"""Bytes buffered and unread above which the transport stops reading (as asyncio
streams do), unless a reader waits for more."""


class Connection(asyncio.Protocol):
    """One connection: its transport, what it received, and who waits on it."""

    def __init__(
        self, conn: weakref.ref[Conn], loop: asyncio.AbstractEventLoop, address: str, options: list[SockOpt]
    ) -> None:
        self._conn = conn
        self._options = options
        self._loop = loop
        self.address = address
        self.generation = 0  # set when dialed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.failure: BaseException | None = None  # why the connection ended (EOFError: peer closed)
        self.failed_op = "read"  # what noticed the end, for the log
        self.owes_end = False  # decided by the read cursor when it ends
        self.installed = False  # handed to the Conn (after on_connect): it reports its end from then on
        self.proven = False  # it received bytes (the lifecycle was told)
        self._data_waiter: asyncio.Future[None] | None = None
        self._want = 1  # bytes buffered in all before the reader is worth waking (the transport is not paused below)
        self._drain_waiters: list[asyncio.Future[None]] = []  # (a list: an empty deque is 760 bytes per connection)
        self.paused = False
        self._read_paused = False
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for level, option, value in self._options:  # see perconn._sockopts
                sock.setsockopt(level, option, value)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        size, want = len(buffer), self._want
        # Paused above PAUSE_AT (a reader's want is never more: see wait_data),
        # until a reader waits again.
        if size > PAUSE_AT and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        if size >= want and (waiter := self._data_waiter) is not None:  # _wake_reader(), inline
            self._data_waiter, self._want = None, 1
            if not waiter.done():  # (cancelled: its reader was)
                waiter.set_result(None)
        if not self.proven:
            self.proven = True
            conn = self._conn()
            if conn is not None and self.installed:
                conn._proved(self)

    def eof_received(self) -> bool:
        self.end(peer_closed())
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.end(exc if exc is not None else peer_closed())
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.wake_writers()

    # -- used by Conn and Link -------------------------------------------------

    def end(self, cause: BaseException, op: str | None = None, *, at_once: bool = False) -> None:
        """The connection ended (once): record why, wake everyone, tell the ``Conn``."""
        if self.failure is not None:
            return
        if op is not None:
            self.failed_op = op
        elif self.paused:  # a write was waiting on it: the write path noticed
            self.failed_op = "write"
        conn = self._conn()
        self.failure = cause
        if conn is not None and self.installed:
            conn._link_ended(self, at_once)
        self._wake_reader()
        self.wake_writers()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None:
            self._data_waiter, self._want = None, 1
            if not waiter.done():  # (cancelled: its reader was)
                waiter.set_result(None)

    def wake_writers(self) -> None:
        if not self._drain_waiters:
            return
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def wake_all(self) -> None:
        self._wake_reader()
        self.wake_writers()

    def wait_data(self, want: int = 1) -> asyncio.Future[None]:
        """A future done when more bytes arrive, *want* bytes in all are buffered
        if more than 1 (a ``readexactly``: woken once, not per chunk), or the
        connection ends. A future, not a coroutine: a read that waits makes one
        object, not three.

        *want* counts up to :data:`PAUSE_AT` only: a bulk read is woken there and
        at each chunk after, the transport paused in between, as asyncio streams
        do. On one CPU that lets the sender fill the socket while the reader
        takes what came, and the rest is read in fewer, larger pieces (1 MiB
        echoes: 0.78 of streams' rate when woken only at the end, 1.01-1.05 so)."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        waiter = self._data_waiter = self._loop.create_future()
        self._want = want if want < PAUSE_AT else PAUSE_AT
        return waiter

    async def drained(self) -> None:
        """Wait once for the transport's buffer to drop below its high-water mark,
        the connection to end, or a wake-up from ``close()``."""
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def take(self, n: int) -> bytes:
        data = take(self.buffer, n)
        if self._read_paused and len(self.buffer) <= DEFAULT_LIMIT and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    def writable_now(self) -> bool:
        """Whether a write can go to the transport now: the connection is up, has
        room, and the transport is not already closing (it may know of a failure
        a loop iteration before ``connection_lost`` tells us). ``Conn.write``
        has it inline, on its hot path."""
        return self.failure is None and not self.paused and not self.transport.is_closing()  # type: ignore[union-attr]

    def write(self, data: bytes | memoryview) -> None:
        """Hand *data* to the transport (the caller checked :meth:`writable_now`)."""
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if transport.is_closing():
            self.wrote_into_failure()

    def wrote_into_failure(self) -> None:
        """A write found the transport failing: the write path noticed the end."""
        if self.failure is None:
            self.failed_op = "write"

    def extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info``."""
        transport = self.transport
        return default if transport is None else transport.get_extra_info(name, default)

    def close(self) -> None:
        """Close gracefully: the transport flushes what it buffered, then closes."""
        if self.transport is not None:
            self.transport.close()

    def abort(self, cause: BaseException | None = None, op: str = "read", *, at_once: bool = False) -> None:
        """Drop the connection now; with a *cause*, it ends at once rather than
        when the transport reports it lost on a later loop iteration."""
        if self.transport is not None:
            self.transport.abort()
        if cause is not None:
            self.end(cause, op, at_once=at_once)


class Link(LinkBase[Connection]):
    """The fresh connection, as an ``on_connect`` hook sees it (awaitable
    methods): a stream to run a handshake on before any caller uses it.

    Every method's default timeout is what is left of ``dial_timeout`` (none if
    that is None). Bytes the hook receives but does not consume are the first
    bytes callers read. I/O failures raise :class:`perconn.ConnectionIOError`.
    """

    def __init__(self, connection: Connection, deadline: float | None) -> None:
        super().__init__(connection)
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()

    def _seconds(self, timeout: object) -> float | None:
        seconds = check_timeout(timeout)
        if seconds is None and self._deadline is not None:
            return max(0.0, self._deadline - self._loop.time())
        return seconds

    async def _read(self, frame: Frame, timeout: object) -> bytes:
        seconds = self._seconds(timeout)
        c = self._c

        async def read() -> bytes:
            while (end := frame(c.buffer)) < 0:
                if c.failure is not None:
                    raise ConnectionIOError("read", c.failure, c.take(len(c.buffer)), address=c.address)
                await c.wait_data()
            return c.take(end)

        return await within(read(), seconds, lambda: timed_out("read", seconds or 0.0))

    async def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read 1 to *n* bytes (``b""`` if *n* is 0)."""
        n = check_count("n", n)
        return await self._read(some(n), timeout) if n else b""

    async def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes."""
        n = check_count("n", n)
        return await self._read(exactly(n), timeout) if n else b""

    async def readuntil(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT, timeout: float | None = None
    ) -> bytes:
        """Read up to and including *separator*, within *limit* bytes."""
        return await self._read(until(check_separator(separator), check_size("limit", limit)), timeout)

    async def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Write all of *data* (handed to the transport once it has room); returns ``len(data)``."""
        view = check_bytes("data", data)
        seconds = self._seconds(timeout)
        c = self._c

        async def room() -> None:
            while not c.writable_now():
                if c.failure is not None:
                    raise ConnectionIOError("write", c.failure, address=c.address)
                await c.drained()

        await within(room(), seconds, lambda: timed_out("write", seconds or 0.0))
        c.write(view)
        return len(view)
