"""The process-wide dialer thread of the synchronous front end.

Every dialing :class:`~perconn.sync.Conn` is a *job*: a generator that yields
what it waits for (:class:`Wait`: sockets to become readable or writable, or a
deadline; :data:`Sleep`: a deadline alone; :class:`WaitLookup`: a name lookup
to finish; :class:`Call`: user code to run) and is resumed with the answer.
One thread, the hub, runs them all with one ``selectors`` loop and one set of
deadlines (:mod:`perconn._timers`), so a thousand dialing ``Conn``\\s
cost one thread, not a thousand. Code that may block runs in a thread of its
own, one per job at most and only while it runs: an ``on_connect`` hook (and
the queued writes that follow it). Name lookups run in their own daemon
threads (:mod:`perconn._lookup`), as before.

A job is aborted (:class:`~perconn.sync.dialer.DialAborted` is thrown in at its
current wait, or at its next one) when its ``Conn`` closes or redials at once.

The hub thread starts with the first job and ends with the last, so a program
with no dialing ``Conn`` has no perconn thread. User code never runs on it,
except logging handlers (the records of dial failures) and a ``Conn`` being
collected; a slow handler delays every dial.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import selectors
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from .._connecting import Spares
from .._lookup import Lookup
from .._timers import Timers

__all__ = ["Call", "Hub", "Job", "JobGen", "Request", "Wait", "WaitLookup", "hub"]


SLICE = 0.002
"""Seconds of dialing work the hub does between two looks at its wake-ups (a
``close()``, a ``reconnect()``, a finished hook): the most they wait on a hub
that has more dials to make than it has time for."""


class Wait(NamedTuple):
    """Wait until one of *read* is readable or one of *write* writable (the job
    is resumed with the set of those ready), or until *deadline* (monotonic,
    None: no bound; resumed with an empty set)."""

    read: tuple[int, ...] = ()
    write: tuple[int, ...] = ()
    deadline: float | None = None


class WaitLookup(NamedTuple):
    """Wait until *lookup* is done or *deadline* passes; resumed with whether it is done."""

    lookup: Lookup
    deadline: float | None


class Call(NamedTuple):
    """Run *fn* in a thread of its own (it may block: user code); resumed with
    what it returns, or its exception thrown in."""

    fn: Callable[[], Any]
    name: str


Sleep = float
"""Sleep until this monotonic time (resumed with an empty set): a :class:`Wait`
with no descriptor, made as no object. In a dial storm the sleeping dials are
most of what the hub holds; a float is not one for the garbage collector to walk."""

Request = Sleep | Wait | WaitLookup | Call
JobGen = Generator[Request, Any, None]


class Job:
    """One dialing ``Conn``'s generator, as the hub runs it.

    ``abort()`` (from any thread) throws *aborted* into the generator at its
    current wait or at its next one; a :class:`Call` in progress is not
    interrupted. :meth:`wait_done` waits for the generator to end.
    """

    def __init__(self, gen: JobGen, aborted: Callable[[], BaseException]) -> None:
        self._gen = gen
        self._aborted = aborted
        self.abort_pending = False
        # Held until the generator has ended: a lock, not an Event (which is five
        # objects for the garbage collector to walk, per dialing Conn).
        self._running = threading.Lock()
        self._running.acquire()
        self.ended = False  # the generator has ended (set on the hub thread, before the lock is released)
        self.request: Request | None = None
        self.call_thread: threading.Thread | None = None
        self.lookup_done: Callable[[], None] | None = None  # what a lookup it waits for calls (made once per job)

    def abort(self) -> None:
        hub.poke(self, abort=True)

    def wait_done(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the generator to end; whether it has."""
        if not self._running.acquire(timeout=timeout):
            return False
        self._running.release()
        return True


class _Poke(NamedTuple):
    job: Job
    abort: bool
    outcome: tuple[Any, BaseException | None] | None  # a Call's result, or None: a lookup finished


class Hub:
    """The dialer thread and what it watches (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: set[Job] = set()
        self._pokes: list[_Poke] = []
        self._thread: threading.Thread | None = None
        self._ending: threading.Thread | None = None  # the latest thread (it ends once it has no job)
        self._wake_r, self._wake_w = -1, -1
        self.spares = Spares()
        """Refused sockets the jobs begin their next connects with (used on the hub
        thread only; closed when it ends: no perconn descriptor outlives the last dial)."""

    # -- from any thread --------------------------------------------------------

    def start(self, gen: JobGen, aborted: Callable[[], BaseException]) -> Job:
        """Run the job *gen* (its first step runs on the hub thread)."""
        job = Job(gen, aborted)
        with self._lock:
            self._jobs.add(job)
            self._pokes.append(_Poke(job, False, (None, None)))
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
                self._thread = self._ending = threading.Thread(target=self._run, name="perconn-dialer", daemon=True)
                self._thread.start()
            else:
                self._wake()
        return job

    def poke(self, job: Job, *, abort: bool = False, outcome: tuple[Any, BaseException | None] | None = None) -> None:
        with self._lock:
            if job in self._jobs:
                self._pokes.append(_Poke(job, abort, outcome))
                self._wake()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def join_if_idle(self, timeout: float) -> None:
        """If no job is left, wait up to *timeout* for the thread to end (it is
        ending): a program that closed its last ``Conn`` has no perconn thread."""
        with self._lock:
            thread = self._ending if not self._jobs else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _wake(self) -> None:  # holding _lock, the thread running
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_w, b"\0")

    # -- the hub thread ---------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        # The jobs with a deadline. A job is not taken out when it moves on early (woken, aborted): when
        # an entry comes due, the job is resumed only if its current request is due (see _due).
        timers: Timers[Job] = Timers()
        registered: dict[Job, tuple[int, ...]] = {}
        # Ready jobs a slice had no time for, oldest first (an OrderedDict: taking
        # the oldest of a plain dict scans the entries deleted before it).
        backlog: collections.OrderedDict[Job, Any] = collections.OrderedDict()

        def step(job: Job, answer: Any) -> None:
            for fd in registered.pop(job, ()):
                selector.unregister(fd)
            if job.ended:  # (an answer that came as it ended)
                return
            self._resume(job, answer)
            request = job.request
            if request is None:  # it ended
                return
            if isinstance(request, Sleep):  # (the most of a storm: first)
                timers.add(request, job)
                return
            if isinstance(request, Wait) and (request.read or request.write):  # (a sleep registers nothing)
                for fd in request.read:
                    selector.register(fd, selectors.EVENT_READ, job)
                for fd in request.write:
                    selector.register(fd, selectors.EVENT_WRITE, job)
                registered[job] = request.read + request.write
            if isinstance(request, (Wait, WaitLookup)) and request.deadline is not None:
                timers.add(request.deadline, job)

        try:
            while True:
                with self._lock:
                    pokes, self._pokes = self._pokes, []
                    if not self._jobs:  # (what pokes are left are for jobs that ended meanwhile)
                        self._ending, self._thread = self._thread, None
                        self.spares.close()
                        os.close(self._wake_r)
                        os.close(self._wake_w)
                        return
                urgent: dict[Job, Any] = {}  # aborts and answers: before anything else
                for poke in pokes:
                    self._on_poke(poke, urgent)
                timeout: float | None = 0.0
                if not urgent and not backlog:
                    due = timers.next_due()
                    timeout = None if due is None else max(0.0, due - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.fileobj == self._wake_r:
                        while _read_some(self._wake_r):
                            pass
                        continue
                    seen = backlog.setdefault(key.data, _NOTHING)
                    if seen is _NOTHING:
                        backlog[key.data] = {key.fd}
                    elif isinstance(seen, set):
                        seen.add(key.fd)
                now = time.monotonic()
                for job in timers.pop_due(now):
                    if _due(job.request, now):
                        backlog.setdefault(job, _NOTHING)
                for job, answer in urgent.items():
                    backlog.pop(job, None)
                    step(job, answer)
                # Then as many ready jobs as fit in a slice: an abort (a close()) waits
                # no longer than that, however many dials the schedule asks for.
                until = time.monotonic() + SLICE
                while backlog and time.monotonic() < until:
                    step(*backlog.popitem(last=False))
        finally:
            selector.close()
            self.spares.close()

    def _on_poke(self, poke: _Poke, ready: dict[Job, Any]) -> None:
        job = poke.job
        if poke.abort:
            job.abort_pending = True
            if isinstance(job.request, (Sleep, Wait, WaitLookup)):
                ready[job] = job._aborted()
            return
        if poke.outcome is None:  # a lookup finished
            if isinstance(job.request, WaitLookup):
                ready.setdefault(job, _NOTHING)
            return
        if job.request is None or isinstance(job.request, Call):  # the first step, or a Call returned
            value, error = poke.outcome
            ready[job] = error if error is not None else _Value(value)

    def _resume(self, job: Job, answer: Any) -> None:
        """Advance *job* with *answer* (a set of ready fds, a :class:`_Value`, or
        an exception to throw in) until its next request, which it then waits on."""
        request = job.request
        if isinstance(request, WaitLookup):
            request.lookup.notify(job, None)
        while True:
            try:
                if isinstance(answer, BaseException):
                    request = job._gen.throw(answer)
                elif isinstance(answer, _Value):
                    request = job._gen.send(answer.value)
                elif isinstance(request, WaitLookup):
                    request = job._gen.send(request.lookup.done)
                else:
                    request = job._gen.send(answer)
            except StopIteration:
                self._finish(job)
                return
            except BaseException as exc:  # a bug in the job: it ends (its Conn stops dialing), reported
                self._finish(job)
                threading.excepthook(threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, None)))
                return
            job.request = request
            if isinstance(request, Call):
                self._call(job, request)
                return
            if job.abort_pending:
                answer = job._aborted()
                continue
            if isinstance(request, WaitLookup) and not request.lookup.notify(job, self._lookup_done(job)):
                answer = None  # done already: resume at once with lookup.done
                continue
            return

    def _lookup_done(self, job: Job) -> Callable[[], None]:
        """What tells the hub that the lookup *job* waits for is done: made once
        per job, not per wait (the dials of a name pile up waiting for its lookup)."""
        if job.lookup_done is None:
            job.lookup_done = functools.partial(self.poke, job)
        return job.lookup_done

    def _call(self, job: Job, call: Call) -> None:
        def run() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (call.fn(), None)
            except BaseException as exc:  # handed to the job
                outcome = (None, exc)
            self.poke(job, outcome=outcome)

        job.call_thread = threading.Thread(target=run, name=call.name, daemon=True)
        job.call_thread.start()

    def _finish(self, job: Job) -> None:
        job.request = None
        job.lookup_done = None  # (it refers to the job)
        with self._lock:
            self._jobs.discard(job)
        job.ended = True
        job._running.release()


def _due(request: Request | None, now: float) -> bool:
    """Whether *request* (a job's current one) has a deadline, and it passed by *now*."""
    deadline = request if isinstance(request, Sleep) else getattr(request, "deadline", None)
    return deadline is not None and deadline <= now


_NOTHING: frozenset[int] = frozenset()
"""The answer to a wait that nothing ended but its deadline (or a lookup's end):
no descriptor ready. One shared object, not a set made per timer."""


class _Value(NamedTuple):
    value: Any


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


hub = Hub()
"""The one hub of the process."""
