"""The outbound buffer (``buffer=``), ``flush()`` and ``timeout=0`` writes, on
both front ends against real servers: queued while down, delivered in order
exactly once, bounded, counted, discarded (and logged) by ``close()``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from conftest import Records
from fronts import Front, Handle
from servers import Server, refusing_port, scaled, wait_until
from tls import TlsServer, pki

import perconn
import perconn.aio

FAST = {"retry_min": 0.02, "retry_max": 0.05}


def received(server: Server) -> bytes:
    """Everything the sink server received, all connections in order."""
    return b"".join(bytes(chunk) for chunk in server.received)


def wait_received(server: Server, nbytes: int, timeout: float = 5.0) -> bytes:
    assert wait_until(lambda: len(received(server)) >= nbytes, scaled(timeout)), received(server)
    return received(server)


def restart_when(conn: Handle, server: Server, predicate: Callable[[], bool]) -> threading.Thread:
    """Start *server* again (in a thread) once *predicate* holds."""

    def run() -> None:
        assert wait_until(predicate, scaled(5))
        server.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_writes_while_down_are_queued_at_once_and_delivered_in_order(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("sink")
    server.stop()
    lines = [b"metric.%d %d 1700000000\n" % (i, i) for i in range(50)]
    with front.open(server.address, buffer=4096, **FAST) as conn:
        for line in lines:
            assert conn.write(line, timeout=0) == len(line)  # returns at once: queued
        assert conn.buffered == sum(map(len, lines)) == conn.stats.buffered
        server.start()
        conn.flush(timeout=scaled(5))
        assert conn.buffered == 0
        conn.write(b"after\n")
        assert wait_received(server, sum(map(len, lines)) + 6) == b"".join(lines) + b"after\n"
        assert conn.stats.dropped_writes == 0


def test_a_write_without_room_times_out_counted_and_nothing_is_queued(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("sink")
    server.stop()
    with front.open(server.address, buffer=10, **FAST) as conn:
        conn.write(b"12345678")
        with pytest.raises(TimeoutError, match="buffer holds 8 of 10 bytes"):
            conn.write(b"abc", timeout=0)
        with pytest.raises(TimeoutError, match="buffer holds 8 of 10 bytes"):
            conn.write(b"abc", timeout=0.05)
        assert conn.buffered == 8
        assert conn.stats.dropped_writes == 2
        conn.write(b"90")  # what fits still goes in
        server.start()
        conn.flush(timeout=scaled(5))
        assert wait_received(server, 10) == b"1234567890"


def test_a_write_larger_than_the_buffer_waits_for_a_connection(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("sink")
    server.stop()
    with front.open(server.address, buffer=4, **FAST) as conn:
        conn.write(b"ab")
        restarter = restart_when(conn, server, lambda: conn.stats.dial_failures >= 2)
        assert conn.write(b"0123456789", timeout=scaled(5)) == 10  # never queued: sent on the connection
        restarter.join(scaled(5))
        assert conn.buffered == 0
        assert wait_received(server, 12) == b"ab0123456789"  # after what was queued before it


def test_memory_stays_within_the_buffer_however_long_the_outage(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("sink")
    server.stop()
    with front.open(server.address, buffer=1000, **FAST) as conn:
        refused = 0
        for i in range(300):
            try:
                conn.write(b"%0100d" % i, timeout=0)
            except TimeoutError:
                refused += 1
            assert conn.buffered <= 1000
        assert (conn.buffered, refused) == (1000, 290)
        assert conn.stats.dropped_writes == 290
        server.start()
        conn.flush(timeout=scaled(5))
        assert wait_received(server, 1000) == b"".join(b"%0100d" % i for i in range(10))


def test_close_discards_the_queue_at_once_counts_and_logs_it_once(
    front: Front, make_server: Callable[..., Server], records: Records, logger: logging.Logger
) -> None:
    server = make_server("sink")
    server.stop()
    conn = front.connect(server.address, buffer=1 << 20, logger=logger, **FAST)
    for _ in range(100):
        conn.write(b"x" * 1000)
    started = time.monotonic()
    conn.close()
    assert time.monotonic() - started < 0.1
    assert conn.buffered == 0
    assert conn.stats.dropped_writes == 100
    warnings = [r for r in records.matching(logging.WARNING) if hasattr(r, "writes")]
    assert [(getattr(r, "writes", None), getattr(r, "nbytes", None)) for r in warnings] == [(100, 100_000)]
    assert "100 queued writes (100000 bytes)" in warnings[0].getMessage()


def test_flush_keeps_waiting_across_a_connection_that_fails_mid_flush(
    front: Front, make_server: Callable[..., Server]
) -> None:
    """The first connection takes part of the queue and dies (reset); what it was
    not handed goes out, in order and whole, on the next; flush() spans both."""
    server = make_server("no_read")  # backs up: the flush blocks on the first connection
    server.stop()
    size, count = 64 * 1024, 160
    writes = [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
    with front.open(server.address, buffer=size * count, **FAST) as conn:
        for data in writes:
            conn.write(data, timeout=0)
        server.start()
        flushed: list[BaseException | None] = []
        flusher = threading.Thread(target=lambda: flushed.append(_flush(conn, scaled(15))), daemon=True)
        flusher.start()
        assert server.wait_accepts(1)
        assert wait_until(lambda: 0 < conn.buffered < size * count, scaled(5))  # stuck part way
        server.drop_clients(reset=True)
        server.mode = "sink"  # the next connection is read (from its first byte: no_read reads none)
        flusher.join(scaled(15))
        assert flushed == [None]
        assert conn.buffered == 0
        assert wait_until(lambda: _last_index(bytes(server.received[-1]), size) == count - 1, scaled(5))
        assert server.accepts == 2
        got = bytes(server.received[1])
    # What the second connection got: whole writes, consecutive, through the last;
    # the first connection was handed at least one (the one it died with), never resent.
    assert len(got) % size == 0
    indices = [int.from_bytes(got[k : k + 4], "big") for k in range(0, len(got), size)]
    assert got == b"".join(writes[i] for i in indices)
    assert indices == list(range(indices[0], count)) and indices[0] > 0


def _last_index(got: bytes, size: int) -> int:
    """The index of the last whole write in *got* (-1 if none)."""
    whole = len(got) - len(got) % size
    return int.from_bytes(got[whole - size : whole - size + 4], "big") if whole else -1


def _flush(conn: Handle, timeout: float) -> BaseException | None:
    try:
        conn.flush(timeout=timeout)
    except BaseException as exc:  # handed to the test thread
        return exc
    return None


def test_timeout_zero_on_a_live_connection_never_blocks_and_keeps_it_up(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("no_read")
    with front.open(server.address, **FAST) as conn:
        conn.wait_connected(scaled(5))
        big = b"y" * (16 << 20)
        assert conn.write(big, timeout=0) == len(big)  # the socket/transport took it (in part, the rest in flight)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.write(b"next", timeout=0)  # no room: nothing sent, at once
        assert time.monotonic() - started < scaled(0.5)
        assert conn.stats.drops == 0 and conn.connected
        assert conn.stats.dropped_writes == 1


def greeting_hook(front: Front) -> Callable[..., object]:
    """An ``on_connect`` hook (of *front*'s kind) that sends ``HELLO\\n``."""
    if front.name == "sync":

        def hook(link: perconn.Link) -> None:
            link.write(b"HELLO\n")

        return hook

    async def async_hook(link: perconn.aio.Link) -> None:
        await link.write(b"HELLO\n")

    return async_hook


def test_queued_writes_follow_the_handshake_on_every_new_connection(
    front: Front, make_server: Callable[..., Server]
) -> None:
    server = make_server("sink")
    server.stop()
    with front.open(server.address, buffer=1000, on_connect=greeting_hook(front), **FAST) as conn:
        conn.write(b"one\n")
        conn.write(b"two\n")
        server.start()
        conn.flush(timeout=scaled(5))
        assert wait_received(server, 14) == b"HELLO\none\ntwo\n"


def test_queued_writes_go_out_over_tls_after_the_handshake(front: Front) -> None:
    server = TlsServer(mode="sink")
    try:
        server.stop()
        with front.open(server.address, buffer=1000, ssl=pki().client_context(), **FAST) as conn:
            conn.write(b"secret one\n", timeout=0)
            conn.write(b"secret two\n", timeout=0)
            server.start()
            conn.flush(timeout=scaled(5))
            conn.write(b"three\n")
            assert server.wait_received(0, 28) == b"secret one\nsecret two\nthree\n"
    finally:
        server.stop()


def test_an_outage_under_a_1khz_writer_loses_nothing_it_did_not_report(
    front: Front, make_server: Callable[..., Server]
) -> None:
    """Every line is delivered once, in order, or refused with TimeoutError
    (counted), except lines the dying connection's kernel took after the server
    left: those form one run at the moment of the drop (TCP cannot tell)."""
    server = make_server("sink")
    with front.open(server.address, buffer=64 * 1024, **FAST) as conn:
        conn.wait_connected(scaled(5))
        refused: set[int] = set()
        deadline = time.monotonic() + scaled(0.9)
        n = 0
        while time.monotonic() < deadline and n < 5000:
            if n == 150:
                server.stop()
            if n == 450:
                server.start()
            try:
                conn.write(b"%08d\n" % n, timeout=0)
            except TimeoutError:
                refused.add(n)
            n += 1
            time.sleep(0.001)
        conn.flush(timeout=scaled(5))
        conn.write(b"end\n")
        assert wait_until(lambda: received(server).endswith(b"end\n"), scaled(5))
        assert conn.stats.dropped_writes == len(refused)
    lines = received(server).split(b"\n")[:-2]
    got = [int(line) for line in lines]
    assert got == sorted(set(got)), "out of order or duplicated"
    lost = sorted(set(range(n)) - set(got) - refused)
    assert not set(got) & refused
    if lost:  # one run, where the first connection died
        assert lost == list(range(lost[0], lost[-1] + 1)), lost
        assert 150 - 20 <= lost[0] <= 450, lost


def test_giving_up_discards_the_queue_counts_and_logs_it_first(
    front: Front, records: Records, logger: logging.Logger
) -> None:
    with refusing_port() as address:
        conn = front.connect(address, buffer=100, max_attempts=2, logger=logger, **FAST)
        try:
            conn.write(b"one\n")
            conn.write(b"two\n")
            assert records.wait_for(logging.ERROR)  # gave up
            assert conn.closed and conn.buffered == 0
            assert conn.stats.dropped_writes == 2
            with pytest.raises(perconn.GaveUpError):
                conn.flush(timeout=1)
        finally:
            conn.close()
    discards = [r for r in records.records if hasattr(r, "writes")]
    assert [(getattr(r, "writes", None), getattr(r, "nbytes", None)) for r in discards] == [(2, 8)]
    assert "giving up: 2 queued writes (8 bytes)" in discards[0].getMessage()
    assert records.records.index(discards[0]) < records.records.index(records.matching(logging.ERROR)[0])
