"""Which connection a read consumes, and how a read finds the end of what it wants.

Both front ends keep, per connection, the bytes received but not yet returned
(``buffer``) and why the connection ended (``failure``, None while it is up).
This module decides, I/O-free, which connection's bytes a read may return:

1. Reads consume one connection at a time, in order, never mixing two.
2. **Reads follow writes.** Once a write has gone out on a newer connection than
   the one being read, the older one's unread bytes are discarded (the front end
   logs how many) and reads move to the connection the write went to: a reply is
   never read from a previous connection's leftovers.
3. Otherwise a connection's bytes are read to the last, then its end is raised
   (:class:`ConnectionIOError`), once, if the reader could be owed something
   from it (bytes were left, or a write went out on it since the last read
   returned); a connection that ended idle is passed over silently. Then reads
   move to the live connection.

The framing functions (:func:`some`, :func:`exactly`, :func:`until`) return where
the wanted item ends in a buffer, or -1 while it is incomplete.
"""

from __future__ import annotations

import contextlib
from asyncio import LimitOverrunError
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._errors import ConnectionIOError

__all__ = ["DEFAULT_LIMIT", "Cursor", "Frame", "exactly", "some", "take", "until"]

DEFAULT_LIMIT = 2**16
"""Bytes: the default bound of ``readuntil``, as for asyncio streams."""

Frame = Callable[[bytearray], int]
"""Where the wanted item ends in a buffer (its length), or -1 while incomplete."""


class Stream(Protocol):
    """What the cursor needs of a connection."""

    buffer: bytearray
    failure: BaseException | None
    generation: int
    address: str
    owes_end: bool  # set by Cursor.ending(): whether a reader must hear of its end


S = TypeVar("S", bound=Stream)


def take(buffer: bytearray, n: int) -> bytes:
    """The first *n* bytes of *buffer*, removed from it; copied once (a slice of
    a ``bytearray`` would be a second copy)."""
    if n >= len(buffer):
        data = bytes(buffer)
        buffer.clear()
        return data
    data = bytes(memoryview(buffer)[:n])  # (the view is released at once: the del below may resize)
    del buffer[:n]
    return data


def some(n: int) -> Frame:
    """1 to *n* bytes: whatever is there."""
    return lambda buf: (n if n < len(buf) else len(buf)) if buf else -1


def exactly(n: int) -> Frame:
    """Exactly *n* bytes."""
    return lambda buf: n if len(buf) >= n else -1


def until(separator: bytes, limit: int) -> Frame:
    """Up to and including *separator*, which must come within *limit* bytes.

    The frame raises :class:`asyncio.LimitOverrunError` (consuming nothing) when
    *limit* bytes are buffered without a separator, or the separator ends past it.
    """

    def frame(buf: bytearray) -> int:
        at = buf.find(separator)
        end = -1 if at < 0 else at + len(separator)
        if end > limit or (end < 0 and len(buf) >= limit):
            raise LimitOverrunError(f"separator not found within limit={limit} bytes", min(len(buf), limit))
        return end

    return frame


def ended(stream: Stream, partial: bytes = b"") -> ConnectionIOError:
    """The error a reader gets for a connection that ended."""
    assert stream.failure is not None
    return ConnectionIOError("read", stream.failure, partial, address=stream.address)


class Cursor(Generic[S]):
    """The read side's bookkeeping: which connection reads consume, which ended
    connections still owe a reader something, and which one the newest write
    went to. The front end serialises reads; it calls :meth:`wrote` on every
    write, :meth:`ending` when a connection ends, :meth:`attach` when one is
    established, and :meth:`returned` when a read returns.
    """

    __slots__ = ("_owing", "owed", "reading", "write_owed")

    def __init__(self) -> None:
        self.reading: S | None = None
        """The connection reads consume (it may have ended), or None: the next one."""
        self.owed: S | None = None
        """The connection the newest write went to since a read last returned."""
        # Ended, not yet read, owing bytes or an end: seldom more than one, so a
        # list (56 bytes; an empty deque is 760, in every Conn).
        self._owing: list[S] = []
        self.write_owed: S | None = None
        """A connection that failed (not a clean close) with a write unanswered
        on it, whose end no call has raised yet: the next write raises it
        (:meth:`tell_writer`), so a writer never loses track of a failure."""

    def wrote(self, stream: S) -> None:
        """A write went out on *stream*."""
        self.owed = stream

    def attach(self, stream: S) -> None:
        """*stream* is the new live connection; reads start on it unless an older
        one still owes the reader something."""
        if self.reading is None and not self._owing:
            self.reading = stream

    def ending(self, stream: S) -> None:
        """*stream* ended (its ``failure`` is set now); call before waking readers.

        A reader blocked on it sees the end itself; a later reader is owed it
        only if bytes were left unread or a write went out on it since a read
        last returned. Such a connection is read (or discarded) before any newer one.
        """
        stream.owes_end = bool(stream.buffer) or self.owed is stream
        if stream.owes_end and stream is not self.reading:
            self._owing.append(stream)
        if self.owed is stream and not isinstance(stream.failure, EOFError):
            self.write_owed = stream

    def raised(self, stream: S) -> None:
        """A call heard of *stream*'s end itself: nobody is owed it any more."""
        stream.owes_end = False
        if self.reading is stream:
            self.reading = None
        if self.owed is stream:
            self.owed = None
        if self.write_owed is stream:
            self.write_owed = None
        with contextlib.suppress(ValueError):  # not queued (or a reader took it meanwhile)
            self._owing.remove(stream)

    def tell_writer(self) -> ConnectionIOError | None:
        """The error the next write raises: the end of :attr:`write_owed` (once;
        reads then do not raise it again), or None."""
        stream = self.write_owed
        if stream is None:
            return None
        self.raised(stream)
        assert stream.failure is not None
        return ConnectionIOError("write", stream.failure, address=stream.address)

    def returned(self, stream: S) -> None:
        """A read returned bytes of *stream*: the reader is owed nothing more from it
        (a write that went meanwhile to a newer connection is still owed)."""
        if self.owed is stream:
            self.owed = None

    def pick(self, live: S | None, discarded: Callable[[S, int], None]) -> S | None:
        """The connection the next read consumes (its buffer first, then its
        socket if it is *live*), or None: wait for a live connection.
        *discarded* is told ``(stream, nbytes)`` when unread bytes are discarded.

        Raises:
            ConnectionIOError: the end of the connection being read, which the
                reader is owed; reads then move on.
        """
        while True:
            stream = self.reading
            if stream is None:
                if not self._owing:
                    self.reading = live
                    return live
                stream = self.reading = self._owing.pop(0)
            if stream is live:
                return live
            owed = self.owed
            if owed is not None and owed.generation > stream.generation:
                self._discard(stream, discarded)  # rule 2: a write went to a newer connection
                while self._owing and self._owing[0].generation < owed.generation:
                    self._discard(self._owing.pop(0), discarded)
                self.reading = None
                continue
            if stream.buffer or stream.failure is None:
                return stream  # rule 3: its bytes to the last
            self.reading = None
            if owed is stream:
                self.owed = None
            if stream.owes_end:
                self.raised(stream)
                raise ended(stream)

    @staticmethod
    def _discard(stream: S, discarded: Callable[[S, int], None]) -> None:
        if stream.buffer:
            discarded(stream, len(stream.buffer))
            stream.buffer.clear()
