"""Waiting for a name lookup (:mod:`perconn._lookup`) on an event loop.

The dials of one loop waiting for one lookup wait as a group: the lookup's
thread makes one call into the loop when it is done (``call_soon_threadsafe``
once, not once per dial), and the group's deadlines (each dial's budget) share
one timer, in 1 ms buckets (:mod:`perconn._timers`). In a storm, the dials of
a name pile up waiting for each of its lookups; this way each holds one future
while it waits, not a timer handle, a context and a callback of its own.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

from .._lookup import Lookup
from .._timers import Timers

__all__ = ["wait_for"]


class _Group:
    """The dials of *loop* waiting for *lookup*; it ends (no timer, no callback
    left) when the lookup is done or no dial waits any longer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lookup: Lookup, groups: dict[Lookup, _Group]) -> None:
        self._loop = loop
        self._lookup = lookup
        self._groups = groups
        self._waiters: list[asyncio.Future[None]] = []
        self._deadlines: Timers[asyncio.Future[None]] = Timers()
        self._live = 0  # waiters neither woken nor gone
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when _timer fires

    def start(self) -> bool:
        """Ask to be told when the lookup is done; False if it is done already."""
        return self._lookup.notify(self, functools.partial(self._loop.call_soon_threadsafe, self._done))

    def add(self, seconds: float | None) -> asyncio.Future[None]:
        """A future done when the lookup is, or *seconds* passed (None: no bound)."""
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._live += 1
        if seconds is not None:
            due = self._deadlines.add(self._loop.time() + seconds, waiter)
            if self._timer is None or due < self._due:
                self._arm(due)
        return waiter

    def left(self) -> None:
        """A waiter went (cancelled: its ``Conn`` closed) or was woken at its deadline."""
        self._live -= 1
        if self._live <= 0:
            self._end()

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._due = self._loop.call_at(due, self._expire), due

    def _expire(self) -> None:
        self._timer = None
        for waiter in self._deadlines.pop_due(self._loop.time()):
            if not waiter.done():
                waiter.set_result(None)
        due = self._deadlines.next_due()
        if due is not None and self._live > 0:
            self._arm(due)

    def _done(self) -> None:  # on the loop: the lookup is done
        waiters, self._waiters = self._waiters, []
        self._end()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _end(self) -> None:
        if self._groups.get(self._lookup) is self:
            del self._groups[self._lookup]
        self._lookup.notify(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines = Timers()


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Lookup, _Group]] = weakref.WeakKeyDictionary()


async def wait_for(lookup: Lookup, seconds: float | None) -> bool:
    """Wait on the running loop until *lookup* is done, for at most *seconds*
    (None: no bound); whether it is done. Cancelling the wait leaves the lookup
    going (for the next dial) and nothing of the wait in the loop."""
    if lookup.done:
        return True
    loop = asyncio.get_running_loop()
    groups = _groups.get(loop)
    if groups is None:
        groups = _groups[loop] = {}
    group = groups.get(lookup)
    if group is None:
        group = _Group(loop, lookup, groups)
        if not group.start():
            return True
        groups[lookup] = group
    waiter = group.add(seconds)
    try:
        await waiter
    finally:
        if not lookup.done:  # woken at its deadline, or cancelled (once done, the group has ended)
            group.left()
    return lookup.done
