"""The lifecycle state machine: events in, delays out, with an injected random source."""

from __future__ import annotations

import itertools

import pytest

from perconn._backoff import Backoff
from perconn._state import Lifecycle, Phase


def machine(jitter: bool = False, samples: list[float] | None = None) -> Lifecycle:
    source = itertools.cycle(samples or [0.5])
    return Lifecycle(Backoff(1.0, 8.0, jitter), random=lambda: next(source))


def test_failed_dials_follow_the_schedule() -> None:
    life = machine()
    assert [life.dial_failed() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert life.attempts == 6
    assert life.phase is Phase.DIALING


def test_jittered_schedule_uses_the_injected_source() -> None:
    life = machine(jitter=True, samples=[0.0, 0.5, 0.999])
    assert [life.dial_failed() for _ in range(3)] == [1.0, 1.5, pytest.approx(2.002)]


def test_connect_counts_generation_and_attempts() -> None:
    life = machine()
    life.dial_failed()
    life.dial_failed()
    assert life.connected(now=100.0) == 1
    assert (life.phase, life.generation, life.attempts) == (Phase.CONNECTED, 1, 3)


def test_healthy_drop_redials_at_once_and_resets_the_schedule() -> None:
    life = machine()
    for _ in range(4):
        life.dial_failed()
    life.connected(now=100.0)
    assert life.connection_lost(now=100.0 + 1.0) == 0.0  # lived retry_min: healthy
    assert life.dial_failed() == 1.0  # schedule starts over


def test_healthy_drop_with_jitter_waits_within_retry_min() -> None:
    life = machine(jitter=True, samples=[0.25])
    life.connected(now=0.0)
    assert life.connection_lost(now=50.0) == 0.25


def test_young_deaths_continue_the_schedule() -> None:
    """A server that accepts and closes at once: redials decay to one per retry_max."""
    life = machine()
    delays = []
    now = 0.0
    for _ in range(7):
        life.connected(now)
        now += 0.001
        delay = life.connection_lost(now)
        delays.append(delay)
        now += delay
    assert delays == [1, 2, 4, 8, 8, 8, 8]
    assert life.generation == 7


def test_dial_failures_after_a_young_death_keep_counting() -> None:
    life = machine()
    life.dial_failed()  # 1
    life.connected(now=0.0)
    assert life.connection_lost(now=0.5) == 2
    assert life.dial_failed() == 4


def test_close_is_final_and_idempotent() -> None:
    life = machine()
    assert life.close() is True
    assert life.close() is False
    assert life.closed
    # events racing with close are ignored, not errors
    assert life.dial_failed() == 0.0
    assert life.connected(now=1.0) == 0
    assert life.phase is Phase.CLOSED


@pytest.mark.parametrize(
    "bad",
    [
        lambda life: life.connection_lost(now=1.0),  # not connected yet
        lambda life: (life.connected(now=0.0), life.connected(now=1.0)),
        lambda life: (life.connected(now=0.0), life.dial_failed()),
    ],
)
def test_events_out_of_order_are_bugs(bad: object) -> None:
    with pytest.raises(RuntimeError, match="reported in phase"):
        bad(machine())  # type: ignore[operator]
