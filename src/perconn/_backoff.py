"""The backoff policy: how long to wait before the next dial.

A frozen value with pure arithmetic: it never sleeps, never reads the clock and
never draws random numbers itself. Callers pass a uniform sample in ``[0, 1)``,
so schedules are tested without waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY_MAX", "DEFAULT_RETRY_MIN", "Backoff"]

DEFAULT_RETRY_MIN = 1.0
"""Seconds: the first backoff step, as in the Go library this one follows."""

DEFAULT_RETRY_MAX = 60.0
"""Seconds: the cap on any backoff step, as in the Go library this one follows."""


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff bounded by ``retry_min`` and ``retry_max``.

    The k-th consecutive failure (k = 0, 1, ...) is followed by a sleep of
    ``d_k = min(retry_max, retry_min * 2**k)``; with ``jitter`` the sleep is
    drawn uniformly from ``[d_k / 2, d_k]`` so a fleet of clients does not redial
    in lockstep. Values are validated by :func:`perconn._options.make_options`.
    """

    retry_min: float = DEFAULT_RETRY_MIN
    retry_max: float = DEFAULT_RETRY_MAX
    jitter: bool = True

    def step(self, k: int) -> float:
        """The un-jittered delay ``d_k`` after the k-th consecutive failure."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        # ldexp(x, k) == x * 2**k without building a huge int; cap k so it cannot overflow.
        return min(self.retry_max, math.ldexp(self.retry_min, min(k, 1000)))

    def failure_delay(self, k: int, sample: float) -> float:
        """Seconds to sleep after the k-th consecutive failure; *sample* is uniform in [0, 1)."""
        d = self.step(k)
        return d - d * sample / 2 if self.jitter else d

    def redial_delay(self, sample: float) -> float:
        """Seconds to wait before redialing after a healthy connection dropped.

        Uniform in ``[0, retry_min]`` with jitter, else 0: a dropped connection is
        redialed at once (but not by every client of a fleet at the same instant).
        """
        return self.retry_min * sample if self.jitter else 0.0

    def is_young(self, lifetime: float) -> bool:
        """Whether a connection that lived *lifetime* seconds died young.

        A young death counts as a failure: it does not reset the schedule, so a
        server that accepts and immediately closes is redialed at a rate decaying
        to one per ``retry_max`` instead of in a tight loop.
        """
        return lifetime < self.retry_min
