"""The thread-safe synchronous persistent connection, :class:`Conn`.

Threads: an idle connected ``Conn`` holds none. One background thread exists
only while dialing (sleeping in backoff or connecting); it exits once a
connection is up or the ``Conn`` is closed.

Locks: ``_lock`` (with the condition ``_cond``) guards the state; ``_rlock``
serialises readers and ``_wlock`` serialises writers, so a blocked reader never
delays a writer. An op lock is held only while doing I/O on a connection that is
current or already shut down, so taking both (to close a socket no other thread
is inside) never waits long. Order: ``_rlock`` before ``_wlock`` before ``_lock``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import select
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType

from ._base import ConnBase
from ._dial import DialAborted, connect_first, resolve, wait_fd
from ._errors import ClosedConnectionError, ConnectionIOError, DialError, Error, peer_closed
from ._log import log_connected, log_dial_failed, log_io_failed
from ._options import LoggerLike, Options, connect_function, make_options
from ._state import Lifecycle
from ._validate import check_bytes, check_size, deadline_after

__all__ = ["Conn", "connect"]

IDLE_PROBE_AFTER = 0.001
"""Seconds since a connection's last write after which the next write first
checks that the peer has not closed it. A busy writer never pays for the check;
an idle one pays one non-blocking ``recv(MSG_PEEK)``."""

CLOSE_BUDGET = 0.08
"""Seconds ``close()`` may spend waiting for other threads to let go of the socket
and for the dial thread to exit (the contract is 100 ms)."""

_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT


class _Link:
    """One established connection and what belongs to it alone."""

    __slots__ = ("failure", "last_write", "rbuf", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.rbuf = bytearray()  # bytes received but not yet returned (after a timeout)
        self.last_write = now
        self.failure: BaseException | None = None  # why it was dropped

    def take(self, n: int) -> bytes:
        data = bytes(self.rbuf[:n])
        del self.rbuf[:n]
        return data

    def shutdown(self) -> None:
        """Wake every thread blocked on this socket; the fd stays open."""
        with contextlib.suppress(OSError):  # already reset or not connected: nothing to wake
            self.sock.shutdown(socket.SHUT_RDWR)

    def peer_closed(self) -> bool:
        """Whether the peer has closed or reset the connection (non-blocking)."""
        try:
            return self.sock.recv(1, _PEEK_FLAGS) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


class _Dialer:
    """The background thread that sleeps and dials until connected or closed,
    with the pipe that wakes it when the ``Conn`` closes."""

    def __init__(self, name: str) -> None:
        self.wake_r, self.wake_w = os.pipe()
        self._lock = threading.Lock()  # wake() against close_pipe()
        self._open = True
        self.resolving = False  # inside getaddrinfo, which nothing can interrupt
        self.name = name
        self.thread: threading.Thread | None = None

    def start(self, run: Callable[[_Dialer], None]) -> None:
        self.thread = threading.Thread(target=run, args=(self,), name=self.name, daemon=True)
        self.thread.start()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to *seconds*; True if woken (the ``Conn`` is closing)."""
        return bool(wait_fd(self.wake_r, select.POLLIN, time.monotonic() + seconds))

    def wake(self) -> None:
        with self._lock:
            if self._open:
                os.write(self.wake_w, b"\0")

    def close_pipe(self) -> None:
        with self._lock:
            self._open = False
            os.close(self.wake_r)
            os.close(self.wake_w)

    def join(self, timeout: float) -> None:
        """Wait up to *timeout* for the woken thread to end. Not from the thread
        itself, and not while it is in the resolver: it ends when that returns."""
        if self.thread is not None and self.thread is not threading.current_thread() and not self.resolving:
            self.thread.join(timeout)


class Conn(ConnBase[_Link]):
    """A pseudo-persistent client connection: one object to read and write for the
    life of the program while connections come and go underneath.

    Use :func:`connect` to make one. All methods are thread-safe; one reader and
    one writer proceed concurrently (full duplex), concurrent readers take turns,
    and concurrent writers take turns (their bytes never interleave).

    Guarantees:
        - Operations issued while no connection is up wait for one (bounded by
          their ``timeout``); they never fail just because the peer is down.
        - An I/O failure on an established connection raises
          :class:`ConnectionIOError`, is logged, closes that connection and starts
          redialing; the next operation uses the next connection.
        - A single :meth:`write` goes out whole on one connection, or raises.

    Not guaranteed: bytes a successful :meth:`write` handed to the kernel reached
    the peer. If the connection drops afterwards they may be lost, and TCP cannot
    tell; protocols that need delivery need acknowledgements.
    """

    def __init__(self, options: Options, *, random: Callable[[], float] = random.random) -> None:
        self._opts = options
        self._log: LoggerLike = options.logger
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._life = Lifecycle(options.backoff, random)
        self._link: _Link | None = None
        self._dialer: _Dialer | None = None
        self._stranded: _Link | None = None  # a link whose rbuf readers have not emptied
        with self._lock:
            self._start_dialer(0.0, None)

    # -- public API ---------------------------------------------------------

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until a connection is up.

        Raises:
            TimeoutError: none came up within *timeout* seconds.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        self._wait_link(deadline_after(timeout))

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """Read and return 1 to *n* bytes, waiting for a connection if none is up.

        Raises:
            TimeoutError: nothing arrived within *timeout*; the connection stays up.
            ConnectionIOError: the connection failed (peer EOF included).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        if n.__class__ is not int or n < 1:
            check_size("n", n)
        deadline = None if timeout is None else deadline_after(timeout)
        link = self._enter(self._rlock, deadline)
        if self._stranded is not None:
            link = self._unstrand(link)
        try:
            return link.take(n) if link.rbuf else self._recv(link, n, deadline)
        finally:
            self._rlock.release()

    def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly *n* bytes from one connection.

        On timeout the bytes received so far are kept and returned by the next
        read; if the connection fails they are handed back as the error's
        ``partial`` (they never straddle two connections).

        Raises:
            TimeoutError: not all *n* bytes arrived within *timeout*.
            ConnectionIOError: the connection failed before *n* bytes arrived.
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        check_size("n", n)
        deadline = deadline_after(timeout)
        link = self._enter(self._rlock, deadline)
        if self._stranded is not None:
            link = self._unstrand(link)
        buf = bytearray(link.take(n))
        try:
            if len(buf) < n and link.failure is not None:  # the kept bytes of a dropped connection
                self._stranded = None
                raise ConnectionIOError("read", link.failure)
            while len(buf) < n:
                buf += self._recv(link, n - len(buf), deadline)
            return bytes(buf)
        except TimeoutError:
            link.rbuf[:0] = buf  # keep what arrived for the next read
            self._stranded = link
            raise
        except ConnectionIOError as exc:
            exc.partial = bytes(buf)
            raise
        finally:
            self._rlock.release()

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Write all of *data* on one connection and return ``len(data)``.

        Waits for a connection if none is up. If the connection was idle, first
        checks that the peer has not closed it, and if so reconnects and writes
        on the new one (on Linux a write into a connection the peer already
        closed would otherwise succeed and its bytes vanish).

        Raises:
            TimeoutError: nothing was written within *timeout*; the connection stays up.
            ConnectionIOError: the connection failed, or timed out after part of
                *data* was sent (the connection is then dropped: its stream is torn).
            ClosedConnectionError: the ``Conn`` is or became closed.
        """
        view = data if data.__class__ is bytes else check_bytes("data", data)
        deadline = None if timeout is None else deadline_after(timeout)
        while True:
            link = self._enter(self._wlock, deadline)
            try:
                now = time.monotonic()
                if now - link.last_write < IDLE_PROBE_AFTER or not link.peer_closed():
                    self._send(link, view, deadline)
                    link.last_write = now
                    return len(view)
            finally:
                self._wlock.release()
            # The peer closed the connection while it sat idle: redial, then write there.
            self._io_failed(link, "read", peer_closed())

    def close(self) -> None:
        """Close the connection for good; idempotent.

        Returns within 100 ms whatever the state, wakes every blocked call with
        :class:`ClosedConnectionError` and stops redialing. A dial thread blocked
        in the OS resolver cannot be interrupted: it exits, closing what it
        opened, as soon as the lookup returns.

        Raises:
            ConnectionIOError: closing the socket failed (``op == "close"``); the
                ``Conn`` is closed all the same.
        """
        deadline = time.monotonic() + CLOSE_BUDGET
        with self._cond:
            if not self._life.close():
                return
            link, self._link = self._link, None
            dialer = self._dialer
            if dialer is not None:
                dialer.wake()
            self._cond.notify_all()
        try:
            if link is not None:
                link.shutdown()
                self._retire(link, deadline)
        finally:
            if dialer is not None:
                dialer.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Conn:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- waiting and I/O helpers --------------------------------------------

    def _wait_link(self, deadline: float | None) -> _Link:
        with self._cond:
            while True:
                if self._closed:
                    raise ClosedConnectionError()
                if self._link is not None:
                    return self._link
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"not connected to {self.address} in time")
                    self._cond.wait(remaining)

    def _enter(self, lock: threading.Lock, deadline: float | None) -> _Link:
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
            self._wait_link(deadline)

    def _unstrand(self, link: _Link) -> _Link:
        """The connection a reader holding ``_rlock`` must read from, given that
        bytes were kept after a ``readexactly`` timeout: if their connection has
        since been dropped, they come first, then its end is raised, once; only
        then do reads move on to *link*, the current connection."""
        stranded = self._stranded
        assert stranded is not None
        if stranded is link:
            if not link.rbuf:
                self._stranded = None  # all read: nothing is kept any more
            return link
        if stranded.rbuf:
            return stranded
        self._stranded = None
        self._rlock.release()
        raise ConnectionIOError("read", stranded.failure or peer_closed())

    def _recv(self, link: _Link, n: int, deadline: float | None) -> bytes:
        """Receive 1 to *n* bytes from *link* (the caller holds ``_rlock``).

        Raises:
            TimeoutError: nothing arrived by *deadline*; the connection is intact.
                (A ``TimeoutError`` from the OS is a failure, raised wrapped.)
            ConnectionIOError: the connection failed, EOF included.
            ClosedConnectionError: the ``Conn`` was closed meanwhile.
        """
        try:
            if deadline is None:
                data: bytes | None = link.sock.recv(n)
            else:
                data = None
                while data is None and wait_fd(link.sock.fileno(), select.POLLIN, deadline):
                    with contextlib.suppress(BlockingIOError):
                        data = link.sock.recv(n, socket.MSG_DONTWAIT)
        except OSError as exc:
            raise self._io_failed(link, "read", exc)  # noqa: B904 (the cause is set inside)
        if data is None:
            raise TimeoutError("read timed out")
        if not data:
            raise self._io_failed(link, "read", peer_closed())
        return data

    def _send(self, link: _Link, view: bytes | memoryview, deadline: float | None) -> None:
        """Send all of *view* on *link* (the caller holds ``_wlock``).

        Raises:
            TimeoutError: nothing was sent by *deadline*; the connection is intact.
            ConnectionIOError: the connection failed, or *deadline* passed after
                part of *view* went out (the stream is torn, so the connection is dropped).
            ClosedConnectionError: the ``Conn`` was closed meanwhile.
        """
        sent = 0
        try:
            if deadline is None:
                link.sock.sendall(view)
                return
            view = memoryview(view)
            while sent < len(view) and wait_fd(link.sock.fileno(), select.POLLOUT, deadline):
                with contextlib.suppress(BlockingIOError):
                    sent += link.sock.send(view[sent:], socket.MSG_DONTWAIT)
        except OSError as exc:
            raise self._io_failed(link, "write", exc)  # noqa: B904 (the cause is set inside)
        if sent == len(view):
            return
        if sent == 0:
            raise TimeoutError("write timed out")
        raise self._io_failed(link, "write", TimeoutError(f"write timed out after {sent} of {len(view)} bytes"))

    def _io_failed(self, link: _Link, op: str, cause: BaseException) -> Error:
        """Turn a failure on *link* into the error to raise; drop *link* and start
        redialing if it is still the current connection."""
        if self._closed:  # the failure is close() shutting the socket down
            return ClosedConnectionError()
        error = ConnectionIOError(op, cause)
        with self._cond:
            current = link is self._link
            if current:
                link.failure = cause
                self._link = None
                self._start_dialer(self._life.connection_lost(time.monotonic()), link)
        if current:  # the first failure seen on a connection is its one log record
            link.shutdown()
            log_io_failed(self._log, self.address, error)
        return error

    def _retire(self, link: _Link, deadline: float | None = None) -> None:
        """Close a shut-down link's socket once no reader or writer is inside it."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        got_r = self._rlock.acquire(timeout=timeout)
        got_w = self._wlock.acquire(timeout=timeout)
        try:
            link.sock.close()
        except OSError as exc:
            if deadline is not None:  # close() asked: report it
                raise ConnectionIOError("close", exc) from exc
        finally:
            if got_w:
                self._wlock.release()
            if got_r:
                self._rlock.release()

    # -- the dial thread ----------------------------------------------------

    def _start_dialer(self, delay: float, retired: _Link | None) -> None:
        """Start the dial thread (caller holds ``_lock``). It holds the ``Conn``
        only weakly, so a ``Conn`` dropped without ``close()`` can be collected."""
        self._dialer = _Dialer(f"perconn-dial {self.address}")
        self._dialer.start(functools.partial(_dial_thread, weakref.ref(self), delay, retired))

    def _dial_failed(self, exc: OSError) -> float | None:
        """Record and log a failed dial; return the delay before the next one, or
        None if the ``Conn`` is closed."""
        error = DialError(self.address, exc)
        with self._lock:
            if self._closed:
                return None
            delay = self._life.dial_failed()
            attempt = self._life.attempts
        log_dial_failed(self._log, error, attempt, delay)
        return delay

    def _install(self, sock: socket.socket) -> None:
        """Make a freshly dialed socket the current connection (or close it, if
        the ``Conn`` was closed meanwhile)."""
        with self._cond:
            if self._closed:
                sock.close()
                return
            now = time.monotonic()
            self._link = _Link(sock, now)
            generation = self._life.connected(now)
            attempts = self._life.attempts
            self._dialer = None
            self._cond.notify_all()
        log_connected(self._log, self.address, generation, attempts)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True):
            return
        message = f"unclosed {self!r}"
        with contextlib.suppress(Exception):
            self.close()  # first: the warning may be turned into an error
        _warn(message, ResourceWarning, source=self)


def _dial_thread(ref: weakref.ref[Conn], delay: float, retired: _Link | None, dialer: _Dialer) -> None:
    """The dial thread: retire the failed connection, then sleep and dial until
    connected or closed. It takes a strong reference to the ``Conn`` only for
    the moment it reports to it, never while it sleeps or dials."""
    try:
        conn = ref()
        if conn is None:
            return
        opts = conn._opts
        if retired is not None:
            conn._retire(retired)
        del conn
        while True:
            if delay > 0 and dialer.sleep(delay):
                return
            try:
                dialer.resolving = True
                targets = resolve(opts.address)
                dialer.resolving = False
                sock = connect_first(opts.address, targets, opts.dial_timeout, dialer.wake_r)
            except DialAborted:
                return
            except OSError as exc:
                dialer.resolving = False
                conn = ref()
                next_delay = None if conn is None else conn._dial_failed(exc)
                del conn
                if next_delay is None:
                    return
                delay = next_delay
                continue
            conn = ref()
            if conn is None:
                sock.close()
            else:
                conn._install(sock)
            return
    finally:
        dialer.close_pipe()


connect = connect_function(
    make_options,
    Conn,
    "perconn",
    """Return a :class:`perconn.Conn` to *address* at once; dialing happens in a
background thread.""",
)
