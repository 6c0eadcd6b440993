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

Then the same echo rounds over TLS, against a second server (same style, its
certificate made for the run by ``trustme``, else the ``openssl`` command):

- ``raw ssl.SSLSocket``: the blocking socket above wrapped by ``SSLContext.wrap_socket``;
- ``perconn.Conn``: ``perconn.connect(..., ssl=context)``;
- ``raw asyncio``: ``asyncio.open_connection(..., ssl=context)`` streams;
- ``perconn.aio.Conn``: ``perconn.aio.connect(..., ssl=context)``;

all four with the same client ``SSLContext`` (it trusts the run's certificate).

Run: ``python bench/echo.py [--seconds 0.5] [--rounds 5] [--only tcp|tls|all]``
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
from typing import NamedTuple

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


def sync_rates(port: int, seconds: float, rounds: int, tls: ssl.SSLContext | None = None) -> Rates:
    """Echo rates of a raw socket and a ``Conn`` (over TLS with the client context *tls*)."""
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        conn = perconn.connect(f"127.0.0.1:{port}")
    else:
        raw = tls.wrap_socket(raw, server_hostname="127.0.0.1")
        conn = perconn.connect(f"127.0.0.1:{port}", ssl=tls)
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


async def aio_rates(port: int, seconds: float, rounds: int, tls: ssl.SSLContext | None = None) -> Rates:
    """Echo rates of raw asyncio streams and an ``aio.Conn`` (over TLS with the client context *tls*)."""
    if tls is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = perconn.aio.connect(f"127.0.0.1:{port}")
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        conn = perconn.aio.connect(f"127.0.0.1:{port}", ssl=tls)
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
def serving(source: str, *args: str) -> Iterator[int]:
    """Run the server *source* (with *args*) in a separate process; yield its port."""
    server = subprocess.Popen([sys.executable, "-c", source, *args], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def negotiated(port: int, tls: ssl.SSLContext) -> str:
    """The protocol version and cipher suite that *tls* agrees with the server on."""
    with socket.create_connection(("127.0.0.1", port)) as sock, tls.wrap_socket(sock, server_hostname="127.0.0.1") as s:
        cipher = s.cipher()
        return f"{s.version()}, {cipher[0] if cipher else '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one measuring round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per contender (medians are kept)")
    parser.add_argument(
        "--only",
        choices=("all", "tcp", "tls"),
        default="all",
        help="which rows: tcp (plain TCP echo and full duplex), tls (echo over TLS), or all (default)",
    )
    args = parser.parse_args()
    tool = certificate_tool() if args.only in ("all", "tls") else None
    if args.only == "tls" and tool is None:
        parser.error("the TLS rows need trustme (pip install trustme) or the openssl command")
    if args.only in ("all", "tcp"):
        plain_rows(args.seconds, args.rounds)
    if tool is not None:
        tls_rows(args.seconds, args.rounds, tool)
    elif args.only == "all":
        print("(no TLS rows: they need trustme (pip install trustme) or the openssl command)", file=sys.stderr)


def plain_rows(seconds: float, rounds: int) -> None:
    with serving(SERVER) as port:
        raw, conn, ratio = sync_rates(port, seconds, rounds)
        araw, aconn, aratio = asyncio.run(aio_rates(port, seconds, rounds))
        alone, with_reader = duplex_rates(seconds, rounds)
    print(f"64-byte echo round trips/s over loopback (median of {rounds} rounds of {seconds}s):")
    print(f"  raw socket         {raw:10.0f}")
    print(f"  perconn.Conn       {conn:10.0f}   ratio {ratio:.3f}")
    print(f"  raw asyncio        {araw:10.0f}")
    print(f"  perconn.aio.Conn   {aconn:10.0f}   ratio {aratio:.3f}")
    print("64-byte writes/s on perconn.Conn (full duplex):")
    print(f"  no reader          {alone:10.0f}")
    print(f"  reader blocked     {with_reader:10.0f}   ratio {with_reader / alone:.3f}")


def tls_rows(seconds: float, rounds: int, tool: str) -> None:
    with tempfile.TemporaryDirectory(prefix="perconn-bench-") as directory:
        cert = make_certificate(directory, tool)
        tls = ssl.create_default_context(cafile=cert.ca_file)
        with serving(TLS_SERVER, cert.cert_file, cert.key_file) as port:
            suite = negotiated(port, tls)
            raw, conn, ratio = sync_rates(port, seconds, rounds, tls)
            araw, aconn, aratio = asyncio.run(aio_rates(port, seconds, rounds, tls))
    print(f"64-byte echo round trips/s over loopback TLS ({suite}; median of {rounds} rounds of {seconds}s):")
    print(f"  raw ssl.SSLSocket  {raw:10.0f}")
    print(f"  perconn.Conn       {conn:10.0f}   ratio {ratio:.3f}")
    print(f"  raw asyncio        {araw:10.0f}")
    print(f"  perconn.aio.Conn   {aconn:10.0f}   ratio {aratio:.3f}")


if __name__ == "__main__":
    main()
