"""How many dials an event loop may start at once: the asyncio front end's answer
to a dial storm (I/O-free; :mod:`perconn.aio.pacing` drives it).

Ten thousand ``Conn``\\s redialing a dead server ask for more dials than one
loop can make; started as they come due, they fill every loop iteration and
the program's own callbacks (and ``close()``) wait seconds. So dials are let
through in *ticks*: at most :attr:`Pacer.allowance` per tick, the rest wait
their turn, first come first served. The allowance adapts to the loop
(additive increase, multiplicative decrease): when the tick that releases the
waiting dials runs late by more than a tick, the loop is saturated and the
allowance halves; when it runs on time, and the dials used all of it, it grows
by an eighth, up to :data:`MOST` (an allowance grown while nobody needed it
would let a burst of dials through at once). A program with a few
``Conn``\\s never waits: the allowance starts at :data:`START`.
"""

from __future__ import annotations

__all__ = ["MOST", "START", "TICK", "Pacer"]

TICK = 0.005
"""Seconds: the length of a tick, and the lateness that says the loop is saturated."""

START = 64
"""Dials per tick allowed at first (and at least ``1`` whatever the load)."""

MOST = 256
"""The most dials per tick the allowance grows to (51,200 a second: more than a
loop can make; a loop that could would still run a tick's dials in one iteration)."""


class Pacer:
    """The allowance of dials per tick, and how much of the current tick's is used.

    Times are the caller's clock (monotonic seconds), passed in: the policy is
    tested without waiting.
    """

    def __init__(self, tick: float = TICK, start: int = START, most: int = MOST) -> None:
        self.tick = tick
        self.allowance = start
        self.most = most
        self.used = 0
        self._since = float("-inf")  # when the current tick began

    def admit(self, now: float) -> bool:
        """Whether a dial may start at *now* (it is counted if so)."""
        if now - self._since >= self.tick:
            self._since = now
            self.used = 0
        if self.used < self.allowance:
            self.used += 1
            return True
        return False

    def ran_late(self, lateness: float) -> None:
        """A tick that releases waiting dials ran *lateness* seconds after it was due."""
        if lateness > self.tick:
            self.allowance = max(1, self.allowance // 2)
        elif self.used >= self.allowance:
            self.allowance = min(self.most, self.allowance + max(1, self.allowance // 8))
