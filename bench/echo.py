"""64-byte echo round-trip rate: perconn against a raw baseline, in one run.

Starts one loopback echo server in a separate process (so it does not compete
for this process's GIL), then alternates rounds of:

- ``raw socket``: a blocking ``socket.socket``, ``sendall`` + ``recv`` until
  the whole echo is there (its chunks joined once into ``bytes``, as every
  contender returns them: :func:`recv_exactly`);
- ``perconn.Conn``: ``write`` + ``readexactly`` on a connected ``Conn``;
- ``raw asyncio``: ``asyncio.open_connection`` streams, ``write``/``drain`` + ``readexactly``;
- ``perconn.aio.Conn``: ``await write`` + ``await readexactly``;

and prints the median rates and the median of the per-round ratios
perconn/raw (each round measures both back to back, in alternating order, so
drift in the machine's speed cancels out). It also measures
full duplex: the rate of small writes while another thread is blocked in
``read()``, against the same writes with no reader.

Then the same echo rounds over TLS, against a second server (same style, its
certificate made for the run by ``trustme``, else the ``openssl`` command):

- ``raw ssl.SSLSocket``: the blocking socket above wrapped by ``SSLContext.wrap_socket``;
- ``perconn.Conn``: ``perconn.connect(..., ssl=context)``;
- ``raw asyncio``: ``asyncio.open_connection(..., ssl=context)`` streams;
- ``perconn.aio.Conn``: ``perconn.aio.connect(..., ssl=context)``;

all four with the same client ``SSLContext`` (it trusts the run's certificate).

Every row prints the client's CPU time per round trip beside its rate, and
each perconn row its per-round ratios to the baselines (rate, and CPU). The
sync baselines are the raw socket and the thinnest thread-safe wrapper (a read
lock and a write lock around ``recv``/``sendall``); the asyncio ones are raw
streams and a raw ``asyncio.Protocol`` client. Server and client are pinned to
one CPU by default (``--pin same``).

Run: ``python bench/echo.py [--seconds 0.5] [--rounds 5] [--size 64] [--pin same|split|none] [--only tcp|tls|all]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import perconn
import perconn.aio

if TYPE_CHECKING or __package__:  # part of the bench package (python -m bench; mypy checks this one)
    from . import _proc
else:  # run as a script (python bench/echo.py): bench/ is sys.path[0]
    import _proc

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

TLS_SERVER = r"""
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        with ctx.wrap_socket(c, server_side=True) as s:
            while data := s.recv(65536):
                s.sendall(data)
    except OSError:
        pass  # a client that leaves without close_notify
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class Sample(NamedTuple):
    """One round of one contender: round trips per second, client CPU seconds per round trip."""

    rate: float
    cpu: float


def rate(step: Callable[[], object], seconds: float) -> Sample:
    """Round trips per second of *step*, run in batches for *seconds*, and the
    client process's CPU time per round trip."""
    count = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            step()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return Sample(count / (now - start), (time.process_time() - cpu) / count)


async def arate(step: Callable[[], Awaitable[object]], seconds: float) -> Sample:
    count = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            await step()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return Sample(count / (now - start), (time.process_time() - cpu) / count)


class Row(NamedTuple):
    """A contender's medians over the rounds, and its per-round ratios to each baseline."""

    name: str
    rate: float
    cpu: float
    ratios: dict[str, tuple[float, float]]  # baseline -> (median rate ratio, median CPU ratio)


def rows(samples: dict[str, list[Sample]], baselines: tuple[str, ...]) -> list[Row]:
    """Medians of *samples* (contender -> one sample per round), with every
    non-baseline contender's per-round ratios to each baseline."""
    table = []
    for name, got in samples.items():
        ratios = {}
        if name not in baselines:
            for base in baselines:
                pairs = list(zip(got, samples[base], strict=True))
                ratios[base] = (
                    statistics.median(c.rate / b.rate for c, b in pairs),
                    statistics.median(c.cpu / b.cpu for c, b in pairs),
                )
        table.append(Row(name, statistics.median(x.rate for x in got), statistics.median(x.cpu for x in got), ratios))
    return table


def print_rows(title: str, table: list[Row]) -> None:
    print(title)
    for row in table:
        line = f"  {row.name:<20} {row.rate:10.0f}/s  {row.cpu * 1e6:6.2f} us CPU"
        for base, (ratio, cpu) in row.ratios.items():
            line += f"   vs {base}: {ratio:.3f} ({cpu:.2f}x CPU)"
        print(line)


def rotated(names: list[str], i: int) -> list[str]:
    """*names*, starting at the *i*-th: each round measures every contender, in turn
    order, so drift in the machine's speed falls on each alike."""
    k = i % len(names)
    return names[k:] + names[:k]


class Lean:
    """The thinnest thread-safe socket wrapper: a read lock and a write lock
    around ``recv``/``sendall``, and nothing else (the fair floor for a Conn)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rlock = threading.Lock()
        self.wlock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.wlock:
            self.sock.sendall(data)

    def readexactly(self, n: int) -> bytes:
        with self.rlock:
            return recv_exactly(self.sock, n)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """*n* bytes from *sock*: one ``recv`` when they are there, else the chunks
    joined once (as a careful raw client does: ``+=`` would copy them again and
    again, and a bulk read would measure that)."""
    data = sock.recv(n)
    if len(data) == n:
        return data
    chunks = [data]
    got = len(data)
    while got < n:
        more = sock.recv(n - got)
        if not more:
            raise EOFError
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def dial(port: int, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock if tls is None else tls.wrap_socket(sock, server_hostname="127.0.0.1")


def sync_rates(port: int, seconds: float, rounds: int, size: int, tls: ssl.SSLContext | None = None) -> list[Row]:
    """Echo rates of a raw socket, the lean two-lock wrapper and a ``Conn`` (over
    TLS with the client context *tls*), *size* bytes a round trip."""
    payload = b"x" * size
    raw = dial(port, tls)
    lean = Lean(dial(port, tls))
    conn = perconn.connect(f"127.0.0.1:{port}", ssl=tls)
    conn.wait_connected(5)

    def raw_step() -> None:
        raw.sendall(payload)
        recv_exactly(raw, size)

    def lean_step() -> None:
        lean.write(payload)
        lean.readexactly(size)

    def conn_step() -> None:
        conn.write(payload)
        conn.readexactly(size)

    steps = {"raw socket": raw_step, "lean two-lock": lean_step, "perconn.Conn": conn_step}
    samples: dict[str, list[Sample]] = {name: [] for name in steps}
    for i in range(rounds):
        for name in rotated(list(steps), i):
            samples[name].append(rate(steps[name], seconds))
    raw.close()
    lean.sock.close()
    conn.close()
    return rows(samples, ("raw socket", "lean two-lock"))


class EchoProtocol(asyncio.Protocol):
    """The thinnest asyncio client: a Protocol, a buffer and one waiter."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and len(self.buffer) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    async def round_trip(self, payload: bytes) -> bytes:
        assert self.transport is not None
        self.transport.write(payload)
        n = len(payload)
        if len(self.buffer) < n:
            self.want = n
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        data = bytes(memoryview(self.buffer)[:n])  # one copy (a slice of the bytearray would be two)
        del self.buffer[:n]
        return data


async def aio_rates(port: int, seconds: float, rounds: int, size: int, tls: ssl.SSLContext | None = None) -> list[Row]:
    """Echo rates of raw asyncio streams, a raw Protocol client and an
    ``aio.Conn`` (over TLS with the client context *tls*)."""
    payload = b"x" * size
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    _, proto = await loop.create_connection(
        EchoProtocol, "127.0.0.1", port, ssl=tls, server_hostname=None if tls is None else "127.0.0.1"
    )
    proto.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    conn = perconn.aio.connect(f"127.0.0.1:{port}", ssl=tls)
    await conn.wait_connected(5)

    async def streams_step() -> None:
        writer.write(payload)
        await writer.drain()
        await reader.readexactly(size)

    async def protocol_step() -> None:
        await proto.round_trip(payload)

    async def conn_step() -> None:
        await conn.write(payload)
        await conn.readexactly(size)

    steps = {"raw asyncio streams": streams_step, "raw asyncio Protocol": protocol_step, "perconn.aio.Conn": conn_step}
    samples: dict[str, list[Sample]] = {name: [] for name in steps}
    for i in range(rounds):
        for name in rotated(list(steps), i):
            samples[name].append(await arate(steps[name], seconds))
    writer.close()
    await writer.wait_closed()
    assert proto.transport is not None
    proto.transport.close()
    await conn.close()
    return rows(samples, ("raw asyncio streams", "raw asyncio Protocol"))


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
    alone = max(rate(lambda: conn.write(PAYLOAD), seconds).rate for _ in range(rounds))

    def read_forever() -> None:
        with contextlib.suppress(perconn.ClosedConnectionError):
            conn.read(1)  # the sink never answers

    blocked = threading.Thread(target=read_forever, daemon=True)
    blocked.start()
    with_reader = max(rate(lambda: conn.write(PAYLOAD), seconds).rate for _ in range(rounds))
    conn.close()
    blocked.join(5)
    sink.close()
    return alone, with_reader


class Certificate(NamedTuple):
    """A server certificate for 127.0.0.1 in PEM files, and the CA that a client trusts."""

    ca_file: str
    cert_file: str
    key_file: str


def certificate_tool() -> str | None:
    """What can make the run's certificate: ``trustme`` if importable, else the
    ``openssl`` command if found, else None (no TLS rows)."""
    if importlib.util.find_spec("trustme") is not None:
        return "trustme"
    return "openssl" if shutil.which("openssl") else None


def make_certificate(directory: str, tool: str) -> Certificate:
    """Write a fresh certificate for 127.0.0.1 and localhost into *directory*, made by *tool*."""
    cert = Certificate(*(os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem")))
    if tool == "trustme":
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(cert.ca_file)
        with open(cert.cert_file, "wb") as chain:
            for pem in leaf.cert_chain_pems:
                chain.write(pem.bytes())
        leaf.private_key_pem.write_to_path(cert.key_file)
        return cert
    # A self-signed certificate, its own CA.
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1"),
            *("-subj", "/CN=perconn bench", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", cert.key_file, "-out", cert.cert_file),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copyfile(cert.cert_file, cert.ca_file)
    return cert


@contextlib.contextmanager
def serving(source: str, *args: str, cpu: int | None = None) -> Iterator[int]:
    """Run the server *source* (with *args*) in a separate process, pinned to
    *cpu* if given; yield its port."""
    server = subprocess.Popen([sys.executable, "-c", source, *args], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        _proc.pin(cpu, server.pid)
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def placement(pin: str) -> tuple[int | None, int | None]:
    """The CPUs of (server, client) for ``--pin``: ``same`` puts both on one CPU
    (a client's overhead cannot hide behind cross-CPU wake-ups: the default for
    judging), ``split`` on two, ``none`` leaves them to the scheduler."""
    if pin == "none" or not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "same" or len(cpus) < 2:
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


def negotiated(port: int, tls: ssl.SSLContext) -> str:
    """The protocol version and cipher suite that *tls* agrees with the server on."""
    with socket.create_connection(("127.0.0.1", port)) as sock, tls.wrap_socket(sock, server_hostname="127.0.0.1") as s:
        cipher = s.cipher()
        return f"{s.version()}, {cipher[0] if cipher else '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one measuring round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per contender (medians are kept)")
    parser.add_argument("--size", type=int, default=64, help="bytes a round trip (1048576 for bulk)")
    parser.add_argument(
        "--pin",
        choices=("same", "split", "none"),
        default="same",
        help="server and client on the same CPU (default), on two, or wherever the scheduler puts them",
    )
    parser.add_argument(
        "--only",
        choices=("all", "tcp", "tls"),
        default="all",
        help="which rows: tcp (plain TCP echo and full duplex), tls (echo over TLS), or all (default)",
    )
    args = parser.parse_args()
    server_cpu, client_cpu = placement(args.pin)
    _proc.pin(client_cpu)
    print(f"pinned: {args.pin} (server CPU {server_cpu}, client CPU {client_cpu}); {os.cpu_count()} CPUs")
    if _proc.steady_malloc():
        print("malloc: big buffers kept, not returned to the OS between round trips (see _proc.steady_malloc)")
    tool = certificate_tool() if args.only in ("all", "tls") else None
    if args.only == "tls" and tool is None:
        parser.error("the TLS rows need trustme (pip install trustme) or the openssl command")
    if args.only in ("all", "tcp"):
        plain_rows(args.seconds, args.rounds, args.size, server_cpu)
    if tool is not None:
        tls_rows(args.seconds, args.rounds, args.size, tool, server_cpu)
    elif args.only == "all":
        print("(no TLS rows: they need trustme (pip install trustme) or the openssl command)", file=sys.stderr)


def plain_rows(seconds: float, rounds: int, size: int, cpu: int | None) -> None:
    with serving(SERVER, cpu=cpu) as port:
        table = sync_rates(port, seconds, rounds, size)
        atable = asyncio.run(aio_rates(port, seconds, rounds, size))
        alone, with_reader = duplex_rates(seconds, rounds) if size == 64 else (0.0, 0.0)
    what = f"{size}-byte echo round trips over loopback (medians of {rounds} rounds of {seconds}s)"
    print_rows(f"{what}, sync:", table)
    print_rows(f"{what}, asyncio:", atable)
    if alone:
        print("64-byte writes/s on perconn.Conn (full duplex):")
        print(f"  no reader          {alone:10.0f}")
        print(f"  reader blocked     {with_reader:10.0f}   ratio {with_reader / alone:.3f}")


def tls_rows(seconds: float, rounds: int, size: int, tool: str, cpu: int | None) -> None:
    with tempfile.TemporaryDirectory(prefix="perconn-bench-") as directory:
        cert = make_certificate(directory, tool)
        tls = ssl.create_default_context(cafile=cert.ca_file)
        with serving(TLS_SERVER, cert.cert_file, cert.key_file, cpu=cpu) as port:
            suite = negotiated(port, tls)
            table = sync_rates(port, seconds, rounds, size, tls)
            atable = asyncio.run(aio_rates(port, seconds, rounds, size, tls))
    what = f"{size}-byte echo round trips over loopback TLS ({suite}; medians of {rounds} rounds of {seconds}s)"
    print_rows(f"{what}, sync (the baselines are SSLSockets):", table)
    print_rows(f"{what}, asyncio:", atable)


if __name__ == "__main__":
    main()
