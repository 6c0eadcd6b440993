"""Fault injection on real TCP connections, for both front ends: each scenario
runs as a script in a throwaway network namespace (see netns.py) where iptables
blackholes dials, half-opens or resets established connections, and servers are
SIGKILLed and restarted. Every test prints what it measured (``pytest -s``) and
checks it against the contract loosely:

- (a) a blackholed dial fails after ``dial_timeout`` (a DialError whose cause is
  a TimeoutError), is retried with backoff, and ``close()`` ends it at once;
- (b) a half-open connection is noticed within ``keepalive`` (x 1.5) by a blocked
  reader and by a writer, then the healed path is redialed;
- (c) a RST on an established connection is a ConnectionIOError, then it reconnects;
- (d) a SIGKILLed server: a ConnectionIOError, then round trips continue with its successor;
- (f) an address list fails over from a blackholed or refusing first address
  to the second, and goes back to the first once it is up again;
- (g) 100 server restarts under echo traffic leak no descriptor, thread or task;
- (h) a name resolving to a blackholed address first and a working one second
  connects after the Happy Eyeballs attempt delay, not after ``dial_timeout``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from isolated import run_isolated
from netns import figures, netns_unavailable, run_in_netns

import perconn
import perconn.aio

FRONTS = ["sync", "aio"]

HEADER = """
import logging, os, signal, sys, threading, time
import perconn
from netns import (
    EchoServer, Front, Recorder, drop_port, drop_syn, free_port, open_fds, reject_with_rst, report,
    round_trip, spawn_echo_server, undrop_port, undrop_syn, unreject,
)

front = Front(sys.argv[1])
log = Recorder()


def cause(exc):
    \"\"\"The type name of an exception's cause (None without one).\"\"\"
    return None if exc is None or exc.__cause__ is None else type(exc.__cause__).__name__
"""


def run(script: str, front: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    return figures(run_in_netns(HEADER + script, tmp_path, front, *args))


def secs(value: object) -> str:
    """A measured duration as printed: ``1.23 s``, or what stood for it (None, an error)."""
    return f"{value:.2f} s" if isinstance(value, float) else str(value)


# -- (a) a blackholed dial ------------------------------------------------------------------------

BLACKHOLED_DIAL = """
address = f"127.0.0.1:{free_port()}"
drop_syn(int(address.rsplit(":", 1)[1]))
explicit = sys.argv[2] == "explicit"
measured = {}
if explicit:
    start = time.monotonic()
    conn = front.connect(address, dial_timeout=0.5, retry_min=0.2, retry_max=0.4, jitter=False, logger=log.logger)
    measured["waited"] = log.wait_for(logging.WARNING, perconn.DialError, count=3, timeout=6)
    failed = log.matching(logging.WARNING, perconn.DialError)[:3]
    conn.close()
    measured["at"] = [r.mono - start for r in failed]
    measured["causes"] = [cause(r.error) for r in failed]
    measured["delays"] = [r.delay for r in failed]
    measured["messages"] = [r.getMessage() for r in failed]

# close() while a dial hangs (the first one: with retry_min=5 there is no second)
options = {"dial_timeout": 5.0} if explicit else {}
conn = front.connect(address, retry_min=5.0, retry_max=5.0, logger=log.logger, **options)
time.sleep(0.3)
stats = conn.stats
start = time.monotonic()
conn.close()
measured["close"] = time.monotonic() - start
measured["in_flight"] = stats.dials - stats.dial_failures
front.stop()
report(**measured)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_a_blackholed_dial_fails_after_dial_timeout_and_is_retried(front: str, tmp_path: Path) -> None:
    got = run(BLACKHOLED_DIAL, front, tmp_path, "explicit")
    at, delays = got["at"], got["delays"]
    print(
        f"FAULT a {front}: DialErrors at {', '.join(f'{t:.2f}' for t in at)} s (causes {got['causes']},"
        f" delays {delays}); close() during the dial took {got['close'] * 1000:.1f} ms"
    )
    assert got["waited"], got
    assert 0.4 <= at[0] <= 1.5, at  # dial_timeout=0.5 bounds the dial
    assert got["causes"] == ["TimeoutError"] * 3, got["messages"]
    assert delays[0] > 0 and delays == sorted(delays), delays  # backoff grows (jitter off: 0.2, 0.4, 0.4)
    for i in range(2):  # each retry waits its delay, then again dial_timeout
        assert delays[i] + 0.4 <= at[i + 1] - at[i] <= delays[i] + 1.5, (at, delays)
    assert got["in_flight"] == 1  # close() came during a dial
    assert got["close"] <= 0.1


@pytest.mark.parametrize("front", FRONTS)
def test_a_the_default_dial_timeout_is_30_s_and_close_ends_a_hanging_dial(front: str, tmp_path: Path) -> None:
    got = run(BLACKHOLED_DIAL, front, tmp_path, "default")
    print(f"FAULT a {front}: close() during a default-timeout blackholed dial took {got['close'] * 1000:.1f} ms")
    assert got["in_flight"] == 1
    assert got["close"] <= 0.1
    connect = perconn.aio.connect if front == "aio" else perconn.connect
    assert inspect.signature(connect).parameters["dial_timeout"].default == 30.0


# -- (b) a half-open connection -------------------------------------------------------------------

HALF_OPEN = """
KEEPALIVE = 2.0
server = EchoServer().start()
conn = front.connect(
    server.address, keepalive=KEEPALIVE, dial_timeout=1.0, retry_min=0.1, retry_max=0.5, logger=log.logger
)
round_trip(conn, b"hello\\n")
outcome = {}

def reader():
    try:
        conn.read(1)  # blocked, no timeout: only the connection's failure (or close) ends it
    except Exception as exc:
        outcome.update(error=exc, at=time.monotonic())

def writer():
    for _ in range(int(KEEPALIVE * 3 / 0.05)):
        try:
            conn.write(b"x" * 16, timeout=1.0)
        except Exception as exc:
            outcome.update(error=exc, at=time.monotonic())
            return
        time.sleep(0.05)

worker = threading.Thread(target=reader if sys.argv[2] == "reader" else writer, daemon=True)
worker.start()
time.sleep(0.1)
drop_port(server.port)
dropped = time.monotonic()
worker.join(KEEPALIVE * 3)
blocked = worker.is_alive()
log.wait_for(logging.WARNING, perconn.ConnectionIOError, timeout=0.5)
noticed = log.matching(logging.WARNING, perconn.ConnectionIOError)
undrop_port(server.port)
healing = time.monotonic()
try:
    round_trip(conn, b"again\\n", timeout=5)
    healed = time.monotonic() - healing
except (AssertionError, OSError) as exc:
    healed = repr(exc)
error = outcome.get("error")
conn.close()
worker.join(5)
server.stop()
front.stop()
report(
    blocked=blocked,
    error=type(error).__name__,
    text=str(error),
    op=getattr(error, "op", None),
    cause=cause(error),
    after=outcome["at"] - dropped if error is not None else None,
    logged_after=noticed[0].mono - dropped if noticed else None,
    healed=healed,
)
"""


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("side", ["reader", "writer"])
def test_b_a_half_open_connection_is_noticed_within_keepalive(front: str, side: str, tmp_path: Path) -> None:
    got = run(HALF_OPEN, front, tmp_path, side)
    after, logged, healed = got["after"], got["logged_after"], got["healed"]
    print(
        f"FAULT b{1 if side == 'reader' else 2} {front}: the {side} got {got['error']}"
        f" (op {got['op']}, cause {got['cause']}) after {secs(after)}, the drop logged after {secs(logged)};"
        f" the healed path echoed again after {secs(healed)}"
    )
    assert not got["blocked"], f"the {side} was still blocked {2.0 * 3} s after the path went half-open"
    # The asyncio writer hears of it from its next write: the transport noticed the failure, and a
    # failure (not a clean close) under unanswered writes is owed to the next write (perconn._reading).
    assert got["error"] == "ConnectionIOError", got["text"]
    assert after <= 2.0 * 1.5, after  # keepalive=2.0
    assert got["cause"] != "EOFError", got["text"]  # no FIN got through: it was the keepalive
    assert logged is not None and logged <= 2.0 * 1.5
    assert isinstance(healed, float) and healed <= 3.0, healed


# -- (c) a RST on an established connection -------------------------------------------------------

RESET = """
server = EchoServer().start()
conn = front.connect(server.address, dial_timeout=1.0, retry_min=0.05, retry_max=0.2, logger=log.logger)
round_trip(conn, b"hello\\n")
reject_with_rst(server.port)
injected = time.monotonic()
error = None
for _ in range(5):  # bounded: the first segment sent draws the RST
    try:
        conn.write(b"ping\\n", timeout=1.0)
        conn.readuntil(b"\\n", timeout=1.0)
    except (perconn.ConnectionIOError, TimeoutError) as exc:
        error = exc
        break
noticed = time.monotonic() - injected
log.wait_for(logging.WARNING, perconn.DialError, timeout=2)  # redials are refused meanwhile
refused = [cause(r.error) for r in log.matching(logging.WARNING, perconn.DialError)]
unreject(server.port)
healing = time.monotonic()
round_trip(conn, b"again\\n", timeout=5)
healed = time.monotonic() - healing
conn.close()
server.stop()
front.stop()
report(
    error=type(error).__name__, text=str(error), op=getattr(error, "op", None), cause=cause(error),
    noticed=noticed, refused=refused, healed=healed,
)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_c_a_reset_is_a_connection_io_error_then_it_reconnects(front: str, tmp_path: Path) -> None:
    got = run(RESET, front, tmp_path)
    print(
        f"FAULT c {front}: {got['error']} (op {got['op']}, cause {got['cause']}) {got['noticed'] * 1000:.1f} ms"
        f" after the RST rule; redials meanwhile: {got['refused'][:2]};"
        f" reconnected {got['healed']:.2f} s after removing it"
    )
    assert got["error"] == "ConnectionIOError", got["text"]
    assert got["cause"] in ("ConnectionResetError", "ConnectionRefusedError", "BrokenPipeError"), got["text"]
    assert got["noticed"] < 1.0
    assert got["refused"] and got["refused"][0] == "ConnectionRefusedError"
    assert got["healed"] < 1.0


# -- (d) the server SIGKILLed mid-stream ----------------------------------------------------------

KILLED = """
port = free_port()
server = spawn_echo_server(port)
conn = front.connect(f"127.0.0.1:{port}", dial_timeout=1.0, retry_min=0.05, retry_max=0.2, logger=log.logger)
counts = {"ok": 0, "ok_after": 0}
errors = []
killed = None
first_ok_after = None
stop = threading.Event()

def stream():
    global first_ok_after
    for i in range(1_000_000):  # bounded by count; stop ends it much sooner
        if stop.is_set():
            return
        payload = f"{i}\\n".encode()
        try:
            conn.write(payload, timeout=5)
            echoed = conn.readuntil(b"\\n", timeout=5)
        except Exception as exc:
            errors.append((time.monotonic() - (killed or 0), type(exc).__name__, cause(exc), str(exc)))
            if len(errors) > 20:
                return
            continue
        if echoed != payload:
            errors.append((0, "mismatch", None, f"{echoed!r} != {payload!r}"))
            return
        counts["ok"] += 1
        if killed is not None:
            first_ok_after = first_ok_after or time.monotonic() - killed
            counts["ok_after"] += 1

streamer = threading.Thread(target=stream, daemon=True)
streamer.start()
deadline = time.monotonic() + 5
while counts["ok"] < 200 and time.monotonic() < deadline:
    time.sleep(0.01)
before = counts["ok"]
server.send_signal(signal.SIGSTOP)  # a request goes unanswered: the kill finds one in flight
time.sleep(0.05)
killed = time.monotonic()
server.send_signal(signal.SIGKILL)  # its unread request makes the kernel answer with a RST
server.wait(5)
server = spawn_echo_server(port)
restarted = time.monotonic() - killed
deadline = time.monotonic() + 8
while counts["ok_after"] < 200 and time.monotonic() < deadline and streamer.is_alive():
    time.sleep(0.01)
stop.set()
streamer.join(10)
generation = conn.generation
conn.close()
server.kill()
server.wait(5)
front.stop()
report(
    before=before, after=counts["ok_after"], errors=errors, restarted=restarted,
    recovered=first_ok_after, generation=generation, stuck=streamer.is_alive(),
)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_d_a_killed_server_is_a_connection_io_error_then_round_trips_continue(front: str, tmp_path: Path) -> None:
    got = run(KILLED, front, tmp_path)
    errors = got["errors"]
    print(
        f"FAULT d {front}: {got['before']} round trips, SIGKILL, errors {[e[1:3] for e in errors]};"
        f" server back after {secs(got['restarted'])}, round trips again after {secs(got['recovered'])}"
        f" ({got['after']} more, generation {got['generation']})"
    )
    assert not got["stuck"]
    assert got["before"] >= 200
    assert errors and all(kind == "ConnectionIOError" for _, kind, _, _ in errors), errors
    assert len(errors) <= 2, errors  # one per dropped connection (a write, then its read, at most)
    assert got["after"] >= 200
    assert got["recovered"] is not None and got["recovered"] <= got["restarted"] + 1.0
    assert got["generation"] == 2


# -- (f) failover along an address list -----------------------------------------------------------

FAILOVER = """
a_port = free_port()
A = f"127.0.0.1:{a_port}"
server_b = EchoServer().start()
B = server_b.address

def phase(mark, took):
    records = log.records[mark:]
    failed = [r.error for r in records if isinstance(getattr(r, "error", None), perconn.DialError)]
    return {
        "took": took,
        "address": getattr(conn.stats, "address", "<no stats.address>"),
        "dial_errors": [(error.address, cause(error)) for error in failed],
        "connected": [r.getMessage() for r in records if r.levelno == logging.INFO],
    }

# 1: A blackholed
drop_syn(a_port)
start = time.monotonic()
conn = front.connect([A, B], dial_timeout=0.5, retry_min=0.05, retry_max=0.2, logger=log.logger)
conn.wait_connected(timeout=5)
one = phase(0, time.monotonic() - start)
round_trip(conn, b"one\\n")

# 2: A refusing (nothing listens there), the connection to B dropped
undrop_syn(a_port)
mark, start = len(log.records), time.monotonic()
server_b.drop_clients()
round_trip(conn, b"two\\n")
two = phase(mark, time.monotonic() - start)

# 3: A up again, B gone: back to A, the first choice
server_a = EchoServer(a_port).start()
mark, start = len(log.records), time.monotonic()
server_b.stop()
round_trip(conn, b"three\\n")
three = phase(mark, time.monotonic() - start)

conn.close()
server_a.stop()
front.stop()
report(A=A, B=B, one=one, two=two, three=three)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_f_an_address_list_fails_over_and_comes_back_to_the_first(front: str, tmp_path: Path) -> None:
    got = run(FAILOVER, front, tmp_path)
    a, b, one, two, three = got["A"], got["B"], got["one"], got["two"], got["three"]
    print(
        f"FAULT f {front}: A blackholed -> B after {one['took']:.2f} s; A refusing -> B after {two['took']:.3f} s;"
        f" A back, B gone -> A after {three['took']:.3f} s"
    )
    assert one["address"] == b and one["took"] <= 0.5 + 1.0, one
    assert one["dial_errors"] == [[a, "TimeoutError"]], one  # one DialError per address that failed
    assert any(m.startswith(f"connected to {b} ") for m in one["connected"]), one
    assert two["address"] == b and two["took"] <= 0.5, two
    assert two["dial_errors"] == [[a, "ConnectionRefusedError"]], two
    assert any(m.startswith(f"connected to {b} ") for m in two["connected"]), two
    assert three["address"] == a and three["took"] <= 1.0, three
    assert all(address != b for address, _ in three["dial_errors"]), three  # a round starts at the first again
    assert any(m.startswith(f"connected to {a} ") for m in three["connected"]), three


# -- (g) 100 restarts, no leak --------------------------------------------------------------------

RESTARTS = """
server = EchoServer().start()
fds = open_fds()
threads = set(threading.enumerate())
tasks = front.tasks()
start = time.monotonic()
conn = front.connect(server.address, dial_timeout=1.0, retry_min=0.005, retry_max=0.02, logger=log.logger)
round_trip(conn, b"0\\n")
restarts = ioerrors = 0
for i in range(1, 101):
    if time.monotonic() - start > 12:  # bounded in time too
        break
    server.restart()
    restarts += 1
    ioerrors += round_trip(conn, f"{i}\\n".encode(), tries=20, timeout=5)
took = time.monotonic() - start
generation = conn.generation
stats = conn.stats
closing = time.monotonic()
conn.close()
close_took = time.monotonic() - closing
server.stop()

def leaks():
    now = open_fds()
    return (
        {fd: what for fd, what in now.items() if fds.get(fd) != what},
        [t.name for t in threading.enumerate() if t not in threads],
        [name for name in front.tasks() if name not in tasks],
    )

for _ in range(100):  # up to 1 s for threads and descriptors to go
    found = leaks()
    if not any(found):
        break
    time.sleep(0.01)
front.stop()
report(
    restarts=restarts, took=took, generation=generation, drops=stats.drops, ioerrors=ioerrors,
    close=close_took, fds=found[0], threads=found[1], tasks=found[2],
)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_g_a_hundred_restarts_leak_nothing(front: str, tmp_path: Path) -> None:
    got = run(RESTARTS, front, tmp_path)
    print(
        f"FAULT g {front}: {got['restarts']} restarts in {got['took']:.2f} s, generation {got['generation']},"
        f" {got['ioerrors']} ConnectionIOErrors, close() {got['close'] * 1000:.1f} ms;"
        f" left: fds {got['fds']}, threads {got['threads']}, tasks {got['tasks']}"
    )
    assert got["restarts"] == 100
    assert got["generation"] == 101 and got["drops"] == 100
    assert got["ioerrors"] <= 100
    assert got["close"] <= 0.1
    assert got["fds"] == {} and got["threads"] == [] and got["tasks"] == []


# -- (h) Happy Eyeballs: a name whose first address is blackholed ---------------------------------

EYEBALLS = """
import socket, subprocess

port = free_port()
with open("/etc/hosts", "w") as hosts:  # this namespace's private copy
    hosts.write("127.0.0.1 localhost\\n127.0.0.1 eyeballs.test\\n127.0.0.2 eyeballs.test\\n")
order = [s[0] for *_, s in socket.getaddrinfo("eyeballs.test", port, type=socket.SOCK_STREAM)]
DROP = ["INPUT", "-i", "lo", "-p", "tcp", "--syn", "-d", "127.0.0.1", "--dport", str(port), "-j", "DROP"]
subprocess.run(["iptables", "-I", *DROP], check=True, timeout=10)  # the first address: blackholed

listener = socket.create_server(("127.0.0.2", port))  # the second: a working echo server
served = []  # the address each accepted connection was made to

def echo():
    client, _ = listener.accept()
    served.append(client.getsockname()[0])
    with client:
        while data := client.recv(4096):
            client.sendall(data)

server = threading.Thread(target=echo, daemon=True)
server.start()

def syn_sent():
    \"\"\"Connects still waiting for an answer from 127.0.0.1:port (state SYN_SENT).\"\"\"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(row[2] == f"0100007F:{port:04X}" and row[3] == "02" for row in rows)

def dropped():
    \"\"\"SYNs the DROP rule took.\"\"\"
    out = subprocess.run(["iptables", "-L", "INPUT", "-v", "-x", "-n"], capture_output=True, text=True, timeout=10)
    return sum(int(line.split()[0]) for line in out.stdout.splitlines() if "DROP" in line and f"dpt:{port}" in line)

fds = open_fds()
start = time.monotonic()
conn = front.connect(f"eyeballs.test:{port}", dial_timeout=10.0, retry_min=5.0, logger=log.logger)
conn.wait_connected(timeout=5)
took = time.monotonic() - start
pending = syn_sent()
round_trip(conn, b"hello\\n")
stats = conn.stats
conn.close()
server.join(5)
listener.close()
front.stop()
for _ in range(100):  # up to 1 s for descriptors to go
    left = {fd: what for fd, what in open_fds().items() if fds.get(fd) != what}
    if not left:
        break
    time.sleep(0.01)
report(
    order=order, took=took, syn_sent=pending, dropped=dropped(), served=served, address=stats.address,
    dials=stats.dials, dial_failures=stats.dial_failures, fds=left,
    warnings=[r.getMessage() for r in log.records if r.levelno >= logging.WARNING],
    info=[r.getMessage() for r in log.records if r.levelno == logging.INFO],
)
"""


@pytest.mark.parametrize("front", FRONTS)
def test_h_a_blackholed_first_address_costs_only_the_attempt_delay(front: str, tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    got = figures(run_isolated(HEADER.replace("sys.argv[1]", repr(front)) + EYEBALLS, tmp_path))
    print(
        f"FAULT h {front}: eyeballs.test -> {got['order']}, the first blackholed ({got['dropped']} SYNs dropped):"
        f" connected to {got['served']} after {got['took'] * 1000:.0f} ms (dial_timeout 10 s);"
        f" {got['syn_sent']} attempts left pending"
    )
    assert got["order"] == ["127.0.0.1", "127.0.0.2"], got  # the resolver puts the blackholed one first
    assert got["dropped"] >= 1, got  # and it was tried
    assert 0.2 <= got["took"] < 2.0, got  # the next attempt began 250 ms after it, not after dial_timeout
    assert got["served"] == ["127.0.0.2"], got  # one connection, to the second address
    assert got["syn_sent"] == 0, got  # the abandoned attempt was closed when the other won
    assert (got["dials"], got["dial_failures"]) == (1, 0), got
    assert got["warnings"] == [], got  # one dial, and it succeeded: the abandoned attempt is no failure
    assert got["info"] == [f"connected to {got['address']} (generation 1, after 1 attempt)"], got
    assert got["address"].startswith("eyeballs.test:"), got
    assert got["fds"] == {}, got
