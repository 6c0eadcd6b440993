"""Dialing for the synchronous front end: wait for the name lookup (in a thread of
its own, :mod:`perconn._lookup`) and connect (racing the addresses found, as
:mod:`perconn._eyeballs` says), never blocking past a wake-up file descriptor,
so ``close()`` can abort a dial at once; and the background thread that does it."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from .._address import Address
from .._eyeballs import ATTEMPT_DELAY, Race
from .._lookup import Lookup, Target
from .._sockopts import SockOpt
from .._validate import timed_out

__all__ = ["DialAborted", "Dialer", "configure", "connect_first", "wait_fd", "wait_lookup"]


class DialAborted(Exception):
    """The wake-up descriptor became readable: the ``Conn`` is closing or redialing."""


def wait_fd(fd: int, events: int, deadline: float | None, wake_fd: int = -1) -> int:
    """Poll *fd* for *events* until *deadline* (monotonic; None = forever).

    Returns the events seen on *fd* (0 on timeout). Raises :class:`DialAborted`
    if *wake_fd* (when given) becomes readable first.
    """
    poller = select.poll()
    poller.register(fd, events)
    if wake_fd >= 0:
        poller.register(wake_fd, select.POLLIN)
    ms = None if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000.0)
    seen = 0
    for ready_fd, ready in poller.poll(ms):
        if ready_fd == wake_fd:
            raise DialAborted
        seen = ready
    return seen


def configure(sock: socket.socket, options: list[SockOpt]) -> None:
    """Give an established TCP connection *options* (see :mod:`perconn._sockopts`)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        for level, option, value in options:
            sock.setsockopt(level, option, value)


def _begin(target: Target) -> tuple[socket.socket, bool]:
    """Begin a non-blocking connect to *target*: its socket, and whether it is
    connected already (else it is in progress: poll it for ``POLLOUT``).

    Raises:
        OSError: the connect failed at once (the socket is closed).
    """
    family, proto, sockaddr = target
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err and err not in (errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock, not err


def _established(sock: socket.socket, options: list[SockOpt]) -> socket.socket:
    """*sock*, connected, made blocking and given *options*; closed if that fails."""
    try:
        sock.setblocking(True)
        configure(sock, options)
    except BaseException:
        sock.close()
        raise
    return sock


def wait_lookup(lookup: Lookup, deadline: float | None, budget: float | None, dialer: Dialer) -> list[Target]:
    """The targets *lookup* finds, waiting for it until *deadline* (the dial's).

    Raises:
        OSError: the lookup failed; ``TimeoutError`` when *deadline* came first
            (the lookup goes on, for the next dial to wait for).
        DialAborted: the ``Conn`` is closing, or redialing at once.
    """
    if lookup.notify(dialer.wake):
        try:
            woken = wait_fd(dialer.wake_r, select.POLLIN, deadline)
        finally:
            lookup.notify(None)
        if not lookup.done:
            if woken:
                raise DialAborted
            raise timed_out(f"lookup of {lookup.address.host}", budget or 0.0)
        dialer.drain()  # the lookup's wake-up (and any other: closing is a flag too)
        if dialer.closing:
            raise DialAborted
    return lookup.result()


def connect_first(
    address: Address,
    targets: list[Target],
    budget: float | None,
    wake_fd: int,
    options: list[SockOpt],
    delay: float = ATTEMPT_DELAY,
) -> socket.socket:
    """Open a connected, blocking socket to the first of *targets* that accepts,
    with the TCP *options*.

    The targets are raced as :mod:`perconn._eyeballs` says (Happy Eyeballs): a
    new non-blocking connect every *delay* seconds (or at once when one fails),
    all polled together with *wake_fd* in one ``poll``. The first to connect
    wins; every other socket opened is closed before this returns or raises.
    *budget* bounds the connecting, all targets together (None: no bound).

    Raises:
        OSError: every target failed (the error of the last to fail);
            ``TimeoutError`` when *budget* ran out first.
        DialAborted: *wake_fd* is or became readable.
    """
    if wait_fd(wake_fd, select.POLLIN, time.monotonic()):  # woken while resolving
        raise DialAborted
    deadline = None if budget is None else time.monotonic() + budget
    race = Race(address, targets, delay)
    attempts: dict[int, socket.socket] = {}  # by descriptor: the connects in progress
    poller = select.poll()
    poller.register(wake_fd, select.POLLIN)
    try:
        while True:  # ends: each pass starts or ends an attempt, or waits for a start, the deadline or wake_fd
            now = time.monotonic()
            while (target := race.start(now)) is not None:  # bounded by the number of targets
                try:
                    sock, connected = _begin(target)
                except OSError as exc:
                    race.failed(exc)
                    continue
                if connected:
                    return _established(sock, options)
                attempts[sock.fileno()] = sock
                poller.register(sock, select.POLLOUT)
            if race.lost:
                raise race.error
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                raise timed_out("connect", budget or 0.0)
            waits = [w for w in (left, race.wait(now)) if w is not None]
            ready = poller.poll(min(waits) * 1000.0 if waits else None)
            if any(fd == wake_fd for fd, _ in ready):
                raise DialAborted
            for fd, _ in ready:
                sock = attempts.pop(fd)
                poller.unregister(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if not err:
                    return _established(sock, options)
                sock.close()
                race.failed(OSError(err, os.strerror(err)))
    finally:
        for sock in attempts.values():  # the losers, or every attempt (failure, timeout, abort)
            sock.close()


class Dialer:
    """The background thread that sleeps and dials until connected or closed,
    with the pipe that wakes it (to close, or to dial at once)."""

    def __init__(self, name: str) -> None:
        self.wake_r, self.wake_w = os.pipe()
        self._lock = threading.Lock()  # wake() against close_pipe()
        self._open = True
        self.closing = False  # set by close() before it wakes the thread
        self.handshaking: Callable[[], None] | None = None  # shuts down the connection a hook is using
        self.name = name
        self.thread: threading.Thread | None = None

    def start(self, run: Callable[[Dialer], None]) -> None:
        self.thread = threading.Thread(target=run, args=(self,), name=self.name, daemon=True)
        self.thread.start()

    def sleep(self, seconds: float) -> None:
        """Sleep up to *seconds*, or until woken."""
        if wait_fd(self.wake_r, select.POLLIN, time.monotonic() + seconds):
            self.drain()

    def drain(self) -> None:
        """Forget earlier wake-ups (the thread then looks at why it was woken)."""
        while wait_fd(self.wake_r, select.POLLIN, time.monotonic()):
            os.read(self.wake_r, 64)

    def wake(self) -> None:
        """Wake the thread from a sleep or a connect (not from a hook or the resolver)."""
        with self._lock:
            if self._open:
                os.write(self.wake_w, b"\0")

    def close_pipe(self) -> None:
        with self._lock:
            self._open = False
            os.close(self.wake_r)
            os.close(self.wake_w)

    def join(self, timeout: float) -> None:
        """Wait up to *timeout* for the woken thread to end (not from the thread itself)."""
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
