"""The thread-safe synchronous persistent connection, :class:`Conn`.

Threads: an idle connected ``Conn`` holds none. One background thread exists
only while dialing (sleeping in backoff, connecting, running ``on_connect``);
it exits once a connection is up or the ``Conn`` is closed.

Locks: ``_lock`` (with the condition ``_cond``) guards the state; ``_rlock``
serialises readers and ``_wlock`` serialises writers, so a blocked reader never
delays a writer. An op lock is held only while doing I/O on a connection that is
current or already shut down, so taking both (to close a socket no other thread
is inside) never waits long. Order: ``_rlock`` before ``_wlock`` before ``_lock``.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .._address import Address
from .._base import ConnBase, begin_dial, dial_failed, install, publish
from .._errors import ConnectionIOError, Error, peer_closed, reconnect_requested
from .._log import log_discarded
from .._lookup import Lookup, Resolver
from .._messages import flush_timed_out
from .._options import Options
from .._outbox import Outbox
from .._reading import DEFAULT_LIMIT, Cursor, Frame, exactly, until
from .._sockopts import SockOpt, tcp_options
from .._validate import check_bytes, check_count, check_separator, check_size, check_timeout, timed_out
from .dialer import DialAborted, Dialer, Step, race
from .hub import Call, JobGen, WaitLookup, hub
from .link import MAX_CHUNK, Connection, Link
from .tls import TLSConnection, handshake

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._options import ConnectOptions

__all__ = ["CLOSE_BUDGET", "FLUSH_BATCH", "IDLE_PROBE_AFTER", "Conn", "OnConnect", "connect"]

OnConnect = Callable[[Link], object]
"""The type of the synchronous ``on_connect`` hook."""

_monotonic = time.monotonic  # (one lookup fewer per write)

IDLE_PROBE_AFTER = 0.001
"""Seconds since a connection's last write after which the next write first
checks that the peer has not closed it (so does a write while unread bytes are
buffered). A busy writer never pays for the check; an idle one pays one
non-blocking ``recv(MSG_PEEK)``."""

FLUSH_BATCH = 256 * 1024
"""Bytes of queued writes handed to a fresh connection in one ``sendall`` (one
write at a time would cost a thread switch each, and let a busy writer refill
the queue as fast as it drains)."""

RETIRE_POLL = 0.005
"""Seconds between the dial's attempts to close a failed connection's socket
while a reader or writer is still leaving it."""

CLOSE_BUDGET = 0.08
"""Seconds ``close()`` may spend waiting for other threads to let go of the socket
and for the dial thread to exit (the contract is 100 ms)."""


class Conn(ConnBase[Connection, OnConnect]):
    """A pseudo-persistent client connection: one object to read and write for the
    life of the program while connections come and go underneath.

    ``Conn(address, **options)`` and :func:`perconn.connect` are the same call.
    All methods are thread-safe; one reader and one writer proceed concurrently
    (full duplex), concurrent readers take turns, and concurrent writers take
    turns (their bytes never interleave).

    Guarantees:
        - Operations issued while no connection is up wait for one (bounded by
          their ``timeout``); they never fail just because the peer is down.
        - An I/O failure on an established connection raises
          :class:`ConnectionIOError`, is logged, closes that connection and starts
          redialing; the next operation uses the next connection.
        - A single :meth:`write` goes out whole on one connection, or raises.
        - Reads follow writes: once a write went out on a newer connection, no
          read returns bytes of an older one.

    Not guaranteed: bytes a successful :meth:`write` handed to the kernel reached
    the peer. If the connection drops afterwards they may be lost, and TCP cannot
    tell; protocols that need delivery need acknowledgements.
    """

    _public_name = "perconn.Conn"

    def _start(self, options: Options) -> None:
        self._opts = options
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._cursor: Cursor[Connection] = Cursor()
        self._link: Connection | None = None
        self._dialer: Dialer | None = None
        self._resolver = Resolver()  # outlives dial threads: a pending lookup is reused
        self._life = self._lifecycle(options)
        with self._lock:
            self._start_dialer(0.0, None)

    # -- public API ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now, as far as a non-blocking check
        can tell (one the peer closed is not reported; it may fail the next moment)."""
        link = self._link
        if link is None:
            return False
        gone = link.peer_gone()
        if gone is not None:
            self._io_failed(link, "read", gone)
            return False
        return True

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until a connection is up (one the peer already closed does not count).

        Raises:
            TimeoutError: none came up within *timeout* seconds (the message and
                ``__cause__`` say why: the last dial's error).
            ClosedConnectionError: the ``Conn`` is or became closed
                (:class:`GaveUpError` if it gave up).
        """
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            link = self._wait_link(deadline, seconds)
            gone = link.peer_gone()
            if gone is None:
                return
            self._io_failed(link, "read", gone)

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read and return 1 to *n* bytes (``b""`` if *n* is 0), waiting for a
        connection if none is up. At most :data:`MAX_CHUNK` bytes are asked of the
        socket at once, so a huge *n* costs only what arrived.

        Raises:
            TimeoutError: nothing arrived within *timeout*; the connection stays up.
            ConnectionIOError: the connection failed (peer EOF included).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        seconds = None if timeout is None else check_timeout(timeout)
        if (n.__class__ is not int or n < 1) and not check_count("n", n):
            return b""
        deadline = None if seconds is None else time.monotonic() + seconds
        link = self._enter(self._rlock, deadline, seconds)
        try:
            cursor = self._cursor
            if cursor.reading is not link:
                link = self._pick(link)
            data = link.take(n) if link.buffer else self._recv(link, n, deadline, seconds)
            if cursor.owed is link:  # Cursor.returned(), inline on the hot path
                cursor.owed = None
            return data
        finally:
            self._rlock.release()

    def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes from one connection (``b""`` if *n* is 0).

        On timeout the bytes received so far are kept and returned by the next
        read; if the connection fails they are handed back as the error's
        ``partial`` (they never straddle two connections).

        Raises:
            TimeoutError: not all *n* bytes arrived within *timeout*.
            ConnectionIOError: the connection failed before *n* bytes arrived.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        link = self._link
        if timeout is None and link is not None and n.__class__ is int and n > 0:
            # The hot path: the live connection, nothing buffered (else the general path below): one
            # recv when all n bytes are there; else the chunks joined once. Each recv asks for all
            # that is still needed (not MAX_CHUNK): what this returns holds that much anyway.
            rlock, cursor = self._rlock, self._cursor
            rlock.acquire()
            try:
                if link is self._link and not link.buffer and link.proven and cursor.reading is link:
                    try:
                        data = link.sock.recv(n)
                    except OSError as exc:
                        raise self._read_failed(link, exc)  # noqa: B904 (the cause is set inside)
                    if len(data) < n:
                        if not data:
                            raise self._read_failed(link, peer_closed())
                        data = self._recv_rest(link, data, n)
                    if cursor.owed is link:  # Cursor.returned(), inline
                        cursor.owed = None
                    return data
            finally:
                rlock.release()
        n = check_count("n", n)
        return self._read_frame(exactly(n), timeout) if n else b""

    def readuntil(self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT, timeout: float | None = None) -> bytes:
        """Read up to and including *separator*, from one connection.

        Raises:
            asyncio.LimitOverrunError: no separator within *limit* bytes; nothing
                is consumed, the bytes stay readable.
            TimeoutError: no separator arrived within *timeout*; nothing is lost.
            ConnectionIOError: the connection ended first; ``partial`` holds the
                bytes received without a separator.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        return self._read_frame(until(check_separator(separator), check_size("limit", limit)), timeout)

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Write all of *data* on one connection and return ``len(data)``.

        Waits for a connection if none is up, unless ``buffer`` has room: then
        *data* is queued (copied) and the call returns at once; queued writes go
        out in order on the next connection before any later write. If the
        connection was idle, first checks that the peer has not closed it, and
        if so reconnects and writes on the new one (on Linux a write into a
        connection the peer already closed would otherwise succeed and its bytes
        vanish).

        ``timeout=0`` never blocks: *data* is queued, or handed to the socket
        (what the socket did not take at once is sent before any later write),
        or ``TimeoutError`` is raised with nothing sent.

        Raises:
            TimeoutError: *data* was not all sent (or queued) within *timeout*.
                If none of it went out the connection stays up (counted in
                ``stats.dropped_writes``); if part did, its stream is torn, so that
                connection is dropped (and logged) before this raises.
            ConnectionIOError: the connection failed.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        link = self._link
        if timeout is None and link is not None and data.__class__ is bytes and self._cursor.write_owed is None:
            # The hot path: the live connection, busy (no probe due), nothing owed or left to send
            # (else the general path below). It takes what the general path would, in its order.
            wlock = self._wlock
            wlock.acquire()
            try:
                now = _monotonic()
                if (
                    link is self._link
                    and link.rest is None
                    and now - link.last_write < IDLE_PROBE_AFTER
                    and not link.buffer
                ):
                    # No call between the test that link is current and this store: no other
                    # thread runs in between, and _io_failed makes link not current before it
                    # looks at what is owed, so it sees this write (the general path: _owe).
                    self._cursor.owed = link
                    try:
                        link.sock.sendall(data)
                    except OSError as exc:
                        raise self._write_failed(link, exc)  # noqa: B904 (the cause is set inside)
                    link.last_write = now
                    return len(data)
            finally:
                wlock.release()
        view = data if data.__class__ is bytes else check_bytes("data", data)
        seconds = None if timeout is None else check_timeout(timeout)
        if self._cursor.write_owed is not None:  # a failure no call has reported yet
            with self._lock:
                error = self._cursor.tell_writer()
            if error is not None:
                raise error
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self._link is None and self._opts.buffer and self._park(view, deadline, seconds):
                return len(view)
            wlock = self._wlock
            try:
                link = self._enter(wlock, deadline, seconds)
            except TimeoutError:
                self._dropped()
                raise
            try:
                now = _monotonic()
                # Probe an idle connection, or one holding unread bytes: a peer that
                # answered, then closed (a reply, then "BYE") must not get the next request.
                gone = None if now - link.last_write < IDLE_PROBE_AFTER and not link.buffer else link.peer_gone()
                if gone is None:
                    if not self._owe(link):  # it ended since _enter chose it: write on the next one
                        continue
                    self._send(link, view, deadline, seconds)
                    link.last_write = now
                    return len(view)
            finally:
                wlock.release()
            # The peer closed the connection while it sat idle: redial, then write there.
            self._io_failed(link, "write", gone)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued write was handed to a connection (and the
        rest of a ``timeout=0`` write the socket had not taken, too). A connection
        dropping meanwhile does not end the wait: it goes on with the next one.
        ``flush()`` then ``close()`` shuts down without discarding anything.

        Raises:
            TimeoutError: writes were still queued after *timeout*; they stay queued.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        outbox = self._life.outbox
        with self._cond:
            while True:
                if self._closed:
                    raise self._closed_error()
                if not len(outbox):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(flush_timed_out(seconds or 0.0, len(outbox), outbox.size))
                self._cond.wait(remaining)
            link = self._link
        if link is None or link.rest is None:
            return
        if not self._wlock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise timed_out("flush", seconds or 0.0)
        try:
            if link.rest is not None and link is self._link:
                self._send(link, b"", deadline, seconds)
        finally:
            self._wlock.release()

    def reconnect(self) -> None:
        """Drop the current connection (if any) and dial again at once, the
        backoff schedule reset. Calls blocked on the dropped connection raise
        :class:`ConnectionIOError`; ``on_disconnect`` is called for it.

        Raises:
            ClosedConnectionError: the ``Conn`` is closed.
        """
        with self._cond:
            if self._closed:
                raise self._closed_error()
            link = self._link
            if link is None:
                self._life.redial_now()
                if self._dialer is not None:
                    self._dialer.wake()
                return
        self._io_failed(link, "reconnect", reconnect_requested(), at_once=True)

    def close(self) -> None:
        """Close the connection for good; idempotent.

        Returns within 100 ms whatever the state (a running ``on_connect`` hook
        included), wakes every blocked call with :class:`ClosedConnectionError`
        and stops redialing. A name lookup inside the OS resolver ends on its own,
        in its daemon thread; a dial thread inside a hook that waits on something
        other than its ``Link`` exits, closing what it opened, when that returns.

        Raises:
            ConnectionIOError: closing the socket failed (``op == "close"``); the
                ``Conn`` is closed all the same.
        """
        deadline = time.monotonic() + CLOSE_BUDGET
        with self._cond:
            if not self._life.close(time.monotonic()):
                return
            discarded = self._life.outbox.discard()
            link, self._link = self._link, None
            dialer = self._dialer
            if dialer is not None:
                dialer.wake()
                if dialer.handshaking is not None:
                    dialer.handshaking()
            self._cond.notify_all()
        self._queued_discarded(*discarded)
        try:
            if link is not None:
                link.shutdown()
                self._retire(link, deadline)
        finally:
            # A dial asleep between attempts holds nothing open, and once it wakes
            # it finds the Conn closed: it ends on the dialer thread, unwaited.
            if dialer is not None and not dialer.sleeping:
                dialer.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Conn:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- waiting ------------------------------------------------------------

    def _wait_link(self, deadline: float | None, seconds: float | None) -> Connection:
        with self._cond:
            while True:
                if self._closed:
                    raise self._closed_error()
                if self._link is not None:
                    return self._link
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._not_connected(seconds or 0.0)
                    self._cond.wait(remaining)

    def _enter(self, lock: threading.Lock, deadline: float | None, seconds: float | None) -> Connection:
        """Take *lock* and return the current connection, waiting for one if none
        is up; the lock is held on return."""
        while True:
            if deadline is None:
                lock.acquire()
            elif not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("another call kept the connection busy")
            link = self._link
            if link is not None:
                return link
            lock.release()
            self._wait_link(deadline, seconds)

    def _pick(self, live: Connection) -> Connection:
        """The connection reads consume now, given the *live* one (the caller holds
        ``_rlock``): see :mod:`perconn._reading`."""
        picked = self._cursor.pick(live, self._discarded)
        assert picked is not None  # the live connection, if nothing older comes first
        return picked

    # -- I/O on one connection ------------------------------------------------

    def _read_frame(self, frame: Frame, timeout: object) -> bytes:
        """Read the item *frame* finds, from the connection reads consume."""
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        link = self._enter(self._rlock, deadline, seconds)
        try:
            if self._cursor.reading is not link:
                link = self._pick(link)
            if link.failure is None:
                try:
                    end = link.fill(frame, deadline)
                except (OSError, EOFError) as exc:
                    raise self._read_failed(link, exc, partial=True)  # noqa: B904 (cause set inside)
                if end < 0:
                    raise timed_out("read", seconds or 0.0)
                if not link.proven and link.buffer:
                    self._proved(link)
            elif (end := frame(link.buffer)) < 0:
                raise self._read_failed(link, link.failure, partial=True)
            self._cursor.returned(link)
            return link.take(end)
        finally:
            self._rlock.release()

    def _recv(self, link: Connection, n: int, deadline: float | None, seconds: float | None) -> bytes:
        """Receive 1 to *n* bytes from *link* (the caller holds ``_rlock``)."""
        try:
            if deadline is None:  # the hot path, inline
                data: bytes | None = link.sock.recv(n if n <= MAX_CHUNK else MAX_CHUNK)
            else:
                data = link.recv(n, deadline)
        except OSError as exc:
            raise self._read_failed(link, exc)  # noqa: B904 (the cause is set inside)
        if data is None:
            raise timed_out("read", seconds or 0.0)
        if not data:
            raise self._read_failed(link, peer_closed())
        if not link.proven:
            self._proved(link)
        return data

    def _recv_rest(self, link: Connection, first: bytes, n: int) -> bytes:
        """*first* and the bytes that follow it, *n* in all, joined once (a bulk
        read costs one copy more than the kernel's, as ``recv`` and a join do).
        The caller holds ``_rlock``; a failure hands back what came as ``partial``."""
        chunks = [first]
        got = len(first)
        while got < n:
            try:
                more = link.sock.recv(n - got)
            except OSError as exc:
                cause: BaseException = exc
            else:
                if more:
                    chunks.append(more)
                    got += len(more)
                    continue
                cause = peer_closed()
            link.buffer += b"".join(chunks)  # (what the error hands back)
            raise self._read_failed(link, cause, partial=True)
        return b"".join(chunks)

    def _send(self, link: Connection, view: bytes | memoryview, deadline: float | None, seconds: float | None) -> None:
        """Send all of *view* on *link*, after the rest of an earlier write (the
        caller holds ``_wlock``); with ``seconds == 0``, only what the socket
        takes at once, the rest kept for the next write."""
        try:
            if deadline is None and link.rest is None:
                link.sock.sendall(view)
                return
            if link.rest is not None and not link.send_rest(deadline):
                sent = 0  # not even the earlier write's rest went: nothing of this one
            elif not view:
                return
            elif seconds == 0:
                sent = len(view) if not view or link.send_now(view) else 0
            else:
                sent = link.send(view, deadline)
        except OSError as exc:
            raise self._write_failed(link, exc)  # noqa: B904 (the cause is set inside)
        if sent == len(view):
            return
        error = timed_out("write", seconds or 0.0)
        if sent:  # the stream is torn: nothing written later may follow these bytes
            self._io_failed(link, "write", TimeoutError(f"{error} with {sent} of {len(view)} bytes sent"))
        else:
            self._dropped()
        raise error

    def _owe(self, link: Connection) -> bool:
        """Record that the write about to go out on *link* is owed a reply there
        (reads follow writes), unless *link* ended since the writer chose it:
        False then. Atomic with :meth:`_io_failed`, so a reader is owed the end
        of a connection exactly when a write went out on it; else a request sent
        on a connection just dropped would leave its reader waiting on the next
        one for a reply that never comes."""
        with self._lock:
            if link.failure is not None:
                return False
            self._cursor.owed = link
            return True

    def _write_failed(self, link: Connection, exc: OSError) -> Error:
        """The error for a writer (holding ``_wlock``) whose send on *link* failed."""
        failed = self._io_failed(link, "write", exc)
        self._cursor.raised(link)  # this writer hears of it: nobody else is owed it
        return failed

    def _park(self, view: bytes | memoryview, deadline: float | None, seconds: float | None) -> bool:
        """While no connection is up, queue a copy of *view* in the buffer if it
        fits, waiting for room until *deadline*. False once a connection is up,
        or if *view* can never fit: then it waits for a connection instead."""
        outbox = self._life.outbox
        with self._cond:
            while True:
                if self._closed:
                    raise self._closed_error()
                if self._link is not None or outbox.never_fits(len(view)):
                    return False
                if outbox.fits(len(view)):
                    outbox.put(bytes(view))
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    outbox.refused()
                    raise self._no_room(seconds or 0.0)
                self._cond.wait(remaining)

    def _dropped(self) -> None:
        """A write ended with nothing sent."""
        with self._lock:
            self._life.outbox.refused()

    def _read_failed(self, link: Connection, cause: BaseException, partial: bool = False) -> Error:
        """The error for a reader (holding ``_rlock``) that found *link* failed:
        it hears of the end itself, so the cursor will not raise it again.
        *partial*: hand back the bytes a framed read had received."""
        error = self._io_failed(link, "read", cause)
        self._cursor.raised(link)
        if partial and isinstance(error, ConnectionIOError):
            error.partial = link.take(len(link.buffer))
        return error

    def _proved(self, link: Connection) -> None:
        link.proven = True
        with self._lock:
            if link is self._link:
                self._life.proved()

    def _discarded(self, link: Connection, nbytes: int) -> None:
        log_discarded(self._opts.logger, link.address, nbytes, link.generation)

    # -- a connection ends ------------------------------------------------------

    def _io_failed(self, link: Connection, op: str, cause: BaseException, *, at_once: bool = False) -> Error:
        """Turn a failure on *link* into the error to raise; if *link* is still
        the current connection, drop it, log it, tell ``on_disconnect`` and start
        redialing (*at_once*: ``reconnect()`` asked)."""
        if self._closed:  # the failure is close() shutting the socket down
            return self._closed_error()
        with self._cond:
            current = link is self._link
            if current:
                self._link = None  # first: a writer that found it current has recorded its write (see write)
                link.failure = cause
                self._cursor.ending(link)
            error = ConnectionIOError(op, link.failure or cause, address=link.address)
            if current:
                step = self._life.dropped(error, time.monotonic(), at_once=at_once)
                self._start_dialer(step.delay or 0.0, link)
        if current:  # the first failure seen on a connection is its one log record
            link.shutdown()
            step.log(self._opts.logger)
            self._callback("on_disconnect", error)
        return error

    def _try_retire(self, link: Connection) -> bool:
        """Close a shut-down link's socket if no reader or writer is inside it;
        False (nothing done) if one is."""
        if not self._rlock.acquire(blocking=False):
            return False
        try:
            if not self._wlock.acquire(blocking=False):
                return False
            try:
                with contextlib.suppress(OSError):
                    link.sock.close()
            finally:
                self._wlock.release()
        finally:
            self._rlock.release()
        return True

    def _retire(self, link: Connection, deadline: float) -> None:
        """At ``close()``: close the shut-down link's socket once no reader or
        writer is inside it, waiting for them until *deadline* at most."""
        timeout = max(0.0, deadline - time.monotonic())
        got_r = self._rlock.acquire(timeout=timeout)
        got_w = self._wlock.acquire(timeout=timeout)
        try:
            link.sock.close()
        except OSError as exc:
            raise ConnectionIOError("close", exc, address=link.address) from exc
        finally:
            if got_w:
                self._wlock.release()
            if got_r:
                self._rlock.release()

    # -- dialing (a job of the process-wide dialer thread) -----------------

    def _start_dialer(self, delay: float, retired: Connection | None) -> None:
        """Start the dial thread (caller holds ``_lock``). It holds the ``Conn``
        only weakly, so a ``Conn`` dropped without ``close()`` can be collected."""
        self._dialer = Dialer(f"perconn-dial {self.address}")
        self._dialer.start(functools.partial(_dial_job, weakref.ref(self), delay, retired))

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        return self._lock  # (_cond's own lock: taken directly, its Python-level __enter__ skipped)

    def _stopped(self) -> None:
        """The lifecycle gave up (caller holds ``_lock``): the dial thread ends
        and every waiter wakes to find the ``Conn`` closed."""
        self._dialer = None
        self._cond.notify_all()

    def _install(self, link: Connection) -> bool | None:
        """Make a freshly dialed connection the current one; False (and nothing
        done) if the ``Conn`` was closed meanwhile, None if writes are queued."""
        with self._cond:
            if self._closed:
                return False
            if len(self._life.outbox):
                return None
            now = time.monotonic()
            link.last_write = now
            self._link = link
            step = self._life.established(now, proven=self._opts.on_connect is not None)
            self._dialer = None
            self._cond.notify_all()
        step.log(self._opts.logger)
        return True

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_life", None) is None or self._closed:
            return
        message = f"unclosed {self!r}"
        with contextlib.suppress(Exception):
            self.close()  # first: the warning may be turned into an error
        _warn(message, ResourceWarning, source=self)


def _dial_once(
    opts: Options,
    resolver: Resolver,
    options: list[SockOpt],
    address: Address,
    budget: float | None,
    generation: int,
) -> Step[tuple[Connection, float | None]]:
    """One dial of *address*: look it up, connect, complete TLS (with ``ssl``);
    the step returns the connection and the dial's deadline (``on_connect`` runs
    within it too). *budget* bounds them together. The step raises what failed;
    a connect to a literal address that fails at once raises from this call,
    before any step is made (see :func:`race`)."""
    deadline = None if budget is None else time.monotonic() + budget
    found = resolver.lookup(address)
    if isinstance(found, Lookup):
        return _dial_found(opts, resolver, options, address, budget, generation, deadline, found)
    connecting = race(address, found, deadline, budget, options, spares=hub.spares)
    return _connected(opts, address, generation, deadline, budget, connecting)


def _dial_found(
    opts: Options,
    resolver: Resolver,
    options: list[SockOpt],
    address: Address,
    budget: float | None,
    generation: int,
    deadline: float | None,
    lookup: Lookup,
) -> Step[tuple[Connection, float | None]]:
    """:func:`_dial_once` of a name: wait for *lookup* until *deadline*, then
    connect to what it found. It waits as one generator and one request: in a
    storm, the dials of a name pile up waiting for its lookup, and what they
    hold meanwhile is what the garbage collector walks.

    Raises:
        OSError: the lookup failed (the next dial looks up afresh), or what
            the connect or TLS raised; ``TimeoutError`` when *deadline* came
            first (the lookup goes on, for the next dial to wait for).
    """
    if not lookup.done and not (yield WaitLookup(lookup, deadline)):
        raise timed_out(f"lookup of {lookup.address.host}", budget or 0.0)
    connecting = race(address, resolver.take(lookup), deadline, budget, options, spares=hub.spares)
    return (yield from _connected(opts, address, generation, deadline, budget, connecting))


def _connected(
    opts: Options,
    address: Address,
    generation: int,
    deadline: float | None,
    budget: float | None,
    connecting: Step[socket.socket],
) -> Step[tuple[Connection, float | None]]:
    """:func:`_dial_once` once *connecting* (begun): its socket, then TLS (with ``ssl``)."""
    sock = yield from connecting
    if opts.ssl is None:
        return Connection(sock, address.text, generation, time.monotonic()), deadline
    try:
        stream = yield from handshake(sock, opts.ssl, opts.hostname(address), deadline, budget)
    except BaseException:
        sock.close()
        raise
    return TLSConnection(stream, address.text, generation, time.monotonic()), deadline


def _dial_job(ref: weakref.ref[Conn], delay: float, retired: Connection | None, dialer: Dialer) -> JobGen:
    """The dial, a job of the process-wide dialer thread: retire the failed
    connection, then sleep and dial until connected, closed or given up. It
    takes a strong reference to the ``Conn`` only for the moment it reports to
    it, never while it waits."""
    conn = ref()
    if conn is None:
        return
    opts, resolver = conn._opts, conn._resolver
    outbox, cond, cursor = conn._life.outbox, conn._cond, conn._cursor
    options = tcp_options(opts.keepalive)
    del conn
    while retired is not None:  # readers and writers leave a shut-down socket at once
        conn = ref()
        if conn is None or conn._try_retire(retired):
            break
        del conn
        with contextlib.suppress(DialAborted):
            yield time.monotonic() + RETIRE_POLL  # (a Sleep)
    conn = None
    while True:
        if delay > 0:
            dialer.sleeping = True  # close() need not wait for the job now: it holds nothing open
            try:
                yield time.monotonic() + delay  # (a Sleep)
            except DialAborted:  # closing (begin_dial says so) or reconnect(): dial now
                dialer.drain()
            dialer.sleeping = False  # (before begin_dial looks at whether it is closed)
        begun = begin_dial(ref)
        if begun is None:
            return
        hooked = False
        try:
            link, deadline = yield from _dial_once(opts, resolver, options, *begun)
            installed = install(ref, link) if opts.on_connect is None else None  # nothing to run, nothing queued
            if installed is None:  # user code or queued writes: in a thread of their own
                handover = functools.partial(_handover, ref, link, deadline, opts, dialer, outbox, cond, cursor)
                hooked = opts.on_connect is not None
                installed = yield Call(handover, dialer.name.replace("dial", "handshake", 1))
        except DialAborted:  # woken: closing (checked above, next round) or reconnect()
            dialer.drain()
            delay = 0.0
            continue
        except Exception as exc:  # the dial's, the hook's or the queued writes' failure
            next_delay = dial_failed(ref, exc, ours=not hooked)
            if next_delay is None:
                return
            delay, begun = next_delay, None  # (nothing of this dial outlives it into the sleep)
            continue
        if not installed:
            link.sock.close()
        return


def _handover(
    ref: weakref.ref[Conn],
    link: Connection,
    deadline: float | None,
    opts: Options,
    dialer: Dialer,
    outbox: Outbox,
    cond: threading.Condition,
    cursor: Cursor[Connection],
) -> bool:
    """Run ``on_connect`` on the fresh *link*, hand it the queued writes, and make
    it current (:func:`_flush_and_install`); closes it if any of that fails."""
    dialer.handshaking = link.shutdown  # close() wakes whatever blocks on it
    try:
        if opts.on_connect is not None:
            opts.on_connect(Link(link, deadline))
        return _flush_and_install(ref, link, outbox, cond, cursor)
    except BaseException:
        link.sock.close()
        raise
    finally:
        dialer.handshaking = None


def _flush_and_install(
    ref: weakref.ref[Conn], link: Connection, outbox: Outbox, cond: threading.Condition, cursor: Cursor[Connection]
) -> bool:
    """Hand the queued writes to the fresh *link* in order, then make it current
    (once the queue is empty, atomically); False if the ``Conn`` closed.

    Raises:
        OSError: *link* failed; the write being sent is not sent again, those
            not yet handed to it stay queued for the next connection.
    """
    while (installed := install(ref, link)) is None:
        with cond:
            batch = outbox.batch(FLUSH_BATCH)
        if not batch:  # close() discarded the queue: the next install says so
            continue
        cursor.wrote(link)  # reads follow writes: replies come on this connection
        try:
            link.sock.sendall(b"".join(batch) if len(batch) > 1 else batch[0])
        finally:
            with cond:
                for data in batch:
                    outbox.handed(data)
                cond.notify_all()
    return installed


_connect = publish(
    Conn, "perconn", "Return a :class:`perconn.Conn` to *address* at once; dialing happens in a background thread."
)

if TYPE_CHECKING:

    def connect(address: str | Sequence[str], **options: Unpack[ConnectOptions[OnConnect]]) -> Conn: ...

else:
    connect = _connect
