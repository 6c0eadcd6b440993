"""The synchronous Conn over loopback, against real servers."""

from __future__ import annotations

import gc
import logging
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
from conftest import Leaks, Records
from isolated import HOSTS_HELPERS, run_isolated
from servers import Server, blackhole, refusing_port, scaled, wait_until
from sync_helpers import FAST, Call, blocked_in, fill_send_buffer, opened

import perconn
import perconn.sync

# -- connecting -----------------------------------------------------------------


def test_connect_returns_at_once_without_io(leaks: Leaks) -> None:
    with refusing_port() as address:
        conn = perconn.connect(address, retry_min=30.0, retry_max=60.0)
        assert not conn.connected
        assert conn.generation == 0
        conn.close()
    leaks.assert_none()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"address": "no-port"}, ValueError, "address='no-port'"),
        ({"address": "[::1]:99999"}, ValueError, "out of range"),
        ({"address": "localhost:7", "retry_min": 0}, ValueError, "retry_min"),
        ({"address": "localhost:7", "retry_min": 2, "retry_max": 1}, ValueError, "retry_max"),
        ({"address": "localhost:7", "dial_timeout": -1}, ValueError, "dial_timeout"),
        ({"address": "localhost:7", "jitter": "yes"}, TypeError, "jitter"),
    ],
)
def test_bad_arguments_raise_before_any_thread(
    kwargs: dict[str, object], error: type[Exception], fragment: str, leaks: Leaks
) -> None:
    address = kwargs.pop("address")
    with pytest.raises(error, match=fragment):
        perconn.connect(address, **kwargs)  # type: ignore[arg-type]
    assert not leaks.new_threads()


def test_echo_on_every_address_family(any_echo_server: Server, logger: logging.Logger, records: Records) -> None:
    with opened(any_echo_server.address, logger=logger) as conn:
        assert conn.write(b"hello, world") == 12
        assert conn.readexactly(12, timeout=scaled(5)) == b"hello, world"
        assert conn.connected and conn.generation == 1
    (info,) = records.matching(logging.INFO)
    assert any_echo_server.address in info.getMessage()
    assert "generation 1" in info.getMessage() and "after 1 attempt" in info.getMessage()


def test_context_manager_closes(echo_server: Server) -> None:
    with perconn.connect(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
    with pytest.raises(perconn.ClosedConnectionError):
        conn.write(b"x")


def test_hostname_is_resolved_on_dial(make_server: Callable[..., Server]) -> None:
    server = make_server("echo", "tcp4")
    port = server.address.rsplit(":", 1)[1]
    with opened(f"localhost:{port}", dial_timeout=scaled(2)) as conn:
        conn.write(b"ping")
        assert conn.readexactly(4, timeout=scaled(5)) == b"ping"


def test_idle_connected_conn_holds_no_thread(echo_server: Server, leaks: Leaks) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        assert wait_until(lambda: not leaks.new_threads()), leaks.new_threads()


# -- waiting for a connection -----------------------------------------------------


def test_operations_wait_for_the_first_connection(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("echo")
    server.stop()  # the address is known, nobody listens yet
    with opened(server.address, logger=logger) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError)
        with pytest.raises(TimeoutError):
            conn.read(10, timeout=0.05)  # down: waits, times out, never a ConnectionIOError
        with pytest.raises(TimeoutError):
            conn.wait_connected(timeout=0)
        writer = Call(lambda: conn.write(b"queued"))
        server.start()
        assert writer.join().error is None and writer.result == 6
        assert conn.readexactly(6, timeout=scaled(5)) == b"queued"
    dial_error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert dial_error.address == server.address
    assert isinstance(dial_error.__cause__, ConnectionRefusedError)


def test_failed_dials_follow_the_backoff_schedule(logger: logging.Logger, records: Records) -> None:
    with refusing_port() as address, opened(address, logger=logger, retry_min=0.01, retry_max=0.04, jitter=False):
        assert records.wait_for(logging.WARNING, perconn.DialError, count=5)
    delays = [r.delay for r in records.matching(logging.WARNING, perconn.DialError)[:5]]  # type: ignore[attr-defined]
    attempts = [r.attempt for r in records.matching(logging.WARNING, perconn.DialError)[:5]]  # type: ignore[attr-defined]
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert attempts == [1, 2, 3, 4, 5]


def test_dial_timeout_against_a_silent_host(logger: logging.Logger, records: Records) -> None:
    with blackhole() as address, opened(address, logger=logger, dial_timeout=0.05, retry_min=5.0, retry_max=5.0):
        assert records.wait_for(logging.WARNING, perconn.DialError)
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert isinstance(error.__cause__, TimeoutError)


# -- failures on an established connection ----------------------------------------


def test_server_restart_raises_once_then_reconnects(
    echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    with opened(echo_server.address, logger=logger) as conn:
        conn.write(b"one")
        assert conn.readexactly(3, timeout=scaled(5)) == b"one"
        reader = Call(lambda: conn.read(100))
        assert wait_until(blocked_in(conn, "_rlock"))
        echo_server.restart()
        error = reader.join().error
        assert isinstance(error, perconn.ConnectionIOError)
        assert error.op == "read" and isinstance(error.__cause__, EOFError)
        conn.write(b"two")
        assert conn.readexactly(3, timeout=scaled(5)) == b"two"
        assert conn.generation == 2
    (warning,) = records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert warning.error is error  # type: ignore[attr-defined]
    assert len(records.matching(logging.INFO)) == 2


def test_reset_mid_stream_is_an_io_error(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.write(b"x")
        conn.readexactly(1, timeout=scaled(5))
        echo_server.drop_clients(reset=True)
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.read(1, timeout=scaled(5))
        assert isinstance(info.value.__cause__, (ConnectionResetError, EOFError))
        conn.wait_connected(scaled(5))
        assert conn.generation == 2


def test_peer_eof_is_never_empty_bytes(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        echo_server.drop_clients()
        with pytest.raises(perconn.ConnectionIOError):
            conn.read(10, timeout=scaled(5))


def test_readexactly_hands_back_partial_bytes_on_failure(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        assert echo_server.wait_accepts(1)
        echo_server.send(b"abc")
        echo_server.drop_clients()
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.readexactly(5, timeout=scaled(5))
        assert info.value.partial == b"abc"


def test_accept_then_close_server_does_not_make_it_spin(make_server: Callable[..., Server]) -> None:
    server = make_server("accept_close")
    window = scaled(1.0)
    with opened(server.address, retry_min=0.05, retry_max=0.4, jitter=False) as conn:
        deadline = time.monotonic() + window
        for _ in range(1000):  # bounded: a spinning client would reach it
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with suppress(perconn.ConnectionIOError, TimeoutError):
                conn.read(10, timeout=remaining)
    # Young deaths continue the schedule: dials at 0, .05, .15, .35, .75 (then 1.15...).
    assert 2 <= server.accepts <= 8, server.accepts


def test_write_timeout_mid_buffer_drops_the_connection(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("no_read")
    with opened(server.address, logger=logger) as conn:
        conn.wait_connected(scaled(5))
        with pytest.raises(TimeoutError, match=r"write timed out after 0\.1 s"):
            conn.write(b"x" * (32 << 20), timeout=0.1)
        conn.wait_connected(scaled(5))
        assert conn.generation == 2
    (dropped,) = records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert dropped.error.op == "write" and isinstance(dropped.error.__cause__, TimeoutError)  # type: ignore[attr-defined]
    assert f"of {32 << 20} bytes sent" in dropped.getMessage()


def test_write_timeout_with_nothing_sent_keeps_the_connection(make_server: Callable[..., Server]) -> None:
    server = make_server("no_read")
    with opened(server.address) as conn:
        conn.wait_connected(scaled(5))
        fill_send_buffer(conn)
        assert conn.connected and conn.generation == 1


# -- timeouts and buffering ---------------------------------------------------------


def test_read_timeout_leaves_the_connection_up(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        with pytest.raises(TimeoutError):
            conn.read(10, timeout=0.02)
        assert conn.connected
        conn.write(b"still")
        assert conn.readexactly(5, timeout=scaled(5)) == b"still"
        assert conn.generation == 1


def test_readexactly_timeout_keeps_received_bytes(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.write(b"abc")
        assert conn.read(1, timeout=scaled(5)) == b"a"
        with pytest.raises(TimeoutError):
            conn.readexactly(4, timeout=0.05)  # only "bc" can arrive
        conn.write(b"de")
        assert conn.read(1, timeout=scaled(5)) == b"b"  # buffered bytes come first
        assert conn.readexactly(3, timeout=scaled(5)) == b"cde"


def test_bytes_kept_after_a_timeout_survive_the_connection_dropping(echo_server: Server) -> None:
    """As with asyncio: a reader gets a dropped connection's unread bytes first, then its end."""
    with opened(echo_server.address) as conn:
        conn.write(b"abc")
        with pytest.raises(TimeoutError):
            conn.readexactly(5, timeout=0.1)  # "abc" arrives and is kept
        echo_server.drop_clients()
        assert conn.read(2, timeout=scaled(5)) == b"ab"  # what the old connection received comes first
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.readexactly(2, timeout=scaled(5))  # cannot be completed from it: its end, with what was left
        assert info.value.partial == b"c"
        assert echo_server.wait_accepts(2)
        conn.write(b"x")
        assert conn.read(10, timeout=scaled(5)) == b"x"  # then the new connection
        assert conn.generation == 2


def test_reads_follow_writes_past_kept_bytes(echo_server: Server, logger: logging.Logger, records: Records) -> None:
    """A write on a newer connection discards the older one's unread bytes (logged with their count)."""
    with opened(echo_server.address, logger=logger) as conn:
        conn.write(b"abc")
        with pytest.raises(TimeoutError):
            conn.readexactly(5, timeout=0.1)  # "abc" arrives and is kept
        echo_server.drop_clients()
        conn.write(b"x")  # finds the connection closed by the peer: redials, writes on the new one
        assert conn.read(10, timeout=scaled(5)) == b"x"  # the reply to the write, never "abc"
        assert conn.generation == 2
    (discard,) = [r for r in records.matching(logging.WARNING) if "discarded" in r.getMessage()]
    assert "discarded 3 unread bytes of connection 1" in discard.getMessage()


def test_read_never_returns_more_than_asked(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.write(b"0123456789")
        got = b""
        for _ in range(10):
            chunk = conn.read(3, timeout=scaled(5))
            assert 1 <= len(chunk) <= 3
            got += chunk
            if len(got) == 10:
                break
        assert got == b"0123456789"


def test_bad_call_arguments_lose_nothing(make_server: Callable[..., Server]) -> None:
    server = make_server("sink")
    with opened(server.address) as conn:
        with pytest.raises(TypeError, match="data must be bytes-like, got str"):
            conn.write("text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="n must be >= 0, got -1"):
            conn.read(-1)
        assert conn.read(0) == b"" and conn.readexactly(0) == b""
        with pytest.raises(TypeError, match="n must be an int, got float"):
            conn.readexactly(2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be a finite number >= 0 or None, got -1"):
            conn.write(b"x", timeout=-1)
        assert conn.write(memoryview(b"ok")) == 2
        assert conn.write(b"") == 0
        assert conn.write(b"", timeout=1.0) == 0
        assert server.wait_received(0, 2) == b"ok"


# -- the idle probe -------------------------------------------------------------------


def test_write_after_peer_closed_an_idle_connection_is_not_lost(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("close_after_first")
    with opened(server.address, logger=logger) as conn:
        conn.write(b"one")
        idle_from = time.monotonic()
        assert server.wait_closes(1)  # the peer closed between the two writes
        # The rule is defined by time: the next write checks only after the connection
        # sat idle for IDLE_PROBE_AFTER (1 ms), so let that much pass if it has not.
        time.sleep(max(0.0, idle_from + perconn.sync.IDLE_PROBE_AFTER - time.monotonic()))
        conn.write(b"two")
        assert server.wait_received(1, 3) == b"two"
        assert conn.generation == 2
    (warning,) = records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert isinstance(warning.error.__cause__, EOFError)  # type: ignore[attr-defined]
    assert warning.error.op == "write"  # type: ignore[attr-defined]
    assert warning.getMessage().startswith(f"write {server.address}: connection closed by peer; generation 1 dropped")


def test_busy_writer_skips_the_idle_probe(make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    probes = 0
    real = perconn.sync.link.Connection.peer_gone

    def counting(link: perconn.sync.link.Connection) -> BaseException | None:
        nonlocal probes
        probes += 1
        return real(link)

    monkeypatch.setattr(perconn.sync.link.Connection, "peer_gone", counting)
    monkeypatch.setattr(perconn.sync.conn, "IDLE_PROBE_AFTER", 60.0)
    server = make_server("sink")
    with opened(server.address) as conn:
        for _ in range(200):
            conn.write(b"m")
        assert server.wait_received(0, 200) == b"m" * 200
    assert probes == 0


# -- concurrency -------------------------------------------------------------------------


def test_a_write_whose_connection_drops_as_it_goes_out_goes_to_the_next_one(
    echo_server: Server, monkeypatch: pytest.MonkeyPatch, leaks: Leaks
) -> None:
    # Another thread's reconnect() lands between a writer's choice of connection and its
    # send: here inside the idle probe, a system call, where a thread switch lets it in.
    # The write goes out on the next connection and its reply is read there. (It used to
    # go out on the dropped one: a failed write, or, before the drop shut the socket, a
    # reply its reader then waited for on the next connection until its timeout.)
    real = perconn.sync.link.Connection.peer_gone
    dropped: list[int] = []
    armed = threading.Event()  # (wait_connected probes too)

    def dropped_meanwhile(link: perconn.sync.link.Connection) -> BaseException | None:
        if not armed.is_set() or dropped:
            return real(link)
        dropped.append(link.generation)
        conn.reconnect()
        return None  # what the probe saw before the drop: the peer is there

    monkeypatch.setattr(perconn.sync.link.Connection, "peer_gone", dropped_meanwhile)
    monkeypatch.setattr(perconn.sync.conn, "IDLE_PROBE_AFTER", 0.0)  # every write probes
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        armed.set()
        conn.write(b"req\n", timeout=scaled(5))
        assert conn.readuntil(b"\n", timeout=scaled(5)) == b"req\n"
        assert dropped == [1]
        assert conn.generation == 2
    leaks.assert_none()


def test_concurrent_writers_never_interleave(make_server: Callable[..., Server]) -> None:
    server = make_server("sink")
    writers, count, size = 4, 100, 3000
    with opened(server.address) as conn:

        def write_all(tag: int) -> None:
            for _i in range(count):
                conn.write(bytes([65 + tag]) * size)

        calls = [Call(lambda tag=tag: write_all(tag)) for tag in range(writers)]  # type: ignore[misc]
        for call in calls:
            assert call.join(30).error is None
        data = server.wait_received(0, writers * count * size)
    blocks = [data[i : i + size] for i in range(0, len(data), size)]
    assert all(block == block[:1] * size for block in blocks)
    assert sorted(b[0] for b in blocks) == sorted(65 + t for t in range(writers) for _ in range(count))


def test_blocked_reader_does_not_delay_writers(make_server: Callable[..., Server]) -> None:
    server = make_server("sink")
    with opened(server.address) as conn:
        reader = Call(lambda: conn.read(100))  # nothing ever arrives
        assert wait_until(blocked_in(conn, "_rlock"))
        for i in range(50):
            conn.write(b"%03d" % i, timeout=scaled(2))
        assert len(server.wait_received(0, 150)) == 150
        assert reader.alive()  # still blocked while all writes completed


def test_concurrent_readers_share_the_stream_without_loss(echo_server: Server) -> None:
    total = 20000
    got: list[bytes] = []
    lock = threading.Lock()
    with opened(echo_server.address) as conn:

        def read_some() -> None:
            while True:
                with lock:
                    if sum(map(len, got)) >= total:
                        return
                try:
                    chunk = conn.read(100, timeout=0.05)
                except TimeoutError:
                    continue
                with lock:
                    got.append(chunk)

        readers = [Call(read_some) for _ in range(3)]
        payload = bytes(range(256)) * (total // 256) + bytes(total % 256)
        conn.write(payload)
        for reader in readers:
            assert reader.join(10).error is None
    assert sum(map(len, got)) == total
    assert sorted(b"".join(got)) == sorted(payload)


# -- closing --------------------------------------------------------------------------------


def timed_close(conn: perconn.Conn) -> float:
    start = time.monotonic()
    conn.close()
    return time.monotonic() - start


def test_close_while_blocked_in_connect(leaks: Leaks) -> None:
    with blackhole() as address:
        conn = perconn.connect(address, **FAST)
        waiter = Call(lambda: conn.wait_connected())
        with pytest.raises(TimeoutError):
            conn.wait_connected(timeout=0.1)  # the dial hangs: no dial_timeout, SYN dropped
        assert timed_close(conn) < 0.1
        assert isinstance(waiter.join().error, perconn.ClosedConnectionError)
    leaks.assert_none()


def test_close_while_sleeping_in_backoff(logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    with refusing_port() as address:
        conn = perconn.connect(address, logger=logger, retry_min=30.0, retry_max=60.0)
        assert records.wait_for(logging.WARNING, perconn.DialError)
        writer = Call(lambda: conn.write(b"never"))
        assert timed_close(conn) < 0.1
        assert isinstance(writer.join().error, perconn.ClosedConnectionError)
    leaks.assert_none()


def test_close_wakes_blocked_readers_and_writers(
    echo_server: Server, make_server: Callable[..., Server], leaks: Leaks
) -> None:
    no_read = make_server("no_read")
    conn = perconn.connect(echo_server.address)
    stuck = perconn.connect(no_read.address)
    conn.wait_connected(scaled(5))
    stuck.wait_connected(scaled(5))
    reader = Call(lambda: conn.read(10))
    exact = Call(lambda: conn.readexactly(10, timeout=scaled(30)))
    writer = Call(lambda: stuck.write(b"x" * (64 << 20)))  # blocks: the peer never reads
    assert wait_until(blocked_in(conn, "_rlock")) and wait_until(blocked_in(stuck, "_wlock"))
    assert timed_close(conn) < 0.1
    assert timed_close(stuck) < 0.1
    for call in (reader, exact, writer):
        assert isinstance(call.join().error, perconn.ClosedConnectionError)
    echo_server.stop()
    no_read.stop()
    leaks.assert_none()


def test_close_is_idempotent_and_final(echo_server: Server) -> None:
    conn = perconn.connect(echo_server.address)
    conn.wait_connected(scaled(5))
    conn.close()
    conn.close()
    assert not conn.connected
    for op in (
        lambda: conn.read(1),
        lambda: conn.readexactly(1),
        lambda: conn.write(b"x"),
        lambda: conn.wait_connected(),
    ):
        with pytest.raises(perconn.ClosedConnectionError):
            op()


@pytest.mark.parametrize("state", ["dialing", "connected"])
def test_dropping_an_unclosed_conn_warns_and_releases_it(state: str, echo_server: Server, leaks: Leaks) -> None:
    with refusing_port() as refused:
        conn = perconn.connect(echo_server.address if state == "connected" else refused, **FAST)
        if state == "connected":
            conn.wait_connected(scaled(5))
            assert wait_until(lambda: not leaks.new_threads())  # the dial thread has let go of it
        with pytest.warns(ResourceWarning, match="unclosed <perconn.Conn") as warned:
            del conn
            gc.collect()
            # The dial thread may hold it for a moment (it reports a failed dial): then the
            # warning comes from that thread, when it lets go.
            assert wait_until(lambda: any(w.category is ResourceWarning for w in warned))
    echo_server.stop()
    leaks.assert_none()


def test_many_lives_leave_nothing_behind(echo_server: Server, leaks: Leaks) -> None:
    with refusing_port() as refused:
        for i in range(20):
            conn = perconn.connect(echo_server.address if i % 2 else refused, **FAST)
            if i % 2:
                conn.write(b"x")
                conn.readexactly(1, timeout=scaled(5))
                if i % 4 == 1:
                    echo_server.drop_clients()
                    with pytest.raises(perconn.ConnectionIOError):
                        conn.read(1, timeout=scaled(5))
            conn.close()
    echo_server.stop()
    leaks.assert_none()


# -- cost while down -----------------------------------------------------------------------


def test_no_busy_loop_while_down() -> None:
    with refusing_port() as address:
        conn = perconn.connect(address, retry_min=0.005, retry_max=0.02)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.wait_connected(timeout=2.0)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        conn.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.25 * wall, f"{cpu:.3f}s of CPU in {wall:.3f}s while down"


def test_nothing_printed_without_logging_config() -> None:
    script = (
        "import socket, perconn\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0))\n"
        "c = perconn.connect('127.0.0.1:%d' % s.getsockname()[1], retry_min=0.01, retry_max=0.02)\n"
        "try:\n    c.wait_connected(timeout=0.3)\nexcept TimeoutError:\n    pass\n"
        "c.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(20))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


# -- everything at once ----------------------------------------------------------------------


def test_chaos_restarts_and_resets_under_concurrent_io(echo_server: Server, leaks: Leaks) -> None:
    """Threads read and write while the server restarts and resets connections:
    every failure is one of the documented kinds, and close() leaves nothing."""
    unexpected: list[BaseException] = []
    conn = perconn.connect(echo_server.address, retry_min=0.005, retry_max=0.05)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(100_000):  # bounded; close() ends it long before
            try:
                conn.write(bytes([65 + seed]) * rnd.randint(1, 3000), timeout=rnd.choice([None, 0.05, 1.0]))
                if rnd.random() < 0.5:
                    conn.read(rnd.randint(1, 4000), timeout=0.05)
                else:
                    conn.readexactly(rnd.randint(1, 100), timeout=0.05)
            except perconn.ClosedConnectionError:
                return
            except (perconn.ConnectionIOError, TimeoutError):
                pass
            except BaseException as exc:
                unexpected.append(exc)
                return

    workers = [Call(lambda seed=seed: worker(seed)) for seed in range(4)]  # type: ignore[misc]
    chaos = random.Random(7)
    for _ in range(20):
        conn.wait_connected(scaled(5))
        action = chaos.choice(["restart", "drop", "reset", "none"])
        if action == "restart":
            echo_server.restart()
        elif action in ("drop", "reset"):
            echo_server.drop_clients(reset=action == "reset")
    assert timed_close(conn) < 0.1
    for call in workers:
        call.join()
    assert not unexpected, unexpected
    assert conn.generation >= 2
    echo_server.stop()
    leaks.assert_none()


# -- the resolver ------------------------------------------------------------------------------

SLOW_LOOKUP = """
import os, socket, threading, time
import perconn

dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))  # takes queries and never answers: lookups last the resolver's timeout
fds_before = set(os.listdir("/proc/self/fd"))
conn = perconn.connect("slow.test:80", retry_min=30.0, retry_max=60.0)
dns.recvfrom(512)  # the lookup thread is now inside getaddrinfo, the dial thread waiting for it
start = time.monotonic()
conn.close()
took = time.monotonic() - start
stragglers = [t for t in threading.enumerate() if t.name.startswith("perconn")]
for t in stragglers:
    t.join(10)  # the lookup gives up after about a second
leaked = set(os.listdir("/proc/self/fd")) - fds_before
print(f"{took:.4f} {len(stragglers)} {sum(t.is_alive() for t in stragglers)} {len(leaked)}")
"""


def test_close_during_a_slow_lookup_leaves_only_the_lookup_thread(tmp_path: Path) -> None:
    done = run_isolated(SLOW_LOOKUP, tmp_path)
    assert done.returncode == 0, done.stderr
    took, stragglers, alive_later, leaked = done.stdout.split()
    assert float(took) < 0.1  # close() did not wait for the resolver
    assert int(stragglers) == 1  # the one allowed straggler: the lookup thread, inside getaddrinfo
    assert int(alive_later) == 0  # it exited once the lookup returned
    assert int(leaked) <= 1  # and closed what it opened (one fd is os.listdir's own)


MOVING_HOST = (
    HOSTS_HELPERS
    + """
import perconn

first, port = serve_on("127.0.0.1")
point("moving.test", "127.0.0.1")
conn = perconn.connect(f"moving.test:{port}", retry_min=0.01, retry_max=0.05)
peer, _ = first.accept()
print(peer.getsockname()[0])
second, _ = serve_on("127.0.0.2", port)  # the service moves to another address
point("moving.test", "127.0.0.2")
peer.close()  # and the old one goes away
try:
    conn.read(1, timeout=5)
except perconn.ConnectionIOError:
    pass
peer, _ = second.accept()
conn.wait_connected(5)  # accepted by the kernel: the dial thread installs it a moment later
print(peer.getsockname()[0], conn.generation)
conn.close()
"""
)


def test_the_name_is_looked_up_again_on_every_dial(tmp_path: Path) -> None:
    done = run_isolated(MOVING_HOST, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["127.0.0.1", "127.0.0.2", "2"]
