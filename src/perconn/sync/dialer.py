"""Dialing for the synchronous front end: connect (racing the addresses a name
lookup found, as :mod:`perconn._eyeballs` says; the ``Conn``'s dial waits for the
lookup itself, see :mod:`perconn.sync.conn`). Each step is a generator the process-wide
dialer thread runs (:mod:`perconn.sync.hub`): it yields what it waits for, so
``close()`` can abort a dial at any wait. :func:`run_blocking` runs one in the
calling thread instead (with a wake-up file descriptor to abort it)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .._address import Address
from .._connecting import Spares, connect_error, start_connect
from .._eyeballs import ATTEMPT_DELAY, Race
from .._lookup import Target
from .._sockopts import SockOpt
from .._validate import timed_out
from .hub import Job, JobGen, Request, Wait, hub

__all__ = [
    "DialAborted",
    "Dialer",
    "Step",
    "configure",
    "connect_first",
    "race",
    "run_blocking",
    "send_all",
    "wait_fd",
]

T = TypeVar("T")

Step = Generator[Request, Any, T]
"""A step of a dial: a generator yielding what it waits for, returning a *T*."""


class DialAborted(Exception):
    """The dial was aborted at a wait (its job's ``abort()``, or the wake-up
    descriptor of :func:`run_blocking`): the ``Conn`` is closing or redialing."""


def wait_fd(fd: int, events: int, deadline: float | None) -> int:
    """Poll *fd* for *events* until *deadline* (monotonic; None = forever);
    return the events seen (0 on timeout)."""
    poller = select.poll()
    poller.register(fd, events)
    ms = None if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000.0)
    return next((ready for _, ready in poller.poll(ms)), 0)


def configure(sock: socket.socket, options: list[SockOpt]) -> None:
    """Give an established TCP connection *options* (see :mod:`perconn._sockopts`)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        for level, option, value in options:
            sock.setsockopt(level, option, value)


def _established(sock: socket.socket, options: list[SockOpt]) -> socket.socket:
    """*sock*, connected, made blocking and given *options*; closed if that fails."""
    try:
        sock.setblocking(True)
        configure(sock, options)
    except BaseException:
        sock.close()
        raise
    return sock


def send_all(sock: socket.socket, data: bytes, deadline: float | None, op: str, budget: float | None) -> Step[None]:
    """Send all of *data* on *sock* (during a dial), waiting for room until *deadline*.

    Raises:
        TimeoutError: *deadline* passed (*op* and *budget* word it).
        OSError: the connection failed.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT) :]
        except BlockingIOError:
            if not (yield Wait((), (sock.fileno(),), deadline)):
                raise timed_out(op, budget or 0.0) from None


def race(
    address: Address,
    targets: list[Target],
    deadline: float | None,
    budget: float | None,
    options: list[SockOpt],
    delay: float = ATTEMPT_DELAY,
    spares: Spares | None = None,
) -> Step[socket.socket]:
    """A connected, blocking socket to the first of *targets* that accepts, with
    the TCP *options*.

    The targets are raced as :mod:`perconn._eyeballs` says (Happy Eyeballs): a
    new non-blocking connect every *delay* seconds (or at once when one fails),
    all waited for together. The first to connect wins; every other socket
    opened is closed before this returns or raises (aborted included).
    *deadline* (monotonic; None: no bound) ends the connecting, all targets
    together; *budget* is the dial's, for the message. Connects begin on
    sockets of *spares* where it has some, and leave it those refused at once
    (the dialer thread's: see :class:`~perconn._connecting.Spares`).

    A single target (a literal, a unix path, one address: nothing to race) is
    begun by this call, before any step is made: a connect refused at once (a
    dial storm is mostly these) raises from here, through no generator.

    Raises:
        OSError: every target failed (the error of the last to fail);
            ``TimeoutError`` when *deadline* came first.
    """
    if len(targets) == 1:
        sock, connected = start_connect(targets[0], spares)
        if connected:
            return _done(_established(sock, options))
        return _connecting(sock, deadline, budget, options)
    return _race(address, targets, deadline, budget, options, delay, spares)


def _race(
    address: Address,
    targets: list[Target],
    deadline: float | None,
    budget: float | None,
    options: list[SockOpt],
    delay: float,
    spares: Spares | None,
) -> Step[socket.socket]:
    """:func:`race` of several targets."""
    contest = Race(address, targets, delay)
    attempts: dict[int, socket.socket] = {}  # by descriptor: the connects in progress
    try:
        while True:  # ends: each pass starts or ends an attempt, or waits for a start or the deadline
            now = time.monotonic()
            while (target := contest.start(now)) is not None:  # bounded by the number of targets
                try:
                    sock, connected = start_connect(target, spares)
                except OSError as exc:
                    contest.failed(exc)
                    continue
                if connected:
                    return _established(sock, options)
                attempts[sock.fileno()] = sock
            if contest.lost:
                raise contest.error
            if deadline is not None and deadline <= now:
                raise timed_out("connect", budget or 0.0)
            due = contest.wait(now)
            until = deadline if due is None else now + due if deadline is None else min(deadline, now + due)
            ready = yield Wait((), tuple(attempts), until)
            for fd in ready:
                sock = attempts.pop(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if not err:
                    return _established(sock, options)
                sock.close()
                contest.failed(connect_error(err))
    finally:
        for sock in attempts.values():  # the losers, or every attempt (failure, timeout, abort)
            sock.close()


def _connecting(
    sock: socket.socket, deadline: float | None, budget: float | None, options: list[SockOpt]
) -> Step[socket.socket]:
    """:func:`race` of a single target: its connect (*sock*, in progress), waited
    for until *deadline*."""
    try:
        if not (yield Wait((), (sock.fileno(),), deadline)):
            raise timed_out("connect", budget or 0.0)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise connect_error(err)
    except BaseException:  # failed, timed out or aborted
        sock.close()
        raise
    return _established(sock, options)


def _done(value: T) -> Step[T]:
    """A step that is done at once, with *value*."""
    return value
    yield  # (what makes it a generator)


def run_blocking(step: Step[T], wake_fd: int = -1) -> T:
    """Run *step* in the calling thread, waiting with ``poll``.

    Raises:
        DialAborted: *wake_fd* (when given) is or became readable at a wait.
        What *step* raises.
    """
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = step.throw(error) if error is not None else step.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        assert isinstance(request, Wait), request
        answer, error = None, None
        poller = select.poll()
        for fd in request.read:
            poller.register(fd, select.POLLIN)
        for fd in request.write:
            poller.register(fd, select.POLLOUT)
        if wake_fd >= 0:
            poller.register(wake_fd, select.POLLIN)
        ms = None if request.deadline is None else max(0.0, (request.deadline - time.monotonic()) * 1000.0)
        ready = {fd for fd, _ in poller.poll(ms)}
        if wake_fd in ready:
            error = DialAborted()
        else:
            answer = ready


def connect_first(
    address: Address,
    targets: list[Target],
    budget: float | None,
    wake_fd: int,
    options: list[SockOpt],
    delay: float = ATTEMPT_DELAY,
) -> socket.socket:
    """:func:`race`, run in the calling thread; *wake_fd* readable aborts it
    (:class:`DialAborted`), every socket it opened closed."""
    if wait_fd(wake_fd, select.POLLIN, time.monotonic()):  # woken already
        raise DialAborted
    deadline = None if budget is None else time.monotonic() + budget
    return run_blocking(race(address, targets, deadline, budget, options, delay), wake_fd)


class Dialer:
    """One dial episode of a ``Conn`` (sleeping, dialing, running ``on_connect``
    until connected, closed or given up), run as a job of the process-wide
    dialer thread (:mod:`perconn.sync.hub`)."""

    def __init__(self, name: str) -> None:
        self.handshaking: Callable[[], None] | None = None  # shuts down the connection a hook is using
        self.sleeping = False  # set by the dial while it sleeps between attempts (it holds no socket)
        self.name = name
        self.job: Job | None = None

    def start(self, run: Callable[[Dialer], JobGen]) -> None:
        self.job = hub.start(run(self), DialAborted)

    def wake(self) -> None:
        """Abort the dial's current wait (a sleep, a lookup, a connect, a TLS
        handshake; not a hook): it looks at why (closing, or redialing at once)."""
        if self.job is not None:
            self.job.abort()

    def drain(self) -> None:
        """Forget earlier wake-ups (the dial looked at why it was woken). Called
        by the dial itself, on the dialer thread."""
        if self.job is not None:
            self.job.abort_pending = False

    def join(self, timeout: float) -> None:
        """Wait up to *timeout* for the woken dial to end (not from its own threads)."""
        job = self.job
        if job is not None and threading.current_thread() not in (hub.thread, job.call_thread):
            deadline = time.monotonic() + timeout
            if job.wait_done(timeout):
                hub.join_if_idle(max(0.0, deadline - time.monotonic()))
