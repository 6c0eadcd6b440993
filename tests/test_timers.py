"""The deadlines of sleeping dials (perconn._timers): never early, at most a
grain late, each once. No clock: times are passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perconn._timers import GRAIN, Timers


def test_an_item_is_due_at_its_deadline_or_within_a_grain_after_never_before() -> None:
    timers: Timers[str] = Timers()
    due = timers.add(10.0003, "a")
    assert 10.0003 <= due <= 10.0003 + GRAIN and timers.next_due() == due
    assert list(timers.pop_due(10.0003 - 1e-9)) == []
    assert list(timers.pop_due(due)) == ["a"]
    assert timers.next_due() is None and len(timers) == 0


def test_items_come_out_in_the_order_of_their_buckets() -> None:
    timers: Timers[str] = Timers()
    for deadline, item in ((3.0, "late"), (1.0, "early"), (2.0, "middle"), (1.0, "early too")):
        timers.add(deadline, item)
    assert len(timers) == 4
    assert list(timers.pop_due(5.0)) == ["early", "early too", "middle", "late"]
    assert len(timers) == 0


def test_only_the_due_buckets_leave() -> None:
    timers: Timers[str] = Timers()
    timers.add(1.0, "a")
    second = timers.add(2.0, "b")
    assert list(timers.pop_due(1.5)) == ["a"]
    assert len(timers) == 1 and timers.next_due() == second


def test_retain_drops_items_and_the_buckets_they_leave_empty() -> None:
    timers: Timers[str] = Timers()
    timers.add(1.0, "dropped")
    timers.add(2.0, "kept")
    timers.add(2.0, "dropped too")
    timers.retain(lambda item: not item.startswith("dropped"))
    assert len(timers) == 1 and timers.next_due() == 2.0
    assert list(timers.pop_due(5.0)) == ["kept"]
    assert timers.next_due() is None


@given(st.lists(st.floats(min_value=0.0, max_value=1000.0, allow_nan=False), min_size=1, max_size=50))
def test_every_deadline_comes_out_once_never_early_at_most_a_grain_late(deadlines: list[float]) -> None:
    timers: Timers[int] = Timers()
    for i, deadline in enumerate(deadlines):
        timers.add(deadline, i)
    out: dict[int, float] = {}
    for _ in range(len(deadlines) + 1):  # each pass empties at least one bucket
        now = timers.next_due()
        if now is None:
            break
        for i in timers.pop_due(now):
            assert i not in out
            out[i] = now
    assert sorted(out) == list(range(len(deadlines)))
    for i, deadline in enumerate(deadlines):
        assert deadline <= out[i] <= deadline + GRAIN * 1.000001
