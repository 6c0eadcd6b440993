"""The process-wide dialer thread (perconn.sync.hub): many dialing ``Conn``s,
one thread; a hook that blocks delays nobody else; close() stays prompt while
the thread is busy; nothing is left once they are all closed."""

from __future__ import annotations

import contextlib
import gc
import logging
import resource
import socket
import threading
import time

import pytest
from conftest import Leaks, hub_state
from servers import Server, refusing_port, scaled, wait_until

import perconn
import perconn.sync
from perconn._connecting import Spares
from perconn.sync.conn import CLOSE_BUDGET
from perconn.sync.hub import Job, JobGen, hub

MANY = 1000


def perconn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("perconn")]


def quiet() -> logging.Logger:
    logger = logging.getLogger("perconn.test.hub")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


def test_a_thousand_dialing_conns_share_one_thread_and_leave_nothing(leaks: Leaks) -> None:
    with refusing_port() as address:
        conns = [perconn.connect(address, retry_min=0.5, retry_max=1.0, logger=quiet()) for _ in range(MANY)]
        try:
            assert wait_until(lambda: sum(c.stats.dial_failures for c in conns) >= MANY, scaled(10))
            assert [t.name for t in perconn_threads()] == ["perconn-dialer"]
        finally:
            started = time.monotonic()
            for conn in conns:
                conn.close()
            took = time.monotonic() - started
    assert took < scaled(2.0), f"closing {MANY} dialing Conns took {took:.2f} s"
    leaks.assert_none()


def test_no_busy_loop_while_a_thousand_are_down() -> None:
    with refusing_port() as address:
        conns = [perconn.connect(address, retry_min=4.0, retry_max=8.0, logger=quiet()) for _ in range(MANY)]
        try:
            assert wait_until(lambda: sum(c.stats.dial_failures for c in conns) >= MANY, scaled(10))
            # What the tests before this one left is CPython's to collect, not the dialer's cost:
            # collected now, no full collection (40-100 ms of this process's CPU, seen) falls in the window.
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.monotonic()
            time.sleep(1.0)  # the thing measured: what dialing costs while nothing else runs
            wall = time.monotonic() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            failures = sum(c.stats.dial_failures for c in conns)
        finally:
            for conn in conns:
                conn.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Each has failed once and sleeps 2-4 s before its next dial: the window holds a thousand sleeping
    # dials and few attempts (each attempt costs the dialer thread a wake-up: 0.1-0.8 ms of CPU on a
    # loaded VM, where 600 of them once came near the bound). A busy loop would take the whole CPU.
    assert cpu < 0.5 * wall, f"{cpu:.3f}s of CPU in {wall:.3f}s for {MANY} Conns down ({failures} failed dials)"


def test_close_stays_prompt_while_the_dialer_thread_is_busy() -> None:
    with refusing_port() as address:
        conns = [perconn.connect(address, retry_min=0.05, retry_max=0.1, logger=quiet()) for _ in range(MANY)]
        try:
            assert wait_until(lambda: sum(c.stats.dial_failures for c in conns) >= 2 * MANY, scaled(10))
            worst = 0.0
            for conn in conns[:20]:
                started = time.monotonic()
                conn.close()
                worst = max(worst, time.monotonic() - started)
        finally:
            for conn in conns:
                conn.close()
    assert worst < 0.1, f"a close() took {worst * 1000:.0f} ms"


class Blocking(logging.Handler):
    """Holds the dialer thread (log handlers of dial failures run on it) from
    its first record until released."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.let_go = threading.Event()
        self.returned = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.holding.set()
        self.let_go.wait(scaled(10))
        self.returned.set()


def test_close_of_a_conn_asleep_between_dials_does_not_wait_for_the_dialer_thread(leaks: Leaks) -> None:
    with refusing_port() as address:
        asleep = perconn.connect(address, retry_min=60.0, retry_max=60.0, logger=quiet())
        assert wait_until(lambda: asleep.stats.dial_failures == 1, scaled(5))
        blocking = Blocking()
        logger = logging.getLogger("perconn.test.hub.blocking")
        logger.propagate = False
        logger.addHandler(blocking)
        holder = perconn.connect(address, retry_min=60.0, retry_max=60.0, logger=logger)
        try:
            assert blocking.holding.wait(scaled(5))
            started = time.monotonic()
            asleep.close()  # it holds no socket: nothing to wait for
            took = time.monotonic() - started
            assert not blocking.returned.is_set()  # the dialer thread was held all along
            # Waiting for the held thread would have taken all of close()'s budget.
            assert took < CLOSE_BUDGET, f"close() took {took * 1000:.0f} ms"
            assert asleep.closed
        finally:
            blocking.let_go.set()
            holder.close()
            logger.removeHandler(blocking)
    leaks.assert_none()


def test_a_hook_that_blocks_delays_no_other_conn(echo_server: Server, leaks: Leaks) -> None:
    server = echo_server
    release = threading.Event()
    entered = threading.Event()

    def stuck(link: perconn.Link) -> None:
        entered.set()
        release.wait(scaled(10))

    blocked = perconn.connect(server.address, on_connect=stuck)
    try:
        assert entered.wait(scaled(5))
        with perconn.connect(server.address) as other:
            other.wait_connected(timeout=scaled(1))  # dialed by the same thread, while the hook blocks
            other.write(b"ping")
            assert other.readexactly(4, timeout=scaled(2)) == b"ping"
        assert not blocked.connected
        release.set()
        blocked.wait_connected(timeout=scaled(5))
    finally:
        release.set()
        blocked.close()
    leaks.assert_none()


def test_a_thousand_conns_come_back_after_a_server_restart_and_leave_nothing(echo_server: Server, leaks: Leaks) -> None:
    server = echo_server
    conns = [perconn.connect(server.address, retry_min=0.01, retry_max=0.2, logger=quiet()) for _ in range(MANY)]
    started = time.monotonic()
    try:
        assert wait_until(lambda: all(c.generation == 1 for c in conns), scaled(15))
        print(f"{MANY} connected in {time.monotonic() - started:.2f} s")
        assert wait_until(lambda: not perconn_threads(), scaled(2))  # connected and idle: no thread at all
        server.restart()
        started = time.monotonic()
        for conn in conns:  # each notices the restart (its idle check before a write), and redials
            with contextlib.suppress(TimeoutError):
                conn.write(b"x", timeout=0)  # rarely sent: a connection is seldom up again that fast
        assert wait_until(lambda: all(c.generation == 2 for c in conns), scaled(15))
        print(f"{MANY} back in {time.monotonic() - started:.2f} s after the restart")
        for conn in conns[:50]:
            conn.write(b"hello")
            # (the "x" went out after all if the new connection was up before that write gave up)
            assert conn.readuntil(b"hello", timeout=scaled(5)) in (b"hello", b"xhello")
    finally:
        for conn in conns:
            conn.close()
    leaks.assert_none(timeout=scaled(2))


class _Aborted(Exception):
    pass


def test_a_sleep_is_a_bare_deadline_resumed_once_due_or_aborted_at_once(leaks: Leaks) -> None:
    # A sleep (what most jobs of a storm wait on) is yielded as a float, no
    # object: it is resumed with an empty set no sooner than its deadline, and
    # an abort throws in at once, however far off the deadline is.
    resumed: list[tuple[float, object]] = []
    ended: list[str] = []

    def sleeper(until: float) -> JobGen:
        answer = yield until
        resumed.append((time.monotonic(), answer))

    def long_sleeper() -> JobGen:
        try:
            yield time.monotonic() + 3600.0
        except _Aborted:
            ended.append("aborted")

    due = time.monotonic() + 0.05
    short = hub.start(sleeper(due), _Aborted)
    long = hub.start(long_sleeper(), _Aborted)
    assert short.wait_done(scaled(5))
    assert resumed[0][0] >= due and resumed[0][1] == frozenset()
    assert not long.wait_done(0.0)
    long.abort()
    assert long.wait_done(scaled(5)) and ended == ["aborted"]
    hub.join_if_idle(scaled(5))
    leaks.assert_none()


def test_a_job_woken_early_is_not_resumed_at_its_old_deadline(leaks: Leaks) -> None:
    # The deadline of a wait the job left (aborted) stays among the hub's
    # timers until it comes due: then it is skipped, not taken for the job's
    # next wait's.
    events: list[tuple[str, float]] = []
    jobs: list[Job] = []
    asleep = threading.Event()

    def job() -> JobGen:
        try:
            asleep.set()  # (the hub takes the deadline before it looks at the abort)
            yield time.monotonic() + scaled(0.3)
        except _Aborted:
            events.append(("aborted", time.monotonic()))
            jobs[0].abort_pending = False  # (what a dial's drain() does: it looked at why)
        second = time.monotonic() + scaled(0.6)
        yield second
        events.append(("resumed", time.monotonic() - second))

    started = hub.start(job(), _Aborted)
    jobs.append(started)
    assert asleep.wait(scaled(5))
    started.abort()
    assert started.wait_done(scaled(5))
    assert [name for name, _ in events] == ["aborted", "resumed"]
    assert events[1][1] >= 0  # at the second deadline, not the first
    hub.join_if_idle(scaled(5))
    leaks.assert_none()


@pytest.mark.skipif(not Spares.ENABLED, reason="spares are kept on Linux only")
def test_refused_dials_begin_on_a_socket_the_dialer_thread_keeps(leaks: Leaks) -> None:
    # The dialer thread of earlier tests has ended (it ends with its last Conn), and with it what it kept.
    assert wait_until(lambda: hub.thread is None, scaled(2)), hub_state()
    with refusing_port() as address:
        # retry 5 s: asleep 2.5-5 s after each failure, so what the thread keeps holds still to be looked at
        conn = perconn.connect(address, retry_min=5.0, retry_max=5.0, logger=quiet())
        try:
            assert wait_until(lambda: conn.stats.dial_failures == 1, scaled(5))
            kept = list(hub.spares._pools[socket.AF_INET])
            assert len(kept) == 1 and kept[0].fileno() != -1  # the refused socket, kept open
            conn.reconnect()  # dial again, at once
            assert wait_until(lambda: conn.stats.dial_failures == 2, scaled(5))
            assert hub.spares._pools[socket.AF_INET] == kept  # refused again on the same socket
        finally:
            conn.close()
    leaks.assert_none()  # the thread ended with its last dialing Conn, and closed what it kept
    assert len(hub.spares) == 0 and kept[0].fileno() == -1
