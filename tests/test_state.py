"""The lifecycle state machine: events in, steps (delays, log records) out, with an
injected clock and random source; no sockets, no waiting."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest

from perconn import ConnectionIOError, DialError, GaveUpError
from perconn._address import parse_address
from perconn._backoff import Backoff
from perconn._state import Lifecycle, Phase

ADDRESSES = ["h:1"]


def machine(jitter: bool = False, samples: list[float] | None = None, **limits: object) -> Lifecycle:
    source = itertools.cycle(samples or [0.5])
    addresses = tuple(parse_address(a) for a in ADDRESSES)
    return Lifecycle(Backoff(1.0, 8.0, jitter), 0.0, addresses, random=lambda: next(source), **limits)  # type: ignore[arg-type]


def refused() -> DialError:
    return DialError("h:1", ConnectionRefusedError(111, "Connection refused"))


def dropped() -> ConnectionIOError:
    return ConnectionIOError("read", EOFError("connection closed by peer"), address="h:1")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def logged(log: Callable[[logging.Logger], None]) -> list[logging.LogRecord]:
    """The records a step's log function emits."""
    logger = logging.getLogger("perconn.test.state")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    capture = Capture()
    logger.addHandler(capture)
    try:
        log(logger)
    finally:
        logger.removeHandler(capture)
    return capture.records


def test_failed_dials_follow_the_schedule() -> None:
    life = machine()
    assert [life.dial_failed(refused(), 0.0).delay for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert life.attempts == 6 and life.dial_failures == 6
    assert life.phase is Phase.DIALING


def test_jittered_schedule_uses_the_injected_source() -> None:
    life = machine(jitter=True, samples=[0.0, 0.5, 0.999])
    assert [life.dial_failed(refused(), 0.0).delay for _ in range(3)] == [1.0, 1.5, pytest.approx(2.002)]


def test_a_failed_dial_logs_what_failed_and_what_happens_next() -> None:
    life = machine()
    error = refused()
    (record,) = logged(life.dial_failed(error, 0.0).log)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "dial h:1: [Errno 111] Connection refused (attempt 1); retrying in 1 s"
    assert (record.error, record.attempt, record.delay) == (error, 1, 1.0)  # type: ignore[attr-defined]


def test_connect_counts_generation_and_attempts() -> None:
    life = machine()
    life.dial_failed(refused(), 0.0)
    life.dial_failed(refused(), 0.0)
    (record,) = logged(life.established(100.0).log)
    assert record.getMessage() == "connected to h:1 (generation 1, after 3 attempts)"
    assert (life.phase, life.generation, life.attempts) == (Phase.CONNECTED, 1, 3)


def test_healthy_drop_redials_at_once_and_resets_the_schedule() -> None:
    life = machine()
    for _ in range(4):
        life.dial_failed(refused(), 0.0)
    life.established(100.0)
    step = life.dropped(dropped(), 100.0 + 1.0)  # lived retry_min: it proved itself
    assert step.delay == 0.0
    (record,) = logged(step.log)
    assert record.getMessage() == "read h:1: connection closed by peer; generation 1 dropped, reconnecting in 0 s"
    assert life.dial_failed(refused(), 101.0).delay == 1.0  # schedule starts over


def test_healthy_drop_with_jitter_waits_within_retry_min() -> None:
    life = machine(jitter=True, samples=[0.25])
    life.established(0.0)
    assert life.dropped(dropped(), 50.0).delay == 0.25


def test_young_deaths_continue_the_schedule() -> None:
    """A server that accepts and closes at once, sending nothing: redials decay to one per retry_max."""
    life = machine()
    delays = []
    now = 0.0
    for _ in range(7):
        life.established(now)
        now += 0.001
        delay = life.dropped(dropped(), now).delay
        assert delay is not None
        delays.append(delay)
        now += delay
    assert delays == [1, 2, 4, 8, 8, 8, 8]
    assert life.generation == 7 and life.drops == 7


@pytest.mark.parametrize("how", ["received bytes", "handshake"])
def test_a_young_connection_that_proved_itself_resets_the_schedule(how: str) -> None:
    """A crash-looping server that keeps answering is redialed promptly, not at retry_max."""
    life = machine()
    for _ in range(5):
        life.dial_failed(refused(), 0.0)
    life.established(10.0, proven=how == "handshake")
    if how == "received bytes":
        life.proved()
    assert life.dropped(dropped(), 10.1).delay == 0.0
    assert life.dial_failed(refused(), 10.1).delay == 1.0


def test_dial_failures_after_a_young_death_keep_counting() -> None:
    life = machine()
    life.dial_failed(refused(), 0.0)  # 1
    life.established(0.0)
    assert life.dropped(dropped(), 0.5).delay == 2
    assert life.dial_failed(refused(), 0.5).delay == 4


def test_reconnect_redials_at_once_with_the_schedule_reset() -> None:
    life = machine()
    for _ in range(3):
        life.dial_failed(refused(), 0.0)
    life.established(0.0)
    assert life.dropped(dropped(), 0.001, at_once=True).delay == 0.0
    assert life.dial_failed(refused(), 0.0).delay == 1.0
    life.dial_failed(refused(), 0.0)
    life.redial_now()  # while dialing
    assert life.dial_failed(refused(), 0.0).delay == 1.0


def test_max_attempts_gives_up_and_closes() -> None:
    life = machine(max_attempts=3)
    assert life.dial_failed(refused(), 0.0).delay == 1.0
    assert life.dial_failed(refused(), 1.0).delay == 2.0
    step = life.dial_failed(refused(), 3.0)
    assert step.delay is None and life.closed and life.phase is Phase.CLOSED
    gave_up = life.gave_up
    assert isinstance(gave_up, GaveUpError) and isinstance(gave_up.__cause__, DialError)
    assert "max_attempts=3" in str(gave_up)
    warning, error = logged(step.log)
    assert warning.levelno == logging.WARNING and warning.getMessage().endswith("(attempt 3); giving up")
    assert error.levelno == logging.ERROR and error.error is gave_up  # type: ignore[attr-defined]


def test_max_attempts_counts_consecutive_failures_only() -> None:
    life = machine(max_attempts=2)
    life.dial_failed(refused(), 0.0)
    life.established(1.0)  # resets the count
    life.dropped(dropped(), 5.0)
    assert life.dial_failed(refused(), 5.0).delay is not None
    assert life.dial_failed(refused(), 6.0).delay is None


def test_max_attempts_one_fails_fast() -> None:
    life = machine(max_attempts=1)
    assert life.dial_failed(refused(), 0.0).delay is None and life.closed


def test_give_up_after_bounds_dials_and_sleeps_by_the_deadline() -> None:
    life = machine(give_up_after=5.0, dial_timeout=3.0)
    assert life.expired(0.0) is None
    assert life.begin_dial(0.0)[1] == 3.0  # dial_timeout
    assert life.begin_dial(4.0)[1] == 1.0  # what is left before the deadline
    assert life.dial_failed(refused(), 4.0).delay == 1.0
    assert life.dial_failed(refused(), 4.5).delay == pytest.approx(0.5)  # the schedule says 2 s: cut at the deadline
    step = life.expired(5.0)  # the sleep ended at the deadline: give up without dialing again
    assert step is not None and step.delay is None and life.closed
    assert life.gave_up is not None and "give_up_after=5.0" in str(life.gave_up)
    assert life.gave_up.__cause__ is life.last_error and isinstance(life.last_error, DialError)
    (record,) = logged(step.log)
    assert record.levelno == logging.ERROR and record.error is life.gave_up  # type: ignore[attr-defined]


def test_a_last_dial_cut_short_by_the_deadline_does_not_hide_what_failed_before() -> None:
    """The give-up deadline leaves the last dial 50 ms; it times out (under load a
    refusal can take that long): the GaveUpError names the refusal before it."""
    life = machine(give_up_after=5.0, dial_timeout=3.0)
    life.begin_dial(3.0)
    first = refused()
    life.dial_failed(first, 3.0)
    assert life.begin_dial(4.95)[1] == pytest.approx(0.05)
    cut = DialError("h:1", TimeoutError("connect timed out after 0.05 s"))
    assert life.dial_failed(cut, 5.0).delay is None and life.closed
    assert life.gave_up is not None and life.gave_up.__cause__ is first
    assert "Connection refused" in str(life.gave_up)
    assert life.last_error is cut  # the newest failure, as stats report it


def test_a_dial_timing_out_with_its_whole_dial_timeout_is_what_the_give_up_names() -> None:
    life = machine(give_up_after=5.0, dial_timeout=1.0)
    life.begin_dial(0.0)
    life.dial_failed(refused(), 0.0)
    assert life.begin_dial(3.9)[1] == 1.0  # its own bound, not cut by the deadline
    timeout = DialError("h:1", TimeoutError("connect timed out after 1 s"))
    life.dial_failed(timeout, 5.0)
    assert life.gave_up is not None and life.gave_up.__cause__ is timeout


def test_a_sleep_that_ends_a_little_early_still_gives_up_at_the_deadline() -> None:
    """Timers may wake a little before the deadline they were set for: the dial it
    was the last sleep before is not begun with microseconds left."""
    life = machine(give_up_after=5.0)
    assert life.dial_failed(refused(), 4.5).delay == pytest.approx(0.5)
    step = life.expired(4.99995)
    assert step is not None and life.closed and life.gave_up is not None


def test_no_dial_is_begun_with_next_to_no_time_left() -> None:
    life = machine(give_up_after=5.0)
    assert life.dial_failed(refused(), 3.99).delay == 1.0  # the schedule ends 10 ms before the deadline
    assert life.expired(4.99) is not None and life.closed  # then it gives up: no dial of 10 ms


def test_a_dial_failing_at_the_deadline_gives_up() -> None:
    life = machine(give_up_after=5.0)
    step = life.dial_failed(refused(), 5.0)
    assert step.delay is None and life.gave_up is not None


def test_give_up_after_counts_from_the_last_drop() -> None:
    life = machine(give_up_after=5.0)
    life.established(0.0)
    life.dropped(dropped(), 100.0)
    assert life.expired(101.0) is None
    assert life.begin_dial(101.0)[1] == 4.0  # dial_timeout None: bounded by the deadline alone
    assert life.dial_failed(refused(), 104.0).delay is not None
    assert life.dial_failed(refused(), 105.0).delay is None


def test_a_hook_that_raises_gave_up_gives_up_at_once() -> None:
    life = machine()
    step = life.dial_failed(DialError("h:1", GaveUpError("wrong password")), 0.0)
    assert step.delay is None and life.gave_up is not None and "wrong password" in str(life.gave_up)


def test_stats_count_every_event() -> None:
    life = machine()
    life.begin_dial(0.0)
    life.dial_failed(refused(), 0.0)
    life.begin_dial(1.0)
    life.established(1.5)
    error = dropped()
    life.dropped(error, 9.0)
    stats = life.stats()
    assert (stats.dials, stats.dial_failures, stats.connections, stats.drops) == (2, 1, 1, 1)
    assert (stats.last_error, stats.state, stats.state_since) == (error, "dialing", 9.0)
    life.close(10.0)
    assert (life.stats().state, life.stats().state_since) == ("closed", 10.0)


def test_close_is_final_and_idempotent() -> None:
    life = machine()
    assert life.close(0.0) is True
    assert life.close(1.0) is False
    assert life.closed
    # events racing with close are ignored, not errors
    assert life.dial_failed(refused(), 0.0).delay is None
    assert life.established(1.0).delay is None and life.generation == 0
    assert life.phase is Phase.CLOSED


@pytest.mark.parametrize(
    "bad",
    [
        lambda life: life.dropped(dropped(), 1.0),  # not connected yet
        lambda life: (life.established(0.0), life.established(1.0)),
        lambda life: (life.established(0.0), life.dial_failed(refused(), 0.0)),
    ],
)
def test_events_out_of_order_are_bugs(bad: Callable[[Lifecycle], object]) -> None:
    with pytest.raises(RuntimeError, match="reported in phase"):
        bad(machine())


def test_a_round_tries_every_address_in_order_and_counts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ADDRESSES", ["a:1", "b:2", "c:3"])
    life = machine(max_attempts=2)
    seen = []
    for _ in range(3):
        address, _ = life.begin_dial(0.0)
        seen.append(address.text)
        step = life.dial_failed(DialError(address.text, ConnectionRefusedError(111, "Connection refused")), 0.0)
    assert seen == ["a:1", "b:2", "c:3"]
    assert step.delay == 1.0 and life.attempts == 1  # one failure in the schedule for the whole round
    assert life.dial_failures == 3 and life.dials == 3
    records = logged(life.dial_failed(refused(), 0.0).log)  # a:1 again: the next round starts from the first
    assert records[0].getMessage() == "dial h:1: [Errno 111] Connection refused (attempt 2); trying b:2 next"
    address, _ = life.begin_dial(0.0)
    assert address.text == "b:2"
    life.established(1.0)
    assert life.address is not None and life.address.text == "b:2" and life.stats().address == "b:2"
    life.dropped(dropped(), 10.0)
    assert life.begin_dial(10.0)[0].text == "a:1"  # after a drop: the preferred first address again
