"""The dial pacing policy (perconn._pacing), on an injected clock: dials per
tick up to the allowance, halved when the loop runs late, grown when on time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perconn._pacing import MOST, START, TICK, Pacer


def test_up_to_the_allowance_in_a_tick_then_none_until_the_next() -> None:
    pacer = Pacer(tick=0.25, start=3)
    assert [pacer.admit(5.0) for _ in range(4)] == [True, True, True, False]
    assert not pacer.admit(5.125)  # the same tick
    assert pacer.admit(5.25)  # the next one
    assert pacer.used == 1


def test_a_few_conns_never_wait() -> None:
    pacer = Pacer()
    assert all(pacer.admit(100.0) for _ in range(START))


def use_it_all(pacer: Pacer, now: float) -> None:
    while pacer.admit(now):
        pass


def test_late_halves_on_time_and_used_up_grows_by_an_eighth_within_bounds() -> None:
    pacer = Pacer(start=64)
    pacer.ran_late(TICK * 1.5)
    assert pacer.allowance == 32
    use_it_all(pacer, 0.0)
    pacer.ran_late(0.0)
    assert pacer.allowance == 36
    for _ in range(20):
        pacer.ran_late(10.0)
    assert pacer.allowance == 1  # always at least one dial a tick: no Conn waits forever
    for tick in range(200):
        use_it_all(pacer, tick * TICK)
        pacer.ran_late(0.0)
    assert pacer.allowance == MOST


def test_an_allowance_nobody_used_does_not_grow() -> None:
    # Grown while idle, it would let a burst of dials through in one loop iteration.
    pacer = Pacer(start=64)
    assert pacer.admit(0.0)
    for _ in range(100):
        pacer.ran_late(0.0)
    assert pacer.allowance == 64


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(0, 200), st.floats(0, 0.02)), max_size=60))
def test_never_more_than_the_allowance_in_any_tick(steps: list[tuple[float, int, float]]) -> None:
    pacer = Pacer()
    now = 0.0
    for advance, asks, lateness in steps:
        now += advance
        allowance = pacer.allowance
        admitted = sum(pacer.admit(now) for _ in range(asks))
        assert admitted <= allowance
        pacer.ran_late(lateness)
        assert 1 <= pacer.allowance <= MOST
