"""Happy Eyeballs' I/O-free core: the order addresses are tried in and the race's
schedule, checked without sockets or clocks (the tests pass ``now``)."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perconn._address import parse_address
from perconn._eyeballs import ATTEMPT_DELAY, Race, interleave
from perconn._lookup import Target

V6, V4 = socket.AF_INET6, socket.AF_INET
ADDRESS = parse_address("example.test:80")


def v6(n: int) -> Target:
    return (V6, 6, (f"2001:db8::{n}", 80, 0, 0))


def v4(n: int) -> Target:
    return (V4, 6, (f"192.0.2.{n}", 80))


def refused() -> OSError:
    return OSError(errno.ECONNREFUSED, "Connection refused")


# -- interleave ---------------------------------------------------------------


def test_the_first_family_leads_then_families_alternate() -> None:
    assert interleave([v6(1), v6(2), v6(3), v4(1), v4(2)]) == [v6(1), v4(1), v6(2), v4(2), v6(3)]
    assert interleave([v4(1), v6(1), v6(2), v6(3), v4(2)]) == [v4(1), v6(1), v4(2), v6(2), v6(3)]


def test_one_family_or_one_address_keeps_the_resolvers_order() -> None:
    assert interleave([v4(3), v4(1), v4(2)]) == [v4(3), v4(1), v4(2)]
    unix = (socket.AF_UNIX, 0, "/run/app.sock")
    assert interleave([unix]) == [unix]
    assert interleave([]) == []


def test_the_rule_is_rfc_8305s_recommended_delay() -> None:
    assert ATTEMPT_DELAY == 0.25


targets_lists = st.lists(
    st.tuples(st.sampled_from([V6, V4, socket.AF_UNIX]), st.integers(0, 5)).map(lambda t: (t[0], 0, (f"a{t[1]}", 80))),
    max_size=12,
)


@given(targets_lists)
def test_interleave_keeps_every_target_and_each_familys_order(targets: list[Target]) -> None:
    order = interleave(targets)
    assert sorted(order, key=repr) == sorted(targets, key=repr)  # a permutation: all kept, duplicates too
    for family in {t[0] for t in targets}:
        assert [t for t in order if t[0] == family] == [t for t in targets if t[0] == family]
    if targets:
        assert order[0] == targets[0]  # the resolver's first answer is tried first


@given(targets_lists)
def test_interleave_alternates_while_two_families_last(targets: list[Target]) -> None:
    order = interleave(targets)
    families = [t[0] for t in order]
    first_seen = list(dict.fromkeys(t[0] for t in targets))
    counts = {f: families.count(f) for f in first_seen}
    rounds = min(counts.values()) if counts else 0
    # while every family still has targets, each round takes one of each, in first-seen order
    assert families[: rounds * len(first_seen)] == first_seen * rounds


# -- the race's schedule --------------------------------------------------------


def test_attempts_start_a_delay_apart_without_abandoning_the_earlier() -> None:
    race = Race(ADDRESS, [v6(1), v6(2), v4(1)])
    assert race.start(10.0) == v6(1)
    assert race.start(10.0) is None  # not yet due
    assert race.wait(10.0) == ATTEMPT_DELAY
    assert race.wait(10.1) == pytest.approx(ATTEMPT_DELAY - 0.1)
    assert race.start(10.0 + ATTEMPT_DELAY) == v4(1)  # interleaved: IPv4 second
    assert race.running == 2  # the first one goes on
    assert race.start(10.0 + 2 * ATTEMPT_DELAY) == v6(2)
    assert race.start(100.0) is None and race.wait(100.0) is None  # all started
    assert not race.lost


def test_a_failure_starts_the_next_at_once() -> None:
    race = Race(ADDRESS, [v4(1), v4(2), v4(3)])
    assert race.start(0.0) == v4(1)
    assert race.start(0.01) is None
    race.failed(refused())
    assert race.wait(0.01) == 0.0
    assert race.start(0.01) == v4(2)
    assert race.start(0.02) is None  # and the delay counts from that start
    assert race.wait(0.02) == pytest.approx(ATTEMPT_DELAY - 0.01)


def test_a_failure_while_another_attempt_runs_starts_the_next_at_once() -> None:
    race = Race(ADDRESS, [v4(1), v4(2), v4(3)])
    assert race.start(0.0) == v4(1)
    assert race.start(ATTEMPT_DELAY) == v4(2)
    race.failed(refused())  # one of the two failed; the other still runs
    assert race.running == 1
    assert race.start(ATTEMPT_DELAY + 0.001) == v4(3)


def test_the_race_is_lost_when_every_attempt_failed_and_says_the_last_error() -> None:
    race = Race(ADDRESS, [v4(1), v4(2)])
    race.start(0.0)
    race.start(ATTEMPT_DELAY)
    race.failed(OSError(errno.EHOSTUNREACH, "No route to host"))
    assert not race.lost
    race.failed(refused())
    assert race.lost
    assert race.error.errno == errno.ECONNREFUSED


def test_no_address_is_a_lost_race_that_says_so() -> None:
    race = Race(ADDRESS, [])
    assert race.start(0.0) is None and race.lost
    assert race.error.errno == errno.EADDRNOTAVAIL
    assert str(race.error) == "[Errno 99] no address found for example.test:80"


def test_a_zero_delay_starts_every_attempt_at_once() -> None:
    race = Race(ADDRESS, [v6(1), v4(1), v6(2)], delay=0.0)
    assert [race.start(5.0) for _ in range(4)] == [v6(1), v4(1), v6(2), None]


@given(st.integers(1, 8), st.lists(st.floats(0.0, 1.0), max_size=20))
def test_every_target_starts_exactly_once_in_interleaved_order(n: int, steps: list[float]) -> None:
    targets = [v6(i) if i % 3 else v4(i) for i in range(n)]
    race = Race(ADDRESS, targets)
    started: list[Target] = []
    now = 0.0
    for step in [*steps, *[ATTEMPT_DELAY] * n]:  # bounded: enough time for every start
        while (target := race.start(now)) is not None:
            started.append(target)
        now += step
    assert started == interleave(targets)
