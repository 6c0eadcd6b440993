"""The socket options every TCP connection gets, computed once for both front ends.

``TCP_NODELAY`` (request/response protocols must not wait for Nagle), and a
dead-peer bound from one ``keepalive`` value: ``SO_KEEPALIVE`` with
``TCP_KEEPIDLE``/``TCP_KEEPINTVL``/``TCP_KEEPCNT`` chosen so that an idle peer
that vanished (no FIN, no RST) is noticed within ``keepalive`` seconds, and
``TCP_USER_TIMEOUT`` so that a write the peer never acknowledges fails within
the same bound. Pure arithmetic: the front ends apply the list to their sockets.

Where the platform lacks an option it is left out: macOS has ``TCP_KEEPALIVE``
(its name for the idle time), ``TCP_KEEPINTVL`` and ``TCP_KEEPCNT`` but no
``TCP_USER_TIMEOUT``, so there an unacknowledged write is bounded only by the
OS's retransmission limit. The options use whole seconds: a ``keepalive`` under
2 s is noticed within 2 s.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

__all__ = ["KeepalivePlan", "SockOpt", "keepalive_plan", "tcp_options"]

SockOpt = tuple[int, int, int]
"""(level, option, value), as ``setsockopt`` takes them."""


@dataclass(frozen=True)
class KeepalivePlan:
    """Keepalive settings that notice a dead peer within a bound.

    An idle connection sends its first probe after ``idle`` seconds, then one
    every ``interval`` seconds; ``count`` unanswered probes end it, so it is
    noticed after at most ``idle + interval * count`` seconds. ``user_timeout_ms``
    bounds how long written data may stay unacknowledged (Linux also ends an
    idle connection then, once a probe went unanswered).
    """

    idle: int
    interval: int
    count: int
    user_timeout_ms: int

    @property
    def bound(self) -> int:
        """Seconds within which an idle dead peer is noticed."""
        return self.idle + self.interval * self.count


def keepalive_plan(seconds: float) -> KeepalivePlan:
    """The settings that notice a dead peer within *seconds* (> 0); at least 2 s."""
    total = max(2, math.floor(seconds))
    count = 3 if total >= 4 else 1
    interval = max(1, total // (2 * count))
    idle = total - interval * count
    return KeepalivePlan(idle=idle, interval=interval, count=count, user_timeout_ms=max(1000, round(seconds * 1000)))


def tcp_options(keepalive: float | None) -> list[SockOpt]:
    """Every option a TCP connection gets on this platform (*keepalive* None:
    ``TCP_NODELAY`` and ``SO_KEEPALIVE`` only, the OS's keepalive timing)."""
    options: list[SockOpt] = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    if keepalive is None:
        return options
    plan = keepalive_plan(keepalive)
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)  # macOS: TCP_KEEPALIVE
    for name, value in ((idle, plan.idle), (getattr(socket, "TCP_KEEPINTVL", None), plan.interval)):
        if name is not None:
            options.append((socket.IPPROTO_TCP, name, value))
    for option, value in (("TCP_KEEPCNT", plan.count), ("TCP_USER_TIMEOUT", plan.user_timeout_ms)):
        if hasattr(socket, option):
            options.append((socket.IPPROTO_TCP, getattr(socket, option), value))
    return options
