"""Dialing for the synchronous front end: wait for the name lookup (in a thread of
its own, :mod:`perconn._lookup`) and connect, never blocking past a wake-up file
descriptor, so ``close()`` can abort a dial at once; and the background thread
that does it."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from .._address import Address
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


def _connect_one(target: Target, deadline: float | None, wake_fd: int, options: list[SockOpt]) -> socket.socket:
    family, proto, sockaddr = target
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            if not wait_fd(sock.fileno(), select.POLLOUT, deadline, wake_fd):
                raise TimeoutError(errno.ETIMEDOUT, "connect timed out")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sock.setblocking(True)
        configure(sock, options)
        return sock
    except BaseException:
        sock.close()
        raise


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
    address: Address, targets: list[Target], budget: float | None, wake_fd: int, options: list[SockOpt]
) -> socket.socket:
    """Open a connected, blocking socket to the first of *targets* that accepts,
    with the TCP *options*.

    *budget* bounds the connecting, all targets together (None: no bound).

    Raises:
        OSError: connecting failed (the last target's error); ``TimeoutError``
            when *budget* ran out.
        DialAborted: *wake_fd* is or became readable.
    """
    if wait_fd(wake_fd, select.POLLIN, time.monotonic()):  # woken while resolving
        raise DialAborted
    deadline = None if budget is None else time.monotonic() + budget
    error: OSError = OSError(errno.EADDRNOTAVAIL, f"no address found for {address.text}")
    for target in targets:
        try:
            return _connect_one(target, deadline, wake_fd, options)
        except TimeoutError:
            raise timed_out("connect", budget or 0.0) from None
        except OSError as exc:
            error = exc
    raise error


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
