"""Shipping lines through a collector outage: perconn's ``buffer`` against a raw socket's best effort.

A sink (in a separate process, so it does not compete for this process's GIL)
counts the newline-terminated lines it receives. Each contender writes numbered
100-byte lines as fast as it can for ``--seconds``; in the middle the sink is
stopped for ``--outage`` seconds (listener and connections closed, bytes it had
not read lost, as when a collector crashes) and then started again on the same
port. At the end the contender flushes what it queued (at most
``FLUSH_TIMEOUT``) and closes, and the sink says how many lines arrived.

Contenders:

- ``raw socket``: a blocking socket, ``sendall`` per line; on an error it closes
  the socket and drops lines, trying to reconnect at most every ``RAW_RETRY``
  seconds (what a program does without a library);
- ``perconn.Conn buffer=B``: ``write(line, timeout=0)`` (never blocks: queued while
  no connection is up, refused when the buffer is full), for each ``--buffer``;
- ``perconn.Conn buffer=0``: the same without a buffer (every line refused while down);
- ``perconn.Conn blocking``: ``write(line)``, no buffer: the program stalls
  through the outage and loses nothing it was told was written;
- ``perconn.aio.Conn buffer=B``: ``await write(line, timeout=0)`` (when the
  asyncio ``Conn`` has a buffer; the rows are skipped with a note otherwise).

Columns: writes issued; writes/s while the sink was up and while it was down;
lines delivered (counted by the sink); refused while the sink was up and while
it was down (the write raised at once, so the program knows); lost (issued, not
refused, not delivered: written into a connection that died, which the program
cannot know); torn (connections the sink saw end in the middle of a line);
conns (connections the sink accepted).

Run: ``python bench/shipper.py [--seconds 3] [--outage 1] [--buffer 1MiB --buffer 64MiB]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import perconn
import perconn.aio
from perconn._cli import parse_size

if TYPE_CHECKING or __package__:  # part of the bench package (python -m bench; mypy checks this one)
    from . import _proc
else:  # run as a script (python bench/shipper.py): bench/ is sys.path[0]
    import _proc

LINE = b"%09d " + b"x" * 89 + b"\n"
"""A 100-byte line: its number, then padding (``LINE % n``)."""

BATCH = 64
"""Lines written between two looks at the clock."""

RAW_RETRY = 0.02
"""Seconds between the raw socket's reconnect attempts (perconn's ``retry_min`` here too)."""

RETRY_MAX = 0.1
"""Seconds: perconn's ``retry_max`` here, so it redials within this long of the sink's return."""

FLUSH_TIMEOUT = 5.0
"""Seconds a perconn contender may take at the end to send what it queued."""

SINK = r"""
import os, selectors, socket, sys
sel = selectors.DefaultSelector()
lines = torn = accepts = 0
clients = {}  # socket -> whether its bytes so far end in the middle of a line
listener = None
port = 0

def listen():
    global listener, port
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    sel.register(listener, selectors.EVENT_READ)

def drop(sock):
    global torn
    sel.unregister(sock)
    torn += clients.pop(sock)
    sock.close()

def stop():
    global listener
    sel.unregister(listener)
    listener.close()
    listener = None
    for sock in list(clients):
        drop(sock)

listen()
sel.register(0, selectors.EVENT_READ)
print(port, flush=True)
pending = b""
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock == 0:
            data = os.read(0, 1024)
            if not data:
                sys.exit(0)
            pending += data
            while b"\n" in pending:
                command, pending = pending.split(b"\n", 1)
                if command == b"stop":
                    stop()
                elif command == b"start":
                    listen()
                print(lines, torn, accepts, flush=True)
        elif sock is not listener and sock not in clients:
            continue  # closed by a "stop" handled in this same pass
        elif sock is listener:
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                continue
            client.setblocking(False)
            clients[client] = False
            sel.register(client, selectors.EVENT_READ)
            accepts += 1
        else:
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                drop(sock)
                continue
            lines += data.count(b"\n")
            clients[sock] = data[-1:] != b"\n"
"""


class Sink:
    """The sink process: ``command("stop" | "start" | "count")`` returns its
    counts (lines, torn connections, accepted connections) after the command."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        self.port = int(self._out.readline())
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def command(self, command: str) -> tuple[int, int, int]:
        with self._lock:
            self._in.write(command + "\n")
            self._in.flush()
            lines, torn, accepts = (int(x) for x in self._out.readline().split())
        return lines, torn, accepts

    def settled(self, expected: int, timeout: float = 5.0) -> tuple[int, int, int]:
        """The counts once *expected* lines arrived, or once they stopped changing."""
        deadline = time.monotonic() + timeout
        last = self.command("count")
        stable_since = time.monotonic()
        while last[0] < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.command("count")
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                break
        return last

    def close(self) -> None:
        _proc.stop_server(self._proc, 5)


@contextlib.contextmanager
def sink() -> Iterator[Sink]:
    server = Sink()
    try:
        yield server
    finally:
        server.close()


class Outage:
    """The timeline, run by a thread: up, then the sink stopped for *outage*
    seconds, then up again until *seconds* after the start. :attr:`phase` is 0,
    1 (down), 2, then 3 (time is up); :attr:`marks` when each began."""

    def __init__(self, server: Sink, seconds: float, outage: float) -> None:
        self.server = server
        self.phase = 0
        self.marks = [0.0, 0.0, 0.0, 0.0]
        self._seconds = seconds
        self._outage = outage
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="outage", daemon=True)

    def start(self) -> None:
        self.marks[0] = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        start = self.marks[0]
        down_at = start + (self._seconds - self._outage) / 2
        try:
            time.sleep(max(0.0, down_at - time.perf_counter()))
            self.server.command("stop")
            self.marks[1], self.phase = time.perf_counter(), 1
            time.sleep(max(0.0, down_at + self._outage - time.perf_counter()))
            self.server.command("start")
            self.marks[2], self.phase = time.perf_counter(), 2
            time.sleep(max(0.0, start + self._seconds - time.perf_counter()))
        except BaseException as exc:  # the sink died: end the run (the writers stop at phase 3), then say why
            self.error = exc
        finally:
            self.marks[3], self.phase = time.perf_counter(), 3

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise RuntimeError("the sink failed during the run") from self.error


@dataclass
class Tally:
    """What one contender did."""

    issued: list[int] = field(default_factory=lambda: [0, 0, 0])  # writes, by phase (up, down, up)
    refused: list[int] = field(default_factory=lambda: [0, 0, 0])  # of them refused, by phase
    discarded: int = 0  # queued, then dropped by close() (the flush ran out of time)


def drive(write: Callable[[bytes], bool], outage: Outage) -> Tally:
    """Write numbered lines with *write* (False: refused) until the time is up."""
    tally = Tally()
    n = 0
    while (phase := outage.phase) < 3:
        refused = 0
        for i in range(n, n + BATCH):
            if not write(LINE % i):
                refused += 1
        n += BATCH
        tally.issued[phase] += BATCH
        tally.refused[phase] += refused
    return tally


async def adrive(write: Callable[[bytes], Awaitable[bool]], outage: Outage) -> Tally:
    """:func:`drive` for a coroutine *write*; it yields to the loop once per batch
    (as any real program does), so the loop can send, and redial."""
    tally = Tally()
    n = 0
    while (phase := outage.phase) < 3:
        refused = 0
        for i in range(n, n + BATCH):
            if not await write(LINE % i):
                refused += 1
        n += BATCH
        tally.issued[phase] += BATCH
        tally.refused[phase] += refused
        await asyncio.sleep(0)
    return tally


# -- the contenders ----------------------------------------------------------------


class RawSender:
    """A blocking socket with best-effort reconnects: a line written while it is
    down, or whose ``sendall`` failed, is dropped (refused)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._retry_at = 0.0
        self._sock = self._connect()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self._port), timeout=1.0)
        except OSError:
            self._retry_at = time.monotonic() + RAW_RETRY
            return None
        sock.settimeout(None)
        return sock

    def write(self, line: bytes) -> bool:
        sock = self._sock
        if sock is None:
            if time.monotonic() < self._retry_at:
                return False
            sock = self._sock = self._connect()
            if sock is None:
                return False
        try:
            sock.sendall(line)
        except OSError:
            sock.close()
            self._sock = None
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def raw_socket(server: Sink, outage: Outage) -> Tally:
    sender = RawSender(server.port)
    try:
        outage.start()
        return drive(sender.write, outage)
    finally:
        sender.close()


def perconn_sync(buffer: int, blocking: bool = False) -> Callable[[Sink, Outage], Tally]:
    def run(server: Sink, outage: Outage) -> Tally:
        conn = perconn.connect(server.address, buffer=buffer, retry_min=RAW_RETRY, retry_max=RETRY_MAX)
        conn.wait_connected(5)
        timeout = None if blocking else 0.0

        def write(line: bytes) -> bool:
            try:
                conn.write(line, timeout)
            except (TimeoutError, perconn.ConnectionIOError):
                return False
            return True

        outage.start()
        tally = drive(write, outage)
        with contextlib.suppress(TimeoutError):
            conn.flush(FLUSH_TIMEOUT)
        before = conn.stats.dropped_writes
        conn.close()
        tally.discarded = conn.stats.dropped_writes - before
        return tally

    return run


def aio_supports_buffer() -> str | None:
    """Why the asyncio rows cannot run (None: they can)."""
    if not hasattr(perconn.aio.Conn, "flush"):
        return "perconn.aio.Conn has no flush() yet: no buffer"

    async def probe() -> None:
        conn = perconn.aio.connect("127.0.0.1:9", buffer=100, retry_min=30.0, retry_max=30.0)
        try:
            await conn.write(b"queued", timeout=0)  # no connection: queued at once, if it buffers
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except (TypeError, TimeoutError) as exc:
        return f"perconn.aio.connect(..., buffer=) does not queue yet ({type(exc).__name__}: {exc})"
    return None


def perconn_aio(buffer: int) -> Callable[[Sink, Outage], Tally]:
    def run(server: Sink, outage: Outage) -> Tally:
        async def ship() -> Tally:
            conn = perconn.aio.connect(server.address, buffer=buffer, retry_min=RAW_RETRY, retry_max=RETRY_MAX)
            await conn.wait_connected(5)

            async def write(line: bytes) -> bool:
                try:
                    await conn.write(line, 0)
                except (TimeoutError, perconn.ConnectionIOError):
                    return False
                return True

            outage.start()
            tally = await adrive(write, outage)
            with contextlib.suppress(TimeoutError):
                await conn.flush(FLUSH_TIMEOUT)
            before = conn.stats.dropped_writes
            await conn.close()
            tally.discarded = conn.stats.dropped_writes - before
            return tally

        return asyncio.run(ship())

    return run


# -- the table ------------------------------------------------------------------------


def measure(name: str, contender: Callable[[Sink, Outage], Tally], seconds: float, outage_s: float) -> str:
    """Run *contender* against a fresh sink; its row of the table."""
    with sink() as server:
        outage = Outage(server, seconds, outage_s)
        tally = contender(server, outage)
        outage.join()
        issued, refused = sum(tally.issued), sum(tally.refused)
        delivered, torn, accepts = server.settled(issued - refused - tally.discarded)
    marks = outage.marks
    up_rate = (tally.issued[0] + tally.issued[2]) / ((marks[1] - marks[0]) + (marks[3] - marks[2]))
    down_rate = tally.issued[1] / (marks[2] - marks[1])
    lost = issued - refused - tally.discarded - delivered
    refused_up = tally.refused[0] + tally.refused[2]
    discarded = f"   ({tally.discarded} discarded by close)" if tally.discarded else ""
    return (
        f"  {name:<32} {issued:>8} {up_rate:>8.0f} {down_rate:>8.0f} {delivered:>9} "
        f"{refused_up:>8} {tally.refused[1]:>8} {lost:>6} {torn:>5} {accepts:>5}{discarded}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each contender writes (default: 3)")
    parser.add_argument("--outage", type=float, default=1.0, help="how long the sink is down, midway (default: 1)")
    parser.add_argument(
        "--buffer", type=parse_size, action="append", help="perconn's buffer (repeatable; default: 1MiB and 64MiB)"
    )
    args = parser.parse_args()
    if not 0 < args.outage < args.seconds:
        parser.error("--outage must be > 0 and shorter than --seconds")
    buffers: list[int] = args.buffer or [1 << 20, 64 << 20]
    contenders: list[tuple[str, Callable[[Sink, Outage], Tally]]] = [("raw socket", raw_socket)]
    for size in buffers:
        contenders.append((f"perconn.Conn buffer={size >> 10}KiB", perconn_sync(size)))
    contenders.append(("perconn.Conn buffer=0", perconn_sync(0)))
    contenders.append(("perconn.Conn blocking", perconn_sync(0, blocking=True)))
    why_not = aio_supports_buffer()
    if why_not is None:
        for size in buffers:
            contenders.append((f"perconn.aio.Conn buffer={size >> 10}KiB", perconn_aio(size)))
    print(f"100-byte lines written for {args.seconds:g} s over loopback, the sink down for {args.outage:g} s midway:")
    print(
        f"  {'':<32} {'':>8} {'writes/s':^17} {'':>9} {'refused':^17}\n"
        f"  {'':<32} {'issued':>8} {'up':>8} {'down':>8} {'delivered':>9} {'up':>8} {'down':>8} "
        f"{'lost':>6} {'torn':>5} {'conns':>5}"
    )
    for name, contender in contenders:
        print(measure(name, contender, args.seconds, args.outage), flush=True)
    if why_not is not None:
        print(f"  (no perconn.aio.Conn rows: {why_not})")


if __name__ == "__main__":
    main()
