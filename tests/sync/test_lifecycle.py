"""The synchronous Conn's lifecycle features over loopback, against real servers:
the ``on_connect`` hook (a Redis AUTH among them), giving up, ``on_disconnect``,
``reconnect()``, backoff forgiveness, ``stats``, and the write-timeout rule."""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest
from conftest import Leaks, Records
from redis_server import RedisServer, resp_command
from servers import CrashLoop, Server, blackhole, refusing_port, scaled, wait_until
from sync_helpers import FAST, Call, fill_send_buffer, opened

import perconn
from perconn._state import LAST_DIAL_MIN

AUTH = b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"


class HookFailed(Exception):
    """What a test's on_connect hook raises to fail a dial."""


class Disconnects:
    """An ``on_disconnect`` callback that records its calls, with a way to wait for them."""

    def __init__(self) -> None:
        self.errors: list[perconn.ConnectionIOError] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, error: perconn.ConnectionIOError) -> None:
        with self._cond:
            self.errors.append(error)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.errors) >= count, scaled(timeout))


def gave_up_records(records: Records) -> list[logging.LogRecord]:
    return records.matching(logging.ERROR, perconn.GaveUpError)


def drop_delays(records: Records) -> list[float]:
    return [r.delay for r in records.matching(logging.WARNING, perconn.ConnectionIOError)]  # type: ignore[attr-defined]


def timed_close(conn: perconn.Conn) -> float:
    start = time.monotonic()
    conn.close()
    return time.monotonic() - start


# -- 1. a Redis AUTH hook across server restarts --------------------------------------


def redis_auth(link: perconn.Link) -> None:
    """The handshake: AUTH, and nothing but +OK will do (anything else fails the dial)."""
    link.write(AUTH)
    reply = link.readuntil(b"\r\n")
    if reply != b"+OK\r\n":
        raise HookFailed(f"AUTH answered {reply!r}")


def redis_echo(conn: perconn.Conn, message: bytes) -> int:
    """ECHO *message*, retried whenever the connection breaks under it; returns how
    many ConnectionIOErrors it took. Any reply but the right one fails the test."""
    for failures in range(100):  # bounded: each failure is a new connection
        try:
            conn.write(resp_command("ECHO", message), timeout=scaled(10))
            head = conn.readuntil(b"\r\n", timeout=scaled(10))
            assert not head.startswith(b"-NOAUTH"), f"a command ran on an unauthenticated connection: {head!r}"
            assert head == b"$%d\r\n" % len(message), head
            assert conn.readuntil(b"\r\n", timeout=scaled(10)) == message + b"\r\n"
            return failures
        except perconn.ConnectionIOError:
            continue
    pytest.fail(f"ECHO {message!r} failed 100 times")


def test_redis_auth_hook_survives_server_restarts(redis_server: RedisServer, logger: logging.Logger) -> None:
    assert resp_command("AUTH", redis_server.password or "") == AUTH
    restarts, between = 3, 30  # commands that complete between the end of one restart and the next
    with opened(redis_server.address, on_connect=redis_auth, logger=logger) as conn:
        done = io_errors = 0
        restarter: Call | None = None
        next_restart = between
        for i in range(200_000):  # bounded; the loop ends after the last restart and 200 commands
            io_errors += redis_echo(conn, b"m-%06d" % i)
            done += 1
            if restarter is None and i >= next_restart and restarts:
                restarter = Call(redis_server.restart)  # commands keep running while it happens
            elif restarter is not None and restarter.done():
                assert restarter.join().error is None
                restarter, restarts = None, restarts - 1
                next_restart = i + between
            if not restarts and restarter is None and done >= 200 and i >= next_restart:
                break
        assert restarts == 0, "the restarts did not finish"
        assert conn.generation >= 4  # every restart cost the connection
        assert conn.stats.connections == conn.generation
    assert done >= 200


# -- 2. a hook that fails, then succeeds ------------------------------------------------


def test_hook_failing_on_its_first_connections_then_succeeding(
    echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    failing = 3
    generations: list[int] = []

    def hook(link: perconn.Link) -> None:
        generations.append(link.generation)
        if len(generations) <= failing:
            raise HookFailed(f"handshake {len(generations)} refused")
        link.write(b"hello\n")
        assert link.readuntil(b"\n") == b"hello\n"  # no caller's bytes came in between

    with perconn.Conn(echo_server.address, on_connect=hook, logger=logger, jitter=False, **FAST) as conn:
        writer = Call(lambda: conn.write(b"caller\n"))  # waits for a connection whose hook succeeded
        conn.wait_connected(scaled(5))
        assert writer.join().error is None
        assert conn.readuntil(b"\n", timeout=scaled(5)) == b"caller\n"
        assert conn.generation == 1
        stats = conn.stats
        assert (stats.dials, stats.dial_failures, stats.connections, stats.drops) == (4, 3, 1, 0)
        assert echo_server.wait_closes(3)  # each failed hook's connection was closed
    assert generations == [1, 1, 1, 1]  # the number the connection would have had
    failures = records.matching(logging.WARNING, perconn.DialError)
    assert len(failures) == failing
    for n, record in enumerate(failures, 1):
        error = record.error  # type: ignore[attr-defined]
        assert isinstance(error.__cause__, HookFailed) and str(error.__cause__) == f"handshake {n} refused"
        assert record.attempt == n  # type: ignore[attr-defined]
    (info,) = records.matching(logging.INFO)
    assert "generation 1, after 4 attempts" in info.getMessage()
    assert not records.matching(logging.ERROR)


def test_dial_timeout_bounds_connect_and_hook_together(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("sink")  # never answers the handshake

    def hook(link: perconn.Link) -> None:
        link.write(b"hello?\n")
        link.readuntil(b"\n")  # its default timeout is what dial_timeout leaves

    start = time.monotonic()
    with opened(server.address, on_connect=hook, dial_timeout=0.2, retry_min=5.0, retry_max=5.0, logger=logger):
        assert records.wait_for(logging.WARNING, perconn.DialError)
        took = time.monotonic() - start
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert isinstance(error.__cause__, TimeoutError)
    assert 0.15 <= took < 0.2 + scaled(1.0)
    assert server.wait_closes(1)


# -- 3. a hook that gives up ---------------------------------------------------------------


def test_hook_raising_gave_up_error_gives_up_at_once(
    echo_server: Server, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    def hook(link: perconn.Link) -> None:
        raise perconn.GaveUpError("wrong password")

    conn = perconn.connect(echo_server.address, on_connect=hook, logger=logger, **FAST)
    waiter = Call(lambda: conn.wait_connected())
    error = waiter.join().error
    assert isinstance(error, perconn.GaveUpError) and isinstance(error, perconn.ClosedConnectionError)
    assert isinstance(error.__cause__, perconn.DialError)
    assert isinstance(error.__cause__.__cause__, perconn.GaveUpError)
    assert str(error.__cause__.__cause__) == "wrong password"
    assert conn.closed
    stats = conn.stats
    assert (stats.state, stats.dials, stats.dial_failures, stats.connections) == ("closed", 1, 1, 0)
    for call in (lambda: conn.read(1), lambda: conn.write(b"x"), lambda: conn.wait_connected(0), conn.reconnect):
        with pytest.raises(perconn.GaveUpError):
            call()
    conn.close()  # idempotent after giving up
    (gave_up,) = gave_up_records(records)
    assert isinstance(gave_up.error, perconn.GaveUpError)  # type: ignore[attr-defined]
    assert gave_up.error.__cause__ is error.__cause__  # type: ignore[attr-defined]
    assert len(records.matching(logging.WARNING, perconn.DialError)) == 1
    assert len(records.matching(logging.ERROR)) == 1
    echo_server.stop()
    leaks.assert_none()


# -- 4. bytes the hook left unread -------------------------------------------------------------


def test_bytes_the_hook_left_unread_are_the_first_callers_read(echo_server: Server) -> None:
    seen: list[object] = []

    def hook(link: perconn.Link) -> None:
        seen.extend([link.address, link.generation, link.get_extra_info("peername")])
        seen.append(isinstance(link.get_extra_info("socket"), socket.socket))
        seen.append(link.readuntil(b"\n", timeout=scaled(5)))  # the banner's first line only

    with opened(echo_server.address, on_connect=hook) as conn:
        reader = Call(lambda: conn.read(100, timeout=scaled(5)))  # waits while the hook runs
        assert echo_server.wait_accepts(1)
        echo_server.send(b"HELLO\nrest")  # one segment: "rest" lands in the hook's buffer
        assert reader.join().result == b"rest"
        conn.write(b"!")
        assert conn.readexactly(1, timeout=scaled(5)) == b"!"
        assert conn.generation == 1
    assert seen == [echo_server.address, 1, echo_server.sockaddr, True, b"HELLO\n"]


# -- 5. a server that answers once, says BYE and closes ------------------------------------------


def answered(server: Server) -> int:
    """How many connections a reply_bye server got a whole request on (it closes each)."""
    return sum(b"\n" in got for got in list(server.received))


@pytest.mark.parametrize("pace", ["back_to_back", "after_the_close"])
def test_each_request_gets_its_own_reply_never_bye(
    pace: str, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    """A server that answers one request per connection, then says BYE and closes:
    the next request goes to a fresh connection and is answered there; the old
    connection's unread BYE is never taken for a reply. Requests follow each other
    at once, or once the server's close was seen to happen."""
    server = make_server("reply_bye")
    replies: list[bytes | None] = []
    with opened(server.address, logger=logger) as conn:
        for n in range(20):
            try:
                conn.write(b"%d\n" % n, timeout=scaled(5))
                reply = conn.readuntil(b"\n", timeout=scaled(5))
            except perconn.ConnectionIOError:
                replies.append(None)
                continue
            replies.append(reply)
            if pace == "after_the_close":
                assert server.wait_closes(answered(server))
    wrong = [(n, reply) for n, reply in enumerate(replies) if reply not in (None, b"REP %d\n" % n)]
    assert not wrong, f"requests answered with another request's reply or BYE: {wrong}"
    assert sum(reply is not None for reply in replies) >= 10, replies
    discards = [r.getMessage() for r in records.matching(logging.WARNING) if "discarded" in r.getMessage()]
    assert 1 <= len(discards) < 20
    assert all("discarded 4 unread bytes" in d for d in discards), discards  # "BYE\n", never a reply


# -- 6. giving up --------------------------------------------------------------------------------


def test_gives_up_after_max_attempts(logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    with refusing_port() as address:
        conn = perconn.connect(address, max_attempts=3, logger=logger, retry_min=0.01, retry_max=0.02)
        reader = Call(lambda: conn.read(10))
        error = reader.join().error
        assert isinstance(error, perconn.GaveUpError), error
        assert "max_attempts=3" in str(error)
        assert isinstance(error.__cause__, perconn.DialError)
        assert isinstance(error.__cause__.__cause__, ConnectionRefusedError)
        assert conn.closed and not conn.connected
        stats = conn.stats
        assert (stats.state, stats.dials, stats.dial_failures, stats.connections) == ("closed", 3, 3, 0)
        assert stats.last_error is error.__cause__
        with pytest.raises(perconn.GaveUpError):
            conn.write(b"late")
        conn.close()
    dial_failures = records.matching(logging.WARNING, perconn.DialError)
    assert [r.attempt for r in dial_failures] == [1, 2, 3]  # type: ignore[attr-defined]
    assert dial_failures[-1].delay is None and "giving up" in dial_failures[-1].getMessage()  # type: ignore[attr-defined]
    (gave_up,) = gave_up_records(records)
    assert str(gave_up.error) == str(error)  # type: ignore[attr-defined]
    assert len(records.matching(logging.ERROR)) == 1
    leaks.assert_none()


def test_max_attempts_1_fails_fast(logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    with refusing_port() as address:
        start = time.monotonic()
        conn = perconn.connect(address, max_attempts=1, logger=logger, retry_min=30.0, retry_max=60.0)
        with pytest.raises(perconn.GaveUpError) as info:
            conn.wait_connected(timeout=scaled(5))
        assert time.monotonic() - start < scaled(0.5)
        assert isinstance(info.value.__cause__, perconn.DialError)
        assert conn.stats.state == "closed" and conn.stats.dials == 1
    assert len(gave_up_records(records)) == 1
    leaks.assert_none()


@pytest.mark.parametrize("peer", ["blackhole", "refusing"])
def test_gives_up_after_give_up_after_seconds(
    peer: str, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    limit = 0.3
    with blackhole() if peer == "blackhole" else refusing_port() as address:
        start = time.monotonic()
        conn = perconn.connect(
            address, give_up_after=limit, dial_timeout=0.1, logger=logger, retry_min=0.05, retry_max=0.1
        )
        waiter = Call(lambda: conn.wait_connected())
        error = waiter.join().error
        took = time.monotonic() - start
        assert isinstance(error, perconn.GaveUpError), error
        assert "give_up_after=0.3" in str(error)
        assert isinstance(error.__cause__, perconn.DialError)
        cause = TimeoutError if peer == "blackhole" else ConnectionRefusedError
        assert isinstance(error.__cause__.__cause__, cause)
        assert limit - LAST_DIAL_MIN <= took < limit + scaled(0.5)  # no last dial with next to no time
        assert conn.closed and conn.stats.state == "closed"
        conn.close()
    assert len(gave_up_records(records)) == 1
    leaks.assert_none()


@pytest.mark.parametrize("peer", ["blackhole", "refusing"])
def test_give_up_after_never_ends_on_a_dial_given_no_time(
    peer: str, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    """The backoff sleep before the give_up_after deadline is cut to end there; then
    the Conn gives up, without one more dial given no time (which could only fail,
    with a made-up "connect timed out after 0 s" hiding the real failure)."""
    with blackhole() if peer == "blackhole" else refusing_port() as address:
        conn = perconn.connect(
            address, give_up_after=0.25, dial_timeout=0.1, retry_min=0.5, retry_max=0.5, jitter=False, logger=logger
        )
        with pytest.raises(perconn.GaveUpError) as info:
            conn.wait_connected(timeout=scaled(5))
        conn.close()
    causes = [r.error.__cause__ for r in records.matching(logging.WARNING, perconn.DialError)]  # type: ignore[attr-defined]
    if peer == "blackhole":
        assert [str(c) for c in causes] == ["connect timed out after 0.1 s"] * len(causes), causes
    else:
        assert all(isinstance(c, ConnectionRefusedError) for c in causes), causes
    assert info.value.__cause__ is not None and info.value.__cause__.__cause__ is causes[-1]
    leaks.assert_none()


# -- 7. on_disconnect ----------------------------------------------------------------------------------


def test_on_disconnect_once_per_drop_never_for_close(echo_server: Server, logger: logging.Logger) -> None:
    disconnects = Disconnects()
    with opened(echo_server.address, on_disconnect=disconnects, logger=logger) as conn:
        for drop in (1, 2):
            conn.write(b"x")
            assert conn.readexactly(1, timeout=scaled(5)) == b"x"
            echo_server.drop_clients()
            with pytest.raises(perconn.ConnectionIOError) as info:
                conn.read(10, timeout=scaled(5))
            assert disconnects.wait_for(drop)
            assert info.value.__cause__ is disconnects.errors[-1].__cause__
            conn.wait_connected(scaled(5))
            assert conn.generation == drop + 1
    assert len(disconnects.errors) == 2  # close() is not a disconnect
    for error in disconnects.errors:
        assert isinstance(error, perconn.ConnectionIOError) and isinstance(error.__cause__, EOFError)
        assert error.address == echo_server.address


def test_on_disconnect_that_raises_is_logged_and_changes_nothing(
    echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    def on_disconnect(error: perconn.ConnectionIOError) -> None:
        raise RuntimeError("callback bug")

    with opened(echo_server.address, on_disconnect=on_disconnect, logger=logger) as conn:
        conn.write(b"a")
        assert conn.readexactly(1, timeout=scaled(5)) == b"a"
        echo_server.drop_clients()
        with pytest.raises(perconn.ConnectionIOError):  # the caller gets its own error, not the callback's
            conn.read(10, timeout=scaled(5))
        conn.write(b"b")  # reconnecting went on
        assert conn.readexactly(1, timeout=scaled(5)) == b"b"
        assert conn.generation == 2
        conn.reconnect()  # raises nothing either
        conn.wait_connected(scaled(5))
        assert conn.generation == 3
    failed = [r for r in records.matching(logging.ERROR) if "on_disconnect" in r.getMessage()]
    assert len(failed) == 2
    for record in failed:
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert "on_disconnect raised RuntimeError: callback bug" in record.getMessage()
    assert not gave_up_records(records)


# -- 8. reconnect() ------------------------------------------------------------------------------------


def test_reconnect_under_concurrent_round_trips(
    echo_server: Server, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    workers, reconnects = 3, 5
    disconnects = Disconnects()
    conn = perconn.connect(echo_server.address, on_disconnect=disconnects, logger=logger, **FAST)
    turn = threading.Lock()  # one round trip at a time shares the echo stream; reconnect() races them all
    progress = threading.Condition()
    ok = [0]
    wrong: list[tuple[bytes, bytes]] = []

    def round_trips(tag: int) -> None:
        for k in range(1_000_000):  # bounded; close() ends it
            payload = b"%d-%d\n" % (tag, k)
            try:
                with turn:
                    conn.write(payload, timeout=scaled(5))
                    got = conn.readuntil(b"\n", timeout=scaled(5))
            except perconn.ClosedConnectionError:
                return
            except perconn.ConnectionIOError:
                continue
            with progress:
                if got != payload:
                    wrong.append((payload, got))
                ok[0] += 1
                progress.notify_all()

    calls = [Call(lambda tag=tag: round_trips(tag)) for tag in range(workers)]  # type: ignore[misc]
    for n in range(reconnects):
        with progress:
            target = ok[0] + 3 * workers
            assert progress.wait_for(lambda: ok[0] >= target, scaled(5)), "no round trips completed"  # noqa: B023
        generation = conn.generation
        conn.reconnect()
        conn.wait_connected(scaled(5))
        assert conn.generation == generation + 1
        assert disconnects.wait_for(n + 1)
    with progress:
        target = ok[0] + 3 * workers
        assert progress.wait_for(lambda: ok[0] >= target, scaled(5))
    assert timed_close(conn) < 0.1
    for call in calls:
        assert call.join().error is None
    assert not wrong, wrong
    assert len(disconnects.errors) == reconnects
    for error in disconnects.errors:
        assert error.op == "reconnect" and isinstance(error.__cause__, ConnectionAbortedError)
    assert len(records.matching(logging.WARNING, perconn.ConnectionIOError)) == reconnects
    echo_server.stop()
    leaks.assert_none()


def test_reconnect_while_dialing_dials_at_once(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("echo")
    server.stop()
    with opened(server.address, logger=logger, retry_min=5.0, retry_max=10.0, jitter=False) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError)
        assert records.matching(logging.WARNING, perconn.DialError)[0].delay == 5.0  # type: ignore[attr-defined]
        server.start()
        start = time.monotonic()
        conn.reconnect()
        conn.wait_connected(timeout=1.0)
        assert time.monotonic() - start < 1.0
        assert conn.generation == 1
        conn.write(b"up")
        assert conn.readexactly(2, timeout=scaled(5)) == b"up"
    with pytest.raises(perconn.ClosedConnectionError):
        conn.reconnect()


# -- 9. a crash-looping server, and one that accepts and closes -------------------------------------


def test_crash_looping_server_is_followed_and_rejoined_once_stable(echo_server: Server, logger: logging.Logger) -> None:
    retry_min, count, up = 0.5, 15, 0.6
    conn = perconn.connect(echo_server.address, retry_min=retry_min, retry_max=30.0, logger=logger)
    replied = threading.Condition()
    times: list[float] = []
    wrong: list[tuple[bytes, bytes]] = []

    def traffic() -> None:
        for k in range(10_000_000):  # bounded; close() ends it
            payload = b"%d\n" % k
            try:
                conn.write(payload)
                got = conn.readuntil(b"\n")
            except perconn.ClosedConnectionError:
                return
            except perconn.ConnectionIOError:
                continue
            with replied:
                if got != payload:
                    wrong.append((payload, got))
                times.append(time.monotonic())
                replied.notify_all()
            time.sleep(0.002)  # steady traffic, not a spin

    worker = Call(traffic)
    try:
        with CrashLoop(echo_server, count=count, up=up) as loop:
            assert loop.wait(count * up + 10)
        stable = loop.starts[-1]
        with replied:
            assert replied.wait_for(
                lambda: bool(times) and times[-1] > stable, max(0.0, stable + scaled(5) - time.monotonic())
            )
            first = next(t for t in times if t > stable)
        assert first - stable <= scaled(2 * retry_min + 1.0), f"rejoined {first - stable:.2f} s after it was stable"
        stats = conn.stats
        assert stats.connections >= count / 2, stats
        assert stats.drops >= count / 2, stats
    finally:
        conn.close()
        worker.join()
    assert not wrong, wrong


def test_accept_then_close_server_is_redialed_on_the_backoff_schedule(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("accept_close")
    with opened(server.address, retry_min=0.05, retry_max=0.4, jitter=False, logger=logger) as conn:
        deadline = time.monotonic() + 1.5
        for _ in range(10_000):  # bounded: a spinning client would reach it
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with suppress(perconn.ConnectionIOError, TimeoutError):
                conn.read(10, timeout=remaining)
    # Young deaths continue the schedule: dials at 0, .05, .15, .35, .75, 1.15 (then 1.55...).
    assert 2 <= server.accepts < 20, server.accepts
    assert drop_delays(records)[:4] == [0.05, 0.1, 0.2, 0.4]


@pytest.mark.parametrize("proof", ["bytes", "hook", "age", "none"])
def test_a_connection_that_proved_itself_resets_the_backoff(
    proof: str, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    def hook(link: perconn.Link) -> None:
        """A handshake with nothing to say: succeeding is proof enough."""

    options: dict[str, Any] = {"retry_min": 0.1 if proof == "age" else 5.0, "retry_max": 10.0, "jitter": False}
    if proof == "hook":
        options["on_connect"] = hook
    with opened(echo_server.address, logger=logger, **options) as conn:
        conn.wait_connected(scaled(5))
        if proof == "bytes":
            conn.write(b"x")
            assert conn.readexactly(1, timeout=scaled(5)) == b"x"
        elif proof == "age":
            time.sleep(0.15)  # the rule is defined by time: up for retry_min
        echo_server.drop_clients()
        with pytest.raises(perconn.ConnectionIOError):
            conn.read(10, timeout=scaled(5))
        # A proven connection is redialed at once (no jitter); an unproven one waits retry_min.
        assert drop_delays(records) == [5.0 if proof == "none" else 0.0]
        if proof != "none":
            conn.wait_connected(scaled(5))
            assert conn.generation == 2


# -- 10. connected / wait_connected see a connection the peer closed ----------------------------------


def test_connected_does_not_report_a_connection_the_peer_closed(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        assert conn.connected
        echo_server.drop_clients()
        assert echo_server.wait_closes(1)
        assert wait_until(lambda: not conn.connected)  # the client notices the FIN: no event reports it
        conn.wait_connected(scaled(5))  # redialed
        assert conn.connected and conn.generation == 2
        conn.write(b"fresh")
        assert conn.readexactly(5, timeout=scaled(5)) == b"fresh"


def test_wait_connected_does_not_return_a_connection_the_peer_closed(echo_server: Server) -> None:
    with opened(echo_server.address) as conn:
        conn.wait_connected(scaled(5))
        echo_server.drop_clients()
        assert echo_server.wait_closes(1)  # on loopback the FIN is queued by the time close() returns
        conn.wait_connected(scaled(5))
        assert conn.generation == 2
        conn.write(b"fresh")
        assert conn.readexactly(5, timeout=scaled(5)) == b"fresh"


# -- 11. the write timeout rule ------------------------------------------------------------------------


def test_write_timeout_with_nothing_sent_keeps_the_connection(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("no_read")
    disconnects = Disconnects()
    with opened(server.address, logger=logger, on_disconnect=disconnects) as conn:
        conn.wait_connected(scaled(5))
        fill_send_buffer(conn)
        with pytest.raises(TimeoutError):
            conn.write(b"y", timeout=0.01)  # nothing can go out: still the same connection
        assert conn.connected and conn.generation == 1 and conn.stats.drops == 0
    assert not records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert not disconnects.errors


def test_write_timeout_after_part_went_out_drops_the_connection(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("no_read")
    disconnects = Disconnects()
    size = 32 << 20
    with opened(server.address, logger=logger, on_disconnect=disconnects) as conn:
        conn.wait_connected(scaled(5))
        with pytest.raises(TimeoutError, match=r"write timed out after 0\.1 s"):
            conn.write(b"x" * size, timeout=0.1)
        conn.wait_connected(scaled(5))
        assert conn.generation == 2
        assert conn.stats.drops == 1
    (dropped,) = records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert dropped.error.op == "write"  # type: ignore[attr-defined]
    found = re.search(r"with (\d+) of (\d+) bytes sent", dropped.getMessage())
    assert found is not None, dropped.getMessage()
    assert 0 < int(found[1]) < size and int(found[2]) == size
    assert len(disconnects.errors) == 1 and disconnects.errors[0].op == "write"


# -- 12. close() during a hook, and stats ---------------------------------------------------------------


def test_close_while_the_hook_is_blocked_reading(
    make_server: Callable[..., Server], logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    server = make_server("sink")  # never answers
    in_hook = threading.Event()

    def hook(link: perconn.Link) -> None:
        link.write(b"anyone there?\n")
        in_hook.set()
        link.readuntil(b"\n")  # no timeout, no dial_timeout: only close() ends it

    conn = perconn.connect(server.address, on_connect=hook, logger=logger, **FAST)
    waiter = Call(lambda: conn.wait_connected())
    assert in_hook.wait(scaled(5))
    assert server.wait_received(0, 14) == b"anyone there?\n"
    assert timed_close(conn) < 0.1
    assert isinstance(waiter.join().error, perconn.ClosedConnectionError)
    assert not isinstance(waiter.error, perconn.GaveUpError)
    assert conn.closed and conn.stats.state == "closed" and conn.stats.connections == 0
    server.stop()
    leaks.assert_none()
    assert not records.matching(logging.WARNING)  # the hook's end is close(), not a failed dial
    assert not records.matching(logging.ERROR)


def test_stats_snapshots_follow_a_session(echo_server: Server, logger: logging.Logger) -> None:
    disconnects = Disconnects()
    before = time.monotonic()
    conn = perconn.Conn(echo_server.address, logger=logger, on_disconnect=disconnects, **FAST)
    try:
        conn.wait_connected(scaled(5))
        first = conn.stats
        assert (first.dials, first.dial_failures, first.connections, first.drops) == (1, 0, 1, 0)
        assert first.last_error is None and first.state == "connected"
        assert before <= first.state_since <= time.monotonic()
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.dials = 7  # type: ignore[misc]
        conn.write(b"ping")
        assert conn.readexactly(4, timeout=scaled(5)) == b"ping"
        echo_server.drop_clients()
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.read(1, timeout=scaled(5))
        conn.wait_connected(scaled(5))
        second = conn.stats
        assert (second.dials, second.dial_failures, second.connections, second.drops) == (2, 0, 2, 1)
        assert second.state == "connected" and second.state_since >= first.state_since
        assert second.last_error is disconnects.errors[0]
        assert isinstance(second.last_error, perconn.ConnectionIOError)
        assert second.last_error.__cause__ is info.value.__cause__
        assert first.connections == 1  # a snapshot, not a view
    finally:
        conn.close()
    third = conn.stats
    assert third.state == "closed" and third.state_since >= second.state_since
    assert (third.dials, third.connections, third.drops) == (2, 2, 1)  # close() is not a drop


def test_stats_while_dials_fail(logger: logging.Logger, records: Records) -> None:
    with refusing_port() as address, opened(address, logger=logger) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError, count=2)
        stats = conn.stats
        assert stats.state == "dialing" and stats.connections == 0 and stats.drops == 0
        assert stats.dial_failures >= 2 and stats.dials >= stats.dial_failures
        assert isinstance(stats.last_error, perconn.DialError)
        assert not conn.closed
