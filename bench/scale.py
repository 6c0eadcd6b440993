"""Scale: many ``Conn``s dialing a refused port, and many connected and idle.

Each front end runs in a process of its own (``perconn.Conn`` in one,
``perconn.aio.Conn`` in another, one scenario at a time), so neither disturbs
the other; this process only starts them, reads what they measured and prints
a table.

Scenario A, **dialing**: ``--conns`` ``Conn``s aimed at a refused port (a free
port of 127.0.0.1 below the ephemeral range, so nobody takes it meanwhile) with ``--retry-min``/``--retry-max`` and
the default ``dial_timeout``. After the ``Conn``s are made and a warm-up of
``WARMUP`` seconds (longer than the backoff's ramp to ``retry_max``), a window
of ``--seconds`` measures:

- threads in the process (``threading.active_count()`` and ``Threads`` of
  ``/proc/self/status``), and how many are left once all are closed;
- CPU-seconds per second of the whole process (``os.times()``, user + system);
- failed dials per second achieved (the sum of ``conn.stats.dial_failures``
  over the window) against what the backoff schedule asks. The ask assumes a
  dial costs no time: once ramped up, each ``Conn`` sleeps ``retry_max`` between
  dials (a uniform draw from ``[retry_max/2, retry_max]`` with jitter, mean
  ``0.75 * retry_max``), so the schedule asks ``N / (0.75 * retry_max)`` dials
  per second (``N / retry_max`` without jitter); 26,667/s for 10,000 ``Conn``s
  at ``retry_max=0.5``. A refused dial over loopback takes tens of
  microseconds, so this is what a machine with CPU to spare would achieve;
- CPU per failed dial (process CPU over the window / failed dials), against the
  raw floor measured in the same process before the ``Conn``s exist: a blocking
  ``connect()`` to the refused port (socket made and closed each time; sync),
  ``asyncio.open_connection`` to it (asyncio), the median of ten short bursts;
  and, for sync, against a *skeleton dialer* measured there once the ``Conn``s
  are closed: one loop keeping as many connections dialing on the same
  schedule with nothing but a heap of deadlines, the system calls, the
  ``OSError`` and the backoff draw (:func:`sync_skeleton`): the least any
  dialer thread could cost;
- the caller's responsiveness: how late a ``time.sleep(0.1)`` in the main
  thread (sync) / an ``asyncio.sleep(0.1)`` on the loop (asyncio) wakes,
  throughout the window: p50, p99, max;
- ``close()`` of one ``Conn`` during the storm (``CLOSE_ONE`` of them, one at a
  time): p50 and max; then ``close()`` of all the others: the total (sync:
  one after another; asyncio: all at once with ``asyncio.gather``, as a program
  closes many on one loop);
- RSS per ``Conn``: ``VmRSS`` at the end of the window minus before the
  ``Conn``s were made, over N.

Scenario B, **idle**: N ``Conn``s connected to a local server that accepts
everything (a ``selectors`` loop in a process of its own): how long until all
are connected, the threads, CPU-seconds per second over ``--idle-seconds`` (it
should be about 0), RSS per ``Conn``, and closing them all.

Each scenario has a hard timeout (``--timeout``): the child process reports each
figure as soon as it has it, so a scenario that overruns (making the ``Conn``s,
the window, closing them) is killed and reported with what it measured and the
phase it overran in. The file-descriptor limit of the child and of the server
is raised to what N needs when allowed (root), else the soft limit to the hard.

Run: ``python bench/scale.py [--conns 10000] [--retry-min 0.05] [--retry-max 0.5]
[--seconds 10] [--idle-seconds 3] [--front both|sync|aio] [--scenario both|dialing|idle] [--timeout 120]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import heapq
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import perconn.aio

if TYPE_CHECKING or __package__:  # part of the bench package (python -m bench; mypy checks this one)
    from . import _proc
else:  # run as a script (python bench/scale.py): bench/ is sys.path[0]
    import _proc

WARMUP = 1.0
"""Seconds between the last ``Conn`` made and the window: longer than the ramp
``retry_min * (1 + 2 + 4 + 8)`` to the default ``retry_max`` (0.75 s)."""

CLOSE_ONE = 5
"""``Conn``s closed one at a time, and timed each, during the storm."""

PROGRESS = 0.25
"""Seconds between progress reports of a long phase (making or closing the ``Conn``s)."""

RAW_BURSTS = 10
RAW_BURST_SECONDS = 0.05
"""The raw floor is the median of ``RAW_BURSTS`` bursts of refused dials, each
``RAW_BURST_SECONDS`` long: one long burst takes in whatever else the machine
was doing then (on a shared VM, the floor of one burst varies by 2x)."""

SKELETON_SECONDS = 1.5
"""Seconds the skeleton dialer (sync) is measured for."""

SERVER = r"""
import resource, selectors, socket, sys
want = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
except (ValueError, OSError):
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
sel.register(sys.stdin, selectors.EVENT_READ)
print(srv.getsockname()[1], flush=True)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is srv:
            for _ in range(512):
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    print("accept:", exc, file=sys.stderr)
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
        elif sock is sys.stdin:
            sys.exit(0)  # the bench closed our stdin (or wrote to it): done
        else:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                try:
                    sock.send(data)  # echo, best effort: nobody writes here
                except OSError:
                    pass
            else:
                sel.unregister(sock)
                sock.close()
"""
"""A server that accepts every connection and holds it (echoing what it gets);
its argument is the file-descriptor limit it needs. Exits when its stdin closes."""


# -- measuring, in the child process -----------------------------------------------


def proc_status(field_name: str) -> int:
    """An integer field of ``/proc/self/status`` (``Threads``, ``VmRSS`` in kB); 0 if absent."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all its threads."""
    t = os.times()
    return t.user + t.system


def lateness(samples: list[float], prefix: str) -> dict[str, float]:
    """p50, p99 and max of *samples* (seconds), under *prefix*."""
    if not samples:
        return {}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {f"{prefix}_p50": statistics.median(ordered), f"{prefix}_p99": p99, f"{prefix}_max": ordered[-1]}


class Every:
    """True when called at most once per *interval* seconds (and at the first call)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.interval
        return True


@dataclass
class Child:
    """What a child process measures with, and its phase deadlines."""

    front: str
    conns: int
    retry_min: float
    retry_max: float
    seconds: float
    idle_seconds: float
    timeout: float
    port: int
    gc_freeze: bool = False  # gc.freeze() once the Conns are made
    host: str = "127.0.0.1"  # what the dialing Conns name (a name makes each of their dials a lookup)

    def budget(self, share: float) -> float:
        """A deadline *share* of the scenario's timeout from now."""
        return time.monotonic() + share * self.timeout


class GcPauses:
    """The longest garbage collection since made (``gc.callbacks``): it stops the
    whole process, so it is a stall of the caller's sleep that is CPython's, not
    perconn's; with 10,000 ``Conn``\\s a full collection walks ~0.5 M objects."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._began)


T = TypeVar("T")


class Window:
    """Scenario A's measurement window, from *t0* (when *f0* dials had failed):
    how late the caller's ``sleep(0.1)`` woke each time, the process's CPU, the
    longest garbage collection; reported as it goes, and in full at the end."""

    def __init__(self, t0: float, f0: int) -> None:
        self.t0, self.f0 = t0, f0
        self.cpu0 = cpu_seconds()
        self.late: list[float] = []
        self.pauses = GcPauses()

    def end(self, c: Child) -> float:
        return self.t0 + c.seconds

    def woke(self, slept_at: float) -> None:
        """The caller's ``sleep(0.1)``, begun at *slept_at*, has returned."""
        self.late.append(time.monotonic() - slept_at - 0.1)
        _proc.emit(late=self.late[-1], window_cpu=cpu_seconds() - self.cpu0, window_so_far=time.monotonic() - self.t0)

    def report(self, t1: float, f1: int, conns: Sized, rss0: int) -> None:
        """The window's figures, ended at *t1* with *f1* failed dials in all."""
        cpu1 = cpu_seconds()
        _proc.emit(
            window_s=t1 - self.t0,
            cpu_per_s=(cpu1 - self.cpu0) / (t1 - self.t0),
            failures=f1 - self.f0,
            threads=threading.active_count(),
            os_threads=proc_status("Threads"),
            rss_per_conn=(proc_status("VmRSS") - rss0) * 1024 / max(1, len(conns)),
            gc_longest=self.pauses.longest,
            **lateness(self.late, "late"),
        )


def made_all(c: Child, conns: Sized, made: float) -> None:
    """Report the ``Conn``\\s made (since *made*); freeze them if asked (``--gc-freeze``)."""
    _proc.emit(created=len(conns), create_s=time.monotonic() - made)
    if c.gc_freeze:
        gc.freeze()


def still_connecting(conns: Sequence[Any], made: float, connect_by: float) -> bool:
    """Report how many of *conns* (made at *made*) are up; whether to wait on
    for the rest (False once all are, or *connect_by* has passed)."""
    up: int = sum(conn.connected for conn in conns)
    _proc.emit(connected=up, connect_s=time.monotonic() - made)
    if up < len(conns) and time.monotonic() > connect_by:
        _proc.emit(overran="connecting them")
        return False
    return up < len(conns)


def one_at_a_time(conns: Sequence[T]) -> Sequence[T]:
    """The ``CLOSE_ONE`` ``Conn``\\s closed one at a time during the storm, spread over *conns*."""
    return conns[:: max(1, len(conns) // CLOSE_ONE)][:CLOSE_ONE]


def sync_raw_floor(port: int) -> float:
    """CPU seconds per refused blocking ``connect()`` (socket made and closed each time)."""

    def burst() -> float:
        count, cpu = 0, time.process_time()
        end = time.monotonic() + RAW_BURST_SECONDS
        while time.monotonic() < end:
            for _ in range(20):
                with socket.socket() as sock:
                    sock.connect_ex(("127.0.0.1", port))
            count += 20
        return (time.process_time() - cpu) / count

    return statistics.median(burst() for _ in range(RAW_BURSTS))


def sync_skeleton(c: Child) -> float:
    """CPU seconds per refused dial of a *skeleton dialer*: the least one thread can
    do to keep ``c.conns`` connections dialing on the same schedule as the
    ``Conn``\\s (ramped up: a sleep of ``retry_max``, jittered), per dial: take
    the next deadline off a heap, two ``connect`` calls on one non-blocking
    socket kept for the next dial (the second learns the refusal and readies
    the socket to connect again, on Linux, as ``perconn.Conn``'s dialer thread
    does; elsewhere a ``socket``, ``connect``, ``SO_ERROR`` and ``close``), the
    ``OSError``, a jittered delay, the next deadline on the heap; sleeping
    until it. No lock, no lifecycle, no logging, no stats, no ``close()`` to
    answer. What ``perconn.Conn`` costs above it is what its guarantees cost; the
    skeleton's own ratio to the raw floor shows how far the ``<= 2x raw`` target
    can be met at all on the machine."""
    rng = random.Random(1)
    target = ("127.0.0.1", c.port)
    nonblock = getattr(socket, "SOCK_NONBLOCK", 0)
    now = time.monotonic()
    ramped = 64  # failures so far: the delay is retry_max
    heap: list[tuple[float, int, list[Any]]] = [
        (now + rng.random() * c.retry_max, i, [ramped, None]) for i in range(c.conns)
    ]
    heapq.heapify(heap)
    seq, dials = c.conns, 0
    spare = socket.socket(socket.AF_INET, socket.SOCK_STREAM | nonblock) if sys.platform == "linux" else None
    begun, cpu = now, time.process_time()
    while (now := time.monotonic()) < begun + SKELETON_SECONDS:
        if heap[0][0] > now:
            time.sleep(heap[0][0] - now)
            continue
        _, _, state = heapq.heappop(heap)  # [failures, last error]
        if spare is not None:
            err = spare.connect_ex(target)
            if err == errno.EINPROGRESS:  # (Linux reports a refusal over loopback so)
                err = spare.connect_ex(target)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM | nonblock) as sock:
                err = sock.connect_ex(target)
                if err == errno.EINPROGRESS:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or err
        state[1] = OSError(err, os.strerror(err))
        state[0] += 1
        delay = min(c.retry_max, c.retry_min * 2.0 ** min(state[0], 64))
        heapq.heappush(heap, (now + delay - delay * rng.random() / 2, seq, state))
        seq += 1
        dials += 1
    cpu = time.process_time() - cpu
    if spare is not None:
        spare.close()
    return cpu / max(1, dials)


async def aio_raw_floor(port: int) -> float:
    """CPU seconds per refused ``asyncio.open_connection``."""

    async def burst() -> float:
        count, cpu = 0, time.process_time()
        end = time.monotonic() + RAW_BURST_SECONDS
        while time.monotonic() < end:
            for _ in range(20):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    pass
                else:  # somebody took the port meanwhile
                    writer.close()
            count += 20
        return (time.process_time() - cpu) / count

    return statistics.median([await burst() for _ in range(RAW_BURSTS)])


def sync_dialing(c: Child) -> None:
    import perconn

    _proc.emit(raw_dial=sync_raw_floor(c.port))
    rss0 = proc_status("VmRSS")
    conns: list[perconn.Conn] = []
    made = time.monotonic()
    create_by = c.budget(0.35)
    tick = Every(PROGRESS)
    for _ in range(c.conns):
        conns.append(perconn.connect(f"{c.host}:{c.port}", retry_min=c.retry_min, retry_max=c.retry_max))
        if tick():
            _proc.emit(created=len(conns), create_s=time.monotonic() - made, threads=threading.active_count())
        if time.monotonic() > create_by:
            _proc.emit(overran=f"making the Conns: stopped at {len(conns)}, measured those")
            break
    made_all(c, conns, made)
    time.sleep(WARMUP)

    def failures() -> tuple[float, int]:
        before = time.monotonic()
        total = sum(conn.stats.dial_failures for conn in conns)
        return (before + time.monotonic()) / 2, total

    window = Window(*failures())
    while (now := time.monotonic()) < window.end(c):
        time.sleep(0.1)
        window.woke(now)
    window.report(*failures(), conns, rss0)
    closes = []
    for conn in one_at_a_time(conns):
        begun = time.perf_counter()
        conn.close()
        closes.append(time.perf_counter() - begun)
        _proc.emit(close_one=closes[-1])
        time.sleep(0.05)
    _proc.emit(close_one_p50=statistics.median(closes), close_one_max=max(closes))
    close_by, tick = c.budget(0.25), Every(PROGRESS)
    begun, closed = time.perf_counter(), 0
    for conn in conns:
        conn.close()
        closed += 1
        if tick():
            _proc.emit(closed=closed, close_all_s=time.perf_counter() - begun)
        if time.monotonic() > close_by:
            _proc.emit(closed=closed, close_all_s=time.perf_counter() - begun, overran="closing them all")
            return
    _proc.emit(closed=closed, close_all_s=time.perf_counter() - begun)
    time.sleep(0.5)
    _proc.emit(threads_after=threading.active_count() - 1)  # (besides the main thread)
    # Last, the Conns gone: what the skeleton leaves behind is counted towards CPython's next
    # full collection, which would then fall in the window (a 100 ms pause, seen).
    _proc.emit(skeleton_dial=sync_skeleton(c))


def sync_idle(c: Child) -> None:
    import perconn

    rss0 = proc_status("VmRSS")
    made = time.monotonic()
    conns = [
        perconn.connect(f"127.0.0.1:{c.port}", retry_min=c.retry_min, retry_max=c.retry_max) for _ in range(c.conns)
    ]
    _proc.emit(created=len(conns), create_s=time.monotonic() - made)
    connect_by = c.budget(0.5)
    while still_connecting(conns, made, connect_by):
        time.sleep(0.1)
    time.sleep(0.5)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    time.sleep(c.idle_seconds)
    idle_report(c, cpu0, t0, rss0)
    close_by = c.budget(0.25)
    begun = time.perf_counter()
    for i, conn in enumerate(conns):
        conn.close()
        if time.monotonic() > close_by:
            _proc.emit(closed=i + 1, close_all_s=time.perf_counter() - begun, overran="closing them all")
            return
    _proc.emit(closed=len(conns), close_all_s=time.perf_counter() - begun)


def idle_report(c: Child, cpu0: float, t0: float, rss0: int) -> None:
    """Report an idle spell begun at *t0* (monotonic) with *cpu0* CPU seconds used:
    CPU-s/s, threads, RSS per ``Conn`` (*rss0*: kB before they were made)."""
    elapsed = time.monotonic() - t0
    _proc.emit(
        idle_cpu_per_s=(cpu_seconds() - cpu0) / elapsed,
        threads=threading.active_count(),
        os_threads=proc_status("Threads"),
        rss_per_conn=(proc_status("VmRSS") - rss0) * 1024 / c.conns,
    )


async def aio_dialing(c: Child) -> None:
    import perconn.aio

    _proc.emit(raw_dial=await aio_raw_floor(c.port))
    rss0 = proc_status("VmRSS")
    conns: list[perconn.aio.Conn] = []
    made = time.monotonic()
    for _ in range(c.conns):
        conns.append(perconn.aio.connect(f"{c.host}:{c.port}", retry_min=c.retry_min, retry_max=c.retry_max))
    made_all(c, conns, made)
    await asyncio.sleep(WARMUP)

    def failures() -> tuple[float, int]:
        return time.monotonic(), sum(conn.stats.dial_failures for conn in conns)

    window = Window(*failures())
    while (now := time.monotonic()) < window.end(c):
        await asyncio.sleep(0.1)
        window.woke(now)
    window.report(*failures(), conns, rss0)
    closes = []
    for conn in one_at_a_time(conns):
        begun = time.perf_counter()
        await conn.close()
        closes.append(time.perf_counter() - begun)
        _proc.emit(close_one=closes[-1])
        await asyncio.sleep(0.05)
    _proc.emit(close_one_p50=statistics.median(closes), close_one_max=max(closes))
    if not await aio_close_all(c, conns):
        return
    await asyncio.sleep(0.5)
    _proc.emit(tasks_after=len(asyncio.all_tasks()) - 1)


async def aio_idle(c: Child) -> None:
    import perconn.aio

    rss0 = proc_status("VmRSS")
    made = time.monotonic()
    conns = [
        perconn.aio.connect(f"127.0.0.1:{c.port}", retry_min=c.retry_min, retry_max=c.retry_max) for _ in range(c.conns)
    ]
    _proc.emit(created=len(conns), create_s=time.monotonic() - made)
    connect_by = c.budget(0.5)
    while still_connecting(conns, made, connect_by):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(c.idle_seconds)
    idle_report(c, cpu0, t0, rss0)
    await aio_close_all(c, conns)


async def aio_close_all(c: Child, conns: list[perconn.aio.Conn]) -> bool:
    """Close every ``Conn`` at once (``asyncio.gather``: how a program closes many
    on one loop; each ``close()`` awaits its dial task, one loop iteration or
    two, so closing them one after another takes N iterations); False if that
    overran its share of the timeout."""
    begun = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(conn.close() for conn in conns)), c.budget(0.25) - time.monotonic())
    except asyncio.TimeoutError:
        closed = sum(conn.closed for conn in conns)
        _proc.emit(closed=closed, close_all_s=time.perf_counter() - begun, overran="closing them all")
        return False
    _proc.emit(closed=len(conns), close_all_s=time.perf_counter() - begun)
    return True


def child_main(args: argparse.Namespace) -> None:
    """Run one scenario of one front end, reporting as it goes; exit at once
    after (threads or tasks left behind by a scenario that overran die with us)."""
    import perconn

    def work() -> None:
        fds = _proc.raise_fd_limit(4 * args.conns + 256)
        _proc.emit(fd_limit=fds, perconn=os.path.dirname(perconn.__file__))
        c = Child(
            *(args.child, args.conns, args.retry_min, args.retry_max),
            *(args.seconds, args.idle_seconds, args.timeout, args.port, args.gc_freeze, args.host),
        )
        if args.child == "sync":
            (sync_dialing if args.scenario == "dialing" else sync_idle)(c)
        else:
            asyncio.run(aio_dialing(c) if args.scenario == "dialing" else aio_idle(c))

    _proc.as_child(args.timeout, work)


# -- running the children, in the parent ---------------------------------------------


@dataclass
class Outcome:
    """What one child process reported: its figures (the last of each), the
    samples it got to (lateness, single closes), its notes, and whether it overran."""

    front: str
    scenario: str
    values: dict[str, float] = field(default_factory=dict)
    late: list[float] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    killed: bool = False
    elapsed: float = 0.0

    def take(self, got: dict[str, Any]) -> None:
        """Take in one report of the child's."""
        for key, value in got.items():
            if key == "late" and isinstance(value, float):
                self.late.append(value)
            elif key == "close_one" and isinstance(value, float):
                self.closes.append(value)
            elif isinstance(value, bool):
                continue
            elif isinstance(value, int | float):
                self.values[key] = float(value)
            elif isinstance(value, str):
                self.notes[key] = value

    @property
    def overran(self) -> str | None:
        """The phase a scenario overran in, if it did."""
        if self.killed:
            return f"killed after {self.elapsed:.0f} s (hard timeout), {self.phase()}"
        return self.notes.get("overran")

    def phase(self) -> str:
        """How far a killed child got: the last phase it began."""
        v = self.values
        if self.scenario == "dialing":
            if "close_one_p50" in v:
                return f"while closing them all ({v.get('closed', 0):.0f} closed)"
            if "window_s" in v:
                return f"while closing {CLOSE_ONE} one at a time ({len(self.closes)} closed)"
            if self.late:
                return f"in the window ({len(self.late)} sleeps measured)"
            if "raw_dial" in v:
                return f"while making the Conns or warming up ({v.get('created', 0):.0f} made)"
            return "before the Conns were made"
        if "idle_cpu_per_s" in v:
            return "while closing them all"
        if "connected" in v:
            return f"while connecting or idle ({v['connected']:.0f} connected)"
        return "while making the Conns"

    def settle(self) -> None:
        """Fill in what a killed child did not get to summarize from its samples."""
        v = self.values
        if "window_s" not in v:
            v.update(lateness(self.late, "late"))
            if v.get("window_so_far"):
                v["cpu_per_s"] = v["window_cpu"] / v["window_so_far"]
        if self.closes and "close_one_p50" not in self.values:
            self.values.update(close_one_p50=statistics.median(self.closes), close_one_max=max(self.closes))


@contextlib.contextmanager
def server(conns: int) -> Iterator[int]:
    """The accept-everything server in a process of its own; yield its port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(conns + 256)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        _proc.stop_server(proc)


def run_child(front: str, scenario: str, args: argparse.Namespace, port: int) -> Outcome:
    """Run one scenario of one front end in a process of its own, killed (with
    everything it started) after ``args.timeout`` seconds."""
    out = Outcome(front, scenario)
    out.values["wanted"] = args.conns
    options = [
        *("--child", front, "--scenario", scenario, "--port", str(port)),
        *("--conns", str(args.conns), "--retry-min", str(args.retry_min), "--retry-max", str(args.retry_max)),
        *("--seconds", str(args.seconds), "--idle-seconds", str(args.idle_seconds), "--timeout", str(args.timeout)),
        *(["--gc-freeze"] if args.gc_freeze else []),
        *("--host", args.host),
    ]
    begun = time.monotonic()
    out.killed = _proc.run_child(__file__, options, args.timeout, out.take)
    out.elapsed = time.monotonic() - begun
    out.settle()
    return out


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[Outcome]:
    """Every scenario asked for, each front end in a process of its own."""
    fronts = ("sync", "aio") if args.front == "both" else (args.front,)
    scenarios = ("dialing", "idle") if args.scenario == "both" else (args.scenario,)
    outcomes = []
    for scenario in scenarios:
        for front in fronts:
            log(f"scale: {front}, {scenario}, {args.conns} Conns ...")
            if scenario == "idle":
                with server(args.conns) as port:
                    outcomes.append(run_child(front, scenario, args, port))
            else:
                outcomes.append(run_child(front, scenario, args, _proc.spare_port()))
    return outcomes


# -- the table ---------------------------------------------------------------------------


def asked_per_s(conns: int, retry_max: float) -> float:
    """Failed dials per second the backoff schedule asks of *conns* ramped-up
    ``Conn``s (jittered: each sleep uniform in ``[retry_max/2, retry_max]``, mean
    ``0.75 * retry_max``), a dial itself taking no time."""
    return conns / (0.75 * retry_max)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 0.01 else f"{seconds * 1e3:.0f} ms"


Cell = Callable[[dict[str, float]], str | None]


def cell(key: str, show: Callable[[float], str]) -> Cell:
    return lambda v: show(v[key]) if key in v else None


def threads(v: dict[str, float]) -> str | None:
    """Python's count of threads, and the OS's (absent from a report made while making the ``Conn``s)."""
    if "threads" not in v:
        return None
    return f"{v['threads']:.0f}" + (f" (OS: {v['os_threads']:.0f})" if "os_threads" in v else " (while making them)")


def dialing_rows(args: argparse.Namespace) -> list[tuple[str, Cell, str]]:
    def dials(v: dict[str, float]) -> str | None:
        if "failures" not in v:
            return None
        rate = v["failures"] / v["window_s"]
        ask = asked_per_s(int(v.get("created", v["wanted"])), args.retry_max)
        return f"{rate:.0f}/s of {ask:.0f}/s asked ({rate / ask:.2f})"

    def window(v: dict[str, float]) -> str | None:
        if "window_s" in v:
            return f"{v['window_s']:.1f} s"
        return f"{v['window_so_far']:.1f} s (cut short)" if "window_so_far" in v else None

    def per_dial(v: dict[str, float]) -> str | None:
        if not v.get("failures"):
            return None
        cost = v["cpu_per_s"] * v["window_s"] / v["failures"]
        ratios = [
            f"{cost / v[key]:.1f}x {name}"
            for key, name in (("raw_dial", "raw"), ("skeleton_dial", "skeleton"))
            if key in v
        ]
        return f"{us(cost)} ({', '.join(ratios)})" if ratios else us(cost)

    def skeleton(v: dict[str, float]) -> str | None:
        if "skeleton_dial" not in v:
            return None
        return f"{us(v['skeleton_dial'])} ({v['skeleton_dial'] / v['raw_dial']:.1f}x raw)"

    def late(v: dict[str, float]) -> str | None:
        if "late_p50" not in v:
            return None
        return f"{ms(v['late_p50'])} / {ms(v['late_p99'])} / {ms(v['late_max'])}"

    def close_one(v: dict[str, float]) -> str | None:
        return f"{ms(v['close_one_p50'])} / {ms(v['close_one_max'])}" if "close_one_p50" in v else None

    def close_all(v: dict[str, float]) -> str | None:
        if "close_all_s" not in v:
            return None
        closed, made = v.get("closed", 0), v.get("created", v["wanted"])
        more = "" if closed >= made else f" ({closed:.0f} of {made:.0f})"
        return f"{v['close_all_s']:.2f} s{more}"

    def after(v: dict[str, float]) -> str | None:
        if "threads_after" in v:
            return f"{v['threads_after']:.0f} threads besides main"
        return f"{v['tasks_after']:.0f} tasks besides main" if "tasks_after" in v else None

    return [
        ("Conns made in", lambda v: f"{v['create_s']:.2f} s ({v['created']:.0f})" if "create_s" in v else None, ""),
        ("window", window, f"{args.seconds:g} s"),
        ("threads", threads, "<= 4"),
        ("CPU-s/s (process)", cell("cpu_per_s", lambda x: f"{x:.2f}"), "<= 1"),
        ("failed dials", dials, "spread"),
        ("CPU per failed dial", per_dial, "<= 2x raw"),
        ("raw floor per dial", cell("raw_dial", us), ""),
        ("skeleton dialer per dial", skeleton, ""),
        ("sleep(0.1) late p50/p99/max", late, "p99 <= 50 ms"),
        ("  longest GC pause in it", cell("gc_longest", ms), ""),
        (f"close() one p50/max ({CLOSE_ONE})", close_one, "<= 100 ms"),
        ("close() all the others", close_all, "<= 2 s"),
        ("left after close", after, "0 extra"),
        ("RSS per Conn", cell("rss_per_conn", lambda x: f"{x / 1024:.1f} KiB"), "stated"),
    ]


def idle_rows() -> list[tuple[str, Cell, str]]:
    def connected(v: dict[str, float]) -> str | None:
        if "connect_s" not in v:
            return None
        return f"{v['connect_s']:.2f} s ({v.get('connected', 0):.0f} of {v['wanted']:.0f})"

    return [
        ("all connected in", connected, ""),
        ("threads", threads, "1 (sync)"),
        ("CPU-s/s idle", cell("idle_cpu_per_s", lambda x: f"{x:.3f}"), "~0"),
        ("RSS per Conn", cell("rss_per_conn", lambda x: f"{x / 1024:.1f} KiB"), "stated"),
        ("close() all", cell("close_all_s", lambda x: f"{x:.2f} s"), "<= 2 s"),
    ]


FRONT_NAMES = {"sync": "perconn.Conn", "aio": "perconn.aio.Conn"}


def table(args: argparse.Namespace, outcomes: list[Outcome]) -> str:
    """The scenarios' figures, a column per front end, the issue's target beside them."""
    lines = []
    named = f" named {args.host}" if args.host != "127.0.0.1" else ""
    frozen = " (gc.freeze() once made)" if args.gc_freeze else ""
    for scenario, title, spec in (
        ("dialing", f"A: {args.conns} Conns dialing a refused port{named}{frozen}", dialing_rows(args)),
        ("idle", f"B: {args.conns} Conns connected, idle ({args.idle_seconds:g} s)", idle_rows()),
    ):
        got = [o for o in outcomes if o.scenario == scenario]
        if not got:
            continue
        retry = f"retry_min {args.retry_min:g} s, retry_max {args.retry_max:g} s"
        lines.append(f"{title} ({retry}):")
        names = [FRONT_NAMES[o.front] for o in got]
        lines.append(f"  {'':<30}" + "".join(f"{n:<34}" for n in names) + "target")
        for label, show, target in spec:
            cells = [show(o.values) or "-" for o in got]
            lines.append(f"  {label:<30}" + "".join(f"{c:<34}" for c in cells) + target)
        for o in got:
            if o.overran:
                lines.append(f"  {FRONT_NAMES[o.front]} OVERRAN: {o.overran}")
            if "error" in o.notes:
                lines.append(f"  {FRONT_NAMES[o.front]} failed: {o.notes['error']}")
        if scenario == "dialing":
            lines.append(
                "  (asked: Conns made / (0.75 * retry_max), 0.75 * retry_max being the mean jittered sleep at the cap;"
                " raw floor: a refused blocking connect() for perconn.Conn, asyncio.open_connection for"
                " perconn.aio.Conn, the median of 10 bursts; skeleton: the least a dialer thread can do for"
                " as many connections on the same schedule, see sync_skeleton)"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=10000, help="Conns per scenario (default 10000)")
    p.add_argument("--retry-min", type=float, default=0.05)
    p.add_argument("--retry-max", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window of scenario A")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle measurement of scenario B")
    p.add_argument("--front", choices=("both", "sync", "aio"), default="both")
    p.add_argument("--scenario", choices=("both", "dialing", "idle"), default="both")
    p.add_argument("--timeout", type=float, default=120.0, help="hard timeout of one scenario of one front end")
    p.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the dialing Conns are made (full collections then skip them)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="what the dialing Conns name (default 127.0.0.1; a name such as localhost makes each dial a lookup)",
    )
    p.add_argument("--child", choices=("sync", "aio"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if not _proc.is_parent(args.child, lambda: child_main(args)):
        return
    if args.conns < 1 or args.seconds <= 0 or args.timeout <= 0:
        parser().error("--conns, --seconds and --timeout must be positive")
    import perconn

    print(f"perconn from {os.path.dirname(perconn.__file__)}; {os.cpu_count()} CPUs")
    outcomes = run(args)
    print(table(args, outcomes))


if __name__ == "__main__":
    _proc.main(main)
