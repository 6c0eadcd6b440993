"""The asyncio Conn over loopback, against the same real servers as the sync tests,
scenario by scenario, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import random
import resource
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aio_helpers import FAST, no_other_tasks, opened, until
from conftest import Leaks, Records
from isolated import HOSTS_HELPERS, run_isolated
from servers import Server, blackhole, refusing_port, scaled

import perconn
import perconn.aio

from .conftest import Run, run_on

# -- connecting -----------------------------------------------------------------


def test_connect_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        perconn.aio.connect("127.0.0.1:7")


def test_connect_returns_at_once_and_validates_first(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="address='nope'"):
            perconn.aio.connect("nope")
        with pytest.raises(ValueError, match="retry_max must be >= retry_min"):
            perconn.aio.connect("127.0.0.1:7", retry_min=2, retry_max=1)
        assert no_other_tasks()  # nothing started for a bad call
        with refusing_port() as address:
            conn = perconn.aio.connect(address, retry_min=30.0, retry_max=60.0)
            assert not conn.connected and conn.generation == 0
            await conn.close()
        assert no_other_tasks()

    run(main())


def test_a_connect_refused_at_once_arms_no_timer_for_the_dial(
    run: Run, echo_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A literal address refused at once (a dial storm is mostly these) fails
    before the dial's budget is given a timer; a dial that has to wait gets one."""
    bounded: list[float | None] = []
    real = perconn.aio.link.within

    def counting(aw: Awaitable[Any], seconds: float | None, timeout: Callable[[], BaseException]) -> Awaitable[Any]:
        bounded.append(seconds)
        return real(aw, seconds, timeout)

    monkeypatch.setattr(perconn.aio.conn, "within", counting)

    async def main() -> list[float | None]:
        with refusing_port() as address:
            async with opened(address, dial_timeout=7.5) as conn:
                await until(lambda: conn.stats.dial_failures >= 5)
        refused = list(bounded)
        async with opened(echo_server.address, dial_timeout=7.5) as conn:
            await until(lambda: conn.connected)
        return refused

    assert run(main()) == []
    assert bounded == [7.5]  # the connect that succeeded: bounded by dial_timeout


def test_echo_on_every_address_family(
    run: Run, any_echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    async def main() -> None:
        async with opened(any_echo_server.address, logger=logger) as conn:
            assert await conn.write(b"hello, world\n") == 13
            assert await conn.readuntil(b"\n", timeout=scaled(5)) == b"hello, world\n"
            assert conn.connected and conn.generation == 1

    run(main())
    (info,) = records.matching(logging.INFO)
    assert any_echo_server.address in info.getMessage() and "generation 1" in info.getMessage()


def test_works_under_asyncio_run(echo_server: Server) -> None:
    async def main() -> bytes:
        async with perconn.aio.connect(echo_server.address) as conn:
            await conn.write(b"plain asyncio.run\n")
            return await conn.readuntil(timeout=scaled(5))

    assert asyncio.run(main()) == b"plain asyncio.run\n"


def test_async_with_closes(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with perconn.aio.connect(echo_server.address) as conn:
            await conn.wait_connected(scaled(5))
        with pytest.raises(perconn.ClosedConnectionError):
            await conn.write(b"x")

    run(main())


def test_hostname_is_resolved_through_the_loop(run: Run, echo_server: Server) -> None:
    port = echo_server.address.rsplit(":", 1)[1]

    async def main() -> None:
        async with opened(f"localhost:{port}", dial_timeout=scaled(2)) as conn:
            await conn.write(b"ping")
            assert await conn.readexactly(4, timeout=scaled(5)) == b"ping"

    run(main())


def test_idle_connected_conn_holds_no_task(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.wait_connected(scaled(5))
            assert no_other_tasks()  # the dial task ended with the dial

    run(main())


# -- waiting for a connection -----------------------------------------------------


def test_operations_wait_for_the_first_connection(
    run: Run, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    server = make_server("echo")
    server.stop()

    async def main() -> None:
        async with opened(server.address, logger=logger) as conn:
            await asyncio.to_thread(records.wait_for, logging.WARNING, perconn.DialError)
            with pytest.raises(TimeoutError):
                await conn.read(10, timeout=0.05)
            with pytest.raises(TimeoutError):
                await conn.wait_connected(timeout=0)
            writer = asyncio.ensure_future(conn.write(b"queued"))
            await asyncio.sleep(0)
            assert not writer.done()
            server.start()
            assert await asyncio.wait_for(writer, scaled(5)) == 6
            assert await conn.readexactly(6, timeout=scaled(5)) == b"queued"

    run(main())
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert error.address == server.address and isinstance(error.__cause__, ConnectionRefusedError)


def test_failed_dials_follow_the_backoff_schedule(run: Run, logger: logging.Logger, records: Records) -> None:
    async def main() -> None:
        with refusing_port() as address:
            async with opened(address, logger=logger, retry_min=0.01, retry_max=0.04, jitter=False):
                await asyncio.to_thread(records.wait_for, logging.WARNING, perconn.DialError, 5)

    run(main())
    dial_records = records.matching(logging.WARNING, perconn.DialError)[:5]
    assert [r.delay for r in dial_records] == [0.01, 0.02, 0.04, 0.04, 0.04]  # type: ignore[attr-defined]
    assert [r.attempt for r in dial_records] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]


def test_dial_timeout_against_a_silent_host(run: Run, logger: logging.Logger, records: Records) -> None:
    async def main() -> None:
        with blackhole() as address:
            async with opened(address, logger=logger, dial_timeout=0.05, retry_min=5.0, retry_max=5.0):
                await asyncio.to_thread(records.wait_for, logging.WARNING, perconn.DialError)

    run(main())
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    assert isinstance(error.__cause__, TimeoutError)


# -- failures on an established connection ----------------------------------------


def test_server_restart_fails_the_pending_read_then_reconnects(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    async def main() -> None:
        async with opened(echo_server.address, logger=logger) as conn:
            await conn.write(b"one")
            assert await conn.readexactly(3, timeout=scaled(5)) == b"one"
            reader = asyncio.ensure_future(conn.read(100))
            await asyncio.sleep(0)
            await asyncio.to_thread(echo_server.restart)
            with pytest.raises(perconn.ConnectionIOError) as info:
                await asyncio.wait_for(reader, scaled(5))
            assert info.value.op == "read" and isinstance(info.value.__cause__, EOFError)
            await conn.write(b"two")
            assert await conn.readexactly(3, timeout=scaled(5)) == b"two"
            assert conn.generation == 2

    run(main())
    assert len(records.matching(logging.WARNING, perconn.ConnectionIOError)) == 1
    assert len(records.matching(logging.INFO)) == 2


def test_reset_mid_stream_is_an_io_error(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.write(b"x")
            await conn.readexactly(1, timeout=scaled(5))
            await conn.write(b"y")  # owed an answer when the reset comes
            await asyncio.to_thread(echo_server.drop_clients, True)
            await conn.readexactly(1, timeout=scaled(5))  # "y" came back before the reset
            with pytest.raises(perconn.ConnectionIOError) as info:
                await conn.read(1, timeout=scaled(5))
            assert isinstance(info.value.__cause__, (ConnectionResetError, EOFError))
            await conn.wait_connected(scaled(5))
            assert conn.generation == 2

    run(main())


def test_readexactly_hands_back_partial_bytes_on_failure(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.wait_connected(scaled(5))
            assert echo_server.wait_accepts(1)
            reader = asyncio.ensure_future(conn.readexactly(5))
            await asyncio.to_thread(echo_server.send, b"abc")
            await asyncio.to_thread(echo_server.drop_clients)
            with pytest.raises(perconn.ConnectionIOError) as info:
                await asyncio.wait_for(reader, scaled(5))
            assert info.value.partial == b"abc"

    run(main())


def test_readuntil_separator_limit_and_eof(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.write(b"a line\r\nnext")
            assert await conn.readuntil(b"\r\n", timeout=scaled(5)) == b"a line\r\n"
            with pytest.raises(asyncio.LimitOverrunError):
                await conn.readuntil(b"\n", limit=4, timeout=scaled(5))  # "next" and no separator
            assert await conn.readexactly(4) == b"next"  # nothing was lost
            await conn.write(b"tail")
            reader = asyncio.ensure_future(conn.readuntil(b"\n"))
            await until(lambda: conn._cursor.reading is not None and len(conn._cursor.reading.buffer) == 4)
            await asyncio.to_thread(echo_server.drop_clients)
            with pytest.raises(perconn.ConnectionIOError) as info:
                await asyncio.wait_for(reader, scaled(5))
            assert info.value.partial == b"tail"
            with pytest.raises(ValueError, match="separator"):
                await conn.readuntil(b"")

    run(main())


def test_accept_then_close_server_does_not_make_it_spin(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("accept_close")

    async def main() -> None:
        async with opened(server.address, retry_min=0.05, retry_max=0.4, jitter=False) as conn:
            deadline = time.monotonic() + scaled(1.0)
            for _ in range(1000):  # bounded: a spinning client would reach it
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(perconn.ConnectionIOError, TimeoutError):
                    await conn.read(10, timeout=remaining)

    run(main())
    # Young deaths continue the schedule: dials at 0, .05, .15, .35, .75 (then 1.15...).
    assert 2 <= server.accepts <= 8, server.accepts


def test_a_write_is_handed_over_whole_and_the_next_waits_for_room(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("no_read")

    async def main() -> None:
        async with opened(server.address) as conn:
            await conn.wait_connected(scaled(5))
            assert await conn.write(b"x" * (32 << 20), timeout=0.1) == 32 << 20  # handed to the transport at once
            assert conn._link is not None and conn._link.paused  # which is now above its high-water mark
            with pytest.raises(TimeoutError, match=r"write timed out after 0\.05 s"):
                await conn.write(b"y", timeout=0.05)  # waits for room: nothing written
            assert conn.connected and conn.generation == 1

    run(main())


def test_write_timeout_with_nothing_written_keeps_the_connection(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("no_read")

    async def main() -> None:
        async with opened(server.address) as conn:
            await conn.wait_connected(scaled(5))
            await conn.write(b"x" * (32 << 20))  # backs the transport up
            stuck = asyncio.ensure_future(conn.write(b"z"))
            await until(lambda: conn._link is not None and bool(conn._link._drain_waiters))
            with pytest.raises(TimeoutError):
                await conn.write(b"y", timeout=0.05)  # waits for room: nothing written
            assert conn.connected and conn.generation == 1
            assert not stuck.done()
            await conn.close()
            with pytest.raises(perconn.ClosedConnectionError):
                await stuck

    run(main())


# -- timeouts, buffering, cancellation -----------------------------------------------


def test_read_timeout_leaves_the_connection_up(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.wait_connected(scaled(5))
            with pytest.raises(TimeoutError):
                await conn.read(10, timeout=0.02)
            await conn.write(b"still")
            assert await conn.readexactly(5, timeout=scaled(5)) == b"still"
            assert conn.generation == 1

    run(main())


def test_readexactly_timeout_keeps_received_bytes(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.write(b"abc")
            assert await conn.read(1, timeout=scaled(5)) == b"a"
            with pytest.raises(TimeoutError):
                await conn.readexactly(4, timeout=0.05)
            await conn.write(b"de")
            assert await conn.read(1, timeout=scaled(5)) == b"b"
            assert await conn.readexactly(3, timeout=scaled(5)) == b"cde"

    run(main())


def test_bytes_kept_after_a_timeout_survive_the_connection_dropping(run: Run, echo_server: Server) -> None:
    """As in the sync Conn: a reader gets a dropped connection's unread bytes first, then its end."""

    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.write(b"abc")
            with pytest.raises(TimeoutError):
                await conn.readexactly(5, timeout=0.1)  # "abc" arrives and is kept
            await asyncio.to_thread(echo_server.drop_clients)
            await until(lambda: conn.generation == 2)
            assert await conn.read(2, timeout=scaled(5)) == b"ab"
            with pytest.raises(perconn.ConnectionIOError) as info:
                await conn.readexactly(2, timeout=scaled(5))
            assert info.value.partial == b"c"
            await conn.write(b"x")
            assert await conn.read(10, timeout=scaled(5)) == b"x"

    run(main())


def test_reads_follow_writes_past_kept_bytes(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    """A write on a newer connection discards the older one's unread bytes (logged with their count)."""

    async def main() -> None:
        async with opened(echo_server.address, logger=logger) as conn:
            await conn.write(b"abc")
            with pytest.raises(TimeoutError):
                await conn.readexactly(5, timeout=0.1)  # "abc" arrives and is kept
            await asyncio.to_thread(echo_server.drop_clients)
            await until(lambda: conn.generation == 2)
            await conn.write(b"x")
            assert await conn.read(10, timeout=scaled(5)) == b"x"  # the reply to the write, never "abc"

    run(main())
    (discard,) = [r for r in records.matching(logging.WARNING) if "discarded" in r.getMessage()]
    assert "discarded 3 unread bytes of connection 1" in discard.getMessage()


def test_read_never_returns_more_than_asked(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        async with opened(echo_server.address) as conn:
            await conn.write(b"0123456789")
            got = b""
            for _ in range(10):
                chunk = await conn.read(3, timeout=scaled(5))
                assert 1 <= len(chunk) <= 3
                got += chunk
                if len(got) == 10:
                    break
            assert got == b"0123456789"

    run(main())


@pytest.mark.parametrize("op", ["read", "readexactly", "readuntil", "write", "wait_connected"])
def test_cancelling_a_call_cancels_only_that_call(run: Run, make_server: Callable[..., Server], op: str) -> None:
    echo = make_server("echo")
    no_read = make_server("no_read")

    async def main() -> None:
        async with opened(echo.address) as conn, opened(no_read.address) as backed_up:
            await conn.wait_connected(scaled(5))
            await backed_up.wait_connected(scaled(5))
            await backed_up.write(b"x" * (32 << 20))  # the transport is above its high-water mark
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "read": lambda: conn.read(100),
                "readexactly": lambda: conn.readexactly(10),
                "readuntil": lambda: conn.readuntil(b"\n"),
                "write": lambda: backed_up.write(b"y"),
                "wait_connected": lambda: conn.wait_connected(),
            }
            if op == "wait_connected":
                await asyncio.to_thread(echo.stop)  # nothing to connect to
                await until(lambda: not conn.connected)
            if op in ("readexactly", "readuntil"):
                await conn.write(b"01234")  # half of what the call waits for
                await until(lambda: conn._cursor.reading is not None and len(conn._cursor.reading.buffer) == 5)
            call = asyncio.ensure_future(calls[op]())
            await asyncio.sleep(0)  # one loop step: the call runs up to where it blocks
            if op == "write":
                assert backed_up._link is not None and backed_up._link._drain_waiters
            elif op == "wait_connected":
                assert conn._link is None and conn._changed._event is not None  # it waits for a connection
            else:
                assert conn._cursor.reading is not None and conn._cursor.reading._data_waiter is not None
            assert not call.done()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            if op == "wait_connected":
                await asyncio.to_thread(echo.start)
                await conn.wait_connected(scaled(5))
                assert conn.generation == 2
            elif op == "write":
                assert backed_up.connected and backed_up.generation == 1
            else:
                await conn.write(b"56789\n")
                expected = b"01234" if op != "read" else b""
                assert await conn.readexactly(len(expected) + 6, timeout=scaled(5)) == expected + b"56789\n"
                assert conn.generation == 1

    run(main())


def test_bad_call_arguments_lose_nothing(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("sink")

    async def main() -> None:
        async with opened(server.address) as conn:
            with pytest.raises(TypeError, match="data must be bytes-like, got str"):
                await conn.write("text")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="n must be >= 0, got -1"):
                await conn.read(-1)
            assert await conn.read(0) == b"" and await conn.readexactly(0) == b""
            for call in (
                lambda: conn.write(b"x", timeout=-1),
                lambda: conn.read(1, timeout=-1),
                lambda: conn.readexactly(1, timeout=-1),
                lambda: conn.readuntil(timeout=-1),
                lambda: conn.wait_connected(timeout=-1),
            ):
                with pytest.raises(ValueError, match="timeout must be a finite number >= 0 or None, got -1"):
                    await call()
            with pytest.raises(TypeError, match="timeout must be a number of seconds or None, got str"):
                await conn.read(1, timeout="1")  # type: ignore[arg-type]
            assert await conn.write(bytearray(b"ok")) == 2

    run(main())
    assert server.wait_received(0, 2) == b"ok"


def test_unread_bytes_pause_the_transport_and_none_are_lost(run: Run) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, far over the read buffer's bound

    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(payload)
                peer.recv(1)  # wait for the client to close

        async with opened(f"127.0.0.1:{port}") as conn:
            sender = asyncio.ensure_future(asyncio.to_thread(serve))
            await until(lambda: conn._cursor.reading is not None and conn._cursor.reading._read_paused)
            assert len(conn._cursor.reading.buffer) <= 2 * perconn.aio.DEFAULT_LIMIT + 2**18  # type: ignore[union-attr]
            assert await conn.readexactly(len(payload), timeout=scaled(10)) == payload
        await asyncio.wait_for(sender, scaled(5))
        listener.close()

    run(main())


# -- the transport notices a dead idle connection ---------------------------------------


def test_idle_drop_is_noticed_at_once_and_the_next_call_uses_a_fresh_connection(
    run: Run, echo_server: Server, logger: logging.Logger, records: Records
) -> None:
    async def main() -> None:
        async with opened(echo_server.address, logger=logger) as conn:
            await conn.write(b"req")
            assert await conn.readexactly(3, timeout=scaled(5)) == b"req"
            await asyncio.to_thread(echo_server.drop_clients)
            # Nobody reads or writes: the transport alone reports the drop and redials.
            await asyncio.to_thread(records.wait_for, logging.INFO, None, 2)
            assert conn.generation == 2
            await conn.write(b"again")  # neither fails nor loses its bytes
            assert await conn.readexactly(5, timeout=scaled(5)) == b"again"

    run(main())
    assert len(records.matching(logging.WARNING, perconn.ConnectionIOError)) == 1


def test_owed_reply_is_reported_even_if_the_reader_comes_late(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("close_after_first")

    async def main() -> None:
        async with opened(server.address) as conn:
            await conn.write(b"request")
            assert await asyncio.to_thread(server.wait_closes, 1)
            await until(lambda: conn.generation == 2)
            with pytest.raises(perconn.ConnectionIOError):  # the answer to "request" will never come
                await conn.read(10, timeout=scaled(5))

    run(main())


# -- concurrency --------------------------------------------------------------------------


def test_concurrent_writers_never_interleave(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("sink")
    writers, count, size = 4, 100, 3000

    async def main() -> None:
        async with opened(server.address) as conn:

            async def write_all(tag: int) -> None:
                for _ in range(count):
                    await conn.write(bytes([65 + tag]) * size)

            await asyncio.gather(*(write_all(tag) for tag in range(writers)))
            await asyncio.to_thread(server.wait_received, 0, writers * count * size)

    run(main())
    data = bytes(server.received[0])
    blocks = [data[i : i + size] for i in range(0, len(data), size)]
    assert all(block == block[:1] * size for block in blocks)
    assert sorted(b[0] for b in blocks) == sorted(65 + t for t in range(writers) for _ in range(count))


def test_blocked_reader_does_not_delay_writers(run: Run, make_server: Callable[..., Server]) -> None:
    server = make_server("sink")

    async def main() -> None:
        async with opened(server.address) as conn:
            reader = asyncio.ensure_future(conn.read(100))
            await asyncio.sleep(0)
            for i in range(50):
                await conn.write(b"%03d" % i, timeout=scaled(2))
            await asyncio.to_thread(server.wait_received, 0, 150)
            assert not reader.done()

    run(main())


def test_concurrent_readers_share_the_stream_without_loss(run: Run, echo_server: Server) -> None:
    total = 20000

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with opened(echo_server.address) as conn:

            async def read_some() -> None:
                while sum(map(len, got)) < total:
                    try:
                        got.append(await conn.read(100, timeout=0.05))
                    except TimeoutError:
                        continue

            readers = [asyncio.ensure_future(read_some()) for _ in range(3)]
            await conn.write(bytes(range(256)) * (total // 256) + bytes(total % 256))
            await asyncio.wait_for(asyncio.gather(*readers), scaled(10))
        return got

    got = run(main())
    assert sum(map(len, got)) == total


# -- closing ----------------------------------------------------------------------------------


async def timed_close(conn: perconn.aio.Conn) -> float:
    start = time.monotonic()
    await conn.close()
    return time.monotonic() - start


def test_close_while_blocked_in_connect(run: Run, leaks: Leaks) -> None:
    async def main() -> None:
        with blackhole() as address:
            conn = perconn.aio.connect(address, **FAST)
            waiter = asyncio.ensure_future(conn.wait_connected())
            with pytest.raises(TimeoutError):
                await conn.wait_connected(timeout=0.1)
            assert await timed_close(conn) < 0.1
            with pytest.raises(perconn.ClosedConnectionError):
                await waiter
            assert no_other_tasks()

    run(main())
    leaks.assert_none()


def test_close_while_sleeping_in_backoff(run: Run, logger: logging.Logger, records: Records, leaks: Leaks) -> None:
    async def main() -> None:
        with refusing_port() as address:
            conn = perconn.aio.connect(address, logger=logger, retry_min=30.0, retry_max=60.0)
            await asyncio.to_thread(records.wait_for, logging.WARNING, perconn.DialError)
            writer = asyncio.ensure_future(conn.write(b"never"))
            await asyncio.sleep(0)
            assert await timed_close(conn) < 0.1
            with pytest.raises(perconn.ClosedConnectionError):
                await writer
            assert no_other_tasks()

    run(main())
    leaks.assert_none()


def test_close_wakes_blocked_readers_and_writers(
    run: Run, echo_server: Server, make_server: Callable[..., Server], leaks: Leaks
) -> None:
    no_read = make_server("no_read")

    async def main() -> None:
        conn = perconn.aio.connect(echo_server.address)
        stuck = perconn.aio.connect(no_read.address)
        await conn.wait_connected(scaled(5))
        await stuck.wait_connected(scaled(5))
        calls: list[asyncio.Future[object]] = [
            asyncio.ensure_future(conn.read(10)),
            asyncio.ensure_future(conn.readexactly(10)),
            asyncio.ensure_future(conn.readuntil(b"\n")),
        ]
        await stuck.write(b"x" * (32 << 20))  # handed over: the transport is backed up
        calls.append(asyncio.ensure_future(stuck.write(b"y")))  # waits for room
        await until(lambda: stuck._link is not None and bool(stuck._link._drain_waiters))
        assert await timed_close(conn) < 0.1
        assert await timed_close(stuck) < 0.1  # its transport holds megabytes it cannot flush
        for call in calls:
            with pytest.raises(perconn.ClosedConnectionError):
                await call
        assert no_other_tasks()

    run(main())
    echo_server.stop()
    no_read.stop()
    leaks.assert_none()


def test_close_is_idempotent_and_final(run: Run, echo_server: Server) -> None:
    async def main() -> None:
        conn = perconn.aio.connect(echo_server.address)
        await conn.wait_connected(scaled(5))
        await asyncio.gather(conn.close(), conn.close())
        await conn.close()
        assert not conn.connected
        for op in (conn.read(1), conn.readexactly(1), conn.readuntil(), conn.write(b"x"), conn.wait_connected()):
            with pytest.raises(perconn.ClosedConnectionError):
                await op

    run(main())


def test_many_lives_leave_nothing_behind(run: Run, echo_server: Server, leaks: Leaks) -> None:
    async def main() -> None:
        with refusing_port() as refused:
            for i in range(20):
                conn = perconn.aio.connect(echo_server.address if i % 2 else refused, **FAST)
                if i % 2:
                    await conn.write(b"x")
                    await conn.readexactly(1, timeout=scaled(5))
                    if i % 4 == 1:
                        await asyncio.to_thread(echo_server.drop_clients)
                        await until(lambda: conn.generation == 2)  # noqa: B023 (used within the iteration)
                await conn.close()
                assert no_other_tasks()

    run(main())
    echo_server.stop()
    leaks.assert_none()


def test_dropping_an_unclosed_conn_warns_and_releases_it(run: Run, echo_server: Server, leaks: Leaks) -> None:
    async def main() -> None:
        conn = perconn.aio.connect(echo_server.address)
        await conn.wait_connected(scaled(5))
        with pytest.warns(ResourceWarning, match="unclosed <perconn.aio.Conn"):
            del conn
            gc.collect()
        await until(no_other_tasks)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the aborted transport's own
        run(main())
    echo_server.stop()
    leaks.assert_none()


# -- cost while down, and the loop never blocks ---------------------------------------------------


def test_no_busy_loop_while_down(run: Run) -> None:
    async def main() -> tuple[float, float]:
        with refusing_port() as address:
            async with opened(address, retry_min=0.005, retry_max=0.02) as conn:
                before = resource.getrusage(resource.RUSAGE_SELF)
                start = time.monotonic()
                with pytest.raises(TimeoutError):
                    await conn.wait_connected(timeout=2.0)
                wall = time.monotonic() - start
                after = resource.getrusage(resource.RUSAGE_SELF)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall

    cpu, wall = run(main())
    assert cpu < 0.25 * wall, f"{cpu:.3f}s of CPU in {wall:.3f}s while down"


def test_a_dial_storm_leaves_the_loop_responsive_and_close_prompt(run: Run) -> None:
    # A thousand Conns asking for ~27,000 dials a second, more than one loop can
    # make: the dials take turns (perconn.aio.pacing), so the program's own
    # sleeps wake on time and close() stays within its 100 ms. (Found on uvloop:
    # when nobody waited for a turn, nothing measured the loop, and an allowance
    # grown large let every dial through: a sleep woke 110-350 ms late.)
    many = 1000

    async def main() -> tuple[float, float, int]:
        logger = logging.getLogger("perconn.test.aio.storm")
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
        with refusing_port() as address:
            conns = [perconn.aio.connect(address, retry_min=0.01, retry_max=0.05, logger=logger) for _ in range(many)]
            try:
                for _ in range(int(scaled(20) / 0.05)):  # ramped up: every Conn failed twice
                    if sum(c.stats.dial_failures for c in conns) >= 2 * many:
                        break
                    await asyncio.sleep(0.05)
                gc.disable()  # (its pauses are the interpreter's, and long in a process as big as pytest's)
                late = 0.0
                for _ in range(20):
                    started = time.monotonic()
                    await asyncio.sleep(0.01)
                    late = max(late, time.monotonic() - started - 0.01)
                worst = 0.0
                for conn in conns[:20]:
                    started = time.monotonic()
                    await conn.close()
                    worst = max(worst, time.monotonic() - started)
                failures = sum(c.stats.dial_failures for c in conns)
            finally:
                gc.enable()
                for conn in conns:
                    await conn.close()
        return late, worst, failures

    late, worst, failures = run(main())
    assert failures >= 2 * many
    assert worst < 0.1, f"a close() took {worst * 1000:.0f} ms"
    assert late < 0.1, f"a sleep(0.01) woke {late * 1000:.0f} ms late"


class SlowResolver(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, where asyncio runs getaddrinfo, made slow as a
    far-away DNS server is: every job waits before it runs."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        def slow() -> Any:
            time.sleep(0.3)
            return fn(*args, **kwargs)

        return super().submit(slow)


def test_dialing_never_starves_the_loop(logger: logging.Logger, records: Records) -> None:
    unresolvable = ".".join(["a" * 60] * 5) + ":80"  # over 253 characters: fails in the resolver

    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(SlowResolver(max_workers=2))
        worst = 0.0
        with blackhole() as silent, refusing_port() as refused:
            port = refused.rsplit(":", 1)[1]
            conns = [
                perconn.aio.connect(silent, dial_timeout=0.05, logger=logger, **FAST),
                perconn.aio.connect(unresolvable, logger=logger, **FAST),
                perconn.aio.connect(f"localhost:{port}", logger=logger, **FAST),
            ]
            last = loop.time()
            deadline = last + 1.0
            while loop.time() < deadline:
                await asyncio.sleep(0.005)
                now = loop.time()
                worst = max(worst, now - last)
                last = now
            for conn in conns:
                await conn.close()
        return worst

    worst = run_on(asyncio.new_event_loop, main())
    causes = {type(r.error.__cause__) for r in records.matching(logging.WARNING, perconn.DialError)}  # type: ignore[attr-defined]
    assert {TimeoutError, ConnectionRefusedError} <= causes and any(issubclass(c, OSError) for c in causes)
    assert worst < 0.05, f"the loop was starved for {worst * 1000:.0f} ms"


def test_nothing_printed_without_logging_config() -> None:
    script = (
        "import asyncio, socket, perconn.aio\n"
        "async def main():\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0))\n"
        "    c = perconn.aio.connect('127.0.0.1:%d' % s.getsockname()[1], retry_min=0.01, retry_max=0.02)\n"
        "    try:\n        await c.wait_connected(timeout=0.3)\n    except TimeoutError:\n        pass\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(20))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


# -- everything at once ----------------------------------------------------------------------


def test_chaos_restarts_resets_and_cancellations_under_concurrent_io(
    run: Run, echo_server: Server, leaks: Leaks
) -> None:
    """Tasks read, write and cancel while the server restarts and resets connections:
    every failure is one of the documented kinds, and close() leaves nothing."""

    async def main() -> None:
        unexpected: list[BaseException] = []
        conn = perconn.aio.connect(echo_server.address, retry_min=0.005, retry_max=0.05)

        async def worker(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(100_000):  # bounded; close() ends it long before
                try:
                    await conn.write(bytes([65 + seed]) * rnd.randint(1, 100_000), timeout=rnd.choice([None, 0.05]))
                    choice = rnd.random()
                    if choice < 0.4:
                        await conn.read(rnd.randint(1, 4000), timeout=0.05)
                    elif choice < 0.8:
                        await conn.readexactly(rnd.randint(1, 100), timeout=0.05)
                    else:
                        call = asyncio.ensure_future(conn.readuntil(b"!", limit=1000))
                        await asyncio.sleep(0)
                        call.cancel()
                        with contextlib.suppress(asyncio.CancelledError, asyncio.LimitOverrunError):
                            await call
                except perconn.ClosedConnectionError:
                    return
                except (perconn.ConnectionIOError, TimeoutError, asyncio.LimitOverrunError):
                    pass
                except BaseException as exc:
                    unexpected.append(exc)
                    return

        workers = [asyncio.ensure_future(worker(seed)) for seed in range(4)]
        chaos = random.Random(7)
        for _ in range(20):
            await conn.wait_connected(scaled(5))
            action = chaos.choice(["restart", "drop", "reset", "none"])
            if action == "restart":
                await asyncio.to_thread(echo_server.restart)
            elif action in ("drop", "reset"):
                await asyncio.to_thread(echo_server.drop_clients, action == "reset")
            await asyncio.sleep(0.01)
        assert await timed_close(conn) < 0.1
        await asyncio.wait_for(asyncio.gather(*workers), scaled(5))
        assert not unexpected, unexpected
        assert conn.generation >= 2
        assert no_other_tasks()

    run(main())
    echo_server.stop()
    leaks.assert_none()


SLOW_LOOKUP = """
import asyncio, socket, time
import perconn.aio

async def main():
    loop = asyncio.get_running_loop()
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 53))  # takes queries and never answers: lookups last the resolver's timeout
    dns.setblocking(False)
    query = asyncio.ensure_future(loop.sock_recv(dns, 512))
    conn = perconn.aio.connect("slow.test:80", retry_min=30.0, retry_max=60.0)
    worst, last = 0.0, loop.time()
    end = last + 0.5
    while loop.time() < end:  # a ticker: the loop must never stall while the lookup hangs
        await asyncio.sleep(0.005)
        now = loop.time()
        worst, last = max(worst, now - last), now
    start = time.monotonic()
    await conn.close()
    took = time.monotonic() - start
    others = asyncio.all_tasks() - {asyncio.current_task(), query}
    timers = [h for h in loop._scheduled if not h.cancelled()]  # (the loop's own list: no API counts them)
    print(f"{query.done():d} {worst:.4f} {took:.4f} {len(others)} {len(timers)}")
    query.cancel()
    dns.close()

asyncio.run(main())
"""


def test_a_slow_lookup_never_blocks_the_loop_and_close_does_not_wait_for_it(tmp_path: Path) -> None:
    done = run_isolated(SLOW_LOOKUP, tmp_path)
    assert done.returncode == 0, done.stderr
    queried, worst, took, others, timers = done.stdout.split()
    assert queried == "1"  # the dial was inside the (real, hanging) lookup all along
    assert float(worst) < 0.05, f"the loop stalled for {float(worst) * 1000:.0f} ms"
    assert float(took) < 0.1
    assert others == "0"
    assert timers == "0"  # the wait's bound (dial_timeout, 30 s) is not left armed in the loop


MOVING_HOST = (
    HOSTS_HELPERS
    + """
import asyncio
import perconn.aio

async def main():
    first, port = serve_on("127.0.0.1")
    point("moving.test", "127.0.0.1")
    conn = perconn.aio.connect(f"moving.test:{port}", retry_min=0.01, retry_max=0.05)
    peer, _ = await asyncio.to_thread(first.accept)
    print(peer.getsockname()[0])
    second, _ = serve_on("127.0.0.2", port)  # the service moves to another address
    point("moving.test", "127.0.0.2")
    peer.close()  # and the old one goes away: the transport notices and redials
    peer, _ = await asyncio.to_thread(second.accept)
    await conn.wait_connected(5)
    print(peer.getsockname()[0], conn.generation)
    await conn.close()

asyncio.run(main())
"""
)


def test_the_name_is_looked_up_again_on_every_dial(tmp_path: Path) -> None:
    done = run_isolated(MOVING_HOST, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["127.0.0.1", "127.0.0.2", "2"]
