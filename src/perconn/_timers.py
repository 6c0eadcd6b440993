"""The deadlines of sleeping dials, in buckets of :data:`GRAIN` seconds, as both
front ends keep them: the synchronous dialer thread (:mod:`perconn.sync.hub`)
and each event loop's dial gate (:mod:`perconn.aio.pacing`).

In a dial storm every sleeping dial has a deadline, and the due ones are taken
out and new ones put in at thousands a second. A heap of them all compares
deadlines a dozen times per push and per pop, over entries scattered in memory;
buckets cost a dict lookup and a list append, and a heap of the buckets'
numbers alone (a few hundred, not ten thousand). The price is that a deadline
is kept up to one :data:`GRAIN` late, never early.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["GRAIN", "Timers"]

GRAIN = 0.001
"""Seconds: a deadline is rounded up to the next multiple of this."""

T = TypeVar("T")


class Timers(Generic[T]):
    """Items (a sleeping dial) each due at a deadline. An item is not taken out
    when its dial moves on early (woken, cancelled): its holder skips it when it
    comes due, with no search to remove it."""

    def __init__(self) -> None:
        self._buckets: dict[int, list[T]] = {}
        self._keys: list[int] = []  # a heap of the buckets' numbers
        self._count = 0

    def add(self, deadline: float, item: T) -> float:
        """*item* is due at *deadline* (seconds, on the holder's clock), or up to a
        grain later: returns when (its bucket's time)."""
        key = math.ceil(deadline / GRAIN)
        if key * GRAIN < deadline:  # (the division rounded down to a whole number)
            key += 1
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [item]
            heapq.heappush(self._keys, key)
        else:
            bucket.append(item)
        self._count += 1
        return key * GRAIN

    def next_due(self) -> float | None:
        """When the first bucket is due (None: no item)."""
        return self._keys[0] * GRAIN if self._keys else None

    def pop_due(self, now: float) -> Iterator[T]:
        """The items due by *now*, taken out, in the order of their buckets."""
        keys, buckets = self._keys, self._buckets
        while keys and keys[0] * GRAIN <= now:
            bucket = buckets.pop(heapq.heappop(keys))
            self._count -= len(bucket)
            yield from bucket

    def retain(self, keep: Callable[[T], bool]) -> None:
        """Drop the items *keep* says no to (dials that will not wake)."""
        kept = {key: items for key, bucket in self._buckets.items() if (items := [x for x in bucket if keep(x)])}
        self._buckets = kept
        self._keys = list(kept)
        heapq.heapify(self._keys)
        self._count = sum(map(len, kept.values()))

    def __len__(self) -> int:
        """Items held (those that moved on included, until they come due or are dropped)."""
        return self._count
