"""The thundering herd: a server restarted under 1,000 connected ``Conn``s.

A server (a ``selectors`` loop in a process of its own, on a port below the
kernel's ephemeral range, so no other program takes it while the server is
down) accepts and holds connections and notes the time of every accept.
``--conns`` ``Conn``s connect to it; then the server is killed (``SIGKILL``: the kernel closes every
connection), and ``--down`` seconds later a second server starts listening on
the same port (``SO_REUSEADDR``; it was started beforehand and only waited for
the word, so its start-up time is not counted). The bench waits until every
``Conn`` is connected again, then reads the new server's accept times.

A synchronous ``Conn`` notices a dropped connection on its next read or write,
so each has a thread blocked in ``read()`` (a client waiting for its server's
next message); an asyncio ``Conn`` notices on its own (the transport reads all
the time).

Reported, per front end, with ``jitter=True`` (the default) and ``jitter=False``
(``perconn.connect(..., jitter=False)``), each run in a process of its own:
how many came back, the time from the restart until all were back (each
``Conn``'s own ``stats.state_since``; also as a multiple of ``retry_max``: the
target is within 2x), until half were, the peak of the server's accepts per
50 ms and its last accept (a server starved of CPU by the clients accepts
late). Without jitter every ``Conn`` follows the same schedule from the same
instant (the drop), so they come back in lockstep.

``--plot docs/herd.png`` draws accepts per 50 ms over time, jitter on vs off,
one panel per front end (needs matplotlib: ``pip install -e '.[bench]'``).

Run: ``python bench/herd.py [--conns 1000] [--down 0.5] [--retry-min 0.05] [--retry-max 0.5]
[--front both|sync|aio] [--plot docs/herd.png]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import perconn

if TYPE_CHECKING or __package__:  # part of the bench package (python -m bench; mypy checks this one)
    from . import _proc
else:  # run as a script (python bench/herd.py): bench/ is sys.path[0]
    import _proc

BUCKET = 0.05
"""Seconds: the width of one bucket of accepts."""

SETTLE = 0.3
"""Seconds between every ``Conn`` connected and the kill (readers blocked, nothing in flight)."""

POLL = 0.02
"""Seconds between two looks at whether every ``Conn`` is (back) up."""

SERVER = r"""
import json, os, resource, selectors, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
accepts = []
held = []
srv = None
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
pending = b""
def say(**what):
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            got = os.read(0, 4096)
            if not got:
                sys.exit(0)  # the bench is done with us
            pending += got
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                word, *args = line.decode().split()
                if word == "listen":
                    if len(args) > 1:
                        time.sleep(max(0.0, float(args[1]) - time.monotonic()))
                    srv = socket.socket()
                    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    srv.bind(("127.0.0.1", int(args[0])))
                    srv.listen(4096)
                    srv.setblocking(False)
                    sel.register(srv, selectors.EVENT_READ)
                    say(port=srv.getsockname()[1], at=time.monotonic())
                elif word == "report":
                    say(accepts=accepts)
        elif key.fileobj is srv:
            for _ in range(512):
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    break
                accepts.append(time.monotonic())
                held.append(c)  # held, never read: a silent server
"""
"""The herd's server: waits for ``listen PORT [AT]`` on stdin (so it can be
started before it is needed; *AT*: not before this ``time.monotonic()``, the
same clock in every process, so a busy bench cannot delay the restart), then
accepts and holds every connection, noting the time of each; ``report`` prints
them; end of stdin ends it."""


class Server:
    """A running copy of :data:`SERVER`, in this process's process group."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout

    def tell(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")

    def answer(self) -> dict[str, object]:
        got = json.loads(self.stdout.readline())
        assert isinstance(got, dict)
        return got

    def ask(self, line: str) -> dict[str, object]:
        self.tell(line)
        return self.answer()

    def listen(self, port: int = 0, at: float | None = None) -> None:
        """Start listening on *port* (0: any), at the monotonic time *at* if given;
        :meth:`listening` says when it did."""
        self.tell(f"listen {port}" if at is None else f"listen {port} {at!r}")

    def listening(self) -> tuple[int, float]:
        """The port listened on, and when it began (monotonic)."""
        got = self.answer()
        bound, at = got["port"], got["at"]
        assert isinstance(bound, int) and isinstance(at, float)
        return bound, at

    def accepts(self) -> list[float]:
        got = self.ask("report")["accepts"]
        assert isinstance(got, list)
        return [float(t) for t in got]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        _proc.stop_server(self.proc)


@contextlib.contextmanager
def servers() -> Iterator[tuple[Server, Server]]:
    """The first server, and its successor waiting for the word; both ended on exit."""
    first, second = Server(), Server()
    try:
        yield first, second
    finally:
        first.kill()
        first.stop()
        second.stop()


@dataclass
class Plan:
    """One restart, as the child process runs it."""

    conns: int
    jitter: bool
    down: float
    retry_min: float
    retry_max: float
    timeout: float

    def wait_back(self) -> float:
        """Seconds after the restart to wait for every ``Conn`` at most."""
        return min(self.timeout / 2, max(5.0, 10 * self.retry_max))


def outcome(stats: Sequence[perconn.Stats]) -> dict[str, object]:
    """When each ``Conn`` that came back connected (its own clock: ``state_since``),
    and what those that did not were doing."""
    back: list[perconn.Stats] = []
    away: list[perconn.Stats] = []
    for s in stats:
        (back if s.connections >= 2 and s.state == "connected" else away).append(s)
    return {"connected": [s.state_since for s in back], "stuck": stuck(away)}


def restart(first: Server, second: Server, port: int, plan: Plan) -> float:
    """Kill *first* and have *second* listen on its *port* ``plan.down`` seconds
    later; return when *first* was killed."""
    killed = time.monotonic()
    second.listen(port, killed + plan.down)
    first.kill()
    return killed


def report_back(killed: float, listening: float, second: Server, stats: Sequence[perconn.Stats]) -> None:
    """Report the restart (killed, listening again) and how the ``Conn``\\s came back."""
    _proc.emit(killed=killed, listening=listening, accepts=second.accepts(), **outcome(stats))


def stuck(stats: Sequence[perconn.Stats]) -> str:
    """What the ``Conn``s that did not come back were doing: their commonest
    states and last errors."""
    if not stats:
        return ""
    seen = collections.Counter(f"{s.state}, last error: {s.last_error}" for s in stats)
    dials = sorted(s.dials for s in stats)
    common = "; ".join(f"{n} x ({what})" for what, n in seen.most_common(3))
    return f"{len(stats)}, {dials[0]}-{dials[-1]} dials each: {common}"


def poll_until(done: Callable[[], bool], deadline: float) -> bool:
    """Call *done* every :data:`POLL` seconds until it is true or *deadline* (monotonic) passes."""
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def sync_child(plan: Plan) -> None:
    def reader(conn: perconn.Conn) -> None:
        for _ in range(1000):  # a read ends only when its connection does: a few here
            try:
                conn.read(1)
            except perconn.ClosedConnectionError:
                return
            except perconn.ConnectionIOError:
                continue  # dropped: wait for the next connection

    with servers() as (first, second):
        first.listen(_proc.spare_port())
        port, _ = first.listening()
        conns = [
            perconn.connect(f"127.0.0.1:{port}", retry_min=plan.retry_min, retry_max=plan.retry_max, jitter=plan.jitter)
            for _ in range(plan.conns)
        ]
        try:
            up = poll_until(lambda: all(c.connected for c in conns), time.monotonic() + plan.timeout / 4)
            _proc.emit(connected=sum(c.connected for c in conns), up=up)
            readers = [threading.Thread(target=reader, args=(c,), daemon=True) for c in conns]
            for r in readers:
                r.start()
            time.sleep(SETTLE)
            killed = restart(first, second, port, plan)
            _, listening = second.listening()
            poll_until(lambda: all(c.generation >= 2 for c in conns), listening + plan.wait_back())
            report_back(killed, listening, second, [c.stats for c in conns])
        finally:
            for c in conns:
                c.close()


async def aio_child(plan: Plan) -> None:
    import perconn.aio

    async def until(done: Callable[[], bool], deadline: float) -> bool:
        while not done():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL)
        return True

    with servers() as (first, second):
        first.listen(_proc.spare_port())
        port, _ = first.listening()
        conns = [
            perconn.aio.connect(
                f"127.0.0.1:{port}", retry_min=plan.retry_min, retry_max=plan.retry_max, jitter=plan.jitter
            )
            for _ in range(plan.conns)
        ]
        try:
            up = await until(lambda: all(c.connected for c in conns), time.monotonic() + plan.timeout / 4)
            _proc.emit(connected=sum(c.connected for c in conns), up=up)
            await asyncio.sleep(SETTLE)
            killed = restart(first, second, port, plan)
            _, listening = await asyncio.to_thread(second.listening)
            await until(lambda: all(c.generation >= 2 for c in conns), listening + plan.wait_back())
            report_back(killed, listening, second, [c.stats for c in conns])
        finally:
            for c in conns:
                await c.close()


def child_main(args: argparse.Namespace) -> None:
    def work() -> None:
        _proc.raise_fd_limit()
        plan = Plan(args.conns, args.jitter == "on", args.down, args.retry_min, args.retry_max, args.timeout)
        if args.child == "sync":
            sync_child(plan)
        else:
            asyncio.run(aio_child(plan))

    _proc.as_child(args.timeout, work)


# -- the parent ---------------------------------------------------------------------------


@dataclass
class Herd:
    """One restart: when the server was killed, the new server's accept times,
    and when each ``Conn`` that came back connected (by its own clock), all in
    seconds since the new server listened."""

    front: str
    jitter: bool
    conns: int
    killed: float = math.nan  # seconds before the restart (negative)
    accepts: list[float] = field(default_factory=list)
    connected: list[float] = field(default_factory=list)
    problem: str | None = None

    @property
    def back(self) -> int:
        return len(self.connected)

    def buckets(self) -> list[int]:
        """Accepts per :data:`BUCKET` seconds from the restart."""
        if not self.accepts:
            return []
        counts = [0] * (int(max(self.accepts) / BUCKET) + 1)
        for t in self.accepts:
            counts[max(0, int(t / BUCKET))] += 1
        return counts

    def peak(self) -> int:
        return max(self.buckets(), default=0)

    def until(self, share: float) -> float | None:
        """Seconds from the restart until *share* of the ``Conn``s were connected again."""
        need = math.ceil(share * self.conns)
        ordered = sorted(self.connected)
        return ordered[need - 1] if len(ordered) >= need > 0 else None


def run_one(front: str, jitter: bool, args: argparse.Namespace) -> Herd:
    """One restart, in a process of its own killed (with its servers) after ``args.timeout``."""
    herd = Herd(front, jitter, args.conns)
    options = [
        *("--child", front, "--jitter", "on" if jitter else "off"),
        *("--conns", str(args.conns), "--down", str(args.down), "--timeout", str(args.timeout)),
        *("--retry-min", str(args.retry_min), "--retry-max", str(args.retry_max)),
    ]
    reports: list[dict[str, Any]] = []
    if _proc.run_child(__file__, options, args.timeout, reports.append):
        herd.problem = f"killed after {args.timeout:g} s (hard timeout)"
    for got in reports:
        if "error" in got:
            herd.problem = str(got["error"])
        if got.get("up") is False:
            herd.problem = f"only {got.get('connected')} of {args.conns} connected before the restart"
        if "accepts" in got:
            listening = float(got["listening"])
            herd.killed = float(got["killed"]) - listening
            if got.get("stuck"):
                herd.problem = f"not back: {got['stuck']}"
            herd.accepts = [float(t) - listening for t in got["accepts"]]
            herd.connected = [float(t) - listening for t in got["connected"]]
    return herd


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[Herd]:
    fronts = ("sync", "aio") if args.front == "both" else (args.front,)
    herds = []
    for front in fronts:
        for jitter in (True, False):
            log(f"herd: {front}, jitter={jitter}, {args.conns} Conns ...")
            herds.append(run_one(front, jitter, args))
    return herds


FRONT_NAMES = {"sync": "perconn.Conn", "aio": "perconn.aio.Conn"}


def table(args: argparse.Namespace, herds: Sequence[Herd]) -> str:
    lines = [
        f"Server restart under {args.conns} connected Conns (down {args.down:g} s;"
        f" retry_min {args.retry_min:g} s, retry_max {args.retry_max:g} s; times from the restart):",
        f"  {'':<28}{'back':>11}{'all back in':>14}{'x retry_max':>13}{'half back in':>14}"
        f"{'peak accepts/50 ms':>20}{'last accept':>13}",
    ]
    for h in herds:
        name = f"{FRONT_NAMES[h.front]} {'jitter' if h.jitter else 'no jitter'}"
        every, half = h.until(1.0), h.until(0.5)
        all_in = f"{every:.2f} s" if every is not None and h.back == h.conns else "-"
        times = f"{every / args.retry_max:.2f}" if every is not None and h.back == h.conns else "-"
        lines.append(
            f"  {name:<28}{f'{h.back}/{h.conns}':>11}{all_in:>14}{times:>13}"
            f"{f'{half:.2f} s' if half is not None else '-':>14}{h.peak():>20}"
            f"{f'{max(h.accepts):.2f} s' if h.accepts else '-':>13}"
        )
        if h.problem:
            lines.append(f"    ({h.problem})")
    lines.append(
        "  (back: connected again, by each Conn's stats.state_since; accepts: the server's clock;"
        " target: all back within 2 x retry_max of the restart)"
    )
    return "\n".join(lines)


def plot(args: argparse.Namespace, herds: Sequence[Herd], path: str) -> str:
    """Draw accepts per 50 ms over time, jitter on vs off, a panel per front end,
    into *path*; what happened, in a sentence."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    fronts = list(dict.fromkeys(h.front for h in herds))
    fig, axes = plt.subplots(len(fronts), 1, figsize=(8, 2.8 * len(fronts) + 0.6), squeeze=False)
    for ax, front in zip(axes[:, 0], fronts, strict=True):
        mine = [h for h in herds if h.front == front]
        for h in mine:
            counts = h.buckets()
            xs = [i * BUCKET for i in range(len(counts) + 1)]
            every = h.until(1.0)
            back = f"all back in {every:.2f} s" if every is not None and h.back == h.conns else f"{h.back} back"
            label = f"jitter={h.jitter}: peak {h.peak()}/50 ms, {back}"
            ax.stairs(counts, xs, label=label, fill=h.jitter, alpha=0.6 if h.jitter else 1.0, linewidth=1.5)
        killed = next((h.killed for h in mine if not math.isnan(h.killed)), -args.down)
        last = max((max(h.accepts) for h in mine if h.accepts), default=0.0)
        for x, style, color, text in (
            (killed, ":", "black", "server killed"),
            (0.0, "--", "grey", "listening again"),
            (2 * args.retry_max, ":", "red", "2 x retry_max after"),
        ):
            ax.axvline(x, color=color, linestyle=style, linewidth=1, label=text)
        ax.set_xlim(killed - 0.1, max(last, 2 * args.retry_max) + 0.2)
        ax.set_ylim(0, 1.7 * max((h.peak() for h in mine), default=1))  # room for the legend
        ax.set_title(f"{FRONT_NAMES[front]}: {args.conns} Conns, server down {args.down:g} s", fontsize=10)
        ax.set_ylabel(f"accepts per {BUCKET * 1000:.0f} ms")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel(
        f"seconds since the server listened again (retry_min {args.retry_min:g}, retry_max {args.retry_max:g})"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {path}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--down", type=float, default=0.5, help="seconds between the kill and the restart")
    p.add_argument("--retry-min", type=float, default=0.05)
    p.add_argument("--retry-max", type=float, default=0.5)
    p.add_argument("--front", choices=("both", "sync", "aio"), default="both")
    p.add_argument("--timeout", type=float, default=60.0, help="hard timeout of one restart")
    p.add_argument("--plot", metavar="PNG", help="draw accepts per 50 ms over time into this file")
    p.add_argument("--child", choices=("sync", "aio"), help=argparse.SUPPRESS)
    p.add_argument("--jitter", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if not _proc.is_parent(args.child, lambda: child_main(args)):
        return
    herds = run(args)
    print(table(args, herds))
    if args.plot:
        print(plot(args, herds, args.plot))


if __name__ == "__main__":
    _proc.main(main)
