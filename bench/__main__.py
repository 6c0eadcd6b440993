"""``python -m bench``: every benchmark, modestly sized, and one summary table.

Run from the repository root. In order:

- ``echo``: 64-byte echo round trips, ``perconn.Conn`` against a raw socket
  and the lean two-lock wrapper, ``perconn.aio.Conn`` against raw asyncio
  streams and a raw ``asyncio.Protocol`` client; then the same with 1 MiB
  round trips (bulk). Server and client pinned to one CPU (``--pin``).
- ``scale``: ``--conns`` ``Conn``s dialing a refused port, then connected and
  idle, each front end in a process of its own (``bench/scale.py``).
- ``herd``: a server restarted under ``--herd-conns`` connected ``Conn``s,
  jitter on and off (``bench/herd.py``); ``--plot docs/herd.png`` draws it.

Each prints its own table as it finishes; then the summary: the machine, and
the key ratios and figures beside the targets of issue 13. The defaults take
about two minutes on 2 CPUs; the full-size runs are ``python bench/scale.py``
(10,000 ``Conn``s) and ``python bench/echo.py`` (more rounds, and TLS).

Run: ``python -m bench [--conns 2000] [--herd-conns 1000] [--rounds 5] [--pin same|split|none] [--plot docs/herd.png]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from collections.abc import Callable

import perconn

from . import _proc, echo, herd, scale

BULK = 1 << 20
"""Bytes a bulk round trip."""


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} CPUs ({usable} usable)",
        f"Python {platform.python_version()} ({platform.python_implementation()}),"
        f" {platform.system()} {platform.release()}",
        f"perconn {perconn.__version__} from {os.path.dirname(perconn.__file__)}",
        f"measured {time.strftime('%Y-%m-%d %H:%M')}",
    ]


Summary = list[tuple[str, str, str, str]]
"""Rows of the summary: what, perconn.Conn, perconn.aio.Conn, target."""


def ratio(row: echo.Row, base: str) -> str:
    rate, cpu = row.ratios[base]
    return f"{rate:.3f} ({cpu:.2f}x CPU)"


def echo_rows(args: argparse.Namespace, summary: Summary, notes: list[str]) -> None:
    """The echo benchmark, 64 bytes and bulk, pinned as ``--pin`` says (this
    process's CPUs are restored after, so the later benchmarks are not pinned)."""
    server_cpu, client_cpu = echo.placement(args.pin)
    sizes = (64, BULK) if args.bulk else (64,)
    if _proc.steady_malloc():
        notes.append("echo: malloc's big buffers kept, not returned to the OS between round trips (steady_malloc)")
    with _proc.pinned(client_cpu), echo.serving(echo.SERVER, cpu=server_cpu) as port:
        for size in sizes:
            rounds, seconds = args.rounds, args.echo_seconds
            sync = echo.sync_rates(port, seconds, rounds, size)
            aio = asyncio.run(echo.aio_rates(port, seconds, rounds, size))
            what = f"{size}-byte echo round trips (pinned: {args.pin}; medians of {rounds} rounds of {seconds}s)"
            echo.print_rows(f"{what}, sync:", sync)
            echo.print_rows(f"{what}, asyncio:", aio)
            ours = {row.name: row for row in (*sync, *aio)}
            conn, aconn = ours["perconn.Conn"], ours["perconn.aio.Conn"]
            label = "64-byte echo" if size == 64 else f"{size >> 20} MiB echo (bulk)"
            if size == 64:
                summary.append(
                    (
                        f"{label} vs raw",
                        ratio(conn, "raw socket"),
                        ratio(aconn, "raw asyncio streams"),
                        "aio >= 1.00, <= 1.00x CPU",
                    )
                )
                summary.append(
                    (
                        f"{label} vs lean / Protocol",
                        ratio(conn, "lean two-lock"),
                        ratio(aconn, "raw asyncio Protocol"),
                        ">= 0.98, <= 1.04x CPU / >= 0.96",
                    )
                )
            else:
                summary.append(
                    (f"{label} vs raw", ratio(conn, "raw socket"), ratio(aconn, "raw asyncio streams"), ">= 0.95")
                )


SCALE_ROWS = {
    "threads": "dialing: threads",
    "CPU-s/s (process)": "dialing: CPU-s/s",
    "failed dials": "dialing: failed dials achieved",
    "CPU per failed dial": "dialing: CPU per failed dial",
    "sleep(0.1) late p50/p99/max": "dialing: sleep(0.1) late p50/p99/max",
    "close() one p50/max (5)": "dialing: close() one p50/max",
    "close() all the others": "dialing: close() all",
    "RSS per Conn": "dialing: RSS per Conn",
}
"""The rows of scale's scenario A (dialing a refused port) in the summary, and their names there."""

IDLE_ROWS = {"threads": "idle: threads", "CPU-s/s idle": "idle: CPU-s/s"}
"""The rows of scale's scenario B (connected, idle) in the summary."""


def scale_rows(args: argparse.Namespace, summary: Summary, notes: list[str]) -> None:
    options = scale.parser().parse_args(
        [
            *("--conns", str(args.conns), "--seconds", str(args.scale_seconds)),
            *("--timeout", str(args.scale_timeout), "--idle-seconds", "2"),
        ]
    )
    outcomes = scale.run(options)
    print(scale.table(options, outcomes))
    for scenario, rows, names in (
        ("dialing", scale.dialing_rows(options), SCALE_ROWS),
        ("idle", scale.idle_rows(), IDLE_ROWS),
    ):
        by_front = {o.front: o for o in outcomes if o.scenario == scenario}
        for label, show, target in rows:
            if label not in names:
                continue
            cells = [show(by_front[f].values) or "-" if f in by_front else "-" for f in ("sync", "aio")]
            summary.append((f"{names[label]}", cells[0], cells[1], target))
        for front, o in by_front.items():
            if o.overran:
                notes.append(f"scale {scenario}, {scale.FRONT_NAMES[front]} OVERRAN: {o.overran}")


def herd_rows(args: argparse.Namespace, summary: Summary, notes: list[str]) -> None:
    options = herd.parser().parse_args(["--conns", str(args.herd_conns)])
    herds = herd.run(options)
    print(herd.table(options, herds))
    notes.extend(f"herd {herd.FRONT_NAMES[h.front]} jitter={h.jitter}: {h.problem}" for h in herds if h.problem)
    if args.plot:
        notes.append(herd.plot(options, herds, args.plot))
        print(notes[-1])

    def cell(front: str, show: Callable[[herd.Herd], str]) -> str:
        got = [show(h) for jitter in (True, False) for h in herds if h.front == front and h.jitter == jitter]
        return " / ".join(got) if got else "-"

    def back(h: herd.Herd) -> str:
        every = h.until(1.0)
        if every is None or h.back < h.conns:
            return f"{h.back} of {h.conns}"
        return f"{every / options.retry_max:.2f}x"

    summary.append(
        (
            f"herd ({options.conns}): all back, x retry_max, jitter / none",
            cell("sync", back),
            cell("aio", back),
            "<= 2x",
        )
    )
    summary.append(
        (
            "herd: peak accepts per 50 ms, jitter / none",
            cell("sync", lambda h: str(h.peak())),
            cell("aio", lambda h: str(h.peak())),
            "reported",
        )
    )


def print_summary(args: argparse.Namespace, summary: Summary, notes: list[str], took: float) -> None:
    print()
    defaults = scale.parser()
    retry = f"retry_min {defaults.get_default('retry_min')} s, retry_max {defaults.get_default('retry_max')} s"
    print(f"Summary (python -m bench, {took:.0f} s; scale: {args.conns} Conns dialing a refused port / idle, {retry}):")
    for line in machine():
        print(f"  {line}")
    width = max((len(row[0]) for row in summary), default=0) + 2
    cols = [
        max((len(row[i]) for row in summary), default=len(name)) + 3
        for i, name in ((1, "perconn.Conn"), (2, "perconn.aio.Conn"))
    ]
    print(f"  {'':<{width}}{'perconn.Conn':<{cols[0]}}{'perconn.aio.Conn':<{cols[1]}}target")
    for what, sync, aio, target in summary:
        print(f"  {what:<{width}}{sync:<{cols[0]}}{aio:<{cols[1]}}{target}")
    for note in notes:
        print(f"  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=2000, help="Conns of the scale scenarios (default 2000)")
    parser.add_argument("--scale-seconds", type=float, default=5.0, help="scale's measurement window")
    parser.add_argument("--scale-timeout", type=float, default=60.0, help="hard timeout of one scale scenario")
    parser.add_argument("--herd-conns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="echo rounds per contender")
    parser.add_argument("--echo-seconds", type=float, default=0.3, help="length of one echo round")
    parser.add_argument("--bulk", action=argparse.BooleanOptionalAction, default=True, help="1 MiB echo rows too")
    parser.add_argument("--pin", choices=("same", "split", "none"), default="same", help="echo's CPU placement")
    parser.add_argument("--plot", metavar="PNG", help="draw the herd into this file (e.g. docs/herd.png)")
    parser.add_argument(
        "--only", action="append", choices=("echo", "scale", "herd"), help="run only these (repeatable)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _proc.stop)
    only = set(args.only or ("echo", "scale", "herd"))
    begun = time.monotonic()
    summary: Summary = []
    notes: list[str] = []
    stages: list[tuple[str, Callable[[argparse.Namespace, Summary, list[str]], None]]] = [
        ("echo", echo_rows),
        ("scale", scale_rows),
        ("herd", herd_rows),
    ]
    for name, stage in stages:
        if name not in only:
            continue
        print(f"== {name} ==", flush=True)
        try:
            stage(args, summary, notes)
        except Exception as exc:  # one benchmark failing does not lose the others' figures
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            notes.append(f"{name} FAILED: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
    print_summary(args, summary, notes, time.monotonic() - begun)


if __name__ == "__main__":
    _proc.main(main)
