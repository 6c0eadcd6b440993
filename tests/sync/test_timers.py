"""The dialer thread's deadlines (perconn.sync.timers): never early, at most a
grain late, each once, stale ones skipped. No clock: times are passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perconn.sync.timers import GRAIN, Timers


class FakeJob:
    def __init__(self, name: str) -> None:
        self.name = name
        self.token = 0

    def __repr__(self) -> str:
        return self.name


def test_a_deadline_is_due_at_it_or_within_a_grain_after_never_before() -> None:
    timers: Timers[FakeJob] = Timers()
    job = FakeJob("a")
    timers.add(10.0003, job)
    assert list(timers.pop_due(10.0003 - 1e-9)) == []
    due = timers.next_due()
    assert due is not None and 10.0003 <= due <= 10.0003 + GRAIN
    assert list(timers.pop_due(due)) == [job]
    assert timers.next_due() is None and len(timers) == 0


def test_jobs_come_out_in_the_order_of_their_buckets() -> None:
    timers: Timers[FakeJob] = Timers()
    late, early, middle = FakeJob("late"), FakeJob("early"), FakeJob("middle")
    timers.add(3.0, late)
    timers.add(1.0, early)
    timers.add(2.0, middle)
    assert list(timers.pop_due(5.0)) == [early, middle, late]


def test_a_job_that_moved_on_is_skipped_and_its_bucket_still_leaves() -> None:
    timers: Timers[FakeJob] = Timers()
    moved, waiting = FakeJob("moved"), FakeJob("waiting")
    timers.add(1.0, moved)
    timers.add(1.0, waiting)
    moved.token += 1  # resumed early (its wait answered, or aborted)
    assert list(timers.pop_due(1.0 + GRAIN)) == [waiting]
    assert timers.next_due() is None


def test_a_job_added_again_after_moving_on_is_due_at_its_new_deadline_only() -> None:
    timers: Timers[FakeJob] = Timers()
    job = FakeJob("job")
    timers.add(1.0, job)
    job.token += 1
    timers.add(2.0, job)
    assert list(timers.pop_due(1.5)) == []
    assert list(timers.pop_due(2.0 + GRAIN)) == [job]


@given(st.lists(st.floats(min_value=0.0, max_value=1000.0, allow_nan=False), min_size=1, max_size=50))
def test_every_deadline_comes_out_once_never_early_at_most_a_grain_late(deadlines: list[float]) -> None:
    timers: Timers[FakeJob] = Timers()
    jobs = [FakeJob(str(i)) for i in range(len(deadlines))]
    for deadline, job in zip(deadlines, jobs, strict=True):
        timers.add(deadline, job)
    out: dict[str, float] = {}
    for _ in range(len(deadlines) + 1):  # each pass empties at least one bucket
        now = timers.next_due()
        if now is None:
            break
        for job in timers.pop_due(now):
            assert job.name not in out
            out[job.name] = now
    assert sorted(out) == sorted(job.name for job in jobs)
    for deadline, job in zip(deadlines, jobs, strict=True):
        assert deadline <= out[job.name] <= deadline + GRAIN * 1.000001
