"""The asyncio persistent connection, :class:`Conn`, on the same core as :mod:`perconn.sync`.

Each connection is an :class:`asyncio.Protocol` (:class:`~perconn.aio.link.Connection`)
that tells the ``Conn`` the moment the transport reports the peer gone, so
redialing starts in the background even while nobody is reading. One background
task exists only while dialing (sleeping, connecting, running ``on_connect``).
Background pieces hold the ``Conn`` weakly, so a ``Conn`` dropped without
``close()`` is collected, warns with a ``ResourceWarning`` and releases its
transport, as asyncio transports do.

Which connection a read consumes is the read cursor's decision
(:mod:`perconn._reading`), as in the synchronous front end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from .._address import Address
from .._base import ConnBase, begin_dial, dial_failed, install, publish
from .._connecting import start_connect
from .._errors import ConnectionIOError, reconnect_requested
from .._log import log_discarded
from .._lookup import Lookup, Resolver, Target
from .._messages import flush_timed_out
from .._options import Options
from .._outbox import Outbox
from .._reading import DEFAULT_LIMIT, Cursor, Frame, ended, exactly, some, until
from .._sockopts import SockOpt, tcp_options
from .._validate import check_bytes, check_count, check_separator, check_size, check_timeout, timed_out
from . import lookups, pacing
from .dialer import connect_first, finish_connect
from .link import Connection, Link, within
from .waiting import Signal, Turn

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._options import ConnectOptions

__all__ = ["FLUSH_ON_CLOSE", "Conn", "OnConnect", "connect"]

T = TypeVar("T")

OnConnect = Callable[[Link], Awaitable[object]]
"""The type of the asyncio ``on_connect`` hook: a coroutine function taking a :class:`Link`."""

FLUSH_ON_CLOSE = 0.05
"""Seconds ``close()`` lets a transport flush its buffer before aborting it
(the contract is 100 ms for the whole of ``close()``)."""


class Conn(ConnBase[Connection, OnConnect]):
    """A pseudo-persistent client connection for asyncio: one object to read and
    write from any number of tasks while connections come and go underneath.

    ``Conn(address, **options)`` and :func:`perconn.aio.connect` are the same
    plain (non-async) call, made inside a running loop. ``await conn.close()``
    (or ``async with``) ends it.

    Guarantees:
        - Operations issued while no connection is up wait for one (bounded by
          their ``timeout``); they never fail just because the peer is down.
        - A failure of the connection an operation uses raises
          :class:`ConnectionIOError`; it is logged once, when the transport
          reports it, and redialing starts in the background at that moment.
        - A single :meth:`write` is handed whole to one connection's transport,
          so concurrent writers never interleave.
        - Reads follow writes: once a write went out on a newer connection, no
          read returns bytes of an older one.
        - Cancelling a call cancels only that call: no received byte is lost and
          the connection stays usable. (A cancelled write may already have
          handed its bytes to the transport.)

    Not guaranteed: bytes a successful :meth:`write` handed over reached the
    peer. If the connection drops afterwards they may be lost; TCP cannot tell.
    """

    _public_name = "perconn.aio.Conn"

    def _start(self, options: Options) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("perconn.aio.connect() must be called with a running event loop") from None
        self._opts = options
        self._link: Connection | None = None  # the connection writes go to; None while dialing
        self._cursor: Cursor[Connection] = Cursor()
        self._rlock = Turn()  # readers take turns
        self._closing: asyncio.Future[None] | None = None
        self._dialer: asyncio.Task[None] | None = None
        self._resolver = Resolver()  # outlives dial tasks: a pending lookup is reused
        self._changed = Signal()  # a connection came up, the buffer made room, or the Conn closed
        self._tcp = tcp_options(options.keepalive)  # the TCP options of every connection
        # Last: until it exists, __del__ takes this for a half-made Conn and stays quiet.
        self._life = self._lifecycle(options)
        self._start_dialer(0.0)

    # -- public API -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now (it may fail the next moment)."""
        return self._link is not None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a connection is up.

        Raises:
            TimeoutError: none came up within *timeout* seconds (the message and
                ``__cause__`` say why: the last dial's error).
            ClosedConnectionError: the ``Conn`` is or became closed
                (:class:`GaveUpError` if it gave up).
        """
        seconds = check_timeout(timeout)
        await self._timed(self._current(), seconds, "wait_connected")

    async def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read and return 1 to *n* bytes (``b""`` if *n* is 0), waiting for a
        connection if none is up.

        Raises:
            TimeoutError: nothing arrived within *timeout*; nothing is lost.
            ConnectionIOError: the connection being read ended (peer EOF included).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        seconds = None if timeout is None else check_timeout(timeout)
        if (n.__class__ is not int or n < 1) and not check_count("n", n):
            return b""
        link = self._cursor.reading
        if link is not None and link is self._link and link.buffer and not self._rlock.locked():
            self._cursor.owed = None  # the live connection: no write can be owed on a newer one
            return link.take(n)  # fast path: bytes are already here
        if seconds is None:
            return await self._read_frame(some(n))
        return await self._timed(self._read_frame(some(n)), seconds, "read")

    async def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes from one connection (``b""`` if *n* is 0).

        Nothing is consumed until all *n* bytes are there, so a timeout or a
        cancellation loses nothing.

        Raises:
            TimeoutError: not all *n* bytes arrived within *timeout*.
            ConnectionIOError: the connection ended first; its ``partial`` holds
                the bytes that did arrive (like ``asyncio.IncompleteReadError``).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        link = self._link
        if (
            timeout is None
            and link is not None
            and n.__class__ is int
            and n > 0
            and self._cursor.reading is link
            and self._rlock.try_take()  # last: it takes the turn
        ):  # the hot path: the live connection, the turn free
            try:
                buf = link.buffer
                while len(buf) < n and link.failure is None and link is self._link:
                    await link.wait_data(n)
                if len(buf) >= n:
                    if self._cursor.owed is link:  # Cursor.returned(), inline
                        self._cursor.owed = None
                    return link.take(n)
            finally:
                self._rlock.give()  # (the general path below sees to an end or a close)
        n = check_count("n", n)
        seconds = check_timeout(timeout)
        return await self._timed(self._read_frame(exactly(n)), seconds, "read") if n else b""

    async def readuntil(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT, timeout: float | None = None
    ) -> bytes:
        """Read up to and including *separator*, from one connection.

        Raises:
            asyncio.LimitOverrunError: no separator within *limit* bytes (default
                :data:`perconn.DEFAULT_LIMIT`); nothing is consumed, the bytes stay readable.
            TimeoutError: no separator arrived within *timeout*; nothing is lost.
            ConnectionIOError: the connection ended first; ``partial`` holds
                the bytes received without a separator.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        frame = until(check_separator(separator), check_size("limit", limit))
        seconds = check_timeout(timeout)
        return await self._timed(self._read_frame(frame), seconds, "read")

    async def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Hand all of *data* to one connection's transport and return ``len(data)``.

        Waits for a connection, and for the transport's buffer to fall below its
        high-water mark, before handing *data* over whole: so a timeout means
        nothing was written, and memory stays bounded by the high-water mark plus
        one write. While no connection is up, a write that fits in ``buffer`` is
        queued (copied) and returns at once; queued writes go out in order on the
        next connection before any later write. ``timeout=0`` never waits: the
        write is handed over (the transport below its high-water mark) or
        queued, or ``TimeoutError`` is raised with nothing written.

        Raises:
            TimeoutError: nothing was written within *timeout* (counted in
                ``stats.dropped_writes``); the connection stays up.
            ConnectionIOError: the connection ended while waiting for room.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        if data.__class__ is not bytes:
            data = check_bytes("data", data)
        if self._cursor.write_owed is not None:  # a failure no call has reported yet
            if timeout is not None:
                check_timeout(timeout)
            raise self._cursor.tell_writer()  # type: ignore[misc]
        link = self._link
        if (  # the hot path's test: Connection.writable_now() inline, and no unread bytes (else look first)
            link is None or link.failure is not None or link.paused or link.buffer or link.transport.is_closing()  # type: ignore[union-attr]
        ):
            seconds = None if timeout is None else check_timeout(timeout)
            try:
                if seconds == 0:
                    link = self._writable_now(data, link)
                else:
                    link = await self._timed(self._writable(data), seconds, "write")
            except TimeoutError:
                self._life.outbox.refused()
                raise
            if link is None:  # queued
                return len(data)
        elif timeout is not None:
            check_timeout(timeout)
        transport = link.transport
        transport.write(data)  # type: ignore[union-attr]
        if transport.is_closing():  # type: ignore[union-attr]
            link.wrote_into_failure()
        self._cursor.owed = link
        return len(data)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued write was handed to a connection. A connection
        dropping meanwhile does not end the wait: it goes on with the next one.
        ``await flush()`` then ``await close()`` shuts down without discarding.

        Raises:
            TimeoutError: writes were still queued after *timeout*; they stay queued.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        seconds = check_timeout(timeout)
        await self._timed(self._flushed(), seconds, "flush")

    async def reconnect(self) -> None:
        """Drop the current connection (if any) and dial again at once, the
        backoff schedule reset. Calls waiting on the dropped connection raise
        :class:`ConnectionIOError`; ``on_disconnect`` is called for it.

        Raises:
            ClosedConnectionError: the ``Conn`` is closed.
        """
        if self._closed:
            raise self._closed_error()
        link = self._link
        if link is not None:
            link.abort(reconnect_requested(), "reconnect", at_once=True)
            return
        self._life.redial_now()
        if self._dialer is not None:
            self._dialer.cancel()
        self._start_dialer(0.0)

    async def close(self) -> None:
        """Close for good; idempotent.

        Finishes within 100 ms whatever the state (a running ``on_connect``
        included): wakes every pending call with :class:`ClosedConnectionError`,
        cancels and awaits the dial task, and closes the transport (letting it
        flush for at most :data:`FLUSH_ON_CLOSE` seconds, then aborting it).
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = self._loop.create_future()
        try:
            self._life.close(time.monotonic())
            self._queued_discarded(*self._life.outbox.discard())
            await self._shut()
        finally:
            self._closing.set_result(None)

    async def _shut(self) -> None:
        """Release everything of a closed ``Conn``: wake every call, end the dial
        task, close the transports."""
        self._changed.fire()
        links = {link for link in (self._link, self._cursor.reading, self._cursor.owed) if link is not None}
        self._link = None
        for link in links:
            link.wake_all()
            link.close()
        dialer = self._dialer
        if dialer is not None and dialer is not asyncio.current_task():
            dialer.cancel()
            await asyncio.wait([dialer])
        if links:
            _, flushing = await asyncio.wait([link.lost for link in links], timeout=FLUSH_ON_CLOSE)
            for link in links:
                if link.lost in flushing:
                    link.abort()
            await asyncio.wait([link.lost for link in links])

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_life", None) is None or self._closed:  # closed, or never fully made
            return
        message = f"unclosed {self!r}"
        self._life.close(0.0)
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            if self._dialer is not None:
                self._dialer.cancel()
            for link in (self._link, self._cursor.reading):
                if link is not None:
                    link.abort()
        _warn(message, ResourceWarning, source=self)  # last: it may be turned into an error

    # -- waiting --------------------------------------------------------------

    def _timed(self, aw: Awaitable[T], seconds: float | None, op: str) -> Awaitable[T]:
        """*aw*, bounded by *seconds* (None: *aw* itself, no extra coroutine on the
        hot path). A timeout while no connection is up says why (the address, the
        wait, the last error, as ``__cause__``)."""
        if seconds is None:
            return aw

        def expired() -> BaseException:
            if op == "flush":
                outbox = self._life.outbox
                return TimeoutError(flush_timed_out(seconds, len(outbox), outbox.size))
            if self._link is None and not self._closed:
                return self._no_room(seconds) if op == "write" else self._not_connected(seconds)
            return timed_out(op, seconds)

        return within(aw, seconds, expired)

    async def _current(self) -> Connection:
        """The live connection, waiting for one if none is up."""
        while True:
            if self._closed:
                raise self._closed_error()
            link = self._link
            if link is not None:
                return link
            await self._changed.wait()  # (a connection came up, or it closed: looked at again)

    async def _writable(self, data: bytes | memoryview) -> Connection | None:
        """The live connection once its transport has room; or None once *data*
        was queued in the buffer (no connection up, and room for it).

        If the connection holds unread bytes, the loop first polls for I/O: a
        peer that answered, then closed (a reply, then "BYE"), is seen to be gone
        before it gets the next request, which then goes to a fresh connection.
        (Two yields: asyncio runs a task woken by the first before the I/O
        callbacks of the poll that follows it.)
        """
        looked = False
        outbox = self._life.outbox
        while True:
            if self._cursor.write_owed is not None:  # the connection it waited on failed
                raise self._cursor.tell_writer()  # type: ignore[misc]
            if self._closed:
                raise self._closed_error()
            link = self._link
            if link is None:
                if outbox.fits(len(data)):
                    outbox.put(bytes(data))
                    return None
                await (self._current() if outbox.never_fits(len(data)) else self._changed.wait())
                continue
            if link.buffer and not looked:
                looked = True
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                continue
            if link.writable_now():
                return link
            await link.drained()

    def _writable_now(self, data: bytes | memoryview, link: Connection | None) -> Connection | None:
        """:meth:`_writable` without waiting (``timeout=0``).

        Raises:
            TimeoutError: neither a transport with room nor room in the buffer.
        """
        if self._closed:
            raise self._closed_error()
        if link is not None:
            if link.writable_now():
                return link
            raise timed_out("write", 0.0)
        outbox = self._life.outbox
        if not outbox.fits(len(data)):
            raise self._no_room(0.0)
        outbox.put(bytes(data))
        return None

    async def _flushed(self) -> None:
        """Return once the buffer is empty."""
        while True:
            if self._closed:
                raise self._closed_error()
            if not len(self._life.outbox):
                return
            await self._changed.wait()

    async def _reader(self) -> Connection:
        """The connection reads consume now (see :mod:`perconn._reading`)."""
        while True:
            if self._closed:
                raise self._closed_error()
            link = self._cursor.pick(self._link, self._discarded)
            if link is not None:
                return link
            await self._changed.wait()  # (a connection came up, or it closed: looked at again)

    # -- reading --------------------------------------------------------------

    async def _read_frame(self, frame: Frame) -> bytes:
        """Read one item whose end *frame* finds in the buffer."""
        await self._rlock.take()
        try:
            link = self._cursor.reading
            if link is None or link is not self._link:  # not simply reading the live connection
                link = await self._reader()
            while (end := frame(link.buffer)) < 0:
                if self._life.closed:
                    raise self._closed_error()
                if link.failure is not None:
                    self._cursor.raised(link)
                    raise ended(link, link.take(len(link.buffer)))
                await link.wait_data()
            cursor = self._cursor
            if cursor.owed is link:  # Cursor.returned(), inline on the hot path
                cursor.owed = None
            return link.take(end)
        finally:
            self._rlock.give()

    def _discarded(self, link: Connection, nbytes: int) -> None:
        log_discarded(self._opts.logger, link.address, nbytes, link.generation)

    # -- the connection's life ------------------------------------------------

    def _proved(self, link: Connection) -> None:
        if link is self._link:
            self._life.proved()

    def _link_ended(self, link: Connection, at_once: bool = False) -> None:
        """Called by a connection whose transport reported it gone."""
        if self._closed or link is not self._link:
            return
        assert link.failure is not None
        self._cursor.ending(link)
        self._link = None
        error = ConnectionIOError(link.failed_op, link.failure, address=link.address)
        step = self._life.dropped(error, time.monotonic(), at_once=at_once)
        step.log(self._opts.logger)
        self._start_dialer(step.delay or 0.0)
        self._callback("on_disconnect", error)

    def _start_dialer(self, delay: float) -> None:
        shared = _Shared(self._opts, self._resolver, self._life.outbox, self._cursor, self._changed, self._tcp)
        self._dialer = self._loop.create_task(
            _dial_loop(weakref.ref(self), shared, delay),
            name=f"perconn-dial {self.address}",
        )

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()  # one thread: nothing to guard

    def _stopped(self) -> None:
        """The lifecycle gave up: the dial task ends, every waiter wakes to find
        the ``Conn`` closed, and ``close()`` has nothing left to do."""
        self._dialer = None
        self._closing = self._loop.create_future()
        self._closing.set_result(None)
        self._changed.fire()

    def _install(self, link: Connection) -> bool | None:
        """Make a freshly dialed connection the current one; False if closed,
        None if writes are queued (they go out on it first)."""
        if self._closed:
            return False
        if len(self._life.outbox):
            return None
        self._link = link
        link.installed = True
        self._cursor.attach(link)
        self._dialer = None
        proven = link.proven or self._opts.on_connect is not None
        step = self._life.established(time.monotonic(), proven=proven)
        self._changed.fire()
        step.log(self._opts.logger)
        if link.failure is not None:  # it ended between its handshake and now
            self._link_ended(link)
        return True


def _tls(opts: Options, address: Address, budget: float | None) -> dict[str, Any]:
    """The TLS arguments of ``create_connection`` for a dial of *address*: the
    handshake is part of the dial, so it gets the dial's whole *budget* (asyncio's
    own bound, 60 s, when there is none)."""
    if opts.ssl is None:
        return {}
    tls: dict[str, Any] = {"ssl": opts.ssl, "server_hostname": opts.hostname(address)}
    if budget is not None:
        tls["ssl_handshake_timeout"] = budget
    return tls


async def _tls_over(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], Connection], sock: socket.socket, tls: dict[str, Any]
) -> Connection:
    """TLS over the connected *sock*, in two steps: a plain transport, then
    ``start_tls``. Whatever ends the handshake early (a failure, the dial's
    budget, a ``close()`` cancelling it), the plain transport is ours to abort.

    ``create_connection(ssl=)`` in one step leaves it open in one case: cancelled
    just as the handshake completed, it begins TLS's closing exchange (up to 30
    s) on the socket its caller then closes, and the next socket given that
    descriptor number cannot be used on the loop ("File descriptor N is used by
    transport"; seen once in 20 runs of the suite). Two steps also serve a unix
    socket without a server name, which ``create_unix_connection`` refuses.

    Bytes the peer sent before the handshake would reach the ``Connection`` as
    if they had come over TLS: the dial fails instead.
    """
    if sock.family == socket.AF_UNIX:
        transport, link = await loop.create_unix_connection(factory, sock=sock)
    else:
        transport, link = await loop.create_connection(factory, sock=sock)
    try:
        wrapped = await loop.start_tls(
            transport,
            link,
            tls["ssl"],
            server_hostname=tls["server_hostname"],
            ssl_handshake_timeout=tls.get("ssl_handshake_timeout"),
        )
        if wrapped is None:  # (the transport closed meanwhile)
            raise ConnectionResetError("the connection closed before the TLS handshake")
        if link.buffer:
            raise ssl.SSLError(f"{len(link.buffer)} bytes arrived before the TLS handshake, in the clear")
        link.transport = wrapped
    except BaseException:
        transport.abort()
        raise
    return link


async def _dial_once(
    loop: asyncio.AbstractEventLoop,
    ref: weakref.ref[Conn],
    shared: _Shared,
    stage: _Stage,
    dial: tuple[Address, float | None, int],
) -> Connection:
    """One *dial* (the address, its budget and the generation it would have, as
    ``begin_dial`` said): look the address up, connect to the first of its IP
    addresses that accepts, run ``on_connect``; *stage* says which, for the
    error if the budget runs out.

    A literal address (no lookup, one target) begins its connect before any
    timer is armed for the budget: a connect refused at once (a dial storm is
    mostly these) fails having made none, nor any task or object of its wait.
    A name is looked up first, within the budget, and then dialed as if a literal,
    with what is left of it."""
    address, budget, generation = dial
    found = shared.resolver.lookup(address)
    if isinstance(found, Lookup):
        stage.name = f"lookup of {address.host}"
        begun = loop.time()
        if not await lookups.wait_for(found, budget):
            raise stage.expired()  # (the lookup goes on, for the next dial to wait for)
        found = shared.resolver.take(found)
        stage.name = "connect"
        if budget is not None:
            budget = max(0.0, budget - (loop.time() - begun))
            dial = (address, budget, generation)
    started = start_connect(found[0]) if len(found) == 1 else None
    try:
        return await within(_dialed(loop, ref, shared, stage, dial, found, started), budget, stage.expired)
    except BaseException:
        if started is not None:  # (Python 3.10's wait_for may cancel _dialed before it starts: nothing else closes it)
            started[0].close()
        raise


async def _dialed(
    loop: asyncio.AbstractEventLoop,
    ref: weakref.ref[Conn],
    shared: _Shared,
    stage: _Stage,
    dial: tuple[Address, float | None, int],
    found: list[Target],
    started: tuple[socket.socket, bool] | None,
) -> Connection:
    """:func:`_dial_once`, once begun: the connect (*started*, or a race of
    what *found* has), TLS (with ``ssl``), ``on_connect``."""
    address, budget, generation = dial
    opts, options = shared.opts, shared.options

    def factory() -> Connection:
        return Connection(ref, loop, address.text, options)

    tls = _tls(opts, address, budget)
    if started is not None:
        sock, connected = started
        if not connected:
            sock = await finish_connect(loop, sock)
    else:
        sock = await connect_first(loop, address, found)
    if opts.ssl is not None:
        stage.name = "TLS handshake"
    try:
        if tls:
            link = await _tls_over(loop, factory, sock, tls)
        elif sock.family == socket.AF_UNIX:
            _, link = await loop.create_unix_connection(factory, sock=sock)
        else:
            _, link = await loop.create_connection(factory, sock=sock)
    except BaseException:  # a transport made of it is closing (asyncio) or holds it open (uvloop)
        sock.close()
        raise
    link.generation = generation
    hook = opts.on_connect
    if hook is None:
        return link
    stage.name = "on_connect"
    try:
        await cast(OnConnect, hook)(Link(link, None if budget is None else loop.time() + budget))
    except BaseException:
        link.abort()
        raise
    return link


class _Shared(NamedTuple):
    """What the dial task uses of its ``Conn``, which it holds only weakly."""

    opts: Options
    resolver: Resolver
    outbox: Outbox
    cursor: Cursor[Connection]
    changed: Signal
    options: list[SockOpt]  # the TCP options of every connection (see perconn._sockopts)


class _Stage:
    """What a dial is doing (``name``), for the error if its *budget* runs out."""

    __slots__ = ("budget", "name")

    def __init__(self) -> None:
        self.name = "connect"
        self.budget: float | None = None

    def expired(self) -> BaseException:
        return timed_out(self.name, self.budget or 0.0)


async def _dial_loop(ref: weakref.ref[Conn], shared: _Shared, delay: float) -> None:
    """Sleep and dial until connected, closed or given up; holds the ``Conn``
    only weakly, so a ``Conn`` dropped without ``close()`` can be collected.
    Nothing of one dial outlives it into the sleep before the next (in a storm,
    that is what the garbage collector would walk)."""
    loop = asyncio.get_running_loop()
    stage = _Stage()
    while True:
        try:
            await pacing.turn(delay)  # the backoff, then in a dial storm, dials take turns: the program keeps its loop
        except asyncio.CancelledError:  # closed (or redialing at once)
            pacing.forget()
            raise
        begun = begin_dial(ref)
        if begun is None:
            return
        stage.name, stage.budget = "connect", begun[1]
        try:
            link = await _dial_once(loop, ref, shared, stage, begun)
            installed = await _flush_and_install(ref, link, shared)
        except Exception as exc:  # OSError (TimeoutError, socket.gaierror), the hook's, or a failed flush
            next_delay = dial_failed(ref, exc, ours=stage.name != "on_connect")
            if next_delay is None:
                return
            delay, begun = next_delay, None
            continue
        if not installed:
            link.abort()
        return


async def _flush_and_install(ref: weakref.ref[Conn], link: Connection, shared: _Shared) -> bool:
    """Hand the queued writes to the fresh *link* in order, never more than its
    transport's high-water mark (plus one write) at a time, then make it current
    once the queue is empty; False if the ``Conn`` closed.

    Raises:
        BaseException: *link* failed (why), or the dial was cancelled; *link* is
            aborted. A write handed to it is not handed again; the others stay queued.
    """
    outbox = shared.outbox
    try:
        while (installed := install(ref, link)) is None:
            if not link.writable_now():
                if link.failure is not None:
                    raise link.failure
                await link.drained()
                continue
            data = outbox.head()
            assert data is not None  # install() said writes are queued
            shared.cursor.wrote(link)  # reads follow writes: replies come on this connection
            link.write(data)
            outbox.handed(data)
            shared.changed.fire()
    except BaseException:
        link.abort()
        raise
    return installed


_connect = publish(
    Conn,
    "perconn.aio",
    """Return a :class:`perconn.aio.Conn` to *address* at once; dialing runs in a
background task. A plain (non-async) call: it needs a running event loop and
raises ``RuntimeError`` without one. The options, defaults and validation are
those of :func:`perconn.connect`.""",
)

if TYPE_CHECKING:

    def connect(address: str | Sequence[str], **options: Unpack[ConnectOptions[OnConnect]]) -> Conn: ...

else:
    connect = _connect
