"""The outbound buffer (``buffer=``): whole writes kept while no connection is up,
handed in order to the next connection before any later write.

I/O-free: the front ends queue writes here while disconnected, hand the queued
writes to a fresh connection one by one (:meth:`Outbox.head`, then
:meth:`Outbox.handed`), and publish that connection only once the queue is
empty, so a write that returned before another began always reaches the peer
first. A write handed to a connection is never handed again, even if that
connection dies with it (TCP cannot tell what the peer read; resending could
duplicate or tear it).
"""

from __future__ import annotations

from collections import deque

__all__ = ["Outbox"]


class Outbox:
    """Writes queued while no connection is up, at most *limit* bytes of them
    (0: none are), and the count of writes that ended with nothing sent."""

    __slots__ = ("_queue", "dropped_writes", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0  # bytes queued
        self.dropped_writes = 0
        # No deque until a write is queued (an empty one is 760 bytes, in every
        # Conn, and most never queue a write): the empty tuple stands for it.
        self._queue: deque[bytes] | tuple[()] = ()

    def __len__(self) -> int:
        return len(self._queue)

    def fits(self, nbytes: int) -> bool:
        """Whether a write of *nbytes* can be queued now."""
        return self.limit > 0 and nbytes <= self.limit - self.size

    def never_fits(self, nbytes: int) -> bool:
        """Whether a write of *nbytes* can never be queued (it waits for a connection)."""
        return nbytes > self.limit

    def put(self, data: bytes) -> None:
        """Queue *data*, which :meth:`fits`."""
        if not isinstance(self._queue, deque):
            self._queue = deque()
        self._queue.append(data)
        self.size += len(data)

    def head(self) -> bytes | None:
        """The oldest queued write, or None if the queue is empty."""
        return self._queue[0] if self._queue else None

    def batch(self, nbytes: int) -> list[bytes]:
        """The oldest queued writes, as many as fit in *nbytes* together (at
        least one, if any is queued), to hand to a connection in one go."""
        taken: list[bytes] = []
        total = 0
        for data in self._queue:
            if taken and total + len(data) > nbytes:
                break
            taken.append(data)
            total += len(data)
        return taken

    def handed(self, data: bytes) -> None:
        """*data*, the :meth:`head` write, was handed to a connection (all of it,
        or part before the connection failed): it leaves the queue for good.
        (Nothing happens if :meth:`discard` emptied the queue meanwhile.)"""
        queue = self._queue
        if isinstance(queue, deque) and queue and queue[0] is data:
            self.size -= len(queue.popleft())

    def refused(self) -> None:
        """A write ended with nothing sent (no room, no connection, in time)."""
        self.dropped_writes += 1

    def discard(self) -> tuple[int, int]:
        """Drop everything queued (``close()``); return (writes, bytes) dropped."""
        writes, nbytes = len(self._queue), self.size
        self._queue = ()
        self.size = 0
        self.dropped_writes += writes
        return writes, nbytes
