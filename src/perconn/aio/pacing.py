"""The dial gate of an event loop: every dial of a ``perconn.aio.Conn`` on that
loop sleeps its backoff and takes its turn here, so a dial storm cannot starve
the program (the policy is :class:`perconn._pacing.Pacer`'s).

The gate is also the dials' one timer: a dial between two attempts waits on a
single future in the gate's heap, not on an ``asyncio.sleep`` of its own (a
coroutine, a timer handle and a context each), so ten thousand dialing
``Conn``\\s make little for the loop to schedule and the garbage collector to walk.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import weakref

from .._pacing import Pacer

__all__ = ["turn"]


class Gate:
    """One loop's :class:`Pacer`, the dials asleep until their due time (a
    heap), and those due waiting for their turn (in the order they came due)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pacer = Pacer()
        self.sleeping: list[tuple[float, int, asyncio.Future[None]]] = []
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0  # when the timer fires
        self.active = False  # a dial started since the last tick
        self._seq = itertools.count()  # orders sleepers due at the same time
        self._now: asyncio.Future[None] = loop.create_future()  # a turn taken at once
        self._now.set_result(None)

    def turn(self, delay: float) -> asyncio.Future[None]:
        """A future done when the dial may start: at once (done already), or
        once *delay* has passed and the dials due before it have started."""
        loop = self.loop
        now = loop.time()
        if delay <= 0 and not self.waiting and self.pacer.admit(now):
            # The common case: no storm, no wait. The tick still runs while
            # dials do: its lateness is how the allowance learns the loop is
            # behind even when nobody waits (else an allowance grown large lets
            # every dial through as it comes due, and the loop falls behind).
            self.active = True
            self._arm(now + self.pacer.tick)
            return self._now
        waiter = loop.create_future()
        if delay > 0:
            heapq.heappush(self.sleeping, (now + delay, next(self._seq), waiter))
            self._arm(now + delay)
        else:
            self.waiting.append(waiter)
            self._arm(now + self.pacer.tick)
        return waiter  # (cancelled with its task: the release passes over it)

    def _arm(self, due: float) -> None:
        """Have the timer fire by *due*."""
        if self.timer is not None:
            if self.due <= due:
                return
            self.timer.cancel()  # (rare: a sleep shorter than what is scheduled)
        self.due = due
        self.timer = self.loop.call_at(due, self._release, due)

    def _release(self, due: float) -> None:
        self.timer = None
        now = self.loop.time()
        self.pacer.ran_late(now - due)
        sleeping, waiting = self.sleeping, self.waiting
        while sleeping and sleeping[0][0] <= now:
            waiting.append(heapq.heappop(sleeping)[2])
        while waiting:
            if waiting[0].done():  # cancelled: the Conn closed
                waiting.popleft()
            elif self.pacer.admit(now):
                waiting.popleft().set_result(None)
                self.active = True
            else:
                break
        if waiting or self.active:
            self._arm(now + self.pacer.tick)
        elif sleeping:
            self._arm(sleeping[0][0])
        self.active = False


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def turn(delay: float = 0.0) -> asyncio.Future[None]:
    """What to await to sleep *delay* seconds, then wait for this dial's turn on
    the running loop (at once unless dials are already waiting, or this tick's
    allowance is used up). A future, not a coroutine: a dial asleep is one
    object in the gate's heap."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = Gate(loop)
    return gate.turn(delay)
