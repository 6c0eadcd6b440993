"""The asyncio persistent connection, :class:`Conn`, on the same core as :mod:`perconn.sync`.

Each connection is an :class:`asyncio.Protocol` (``_Link``) that buffers what it
receives and tells the ``Conn`` the moment the transport reports the peer gone,
so redialing starts in the background even while nobody is reading. One
background task exists only while dialing. Background pieces hold the ``Conn``
weakly, so a ``Conn`` dropped without ``close()`` is collected, warns with a
``ResourceWarning`` and releases its transport, as asyncio transports do.

Reads follow a cursor: they consume the connection they started on until its
buffered bytes are gone, then move to the newest one. The end of a connection
is raised to a reader (as :class:`ConnectionIOError`) when the reader could be
owed something from it: a read was pending, bytes were left unread, or a write
went out on it since the last read returned. A connection that ended idle is
only logged, and the next call simply uses the fresh one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import warnings
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar, cast

from ._address import Address
from ._base import ConnBase
from ._errors import ClosedConnectionError, ConnectionIOError, DialError, peer_closed
from ._log import log_connected, log_dial_failed, log_io_failed
from ._options import Options, connect_function, make_options
from ._state import Lifecycle
from ._validate import check_bytes, check_size, check_timeout, timed_out

__all__ = ["DEFAULT_LIMIT", "Conn", "connect"]

T = TypeVar("T")

DEFAULT_LIMIT = 2**16
"""Bytes: the default bound of :meth:`Conn.readuntil`, as for asyncio streams.
Reading from the socket pauses while twice this much is buffered unread."""

CLOSE_BUDGET = 0.05
"""Seconds ``close()`` lets a transport flush its buffer before aborting it
(the contract is 100 ms for the whole of ``close()``)."""


async def _within(aw: Awaitable[T], timeout: float | None, op: str) -> T:
    """Await *aw* for at most *timeout* seconds, raising the builtin ``TimeoutError``."""
    if timeout is None:
        return await aw
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(timeout):
                return await aw
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
        raise timed_out(op, timeout) from None


class _Link(asyncio.Protocol):
    """One connection: its transport, what it received, and who waits on it."""

    def __init__(self, conn: weakref.ref[Conn], loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._conn = conn
        self._loop = loop
        self._limit = limit
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.failure: BaseException | None = None  # why the connection ended (EOFError: peer closed)
        self.failed_op = "read"  # what was doing I/O when it ended, for the log
        self.owed = False  # a write went out since the last read returned
        self.report_end = False  # decided when it ends: whether a reader must hear of it
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.paused = False
        self._read_paused = False
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake_reader()
        if len(self.buffer) > 2 * self._limit and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._end(peer_closed())
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc if exc is not None else peer_closed())
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writers()

    # -- used by Conn ---------------------------------------------------------

    def _end(self, cause: BaseException, op: str = "read") -> None:
        if self.failure is not None:
            return
        self.failed_op = op
        self.report_end = self.owed or bool(self.buffer) or self._data_waiter is not None
        self.failure = cause
        self._wake_reader()
        self._wake_writers()
        conn = self._conn()
        if conn is not None:
            conn._link_ended(self)

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writers(self) -> None:
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def wait_data(self) -> None:
        """Wait until more bytes arrive or the connection ends."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        self._data_waiter = self._loop.create_future()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None

    async def drained(self) -> None:
        """Wait once for the transport's buffer to drop below its high-water mark,
        the connection to end, or a wake-up from ``close()``."""
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self._read_paused and len(self.buffer) <= self._limit and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    def writable_now(self) -> bool:
        """Whether a write can go to the transport now: the connection is up, has
        room, and the transport is not already closing (it may know of a failure
        a loop iteration before ``connection_lost`` tells us)."""
        return self.failure is None and not self.paused and not self.transport.is_closing()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close gracefully: the transport flushes what it buffered, then closes."""
        if self.transport is not None:
            self.transport.close()

    def abort(self, cause: BaseException | None = None, op: str = "read") -> None:
        """Drop the connection now; with a *cause*, it ends at once rather than
        when the transport reports it lost on a later loop iteration."""
        if self.transport is not None:
            self.transport.abort()
        if cause is not None:
            self._end(cause, op)


class Conn(ConnBase[_Link]):
    """A pseudo-persistent client connection for asyncio: one object to read and
    write from any number of tasks while connections come and go underneath.

    Use :func:`connect` (a plain call, inside a running loop) to make one, and
    ``await conn.close()`` (or ``async with``) to end it.

    Guarantees:
        - Operations issued while no connection is up wait for one (bounded by
          their ``timeout``); they never fail just because the peer is down.
        - A failure of the connection an operation uses raises
          :class:`ConnectionIOError`; it is logged once, when the transport
          reports it, and redialing starts in the background at that moment.
        - A single :meth:`write` is handed whole to one connection's transport
          (so concurrent writers never interleave) and drained, or it raises.
        - Cancelling a call cancels only that call: no received byte is lost and
          the connection stays usable. (A cancelled write may already have
          handed its bytes to the transport.)

    Not guaranteed: bytes a successful :meth:`write` drained reached the peer.
    If the connection drops afterwards they may be lost; TCP cannot tell.
    """

    def __init__(
        self,
        options: Options,
        *,
        limit: int = DEFAULT_LIMIT,
        random: Callable[[], float] | None = None,
    ) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("perconn.aio.connect() must be called with a running event loop") from None
        self._opts = options
        self._limit = check_size("limit", limit)
        self._link: _Link | None = None  # the connection writes go to; None while dialing
        self._rlink: _Link | None = None  # the connection reads consume (may have ended)
        self._up = asyncio.Event()  # set while connected or closed
        self._rlock = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None
        self._dialer: asyncio.Task[None] | None = None
        # Last: until it exists, __del__ takes this for a half-made Conn and stays quiet.
        self._life = Lifecycle(options.backoff) if random is None else Lifecycle(options.backoff, random)
        self._start_dialer(0.0)

    # -- public API -----------------------------------------------------------

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a connection is up.

        Raises:
            TimeoutError: none came up within *timeout* seconds.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        seconds = check_timeout(timeout)
        await _within(self._current(), seconds, "wait_connected")

    async def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read and return 1 to *n* bytes, waiting for a connection if none is up.

        Raises:
            TimeoutError: nothing arrived within *timeout*; nothing is lost.
            ConnectionIOError: the connection being read ended (peer EOF included).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        if n.__class__ is not int or n < 1:
            check_size("n", n)
        link = self._rlink
        if link is not None and link.buffer and not self._rlock.locked():
            link.owed = False
            return link.take(n)  # fast path: bytes are already here
        if timeout is None:
            return await self._read_until(lambda buf: min(n, len(buf)) if buf else -1)
        seconds = check_timeout(timeout)
        return await _within(self._read_until(lambda buf: min(n, len(buf)) if buf else -1), seconds, "read")

    async def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes from one connection.

        Nothing is consumed until all *n* bytes are there, so a timeout or a
        cancellation loses nothing.

        Raises:
            TimeoutError: not all *n* bytes arrived within *timeout*.
            ConnectionIOError: the connection ended first; its ``partial`` holds
                the bytes that did arrive (like ``asyncio.IncompleteReadError``).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        check_size("n", n)
        seconds = check_timeout(timeout)
        return await _within(self._read_until(lambda buf: n if len(buf) >= n else -1), seconds, "read")

    async def readuntil(
        self, separator: bytes = b"\n", limit: int | None = None, timeout: float | None = None
    ) -> bytes:
        """Read up to and including *separator*, from one connection.

        Raises:
            asyncio.LimitOverrunError: no separator within *limit* bytes (default
                :data:`DEFAULT_LIMIT`); nothing is consumed, the bytes stay readable.
            TimeoutError: no separator arrived within *timeout*; nothing is lost.
            ConnectionIOError: the connection ended first; ``partial`` holds
                the bytes received without a separator.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        if not isinstance(separator, bytes) or not separator:
            raise ValueError(f"separator must be non-empty bytes, got {separator!r}")
        bound = self._limit if limit is None else check_size("limit", limit)

        def found(buf: bytearray) -> int:
            at = buf.find(separator)
            end = -1 if at < 0 else at + len(separator)
            if end > bound or (end < 0 and len(buf) >= bound):
                raise asyncio.LimitOverrunError(f"separator not found within limit={bound} bytes", min(len(buf), bound))
            return end

        seconds = check_timeout(timeout)
        return await _within(self._read_until(found), seconds, "read")

    async def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Hand all of *data* to one connection's transport, drain it, and return ``len(data)``.

        Waits for a connection (and for room, if the transport is backed up)
        before writing; a timeout then raises ``TimeoutError`` and nothing is
        written. Once written, draining is awaited; if that times out the
        connection is aborted (its stream would be torn) and
        :class:`ConnectionIOError` is raised.

        Raises:
            TimeoutError: nothing was written within *timeout*.
            ConnectionIOError: the connection ended before *data* drained, or
                draining timed out.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        if data.__class__ is not bytes:
            data = check_bytes("data", data)
        seconds = None if timeout is None else check_timeout(timeout)
        start = 0.0 if seconds is None else self._loop.time()
        link = self._link
        if link is None or not link.writable_now():
            link = await _within(self._writable(), seconds, "write")
        assert link.transport is not None
        link.transport.write(data)
        link.owed = True
        if link.paused:
            remaining = None if seconds is None else max(0.0, start + seconds - self._loop.time())
            try:
                await _within(self._drain(link), remaining, "write")
            except TimeoutError as exc:
                link.abort(exc, "write")  # part of data may be out: the stream is torn
                raise ConnectionIOError("write", exc) from exc
        return len(data)

    async def close(self) -> None:
        """Close for good; idempotent.

        Finishes within 100 ms whatever the state: wakes every pending call with
        :class:`ClosedConnectionError`, cancels and awaits the dial task, and
        closes the transport (letting it flush for at most :data:`CLOSE_BUDGET`
        seconds, then aborting it).
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = self._loop.create_future()
        try:
            self._life.close()
            self._up.set()
            links = {link for link in (self._link, self._rlink) if link is not None}
            self._link = None
            for link in links:
                link._wake_reader()
                link._wake_writers()
                link.close()
            dialer = self._dialer
            if dialer is not None:
                dialer.cancel()
                await asyncio.wait([dialer])
            if links:
                _, flushing = await asyncio.wait([link.lost for link in links], timeout=CLOSE_BUDGET)
                for link in links:
                    if link.lost in flushing:
                        link.abort()
                await asyncio.wait([link.lost for link in links])
        finally:
            self._closing.set_result(None)

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True):  # closed, or never fully made
            return
        message = f"unclosed {self!r}"
        self._life.close()
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            if self._dialer is not None:
                self._dialer.cancel()
            for link in (self._link, self._rlink):
                if link is not None:
                    link.abort()
        _warn(message, ResourceWarning, source=self)  # last: it may be turned into an error

    # -- waiting --------------------------------------------------------------

    async def _current(self) -> _Link:
        """The live connection, waiting for one if none is up."""
        while True:
            if self._closed:
                raise ClosedConnectionError()
            link = self._link
            if link is not None:
                return link
            await self._up.wait()

    async def _writable(self) -> _Link:
        """The live connection once its transport has room."""
        while True:
            link = await self._current()
            if link.writable_now():
                return link
            await link.drained()

    async def _drain(self, link: _Link) -> None:
        """Wait until what was written to *link* drained; raise if it ended first."""
        while link.paused:
            if self._closed or link.failure is not None:
                raise self._ended(link, "write")
            await link.drained()

    def _ended(self, link: _Link, op: str, partial: bytes = b"") -> Exception:
        """The error for a call that found *link* ended (or the ``Conn`` closed)."""
        if self._closed:
            return ClosedConnectionError()
        assert link.failure is not None
        return ConnectionIOError(op, link.failure, partial)

    async def _reader(self) -> _Link:
        """The connection reads consume now (see the module docstring); raises the
        end of the previous one if a reader is owed it."""
        while True:
            if self._closed:
                raise ClosedConnectionError()
            link = self._rlink
            if link is None or link is self._link:
                link = self._rlink = await self._current()
                return link
            if link.buffer or link.failure is None:
                return link
            self._rlink = None
            if link.report_end:
                raise self._ended(link, "read")

    # -- reading --------------------------------------------------------------

    async def _read_until(self, complete: Callable[[bytearray], int]) -> bytes:
        """Read one item whose end *complete* finds in the buffer (-1: not yet)."""
        async with self._rlock:
            link = self._rlink
            if link is None or link is not self._link:  # not simply reading the live connection
                link = await self._reader()
            while (end := complete(link.buffer)) < 0:
                if link.failure is not None:
                    partial = link.take(len(link.buffer))
                    self._rlink = None  # its end is reported now, once
                    raise self._ended(link, "read", partial)
                await link.wait_data()
                if self._closed:
                    raise ClosedConnectionError()
            link.owed = False
            return link.take(end)

    # -- the connection's life ------------------------------------------------

    def _link_ended(self, link: _Link) -> None:
        """Called by a link whose transport reported the connection gone."""
        if self._closed or link is not self._link:
            return
        self._link = None
        self._up.clear()
        assert link.failure is not None
        log_io_failed(self._opts.logger, self.address, ConnectionIOError(link.failed_op, link.failure))
        self._start_dialer(self._life.connection_lost(self._loop.time()))

    def _start_dialer(self, delay: float) -> None:
        self._dialer = self._loop.create_task(
            _dial_loop(weakref.ref(self), self._opts, self._life, self._limit, delay),
            name=f"perconn-dial {self.address}",
        )

    def _install(self, link: _Link) -> None:
        self._link = link
        if self._rlink is None:
            self._rlink = link
        self._dialer = None
        generation = self._life.connected(self._loop.time())
        self._up.set()
        log_connected(self._opts.logger, self.address, generation, self._life.attempts)
        if link.failure is not None:  # it ended between connection_made and now
            self._link_ended(link)


async def _dial_loop(ref: weakref.ref[Conn], opts: Options, life: Lifecycle, limit: int, delay: float) -> None:
    """Sleep and dial until connected; holds the ``Conn`` only weakly, so a
    ``Conn`` dropped without ``close()`` can be collected."""
    loop = asyncio.get_running_loop()
    while True:
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            link = await _within(_dial(loop, ref, opts.address, limit), opts.dial_timeout, "dial")
        except OSError as exc:  # TimeoutError and socket.gaierror included
            if ref() is None:
                return
            error = DialError(opts.address.text, exc)
            delay = life.dial_failed()
            log_dial_failed(opts.logger, error, life.attempts, delay)
            continue
        conn = ref()
        if conn is None or conn._closed:
            link.abort()
            return
        conn._install(link)
        return


async def _dial(loop: asyncio.AbstractEventLoop, ref: weakref.ref[Conn], address: Address, limit: int) -> _Link:
    """One dial: resolve (through the loop's resolver) and connect, without blocking the loop."""

    def factory() -> _Link:
        return _Link(ref, loop, limit)

    if address.is_unix:
        _, link = await loop.create_unix_connection(factory, address.path)
    else:
        _, link = await loop.create_connection(factory, address.host, address.port)
    return link


connect = connect_function(
    make_options,
    Conn,
    "perconn.aio",
    """Return a :class:`perconn.aio.Conn` to *address* at once; dialing runs in a
background task. A plain (non-async) call: it needs a running event loop and
raises ``RuntimeError`` without one. The options, defaults and validation are
those of :func:`perconn.connect`.""",
)
