"""The asyncio Conn's lifecycle features over loopback, against real servers, on
asyncio's loop and on uvloop: the ``on_connect`` hook (a Redis AUTH among them),
giving up, ``on_disconnect``, ``reconnect()``, backoff forgiveness, ``stats``,
and the write-timeout rule."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aio_helpers import FAST, no_other_tasks, opened
from conftest import Leaks, Records
from redis_server import RedisServer, resp_command
from servers import CrashLoop, Server, blackhole, refusing_port, scaled

import perconn
import perconn.aio
from perconn._state import LAST_DIAL_MIN

from .conftest import Run

AUTH = b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"


async def wait_records(
    records: Records, level: int, error_type: type[BaseException] | None = None, count: int = 1
) -> None:
    assert await asyncio.to_thread(records.wait_for, level, error_type, count), "log records did not come"


async def timed_close(conn: perconn.aio.Conn) -> float:
    start = time.monotonic()
    await conn.close()
    return time.monotonic() - start


class HookFailed(Exception):
    """What a test's on_connect hook raises to fail a dial."""


class Counter:
    """A count that tasks wait on (``await counter.reach(n)``)."""

    def __init__(self) -> None:
        self.value = 0
        self._changed: asyncio.Event | None = None

    def add(self) -> None:
        self.value += 1
        if self._changed is not None:
            self._changed.set()

    async def reach(self, target: int, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while self.value < target:
                self._changed = asyncio.Event()
                await self._changed.wait()

        await asyncio.wait_for(wait(), scaled(timeout))


class Disconnects(Counter):
    """An ``on_disconnect`` callback (a plain callable, run on the loop) that records its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[perconn.ConnectionIOError] = []

    def __call__(self, error: perconn.ConnectionIOError) -> None:
        self.errors.append(error)
        self.add()


def gave_up_records(records: Records) -> list[logging.LogRecord]:
    return records.matching(logging.ERROR, perconn.GaveUpError)


def drop_delays(records: Records) -> list[float]:
    return [r.delay for r in records.matching(logging.WARNING, perconn.ConnectionIOError)]  # type: ignore[attr-defined]


# -- 1. a Redis AUTH hook across server restarts --------------------------------------


async def redis_auth(link: perconn.aio.Link) -> None:
    """The handshake: AUTH, and nothing but +OK will do (anything else fails the dial)."""
    await link.write(AUTH)
    reply = await link.readuntil(b"\r\n")
    if reply != b"+OK\r\n":
        raise HookFailed(f"AUTH answered {reply!r}")


async def redis_echo(conn: perconn.aio.Conn, message: bytes) -> int:
    """ECHO *message*, retried whenever the connection breaks under it; returns how
    many ConnectionIOErrors it took. Any reply but the right one fails the test."""
    for failures in range(100):  # bounded: each failure is a new connection
        try:
            await conn.write(resp_command("ECHO", message), timeout=scaled(10))
            head = await conn.readuntil(b"\r\n", timeout=scaled(10))
            assert not head.startswith(b"-NOAUTH"), f"a command ran on an unauthenticated connection: {head!r}"
            assert head == b"$%d\r\n" % len(message), head
            assert await conn.readuntil(b"\r\n", timeout=scaled(10)) == message + b"\r\n"
            return failures
        except perconn.ConnectionIOError:
            continue
    pytest.fail(f"ECHO {message!r} failed 100 times")


def test_redis_auth_hook_survives_server_restarts(run: Run, redis_server: RedisServer, logger: logging.Logger) -> None:
    assert resp_command("AUTH", redis_server.password or "") == AUTH

    async def main() -> int:
        restarts, between = 3, 30  # commands that complete between the end of one restart and the next
        done = 0
        async with opened(redis_server.address, on_connect=redis_auth, logger=logger) as conn:
            restarter: asyncio.Future[None] | None = None
            next_restart = between
            for i in range(200_000):  # bounded; the loop ends after the last restart and 200 commands
                await redis_echo(conn, b"m-%06d" % i)
                done += 1
                if restarter is None and i >= next_restart and restarts:
                    restarter = asyncio.ensure_future(asyncio.to_thread(redis_server.restart))
                elif restarter is not None and restarter.done():
                    await restarter
                    restarter, restarts = None, restarts - 1
                    next_restart = i + between
                if not restarts and restarter is None and done >= 200 and i >= next_restart:
                    break
            assert restarts == 0, "the restarts did not finish"
            assert conn.generation >= 4  # every restart cost the connection
            assert conn.stats.connections == conn.generation
        return done

    assert run(main()) >= 200


# -- 2. a hook that fails, then succeeds ------------------------------------------------


def test_hook_failing_on_its_first_connections_then_succeeding(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    failing = 3
    generations: list[int] = []

    async def hook(link: perconn.aio.Link) -> None:
        generations.append(link.generation)
        if len(generations) <= failing:
            raise HookFailed(f"handshake {len(generations)} refused")
        await link.write(b"hello\n")
        assert await link.readuntil(b"\n") == b"hello\n"  # no caller's bytes came in between

    async def main() -> None:
        async with perconn.aio.Conn(echo_server.address, on_connect=hook, logger=logger, jitter=False, **FAST) as conn:
            writer = asyncio.ensure_future(conn.write(b"caller\n"))  # waits for a connection whose hook succeeded
            await conn.wait_connected(scaled(5))
            assert await writer == 7
            assert await conn.readuntil(b"\n", timeout=scaled(5)) == b"caller\n"
            assert conn.generation == 1
            stats = conn.stats
            assert (stats.dials, stats.dial_failures, stats.connections, stats.drops) == (4, 3, 1, 0)
            assert await asyncio.to_thread(echo_server.wait_closes, 3)  # each failed hook's connection was closed

    run(main())
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
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("sink")  # never answers the handshake

    async def hook(link: perconn.aio.Link) -> None:
        await link.write(b"hello?\n")
        await link.readuntil(b"\n")  # its default timeout is what dial_timeout leaves

    async def main() -> float:
        start = time.monotonic()
        async with opened(
            server.address, on_connect=hook, dial_timeout=0.2, retry_min=5.0, retry_max=5.0, logger=logger
        ):
            await wait_records(records, logging.WARNING, perconn.DialError)
            return time.monotonic() - start

    took = run(main())
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert isinstance(error.__cause__, TimeoutError)
    assert 0.15 <= took < 0.2 + scaled(1.0)
    assert server.wait_closes(1)


# -- 3. a hook that gives up ---------------------------------------------------------------


def test_hook_raising_gave_up_error_gives_up_at_once(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    async def hook(link: perconn.aio.Link) -> None:
        raise perconn.GaveUpError("wrong password")

    async def main() -> BaseException:
        conn = perconn.aio.connect(echo_server.address, on_connect=hook, logger=logger, **FAST)
        with pytest.raises(perconn.GaveUpError) as info:
            await conn.wait_connected()
        error = info.value
        assert isinstance(error, perconn.ClosedConnectionError)
        assert isinstance(error.__cause__, perconn.DialError)
        assert isinstance(error.__cause__.__cause__, perconn.GaveUpError)
        assert str(error.__cause__.__cause__) == "wrong password"
        assert conn.closed
        stats = conn.stats
        assert (stats.state, stats.dials, stats.dial_failures, stats.connections) == ("closed", 1, 1, 0)
        for call in (conn.read(1), conn.readuntil(), conn.write(b"x"), conn.wait_connected(0), conn.reconnect()):
            with pytest.raises(perconn.GaveUpError):
                await call
        await conn.close()  # idempotent after giving up
        assert no_other_tasks()
        return error

    error = run(main())
    (gave_up,) = gave_up_records(records)
    assert isinstance(gave_up.error, perconn.GaveUpError)  # type: ignore[attr-defined]
    assert gave_up.error.__cause__ is error.__cause__  # type: ignore[attr-defined]
    assert len(records.matching(logging.WARNING, perconn.DialError)) == 1
    assert len(records.matching(logging.ERROR)) == 1
    echo_server.stop()
    leaks.assert_none()


# -- 4. bytes the hook left unread -------------------------------------------------------------


def test_bytes_the_hook_left_unread_are_the_first_callers_read(run: Run, echo_server: Server) -> None:
    seen: list[object] = []

    async def hook(link: perconn.aio.Link) -> None:
        seen.extend([link.address, link.generation, link.get_extra_info("peername")])
        seen.append(link.get_extra_info("socket") is not None)
        seen.append(await link.readuntil(b"\n", timeout=scaled(5)))  # the banner's first line only

    async def main() -> None:
        async with opened(echo_server.address, on_connect=hook) as conn:
            reader = asyncio.ensure_future(conn.read(100, timeout=scaled(5)))  # waits while the hook runs
            assert await asyncio.to_thread(echo_server.wait_accepts, 1)
            await asyncio.to_thread(echo_server.send, b"HELLO\nrest")  # one segment: "rest" lands in the hook's buffer
            assert await reader == b"rest"
            await conn.write(b"!")
            assert await conn.readexactly(1, timeout=scaled(5)) == b"!"
            assert conn.generation == 1

    run(main())
    assert seen == [echo_server.address, 1, echo_server.sockaddr, True, b"HELLO\n"]


# -- 5. a server that answers once, says BYE and closes ------------------------------------------


def answered(server: Server) -> int:
    """How many connections a reply_bye server got a whole request on (it closes each)."""
    return sum(b"\n" in got for got in list(server.received))


@pytest.mark.parametrize("loop_between", ["back_to_back", "runs", "blocked"])
def test_each_request_gets_its_own_reply_never_bye(
    run: Run, loop_between: str, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    """A server that answers one request per connection, then says BYE and closes:
    once it has closed, the next request goes to a fresh connection and is answered
    there; the old connection's unread BYE is never taken for a reply. Between
    requests follow at once, or once the server's close was seen to happen, the
    loop meanwhile either running (it sees the close) or blocked (the FIN is
    queued, the loop has not looked: as after a CPU-bound step of the program)."""
    server = make_server("reply_bye")

    async def main() -> list[bytes | None]:
        replies: list[bytes | None] = []
        async with opened(server.address, logger=logger) as conn:
            for n in range(20):
                try:
                    await conn.write(b"%d\n" % n, timeout=scaled(5))
                    reply = await conn.readuntil(b"\n", timeout=scaled(5))
                except perconn.ConnectionIOError:
                    replies.append(None)
                    continue
                replies.append(reply)
                if loop_between == "runs":
                    assert await asyncio.to_thread(server.wait_closes, answered(server))
                elif loop_between == "blocked":
                    assert server.wait_closes(answered(server))  # blocks the loop, deliberately
        return replies

    replies = run(main())
    wrong = [(n, reply) for n, reply in enumerate(replies) if reply not in (None, b"REP %d\n" % n)]
    assert not wrong, f"requests answered with another request's reply or BYE: {wrong}"
    assert sum(reply is not None for reply in replies) >= 10, replies
    discards = [r.getMessage() for r in records.matching(logging.WARNING) if "discarded" in r.getMessage()]
    assert 1 <= len(discards) < 20
    assert all("discarded 4 unread bytes" in d for d in discards), discards  # "BYE\n", never a reply


# -- 6. giving up --------------------------------------------------------------------------------


def test_gives_up_after_max_attempts(run: Run, logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    async def main() -> BaseException:
        with refusing_port() as address:
            conn = perconn.aio.connect(address, max_attempts=3, logger=logger, retry_min=0.01, retry_max=0.02)
            with pytest.raises(perconn.GaveUpError) as info:
                await conn.read(10)
            error = info.value
            assert "max_attempts=3" in str(error)
            assert isinstance(error.__cause__, perconn.DialError)
            assert isinstance(error.__cause__.__cause__, ConnectionRefusedError)
            assert conn.closed and not conn.connected
            stats = conn.stats
            assert (stats.state, stats.dials, stats.dial_failures, stats.connections) == ("closed", 3, 3, 0)
            assert stats.last_error is error.__cause__
            with pytest.raises(perconn.GaveUpError):
                await conn.write(b"late")
            await conn.close()
            assert no_other_tasks()
            return error

    error = run(main())
    dial_failures = records.matching(logging.WARNING, perconn.DialError)
    assert [r.attempt for r in dial_failures] == [1, 2, 3]  # type: ignore[attr-defined]
    assert dial_failures[-1].delay is None and "giving up" in dial_failures[-1].getMessage()  # type: ignore[attr-defined]
    (gave_up,) = gave_up_records(records)
    assert str(gave_up.error) == str(error)  # type: ignore[attr-defined]
    assert len(records.matching(logging.ERROR)) == 1
    leaks.assert_none()


def test_max_attempts_1_fails_fast(run: Run, logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    async def main() -> None:
        with refusing_port() as address:
            start = time.monotonic()
            conn = perconn.aio.connect(address, max_attempts=1, logger=logger, retry_min=30.0, retry_max=60.0)
            with pytest.raises(perconn.GaveUpError) as info:
                await conn.wait_connected(timeout=scaled(5))
            assert time.monotonic() - start < scaled(0.5)
            assert isinstance(info.value.__cause__, perconn.DialError)
            assert conn.stats.state == "closed" and conn.stats.dials == 1
            assert no_other_tasks()

    run(main())
    assert len(gave_up_records(records)) == 1
    leaks.assert_none()


@pytest.mark.parametrize("peer", ["blackhole", "refusing"])
def test_gives_up_after_give_up_after_seconds(
    run: Run, peer: str, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    limit = 0.3

    async def main() -> None:
        with blackhole() if peer == "blackhole" else refusing_port() as address:
            start = time.monotonic()
            conn = perconn.aio.connect(
                address, give_up_after=limit, dial_timeout=0.1, logger=logger, retry_min=0.05, retry_max=0.1
            )
            waiter = asyncio.ensure_future(conn.wait_connected())
            with pytest.raises(perconn.GaveUpError) as info:
                await asyncio.wait_for(waiter, scaled(5))
            took = time.monotonic() - start
            error = info.value
            assert "give_up_after=0.3" in str(error)
            assert isinstance(error.__cause__, perconn.DialError)
            cause = TimeoutError if peer == "blackhole" else ConnectionRefusedError
            assert isinstance(error.__cause__.__cause__, cause)
            assert limit - LAST_DIAL_MIN <= took < limit + scaled(0.5)  # no last dial with next to no time
            assert conn.closed and conn.stats.state == "closed"
            await conn.close()
            assert no_other_tasks()

    run(main())
    assert len(gave_up_records(records)) == 1
    leaks.assert_none()


@pytest.mark.parametrize("peer", ["blackhole", "refusing"])
def test_give_up_after_never_ends_on_a_dial_given_no_time(
    run: Run, peer: str, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    """The backoff sleep before the give_up_after deadline is cut to end there; then
    the Conn gives up, without one more dial given no time (which could only fail,
    with a made-up "connect timed out after 0 s" hiding the real failure)."""

    async def main() -> BaseException:
        with blackhole() if peer == "blackhole" else refusing_port() as address:
            conn = perconn.aio.connect(
                address, give_up_after=0.25, dial_timeout=0.1, retry_min=0.5, retry_max=0.5, jitter=False, logger=logger
            )
            with pytest.raises(perconn.GaveUpError) as info:
                await conn.wait_connected(timeout=scaled(5))
            await conn.close()
            return info.value

    error = run(main())
    causes = [r.error.__cause__ for r in records.matching(logging.WARNING, perconn.DialError)]  # type: ignore[attr-defined]
    if peer == "blackhole":
        assert [str(c) for c in causes] == ["connect timed out after 0.1 s"] * len(causes), causes
    else:
        assert all(isinstance(c, ConnectionRefusedError) for c in causes), causes
    assert error.__cause__ is not None and error.__cause__.__cause__ is causes[-1]
    leaks.assert_none()


# -- 7. on_disconnect ----------------------------------------------------------------------------------


def test_on_disconnect_once_per_drop_never_for_close(run: Run, echo_server: Server, logger: logging.Logger) -> None:
    disconnects = Disconnects()

    async def main() -> None:
        async with opened(echo_server.address, on_disconnect=disconnects, logger=logger) as conn:
            for drop in (1, 2):
                await conn.write(b"x")
                assert await conn.readexactly(1, timeout=scaled(5)) == b"x"
                await asyncio.to_thread(echo_server.drop_clients)
                await disconnects.reach(drop)  # the transport reports it; nobody reads
                await conn.wait_connected(scaled(5))
                assert conn.generation == drop + 1

    run(main())
    assert len(disconnects.errors) == 2  # close() is not a disconnect
    for error in disconnects.errors:
        assert isinstance(error, perconn.ConnectionIOError) and isinstance(error.__cause__, EOFError)
        assert error.address == echo_server.address


def test_on_disconnect_that_raises_is_logged_and_changes_nothing(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    def on_disconnect(error: perconn.ConnectionIOError) -> None:
        raise RuntimeError("callback bug")

    async def main() -> None:
        async with opened(echo_server.address, on_disconnect=on_disconnect, logger=logger) as conn:
            await conn.write(b"a")
            assert await conn.readexactly(1, timeout=scaled(5)) == b"a"
            reader = asyncio.ensure_future(conn.read(10))
            await asyncio.sleep(0)  # one loop step: the read blocks on the connection
            await asyncio.to_thread(echo_server.drop_clients)
            with pytest.raises(perconn.ConnectionIOError):  # the caller gets its own error, not the callback's
                await asyncio.wait_for(reader, scaled(5))
            await conn.write(b"b")  # reconnecting went on
            assert await conn.readexactly(1, timeout=scaled(5)) == b"b"
            assert conn.generation == 2
            await conn.reconnect()  # raises nothing either
            await conn.wait_connected(scaled(5))
            assert conn.generation == 3

    run(main())
    failed = [r for r in records.matching(logging.ERROR) if "on_disconnect" in r.getMessage()]
    assert len(failed) == 2
    for record in failed:
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert "on_disconnect raised RuntimeError: callback bug" in record.getMessage()
    assert not gave_up_records(records)


# -- 8. reconnect() ------------------------------------------------------------------------------------


def test_reconnect_under_concurrent_round_trips(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    workers, reconnects = 3, 5
    disconnects = Disconnects()

    async def main() -> None:
        conn = perconn.aio.connect(echo_server.address, on_disconnect=disconnects, logger=logger, **FAST)
        turn = asyncio.Lock()  # one round trip at a time shares the echo stream; reconnect() races them all
        ok = Counter()
        wrong: list[tuple[bytes, bytes]] = []

        async def round_trips(tag: int) -> None:
            for k in range(1_000_000):  # bounded; close() ends it
                payload = b"%d-%d\n" % (tag, k)
                try:
                    async with turn:
                        await conn.write(payload, timeout=scaled(5))
                        got = await conn.readuntil(b"\n", timeout=scaled(5))
                except perconn.ClosedConnectionError:
                    return
                except perconn.ConnectionIOError:
                    continue
                if got != payload:
                    wrong.append((payload, got))
                ok.add()

        tasks = [asyncio.ensure_future(round_trips(tag)) for tag in range(workers)]
        for n in range(reconnects):
            await ok.reach(ok.value + 3 * workers)
            generation = conn.generation
            await conn.reconnect()
            await conn.wait_connected(scaled(5))
            assert conn.generation == generation + 1
            await disconnects.reach(n + 1)
        await ok.reach(ok.value + 3 * workers)
        assert await timed_close(conn) < 0.1
        await asyncio.wait_for(asyncio.gather(*tasks), scaled(5))
        assert not wrong, wrong
        assert no_other_tasks()

    run(main())
    assert len(disconnects.errors) == reconnects
    for error in disconnects.errors:
        assert error.op == "reconnect" and isinstance(error.__cause__, ConnectionAbortedError)
    assert len(records.matching(logging.WARNING, perconn.ConnectionIOError)) == reconnects
    echo_server.stop()
    leaks.assert_none()


def test_reconnect_while_dialing_dials_at_once(
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("echo")
    server.stop()

    async def main() -> None:
        async with opened(server.address, logger=logger, retry_min=5.0, retry_max=10.0, jitter=False) as conn:
            await wait_records(records, logging.WARNING, perconn.DialError)
            assert records.matching(logging.WARNING, perconn.DialError)[0].delay == 5.0  # type: ignore[attr-defined]
            await asyncio.to_thread(server.start)
            start = time.monotonic()
            await conn.reconnect()
            await conn.wait_connected(timeout=1.0)
            assert time.monotonic() - start < 1.0
            assert conn.generation == 1
            await conn.write(b"up")
            assert await conn.readexactly(2, timeout=scaled(5)) == b"up"
            assert len(asyncio.all_tasks()) == 1  # reconnect() left no second dial task behind
        with pytest.raises(perconn.ClosedConnectionError):
            await conn.reconnect()

    run(main())


# -- 9. a crash-looping server, and one that accepts and closes -------------------------------------


def test_crash_looping_server_is_followed_and_rejoined_once_stable(
    run: Run, echo_server: Server, logger: logging.Logger
) -> None:
    retry_min, count, up = 0.5, 15, 0.6

    async def main() -> None:
        conn = perconn.aio.connect(echo_server.address, retry_min=retry_min, retry_max=30.0, logger=logger)
        times: list[float] = []
        replied = Counter()
        wrong: list[tuple[bytes, bytes]] = []

        async def traffic() -> None:
            for k in range(10_000_000):  # bounded; close() ends it
                payload = b"%d\n" % k
                try:
                    await conn.write(payload)
                    got = await conn.readuntil(b"\n")
                except perconn.ClosedConnectionError:
                    return
                except perconn.ConnectionIOError:
                    continue
                if got != payload:
                    wrong.append((payload, got))
                times.append(time.monotonic())
                replied.add()
                await asyncio.sleep(0.002)  # steady traffic, not a spin

        worker = asyncio.ensure_future(traffic())
        try:
            with CrashLoop(echo_server, count=count, up=up) as loop:
                assert await asyncio.to_thread(loop.wait, count * up + 10)
            stable = loop.starts[-1]
            deadline = stable + scaled(5)
            for _ in range(1_000_000):  # bounded by the deadline
                if times and times[-1] > stable:
                    break
                await replied.reach(replied.value + 1, max(0.0, deadline - time.monotonic()))
            first = next(t for t in times if t > stable)
            assert first - stable <= scaled(2 * retry_min + 1.0), f"rejoined {first - stable:.2f} s after it was stable"
            stats = conn.stats
            assert stats.connections >= count / 2, stats
            assert stats.drops >= count / 2, stats
        finally:
            await conn.close()
            await asyncio.wait_for(worker, scaled(5))
        assert not wrong, wrong

    run(main())


def test_accept_then_close_server_is_redialed_on_the_backoff_schedule(
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("accept_close")

    async def main() -> None:
        async with opened(server.address, retry_min=0.05, retry_max=0.4, jitter=False, logger=logger) as conn:
            deadline = time.monotonic() + 1.5
            for _ in range(10_000):  # bounded: a spinning client would reach it
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(perconn.ConnectionIOError, TimeoutError):
                    await conn.read(10, timeout=remaining)

    run(main())
    # Young deaths continue the schedule: dials at 0, .05, .15, .35, .75, 1.15 (then 1.55...).
    assert 2 <= server.accepts < 20, server.accepts
    assert drop_delays(records)[:4] == [0.05, 0.1, 0.2, 0.4]


@pytest.mark.parametrize("proof", ["bytes", "hook", "age", "none"])
def test_a_connection_that_proved_itself_resets_the_backoff(
    run: Run, proof: str, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    async def hook(link: perconn.aio.Link) -> None:
        """A handshake with nothing to say: succeeding is proof enough."""

    options: dict[str, Any] = {"retry_min": 0.1 if proof == "age" else 5.0, "retry_max": 10.0, "jitter": False}
    if proof == "hook":
        options["on_connect"] = hook

    async def main() -> None:
        async with opened(echo_server.address, logger=logger, **options) as conn:
            await conn.wait_connected(scaled(5))
            if proof == "bytes":
                await conn.write(b"x")
                assert await conn.readexactly(1, timeout=scaled(5)) == b"x"
            elif proof == "age":
                await asyncio.sleep(0.15)  # the rule is defined by time: up for retry_min
            await asyncio.to_thread(echo_server.drop_clients)
            await wait_records(records, logging.WARNING, perconn.ConnectionIOError)
            # A proven connection is redialed at once (no jitter); an unproven one waits retry_min.
            assert drop_delays(records) == [5.0 if proof == "none" else 0.0]
            if proof != "none":
                await conn.wait_connected(scaled(5))
                assert conn.generation == 2

    run(main())


# -- 11. the write timeout rule ------------------------------------------------------------------------


def test_write_timeout_with_nothing_written_keeps_the_connection(
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("no_read")
    disconnects = Disconnects()

    async def main() -> None:
        async with opened(server.address, logger=logger, on_disconnect=disconnects) as conn:
            await conn.wait_connected(scaled(5))
            assert await conn.write(b"x" * (32 << 20), timeout=0.1) == 32 << 20  # handed over whole, at once
            for _ in range(3):
                with pytest.raises(TimeoutError, match=r"write timed out after 0\.05 s"):
                    await conn.write(b"y", timeout=0.05)  # waits for room: nothing written
            assert conn.connected and conn.generation == 1 and conn.stats.drops == 0

    run(main())
    assert not records.matching(logging.WARNING, perconn.ConnectionIOError)
    assert not disconnects.errors


# -- 12. close() during a hook, and stats ---------------------------------------------------------------


def test_close_while_the_hook_is_blocked_reading(
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records, leaks: Leaks
) -> None:
    server = make_server("sink")  # never answers

    async def main() -> None:
        in_hook = asyncio.Event()

        async def hook(link: perconn.aio.Link) -> None:
            await link.write(b"anyone there?\n")
            in_hook.set()
            await link.readuntil(b"\n")  # no timeout, no dial_timeout: only close() ends it

        conn = perconn.aio.connect(server.address, on_connect=hook, logger=logger, **FAST)
        waiter = asyncio.ensure_future(conn.wait_connected())
        await asyncio.wait_for(in_hook.wait(), scaled(5))
        assert await asyncio.to_thread(server.wait_received, 0, 14) == b"anyone there?\n"
        assert await timed_close(conn) < 0.1
        with pytest.raises(perconn.ClosedConnectionError) as info:
            await waiter
        assert not isinstance(info.value, perconn.GaveUpError)
        assert conn.closed and conn.stats.state == "closed" and conn.stats.connections == 0
        assert no_other_tasks()

    run(main())
    server.stop()
    leaks.assert_none()
    assert not records.matching(logging.WARNING)  # the hook's end is close(), not a failed dial
    assert not records.matching(logging.ERROR)


def test_stats_snapshots_follow_a_session(run: Run, echo_server: Server, logger: logging.Logger) -> None:
    disconnects = Disconnects()

    async def main() -> None:
        before = time.monotonic()  # the clock of Stats.state_since, whichever loop runs
        conn = perconn.aio.Conn(echo_server.address, logger=logger, on_disconnect=disconnects, **FAST)
        try:
            await conn.wait_connected(scaled(5))
            first = conn.stats
            assert (first.dials, first.dial_failures, first.connections, first.drops) == (1, 0, 1, 0)
            assert first.last_error is None and first.state == "connected"
            assert before <= first.state_since <= time.monotonic()
            with pytest.raises(dataclasses.FrozenInstanceError):
                first.dials = 7  # type: ignore[misc]
            await conn.write(b"ping")
            assert await conn.readexactly(4, timeout=scaled(5)) == b"ping"
            await asyncio.to_thread(echo_server.drop_clients)
            await disconnects.reach(1)
            await conn.wait_connected(scaled(5))
            second = conn.stats
            assert (second.dials, second.dial_failures, second.connections, second.drops) == (2, 0, 2, 1)
            assert second.state == "connected" and second.state_since >= first.state_since
            assert second.last_error is disconnects.errors[0]
            assert isinstance(second.last_error, perconn.ConnectionIOError)
            assert isinstance(second.last_error.__cause__, EOFError)
            assert first.connections == 1  # a snapshot, not a view
        finally:
            await conn.close()
        third = conn.stats
        assert third.state == "closed" and third.state_since >= second.state_since
        assert (third.dials, third.connections, third.drops) == (2, 2, 1)  # close() is not a drop

    run(main())


def test_stats_while_dials_fail(run: Run, logger: logging.Logger, records: Records) -> None:
    async def main() -> None:
        with refusing_port() as address:
            async with opened(address, logger=logger) as conn:
                await wait_records(records, logging.WARNING, perconn.DialError, 2)
                stats = conn.stats
                assert stats.state == "dialing" and stats.connections == 0 and stats.drops == 0
                assert stats.dial_failures >= 2 and stats.dials >= stats.dial_failures
                assert isinstance(stats.last_error, perconn.DialError)
                assert not conn.closed

    run(main())
