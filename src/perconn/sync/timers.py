"""The deadlines the dialer thread (:mod:`perconn.sync.hub`) waits for, in
buckets of :data:`GRAIN` seconds.

In a dial storm every sleeping dial has a deadline, and the thread takes the
due ones out and puts new ones in at thousands a second. A heap of them all
compares deadlines a dozen times per push and per pop, over entries scattered
in memory; buckets cost a dict lookup and a list append, and a heap of the
buckets' numbers alone (a few hundred, not ten thousand). The price is that a
deadline is kept up to one :data:`GRAIN` late, never early.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["GRAIN", "Timers"]

GRAIN = 0.001
"""Seconds: a deadline is rounded up to the next multiple of this."""


class _Tokened(Protocol):
    token: int


T = TypeVar("T", bound=_Tokened)


class Timers(Generic[T]):
    """Deadlines of *T*\\s (jobs), each valid while the job's ``token`` is the one
    it was added with: a job that moved on (resumed early, aborted) makes its
    deadline stale, skipped when its bucket is due, with no search to remove it."""

    def __init__(self) -> None:
        self._buckets: dict[int, list[tuple[T, int]]] = {}
        self._keys: list[int] = []  # a heap of the buckets' numbers

    def add(self, deadline: float, job: T) -> None:
        """Wake *job* at *deadline* (monotonic seconds), or up to a grain later."""
        key = math.ceil(deadline / GRAIN)
        if key * GRAIN < deadline:  # (the division rounded down to a whole number)
            key += 1
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [(job, job.token)]
            heapq.heappush(self._keys, key)
        else:
            bucket.append((job, job.token))

    def next_due(self) -> float | None:
        """When the first bucket is due (None: no deadline). Its deadlines may all
        be stale: the caller then wakes once for nothing."""
        return self._keys[0] * GRAIN if self._keys else None

    def pop_due(self, now: float) -> Iterator[T]:
        """The jobs whose deadlines passed by *now*, taken out; stale ones skipped."""
        keys, buckets = self._keys, self._buckets
        while keys and keys[0] * GRAIN <= now:
            for job, token in buckets.pop(heapq.heappop(keys)):
                if job.token == token:
                    yield job

    def __len__(self) -> int:
        """Deadlines held, stale ones included."""
        return sum(map(len, self._buckets.values()))
