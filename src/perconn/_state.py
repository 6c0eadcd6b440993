"""The connection lifecycle as a pure state machine, shared by both front ends.

Rules (the front end reports events in this order; anything else is a bug and
raises ``RuntimeError``):

1. A new machine is DIALING: the front end dials at once.
2. In DIALING, each failed dial is reported with :meth:`Lifecycle.dial_failed`,
   which returns how long to sleep before the next dial.
3. A successful dial is reported with :meth:`Lifecycle.connected`; the machine is
   CONNECTED and the generation (count of connections established) increases.
4. In CONNECTED, the connection failing is reported with
   :meth:`Lifecycle.connection_lost`, which returns how long to wait before
   redialing; the machine is DIALING again.
5. :meth:`Lifecycle.close` moves any state to CLOSED, for good. Events reported
   after that are ignored (dials racing with close are the norm, not a bug).

The machine never reads the clock or draws random numbers on its own: ``now``
is passed in and the random source is injected.
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable

from ._backoff import Backoff

__all__ = ["Lifecycle", "Phase"]


class Phase(enum.Enum):
    DIALING = "dialing"
    CONNECTED = "connected"
    CLOSED = "closed"


class Lifecycle:
    """Decides when to dial, given what happened to previous dials and connections.

    Args:
        backoff: the policy computing each delay.
        random: source of uniform samples in [0, 1); injected for tests.
    """

    def __init__(self, backoff: Backoff, random: Callable[[], float] = _random.random) -> None:
        self.backoff = backoff
        self._random = random
        self.phase = Phase.DIALING
        self.closed = False
        """Whether :meth:`close` was called (then for good): a plain attribute,
        as front ends read it on every call."""
        self.generation = 0
        """How many connections have been established so far."""
        self.attempts = 0
        """Dials made since the last connection was established (including the successful one)."""
        self._failures = 0
        self._established_at = 0.0

    def _expect(self, phase: Phase, event: str) -> bool:
        if self.phase is Phase.CLOSED:
            return False
        if self.phase is not phase:
            raise RuntimeError(f"{event} reported in phase {self.phase.value}")
        return True

    def _next_failure_delay(self) -> float:
        delay = self.backoff.failure_delay(self._failures, self._random())
        self._failures += 1
        return delay

    def dial_failed(self) -> float:
        """A dial failed: returns the seconds to sleep before the next one."""
        if not self._expect(Phase.DIALING, "dial_failed"):
            return 0.0
        self.attempts += 1
        return self._next_failure_delay()

    def connected(self, now: float) -> int:
        """A dial succeeded at monotonic time *now*: returns the new generation."""
        if not self._expect(Phase.DIALING, "connected"):
            return self.generation
        self.attempts += 1
        self.phase = Phase.CONNECTED
        self.generation += 1
        self._established_at = now
        return self.generation

    def connection_lost(self, now: float) -> float:
        """The connection failed at monotonic time *now*: returns the seconds to wait
        before redialing.

        A connection that lived long enough resets the schedule and is redialed
        after :meth:`Backoff.redial_delay`; one that died young continues it.
        """
        if not self._expect(Phase.CONNECTED, "connection_lost"):
            return 0.0
        self.phase = Phase.DIALING
        self.attempts = 0
        if self.backoff.is_young(now - self._established_at):
            return self._next_failure_delay()
        self._failures = 0
        return self.backoff.redial_delay(self._random())

    def close(self) -> bool:
        """Close for good; returns True the first time only."""
        if self.phase is Phase.CLOSED:
            return False
        self.phase = Phase.CLOSED
        self.closed = True
        return True
