"""Two small waiting primitives of the asyncio front end: :class:`Turn`, a lock
whose uncontended take is a plain call (reads take it on every call), and
:class:`Signal`, which wakes every task waiting for a change."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Signal", "Turn"]


class Turn:
    """A first-come, first-served lock for the tasks of one event loop.

    :meth:`try_take` takes it without awaiting when it is free (the hot path);
    :meth:`take` waits for it. :meth:`give` hands it straight to the oldest
    waiter, so no newcomer can take it in between.
    """

    __slots__ = ("_waiters", "busy")

    def __init__(self) -> None:
        self.busy = False
        # A list, not a deque: there are seldom more than a few waiters, and an
        # empty deque is 760 bytes in every Conn (a list, 56).
        self._waiters: list[asyncio.Future[None]] = []

    def locked(self) -> bool:
        """Whether a task has the turn."""
        return self.busy

    def try_take(self) -> bool:
        """Take the turn if it is free; False (nothing done) if it is not."""
        if self.busy:
            return False
        self.busy = True
        return True

    async def take(self) -> None:
        """Wait for the turn and take it. Cancellation while waiting gives up
        the place in line (or the turn, if it was just handed over)."""
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # it was handed to us as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # give() may have passed over it already
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Hand the turn to the oldest waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy = False


class Signal:
    r"""Wakes every task waiting for a change (a connection, room in the buffer,
    the ``Conn`` closing); they then look again at what they wait for.

    Its event is made by the first waiter, not before: most ``Conn``\s never
    wait for a change, and an ``asyncio.Event`` (with its deque) is a kilobyte."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None
