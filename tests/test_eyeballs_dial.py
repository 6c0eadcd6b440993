"""Happy Eyeballs on real sockets, for both dialers (``perconn.sync.dialer`` and
``perconn.aio.dialer``, the latter on asyncio's loop and on uvloop): over
loopback, a blackholed first address costs the second only the attempt delay, a
refused one nothing; every loser's socket is closed whatever ends the race; and,
in a namespace whose private /etc/hosts makes "localhost" resolve to ::1 and
127.0.0.1, both front ends connect to whichever family listens."""

from __future__ import annotations

import asyncio
import errno
import importlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aio.conftest import run_on
from isolated import run_isolated
from servers import blackhole, open_fds, refusing_port, scaled, wait_until

import perconn.aio.dialer
import perconn.sync.dialer
import perconn.sync.hub
from perconn._address import parse_address
from perconn._eyeballs import ATTEMPT_DELAY
from perconn._lookup import Target
from perconn.aio.link import within
from perconn.sync.dialer import DialAborted

ADDRESS = parse_address("eyeballs.test:80")


def target(address: str) -> Target:
    """The target a lookup would give for a loopback *address* (``host:port`` or ``[::1]:port``)."""
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        return (socket.AF_INET6, socket.IPPROTO_TCP, (host[1:-1], int(port), 0, 0))
    return (socket.AF_INET, socket.IPPROTO_TCP, (host, int(port)))


@dataclass
class Dialed:
    """What one race gave: the winner's peer address, how long it took, and the
    descriptors left open once the winner is closed (none, if the losers were closed)."""

    peer: object
    took: float
    left_open: set[int]


def _sync_dial(targets: list[Target], delay: float) -> Dialed:
    wake_r, wake_w = os.pipe()
    try:
        before = open_fds()
        start = time.monotonic()
        sock = perconn.sync.dialer.connect_first(ADDRESS, targets, scaled(10), wake_r, [], delay)
        took = time.monotonic() - start
        with sock:
            assert sock.getblocking()
            peer = sock.getpeername()
        return Dialed(peer, took, open_fds() - before)
    finally:
        os.close(wake_r)
        os.close(wake_w)


async def _aio_dial(targets: list[Target], delay: float) -> Dialed:
    before = open_fds()
    start = time.monotonic()
    sock = await perconn.aio.dialer.connect_first(asyncio.get_running_loop(), ADDRESS, targets, delay)
    took = time.monotonic() - start
    with sock:
        peer = sock.getpeername()
    return Dialed(peer, took, open_fds() - before)


Dial = Callable[[list[Target], float], Dialed]


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module("uvloop").new_event_loop
    except ImportError:
        pytest.skip("uvloop is not installed")
    return factory


@pytest.fixture(params=["sync", "asyncio", "uvloop"])
def dial(request: pytest.FixtureRequest) -> Dial:
    """``dial(targets, delay)``: one race by the synchronous dialer, or by the
    asyncio one on a fresh loop of each kind."""
    if request.param == "sync":
        return _sync_dial
    factory = _loop_factory(request.param)
    return lambda targets, delay: run_on(factory, _aio_dial(targets, delay))


@contextmanager
def listening(family: str, tmp_path: Path | None = None) -> Iterator[socket.socket]:
    """A listener on loopback ("tcp4", "tcp6") or a unix path that nobody accepts
    from: connects to it complete in its backlog, so a dial opens no descriptor
    in this process but its own."""
    if family == "unix":
        assert tmp_path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / "eyeballs.sock"))
    else:
        six = family == "tcp6"
        sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("::1" if six else "127.0.0.1", 0))
    with sock:
        sock.listen(16)
        yield sock


def as_target(listener: socket.socket) -> Target:
    return (listener.family, 0, listener.getsockname())


def accepted_and_closed(listener: socket.socket) -> int:
    """How many connections *listener* holds; each must have been closed by its client."""
    listener.setblocking(False)
    count = 0
    for _ in range(16):  # bounded: the backlog
        try:
            peer, _ = listener.accept()
        except BlockingIOError:
            return count
        with peer:
            peer.settimeout(scaled(2))
            assert peer.recv(1) == b"", "a connection the dial opened is still open"
        count += 1
    return count


# -- who wins, and when -----------------------------------------------------------


def test_a_blackholed_first_address_delays_the_second_by_the_attempt_delay_only(dial: Dial) -> None:
    with blackhole() as silent, listening("tcp4") as server:
        got = dial([target(silent), as_target(server)], ATTEMPT_DELAY)
        assert got.peer == server.getsockname()
    print(f"EYEBALLS blackholed first: connected to the second after {got.took * 1000:.0f} ms")
    assert ATTEMPT_DELAY * 0.9 <= got.took < ATTEMPT_DELAY + scaled(1.0)
    assert got.left_open == set()  # the hanging attempt was closed when the other won


def test_a_refused_address_starts_the_next_at_once(dial: Dial) -> None:
    # ::1 first, as a resolver answers "localhost" where both families exist; only IPv4 listens
    with refusing_port("tcp6") as refusing, listening("tcp4") as server:
        got = dial([target(refusing), as_target(server)], 5.0)
        assert got.peer == server.getsockname()
    print(f"EYEBALLS refused first: connected to the second after {got.took * 1000:.1f} ms")
    assert got.took < scaled(2.5)  # far less than the (5 s) attempt delay
    assert got.left_open == set()


def test_the_first_family_listening_wins_at_once(dial: Dial) -> None:
    with listening("tcp6") as server, refusing_port("tcp4") as refusing:
        got = dial([as_target(server), target(refusing)], 5.0)
        assert got.peer == server.getsockname()
    assert got.took < scaled(2.5)
    assert got.left_open == set()


# A link-local address without a scope: connect() fails at once with EINVAL,
# locally (nothing leaves the machine): a failure that reads unlike a refusal.
UNSCOPED: Target = (socket.AF_INET6, socket.IPPROTO_TCP, ("fe80::1", 9, 0, 0))


@pytest.mark.parametrize("refused_last", [True, False], ids=["refused-last", "invalid-last"])
def test_when_every_address_fails_the_last_error_is_raised(dial: Dial, refused_last: bool) -> None:
    before = open_fds()
    with refusing_port("tcp4") as refusing:
        targets = [UNSCOPED, target(refusing)] if refused_last else [target(refusing), UNSCOPED]
        with pytest.raises(OSError) as caught:
            dial(targets, ATTEMPT_DELAY)
    if refused_last:  # the OS's words, on both front ends
        assert type(caught.value) is ConnectionRefusedError
        assert str(caught.value) == "[Errno 111] Connection refused"
    else:
        assert caught.value.errno == errno.EINVAL
        assert str(caught.value) == "[Errno 22] Invalid argument"
    assert open_fds() - before == set()


def test_no_address_to_try_says_so(dial: Dial) -> None:
    with pytest.raises(OSError, match=r"^\[Errno 99\] no address found for eyeballs\.test:80$"):
        dial([], ATTEMPT_DELAY)


def test_the_losers_are_closed_when_several_connect(dial: Dial) -> None:
    with listening("tcp6") as six, listening("tcp4") as four:
        got = dial([as_target(six), as_target(four)], 0.0)  # every attempt at once: all may connect
        assert got.peer in (six.getsockname(), four.getsockname())
        assert got.left_open == set()
        connected = accepted_and_closed(six) + accepted_and_closed(four)
    print(f"EYEBALLS two addresses raced at once: {connected} connected, one won, all closed")
    assert connected >= 1


def test_a_unix_socket_target_connects(dial: Dial, tmp_path: Path) -> None:
    with listening("unix", tmp_path) as server:
        got = dial([as_target(server)], ATTEMPT_DELAY)
        assert got.left_open == set()
        assert accepted_and_closed(server) == 1


# -- ending a race from outside ----------------------------------------------------


def test_sync_a_lone_target_refused_at_once_raises_from_race_itself_and_leaves_nothing_open() -> None:
    # A dial storm is mostly these: the refusal comes from the call, before any step is made.
    with refusing_port() as refused:
        before = open_fds()
        with pytest.raises(ConnectionRefusedError) as raised:
            perconn.sync.dialer.race(ADDRESS, [target(refused)], None, None, [])
        assert raised.value.errno == errno.ECONNREFUSED and raised.value.__cause__ is None
        assert open_fds() - before == set()


def test_sync_a_lone_target_in_progress_is_a_step_that_closes_its_socket_when_abandoned() -> None:
    with blackhole() as silent:
        before = open_fds()
        step = perconn.sync.dialer.race(ADDRESS, [target(silent)], None, None, [])
        waiting = next(step)  # begun: it waits for the socket to become writable
        assert isinstance(waiting, perconn.sync.hub.Wait) and len(waiting.write) == 1
        assert len(open_fds() - before) == 1
        with pytest.raises(DialAborted):
            step.throw(DialAborted())
        assert open_fds() - before == set()


def test_sync_waking_the_dialer_aborts_the_race_and_closes_every_attempt() -> None:
    wake_r, wake_w = os.pipe()
    try:
        with blackhole() as silent:
            before = open_fds()
            outcome: list[BaseException] = []

            def race() -> None:
                try:
                    perconn.sync.dialer.connect_first(ADDRESS, [target(silent)] * 3, None, wake_r, [], 0.0)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=race, name="test-race", daemon=True)
            thread.start()
            assert wait_until(lambda: len(open_fds() - before) >= 3)  # three connects hang
            start = time.monotonic()
            os.write(wake_w, b"\0")
            thread.join(scaled(5))
            took = time.monotonic() - start
            assert not thread.is_alive()
            assert len(outcome) == 1 and isinstance(outcome[0], DialAborted)
            assert took < scaled(0.5)
            assert open_fds() - before == set()
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_sync_the_budget_bounds_the_race_and_closes_every_attempt() -> None:
    wake_r, wake_w = os.pipe()
    try:
        with blackhole() as silent:
            before = open_fds()
            start = time.monotonic()
            with pytest.raises(TimeoutError, match=r"^connect timed out after 0\.4 s$"):
                perconn.sync.dialer.connect_first(ADDRESS, [target(silent)] * 3, 0.4, wake_r, [], 0.1)
            took = time.monotonic() - start
            assert 0.4 <= took < 0.4 + scaled(1.0)
            assert open_fds() - before == set()
    finally:
        os.close(wake_r)
        os.close(wake_w)


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_aio_cancelling_the_race_closes_every_attempt(kind: str) -> None:
    factory = _loop_factory(kind)

    async def main(silent: str, how: str) -> None:
        loop = asyncio.get_running_loop()
        before = open_fds()
        race = perconn.aio.dialer.connect_first(loop, ADDRESS, [target(silent)] * 3, 0.0)
        if how == "timeout":  # as the Conn's dial_timeout does it
            with pytest.raises(TimeoutError, match="race over"):
                await within(race, 0.3, lambda: TimeoutError("race over"))
        else:  # as the Conn's close() does it
            task = loop.create_task(race)
            deadline = time.monotonic() + scaled(5)
            while len(open_fds() - before) < 3:  # three connects hang
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert open_fds() - before == set()
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no attempt left running

    with blackhole() as silent:
        run_on(factory, main(silent, "cancel"))
        run_on(factory, main(silent, "timeout"))


# -- a name with both families, through the front ends ------------------------------

BOTH_FAMILIES = """
import json, logging, socket, sys, threading, time
from netns import Front, Recorder, round_trip

with open("/etc/hosts", "w") as hosts:
    hosts.write("::1 localhost\\n127.0.0.1 localhost\\n")
front = Front(sys.argv[1])
found = [s[0] for *_, s in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)]
results = {}
for family, ip in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    listener = socket.create_server((ip, 0), family=family)
    port = listener.getsockname()[1]
    peers = []

    def echo(listener=listener, peers=peers):
        client, peer = listener.accept()
        peers.append(peer[0])
        with client:
            while data := client.recv(4096):
                client.sendall(data)

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    log = Recorder(ip)
    start = time.monotonic()
    conn = front.connect(f"localhost:{port}", dial_timeout=5.0, logger=log.logger)
    conn.wait_connected(timeout=5)
    took = time.monotonic() - start
    round_trip(conn, b"hi\\n")
    conn.close()
    server.join(5)
    listener.close()
    results[ip] = {
        "took": took,
        "peer": peers,
        "warnings": [r.getMessage() for r in log.records if r.levelno >= logging.WARNING],
        "info": [r.getMessage() for r in log.records if r.levelno == logging.INFO],
    }
front.stop()
print(json.dumps({"found": found, "results": results}))
"""


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_localhost_on_both_families_connects_to_whichever_listens(front: str, tmp_path: Path) -> None:
    done = run_isolated(BOTH_FAMILIES.replace("sys.argv[1]", repr(front)), tmp_path)
    assert done.returncode == 0, done.stderr
    got: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert got["found"] == ["::1", "127.0.0.1"], got  # the resolver's order: IPv6 first
    for ip, result in got["results"].items():
        print(f"EYEBALLS {front}: localhost (::1, 127.0.0.1) with only {ip} listening: {result['took'] * 1000:.1f} ms")
        assert result["peer"] == [ip], result
        assert result["took"] < 1.0, result  # a refused ::1 starts 127.0.0.1 at once
        assert result["warnings"] == [], result  # the refused attempt is no failed dial
        assert len(result["info"]) == 1 and result["info"][0].startswith("connected to localhost:"), result
