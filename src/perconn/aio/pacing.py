"""The dial gate of an event loop: every dial of a ``perconn.aio.Conn`` on that
loop sleeps its backoff and takes its turn here, so a dial storm cannot starve
the program (the policy is :class:`perconn._pacing.Pacer`'s).

The gate is also the dials' one timer: a dial between two attempts waits on a
single future in the gate's deadlines (:mod:`perconn._timers`: it may wake up
to 1 ms late, never early), not on an ``asyncio.sleep`` of its own (a
coroutine, a timer handle and a context each), so ten thousand dialing
``Conn``\\s make little for the loop to schedule and the garbage collector to walk.

The gates are kept per loop, weakly: a gate holds no reference to its loop but
through the futures of dials in it, and drops those of cancelled dials
(:func:`forget`), so a loop whose ``Conn``\\s were closed can be collected.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Awaitable, Generator
from typing import Any

from .._pacing import Pacer
from .._timers import Timers

__all__ = ["forget", "turn"]


class _Now:
    """An awaitable that is done at once: a turn taken without waiting (one
    object for every loop: it holds none)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # (a generator that ends at once)


_NOW = _Now()


class Gate:
    """One loop's :class:`Pacer`, the dials asleep until their due time, and
    those due waiting for their turn (in the order they came due)."""

    def __init__(self) -> None:
        self.pacer = Pacer()
        self.sleeping: Timers[asyncio.Future[None]] = Timers()
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.due: float | None = None  # when the timer armed last fires (None: none is armed)
        self.active = False  # a dial started since the last tick
        self.cancelled = 0  # dials cancelled in the gate since it last dropped them

    def turn(self, loop: asyncio.AbstractEventLoop, delay: float) -> Awaitable[None]:
        """What a dial awaits to start: done at once, or once *delay* has passed
        and the dials due before it have started."""
        now = loop.time()
        if delay <= 0 and not self.waiting and self.pacer.admit(now):
            # The common case: no storm, no wait. The tick still runs while
            # dials do: its lateness is how the allowance learns the loop is
            # behind even when nobody waits (else an allowance grown large lets
            # every dial through as it comes due, and the loop falls behind).
            self.active = True
            self._arm(loop, now + self.pacer.tick)
            return _NOW
        waiter = loop.create_future()
        if delay > 0:
            self._arm(loop, self.sleeping.add(now + delay, waiter))
        else:
            self.waiting.append(waiter)
            self._arm(loop, now + self.pacer.tick)
        return waiter

    def forget(self) -> None:
        """A dial waiting in the gate was cancelled (its ``Conn`` closed). Once
        the cancelled are half of those in the gate, they are dropped: what is
        left of a closed ``Conn`` must not keep its loop alive."""
        self.cancelled += 1
        if 2 * self.cancelled > len(self.sleeping) + len(self.waiting):
            self.sleeping.retain(_pending)
            self.waiting = collections.deque(waiter for waiter in self.waiting if not waiter.done())
            self.cancelled = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """Have the timer fire by *due*. An earlier timer is not cancelled (the
        gate keeps no handle: it would hold the loop): it finds itself stale."""
        if self.due is not None and self.due <= due:
            return
        self.due = due
        loop.call_at(due, self._release, loop, due)

    def _release(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if due != self.due:  # stale: re-armed to fire earlier, and fired then
            return
        self.due = None
        now = loop.time()
        self.pacer.ran_late(now - due)
        waiting = self.waiting
        waiting.extend(self.sleeping.pop_due(now))
        while waiting:
            if waiting[0].done():  # cancelled: the Conn closed
                waiting.popleft()
            elif self.pacer.admit(now):
                waiting.popleft().set_result(None)
                self.active = True
            else:
                break
        if waiting or self.active:
            self._arm(loop, now + self.pacer.tick)
        elif (first := self.sleeping.next_due()) is not None:
            self._arm(loop, first)
        self.active = False


def _pending(waiter: asyncio.Future[None]) -> bool:
    return not waiter.done()


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def _gate(loop: asyncio.AbstractEventLoop) -> Gate:
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = Gate()
    return gate


def turn(delay: float = 0.0) -> Awaitable[None]:
    """What to await to sleep *delay* seconds, then wait for this dial's turn on
    the running loop (at once unless dials are already waiting, or this tick's
    allowance is used up). Not a coroutine: a dial asleep is one future in the
    gate's heap. A dial cancelled while it awaits this calls :func:`forget`."""
    loop = asyncio.get_running_loop()
    return _gate(loop).turn(loop, delay)


def forget() -> None:
    """The dial awaiting :func:`turn` on the running loop was cancelled."""
    _gate(asyncio.get_running_loop()).forget()
