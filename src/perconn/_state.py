"""The connection lifecycle as a pure state machine, shared by both front ends.

Rules (the front end reports events in this order; anything else is a bug and
raises ``RuntimeError``):

1. A new machine is DIALING: the front end dials at once.
2. In DIALING, every dial begins with :meth:`Lifecycle.expired` (which gives
   up once ``give_up_after`` ran out), then :meth:`Lifecycle.begin_dial`, which
   returns how long the dial may take (``dial_timeout``, shortened to what is
   left before ``give_up_after``).
3. A failed dial (a failed ``on_connect`` hook included) is reported with
   :meth:`Lifecycle.dial_failed`; the k-th consecutive failure sleeps the
   backoff's k-th step.
4. A successful dial (hook included) is reported with :meth:`Lifecycle.established`;
   the machine is CONNECTED and the generation increases.
5. A connection *proves itself* when its hook succeeded, when it received bytes
   (:meth:`Lifecycle.proved`) or when it lived ``retry_min`` seconds. When it
   ends (:meth:`Lifecycle.dropped`, or :meth:`Lifecycle.reconnect`), the
   machine is DIALING again: a proven connection resets the backoff schedule
   and is redialed after :meth:`Backoff.redial_delay`; one that was not
   continues the schedule, so a server that accepts and closes at once is not
   redialed in a tight loop.
6. A failed dial gives up (the machine closes, :attr:`Lifecycle.gave_up` says
   why) after ``max_attempts`` consecutive failed dials, once ``give_up_after``
   seconds passed without a connection, or at once when the hook raised
   :class:`GaveUpError`. Its sleep never runs past the ``give_up_after``
   deadline, and :meth:`Lifecycle.expired` gives up without dialing again once
   less than :data:`LAST_DIAL_MIN` is left before it (a timer may wake a little
   early; a dial given no time could only fail, and hide the real last failure).
7. :meth:`Lifecycle.close` moves any state to CLOSED, for good. Events reported
   after that are ignored (dials racing with close are the norm, not a bug).

Each event returns a :class:`Step`: the log record to emit (outside the front
end's locks) and when to dial next. The machine never reads the clock or draws
random numbers on its own: ``now`` is passed in and the random source is injected.
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._address import Address
from ._backoff import Backoff
from ._errors import ConnectionIOError, DialError, Error, GaveUpError
from ._log import log_connected, log_dial_failed, log_dropped, log_gave_up
from ._options import LoggerLike
from ._outbox import Outbox

__all__ = ["LAST_DIAL_MIN", "Lifecycle", "Phase", "Stats", "Step"]

LAST_DIAL_MIN = 0.02
"""Seconds: a dial is not begun with less than this left before the
``give_up_after`` deadline; the ``Conn`` gives up there instead."""


def _quiet(logger: LoggerLike) -> None:
    """The log of an event reported after close: nothing."""


class Step(NamedTuple):
    """What a front end does after an event.

    Attributes:
        delay: seconds to wait before the next dial; None: dial no more (the
            machine is connected, closed or gave up).
        record: the function of :mod:`perconn._log` that tells of the event,
            called by :meth:`log` as ``record(logger, *args)``. (A function and
            its arguments, not a closure: a dial storm makes one Step per
            failed dial, and a closure is three objects more.)
        args: its arguments after the logger.
    """

    delay: float | None
    record: Callable[..., None] = _quiet
    args: tuple[Any, ...] = ()

    def log(self, logger: LoggerLike) -> None:
        """Emit the event's log records; call it outside any lock."""
        self.record(logger, *self.args)


def _log_failed_then_gave_up(logger: LoggerLike, error: DialError, attempt: int, gave_up: GaveUpError) -> None:
    log_dial_failed(logger, error, attempt, None)
    log_gave_up(logger, gave_up)


_IGNORED = Step(None)


class Phase(enum.Enum):
    DIALING = "dialing"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True)
class Stats:
    """A snapshot of one ``Conn``'s life so far (``conn.stats``).

    Attributes:
        dials: dials begun (each address tried counts once).
        dial_failures: dials that failed, a failed ``on_connect`` included.
        connections: connections established (the ``generation``).
        drops: established connections that ended (not counting ``close()``).
        address: the address of the current or last connection (None before the first).
        last_error: the newest :class:`DialError` or :class:`ConnectionIOError`, or None.
        state: ``"dialing"``, ``"connected"`` or ``"closed"``.
        state_since: ``time.monotonic()`` when it entered that state.
        buffered: bytes of writes queued now (``buffer=``), waiting for a connection.
        dropped_writes: writes that ended with nothing sent: timed out (for want
            of room in the buffer, of a connection, or of room in the socket) or
            discarded by ``close()``.
    """

    dials: int
    dial_failures: int
    connections: int
    drops: int
    address: str | None
    last_error: Error | None
    state: str
    state_since: float
    buffered: int = 0
    dropped_writes: int = 0


class Lifecycle:
    """Decides when to dial and when to give up, given what happened so far.

    Args:
        backoff: the policy computing each delay.
        now: the monotonic time the ``Conn`` was made.
        addresses: where to dial, in order of preference. A dial round tries them
            in turn until one connects; a round that fails counts as one failure
            (one attempt) in the backoff schedule. Every round starts from the first.
        dial_timeout: seconds one dial (of one address) may take (None: no bound).
        max_attempts: consecutive failed rounds before giving up (None: never).
        give_up_after: seconds without a connection before giving up (None: never).
        buffer: bytes of writes :attr:`outbox` may queue while no connection is up.
        random: source of uniform samples in [0, 1); injected for tests.
    """

    def __init__(
        self,
        backoff: Backoff,
        now: float,
        addresses: tuple[Address, ...],
        *,
        dial_timeout: float | None = None,
        max_attempts: int | None = None,
        give_up_after: float | None = None,
        buffer: int = 0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.backoff = backoff
        self.outbox = Outbox(buffer)
        """Writes queued while no connection is up, and the count of dropped ones."""
        self._addresses = addresses
        self._next = 0  # which address of the round is dialed next
        self.address: Address | None = None
        """The address of the current or last connection (None before the first)."""
        self._random = random
        self._dial_timeout = dial_timeout
        self._max_attempts = max_attempts
        self._give_up_after = give_up_after
        self.phase = Phase.DIALING
        self.closed = False
        """Whether the machine is closed (by :meth:`close` or by giving up), for good:
        a plain attribute, as front ends read it on every call."""
        self.gave_up: GaveUpError | None = None
        """Why the machine gave up, if it did."""
        self.generation = 0
        """How many connections have been established so far."""
        self.attempts = 0
        """Dials made since the last connection was established (including the successful one)."""
        self.last_error: Error | None = None
        self.dials = self.dial_failures = self.drops = 0
        self.state_since = now
        self._give_up_at = self._deadline_from(now)  # give_up_after's deadline (None: none)
        self._failed_dials = 0  # consecutive failed dials, for max_attempts
        self._failures = 0  # k of the backoff schedule
        self._established_at = 0.0
        self._proven = False
        self._cut_short = False  # the dial under way got less than dial_timeout: the give-up deadline was near

    def _expect(self, phase: Phase, event: str) -> bool:
        if self.phase is Phase.CLOSED:
            return False
        if self.phase is not phase:
            raise RuntimeError(f"{event} reported in phase {self.phase.value}")
        return True

    def _enter(self, phase: Phase, now: float) -> None:
        self.phase = phase
        self.state_since = now

    def _next_failure_delay(self) -> float:
        delay = self.backoff.failure_delay(self._failures, self._random())
        self._failures += 1
        return delay

    def _give_up(self, why: str, cause: BaseException | None, now: float) -> GaveUpError:
        error = GaveUpError(why)
        error.__cause__ = cause
        self.gave_up = error
        self.close(now)
        return error

    def _deadline_from(self, down_since: float) -> float | None:
        """``give_up_after``'s deadline for a machine without a connection since *down_since*."""
        return None if self._give_up_after is None else down_since + self._give_up_after

    # -- dialing ---------------------------------------------------------------

    def expired(self, now: float) -> Step | None:
        """Before a dial: if ``give_up_after`` seconds passed without a connection,
        give up (the machine closes; the step logs it) instead of dialing."""
        deadline = self._give_up_at
        if self.phase is not Phase.DIALING or deadline is None:
            return None
        if now < deadline - LAST_DIAL_MIN:
            return None
        why = f"gave up: not connected within give_up_after={self._give_up_after!r} seconds; last: {self.last_error}"
        return Step(None, log_gave_up, (self._give_up(why, self.last_error, now),))

    @property
    def dialing(self) -> Address:
        """The address the dial in progress (or the next one) is made to."""
        return self._addresses[self._next]

    def begin_dial(self, now: float) -> tuple[Address, float | None]:
        """A dial begins (:meth:`expired` said not to give up): returns the address
        to dial and how many seconds it may take (None: no bound), never past the
        ``give_up_after`` deadline."""
        self.dials += 1
        deadline = self._give_up_at
        self._cut_short = False
        if deadline is None:
            return self.dialing, self._dial_timeout
        left = deadline - now
        self._cut_short = self._dial_timeout is None or left < self._dial_timeout
        return self.dialing, left if self._cut_short else self._dial_timeout

    def _give_up_reason(self, error: DialError, now: float) -> str | None:
        if isinstance(error.__cause__, GaveUpError):
            return f"gave up: on_connect raised GaveUpError: {error.__cause__}"
        if self._max_attempts is not None and self._failed_dials >= self._max_attempts:
            return f"gave up after max_attempts={self._max_attempts} consecutive failed dials; last: {error}"
        deadline = self._give_up_at
        if deadline is not None and now >= deadline:
            return f"gave up: not connected within give_up_after={self._give_up_after!r} seconds; last: {error}"
        return None

    def dial_failed(self, error: DialError, now: float) -> Step:
        """A dial failed: sleep ``delay`` before the next one, or, if the machine
        gave up (``delay`` None), it is closed and :attr:`gave_up` says why."""
        if not self._expect(Phase.DIALING, "dial_failed"):
            return _IGNORED
        self.dial_failures += 1
        previous, self.last_error = self.last_error, error
        attempt = self.attempts + 1
        self._next += 1
        if self._next < len(self._addresses) and not isinstance(error.__cause__, GaveUpError):
            following = self.dialing.text  # the round goes on with the next address
            return Step(0.0, log_dial_failed, (error, attempt, 0.0, following))
        self._next = 0
        self.attempts += 1
        self._failed_dials += 1
        telling = error
        if self._cut_short and isinstance(error.__cause__, TimeoutError) and isinstance(previous, DialError):
            # The deadline cut this dial short: its timeout says less than what failed before it.
            telling = previous
        why = self._give_up_reason(telling, now)
        if why is not None:
            return Step(None, _log_failed_then_gave_up, (error, attempt, self._give_up(why, telling, now)))
        delay = self._next_failure_delay()
        deadline = self._give_up_at
        if deadline is not None and now + delay >= deadline:
            delay = max(0.0, deadline - now)  # the sleep ends at the deadline, and there it gives up
        return Step(delay, log_dial_failed, (error, attempt, delay))

    def established(self, now: float, *, proven: bool = False) -> Step:
        """The dial (and its hook) to :attr:`dialing` succeeded at *now*; the new
        generation is :attr:`generation`.

        *proven*: the connection already proved itself (its ``on_connect`` ran).
        """
        if not self._expect(Phase.DIALING, "established"):
            return _IGNORED
        address = self.address = self.dialing
        self._next = 0
        self.attempts += 1
        self._failed_dials = 0
        self._enter(Phase.CONNECTED, now)
        self.generation += 1
        self._established_at = now
        self._proven = proven
        return Step(None, log_connected, (address.text, self.generation, self.attempts))

    def proved(self) -> None:
        """The current connection received bytes from the peer: it proved itself."""
        self._proven = True

    # -- the connection ends ------------------------------------------------------

    def dropped(self, error: ConnectionIOError, now: float, *, at_once: bool = False) -> Step:
        """The connection ended at *now*: redial after ``delay``. *at_once*: the
        program asked for it (``reconnect()``): redial now, schedule reset."""
        if not self._expect(Phase.CONNECTED, "dropped"):
            return _IGNORED
        self.drops += 1
        self.last_error = error
        self.attempts = 0
        self._next = 0  # every round starts from the preferred address
        self._enter(Phase.DIALING, now)
        self._give_up_at = self._deadline_from(now)
        if at_once or self._proven or now - self._established_at >= self.backoff.retry_min:
            self._failures = 0
            delay = 0.0 if at_once else self.backoff.redial_delay(self._random())
        else:
            delay = self._next_failure_delay()
        return Step(delay, log_dropped, (error, self.generation, delay))

    def redial_now(self) -> None:
        """While dialing: the program asked to dial at once (``reconnect()``); the
        schedule starts over, from the first address."""
        self._failures = 0
        self._next = 0

    def close(self, now: float) -> bool:
        """Close for good; returns True the first time only."""
        if self.phase is Phase.CLOSED:
            return False
        self._enter(Phase.CLOSED, now)
        self.closed = True
        return True

    def stats(self) -> Stats:
        """A snapshot of the counters and the state."""
        return Stats(
            dials=self.dials,
            dial_failures=self.dial_failures,
            connections=self.generation,
            drops=self.drops,
            address=None if self.address is None else self.address.text,
            last_error=self.last_error,
            state=self.phase.value,
            state_since=self.state_since,
            buffered=self.outbox.size,
            dropped_writes=self.outbox.dropped_writes,
        )
