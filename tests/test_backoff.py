"""The backoff policy: pure arithmetic, schedules checked without sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perconn import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN
from perconn._backoff import Backoff


def test_defaults_follow_the_seed() -> None:
    assert (DEFAULT_RETRY_MIN, DEFAULT_RETRY_MAX) == (1.0, 60.0)
    assert Backoff() == Backoff(DEFAULT_RETRY_MIN, DEFAULT_RETRY_MAX, True)


def test_exact_doubling_without_jitter() -> None:
    policy = Backoff(1.0, 60.0, jitter=False)
    schedule = [policy.failure_delay(k, 0.999) for k in range(9)]
    assert schedule == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_jitter_spans_half_to_full_step() -> None:
    policy = Backoff(0.5, 10.0, jitter=True)
    assert policy.failure_delay(3, 0.0) == 4.0
    assert policy.failure_delay(3, 0.5) == 3.0
    assert policy.failure_delay(3, 0.999999) == pytest.approx(2.0, abs=1e-5)


def test_redial_after_a_healthy_drop() -> None:
    assert Backoff(2.0, 10.0, jitter=False).redial_delay(0.7) == 0.0
    assert Backoff(2.0, 10.0, jitter=True).redial_delay(0.25) == 0.5


def test_youth_is_measured_against_retry_min() -> None:
    policy = Backoff(2.0, 10.0)
    assert policy.is_young(1.999)
    assert not policy.is_young(2.0)


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert Backoff(0.001, 5.0, jitter=False).failure_delay(10**9, 0.3) == 5.0


def test_negative_step_is_a_bug() -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        Backoff().step(-1)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Backoff().retry_min = 3.0  # type: ignore[misc]


durations = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False)


@given(durations, durations, st.booleans(), st.integers(0, 5000), st.floats(0.0, 1.0, exclude_max=True))
def test_delay_is_bounded_by_step(a: float, b: float, jitter: bool, k: int, sample: float) -> None:
    policy = Backoff(min(a, b), max(a, b), jitter)
    step = policy.step(k)
    assert policy.retry_min <= step <= policy.retry_max
    delay = policy.failure_delay(k, sample)
    if jitter:
        assert step / 2 <= delay <= step
    else:
        assert delay == step


@given(durations, durations, st.integers(0, 200))
def test_steps_never_decrease_and_reach_the_cap(a: float, b: float, k: int) -> None:
    policy = Backoff(min(a, b), max(a, b), jitter=False)
    assert policy.step(k) <= policy.step(k + 1)
    assert policy.step(k + 64) == policy.retry_max


@given(durations, st.floats(0.0, 1.0, exclude_max=True))
def test_redial_delay_is_within_retry_min(rmin: float, sample: float) -> None:
    assert 0.0 <= Backoff(rmin, rmin * 4).redial_delay(sample) <= rmin
