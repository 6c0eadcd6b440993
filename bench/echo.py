"""64-byte echo round-trip rate: perconn against a raw baseline, in one run.

Starts one loopback echo server in a separate process (so it does not compete
for this process's GIL), then alternates rounds of:

- ``raw socket``: a blocking ``socket.socket``, ``sendall`` + ``recv``;
- ``perconn.Conn``: ``write`` + ``read`` on a connected ``Conn``;
- ``raw asyncio``: ``asyncio.open_connection`` streams, ``write``/``drain`` + ``read``;
- ``perconn.aio.Conn``: ``await write`` + ``await read``;

and prints the median rates and the median of the per-round ratios
perconn/raw (each round measures both back to back, in alternating order, so
drift in the machine's speed cancels out). It also measures
full duplex: the rate of small writes while another thread is blocked in
``read()``, against the same writes with no reader.

Run: ``python bench/echo.py [--seconds 0.5] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import perconn
import perconn.aio

PAYLOAD = b"x" * 64

SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def rate(step: Callable[[], object], seconds: float) -> float:
    """Round trips per second of *step*, run in batches for *seconds*."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            step()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


async def arate(step: Callable[[], Awaitable[object]], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            await step()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


Rates = tuple[float, float, float]
"""Median raw rate, median perconn rate, median per-round ratio perconn/raw."""


def summarise(pairs: list[tuple[float, float]]) -> Rates:
    return (
        statistics.median(r for r, _ in pairs),
        statistics.median(c for _, c in pairs),
        statistics.median(c / r for r, c in pairs),
    )


def sync_rates(port: int, seconds: float, rounds: int) -> Rates:
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = perconn.connect(f"127.0.0.1:{port}")
    conn.wait_connected(5)

    def raw_step() -> None:
        raw.sendall(PAYLOAD)
        got = 0
        while got < 64:
            got += len(raw.recv(64 - got))

    def conn_step() -> None:
        conn.write(PAYLOAD)
        got = 0
        while got < 64:
            got += len(conn.read(64 - got))

    pairs = []
    for i in range(rounds):
        if i % 2:
            c = rate(conn_step, seconds)
            pairs.append((rate(raw_step, seconds), c))
        else:
            r = rate(raw_step, seconds)
            pairs.append((r, rate(conn_step, seconds)))
    raw.close()
    conn.close()
    return summarise(pairs)


async def aio_rates(port: int, seconds: float, rounds: int) -> Rates:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = perconn.aio.connect(f"127.0.0.1:{port}")
    await conn.wait_connected(5)

    async def raw_step() -> None:
        writer.write(PAYLOAD)
        await writer.drain()
        got = 0
        while got < 64:
            got += len(await reader.read(64 - got))

    async def conn_step() -> None:
        await conn.write(PAYLOAD)
        got = 0
        while got < 64:
            got += len(await conn.read(64 - got))

    pairs = []
    for i in range(rounds):
        if i % 2:
            c = await arate(conn_step, seconds)
            pairs.append((await arate(raw_step, seconds), c))
        else:
            r = await arate(raw_step, seconds)
            pairs.append((r, await arate(conn_step, seconds)))
    writer.close()
    await writer.wait_closed()
    await conn.close()
    return summarise(pairs)


def duplex_rates(seconds: float, rounds: int) -> tuple[float, float]:
    """Write rate with no reader, and with a reader blocked in read() throughout."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    port = sink.getsockname()[1]

    def drain() -> None:
        c, _ = sink.accept()
        with c:
            while c.recv(1 << 20):
                pass

    threading.Thread(target=drain, daemon=True).start()
    conn = perconn.connect(f"127.0.0.1:{port}")
    conn.wait_connected(5)
    alone = max(rate(lambda: conn.write(PAYLOAD), seconds) for _ in range(rounds))

    def read_forever() -> None:
        with contextlib.suppress(perconn.ClosedConnectionError):
            conn.read(1)  # the sink never answers

    blocked = threading.Thread(target=read_forever, daemon=True)
    blocked.start()
    with_reader = max(rate(lambda: conn.write(PAYLOAD), seconds) for _ in range(rounds))
    conn.close()
    blocked.join(5)
    sink.close()
    return alone, with_reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one measuring round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per contender (medians are kept)")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        raw, conn, ratio = sync_rates(port, args.seconds, args.rounds)
        araw, aconn, aratio = asyncio.run(aio_rates(port, args.seconds, args.rounds))
        alone, with_reader = duplex_rates(args.seconds, args.rounds)
    finally:
        server.kill()
        server.wait()
    print(f"64-byte echo round trips/s over loopback (median of {args.rounds} rounds of {args.seconds}s):")
    print(f"  raw socket         {raw:10.0f}")
    print(f"  perconn.Conn       {conn:10.0f}   ratio {ratio:.3f}")
    print(f"  raw asyncio        {araw:10.0f}")
    print(f"  perconn.aio.Conn   {aconn:10.0f}   ratio {aratio:.3f}")
    print("64-byte writes/s on perconn.Conn (full duplex):")
    print(f"  no reader          {alone:10.0f}")
    print(f"  reader blocked     {with_reader:10.0f}   ratio {with_reader / alone:.3f}")


if __name__ == "__main__":
    main()
