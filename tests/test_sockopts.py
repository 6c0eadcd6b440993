"""The keepalive arithmetic: a dead peer noticed within the bound asked for."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perconn._sockopts import keepalive_plan, tcp_options


@pytest.mark.parametrize(
    ("seconds", "plan"),
    [
        (30.0, (15, 5, 3, 30000)),
        (2.0, (1, 1, 1, 2000)),
        (0.5, (1, 1, 1, 1000)),
        (4.0, (1, 1, 3, 4000)),
        (7200.0, (3600, 1200, 3, 7200000)),
    ],
)
def test_plans(seconds: float, plan: tuple[int, int, int, int]) -> None:
    got = keepalive_plan(seconds)
    assert (got.idle, got.interval, got.count, got.user_timeout_ms) == plan


@given(st.floats(min_value=0.001, max_value=10**6))
def test_a_dead_peer_is_noticed_within_the_bound(seconds: float) -> None:
    plan = keepalive_plan(seconds)
    assert plan.idle >= 1 and plan.interval >= 1 and plan.count >= 1
    assert plan.bound <= max(2, seconds)  # whole seconds: 2 s at the least
    assert plan.user_timeout_ms <= max(1000, round(seconds * 1000))


def test_options_for_this_platform() -> None:
    options = {(level, option): value for level, option, value in tcp_options(30.0)}
    assert options[(socket.IPPROTO_TCP, socket.TCP_NODELAY)] == 1
    assert options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 15
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        assert options[(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)] == 30000
    assert len(tcp_options(None)) == 2  # None: the OS's timing
