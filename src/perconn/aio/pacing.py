"""The dial gate of an event loop: every dial of a ``perconn.aio.Conn`` on that
loop takes its turn here first, so a dial storm cannot starve the program (the
policy is :class:`perconn._pacing.Pacer`'s)."""

from __future__ import annotations

import asyncio
import collections
import weakref

from .._pacing import Pacer

__all__ = ["turn"]


class Gate:
    """One loop's :class:`Pacer` and the dials waiting for their turn, in order."""

    def __init__(self) -> None:
        self.pacer = Pacer()
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.active = False  # a dial started since the last tick

    async def turn(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.waiting and self.pacer.admit(loop.time()):
            # The common case: no storm, no wait. The tick still runs while
            # dials do: its lateness is how the allowance learns the loop is
            # behind even when nobody waits (else an allowance grown large lets
            # every dial through as it comes due, and the loop falls behind).
            self.active = True
            if self.timer is None:
                self._schedule(loop)
            return
        waiter = loop.create_future()
        self.waiting.append(waiter)
        if self.timer is None:
            self._schedule(loop)
        await waiter  # (cancelled: the release passes over it)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + self.pacer.tick
        self.timer = loop.call_at(due, self._release, loop, due)

    def _release(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.timer = None
        now = loop.time()
        self.pacer.ran_late(now - due)
        waiting = self.waiting
        while waiting:
            if waiting[0].done():  # cancelled: the Conn closed
                waiting.popleft()
            elif self.pacer.admit(now):
                waiting.popleft().set_result(None)
                self.active = True
            else:
                break
        if waiting or self.active:
            self._schedule(loop)
        self.active = False


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


async def turn() -> None:
    """Wait for this dial's turn on the running loop (at once unless dials are
    already waiting, or this tick's allowance is used up)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = Gate()
    await gate.turn(loop)
