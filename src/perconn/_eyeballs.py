"""Happy Eyeballs (RFC 8305): in what order, and when, one dial tries the IP
addresses a name resolved to.

A name often resolves to several addresses (IPv6 and IPv4, or several of one
family), and some may be unreachable: a broken IPv6 route, a host whose SYNs a
firewall drops. Tried one after another, each unreachable address would cost a
whole ``dial_timeout``; tried all at once, every dial would open a connection
to each address. So a dial races them, staggered:

1. the addresses are tried in :func:`interleave` order: the family of the
   resolver's first answer first, then alternating families, each family in the
   resolver's order;
2. the first attempt starts at once, and each next one :data:`ATTEMPT_DELAY`
   seconds after the previous one began, without abandoning it; an attempt
   that fails starts the next one at once;
3. the first attempt to connect wins; the front end closes all the others.

This module decides; it never does I/O and never reads the clock (the front
end passes ``now``). The front ends (:mod:`perconn.sync.dialer`,
:mod:`perconn.aio.dialer`) own the sockets and drive a :class:`Race`.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Sequence

from ._address import Address
from ._lookup import Target

__all__ = ["ATTEMPT_DELAY", "Race", "interleave"]

ATTEMPT_DELAY = 0.25
"""Seconds between the start of one connection attempt and the next (RFC 8305's
"Connection Attempt Delay", its recommended value)."""


def interleave(targets: Sequence[Target]) -> list[Target]:
    """*targets* reordered so that address families alternate (RFC 8305, section 4).

    The family of the first target comes first, then one target of each other
    family in turn, in the order the families first appear; each family keeps
    the order the resolver gave it. When one family runs out, the rest of the
    others follow. Every target is kept, duplicates included.
    """
    if len(targets) < 2:
        return list(targets)
    families: dict[int, deque[Target]] = {}
    for target in targets:
        families.setdefault(target[0], deque()).append(target)
    order: list[Target] = []
    queues = list(families.values())
    while queues:  # each pass takes one target from every non-empty queue
        for queue in queues:
            order.append(queue.popleft())
        queues = [queue for queue in queues if queue]
    return order


class Race:
    """The schedule of one staggered race between connection attempts.

    A front end drives it in a loop:

    1. call :meth:`start` until it returns None, starting a non-blocking
       connect to each target it returns (a connect that fails at once is
       reported to :meth:`failed` straight away, and :meth:`start` asked again);
    2. if :attr:`lost`, raise :attr:`error`: every attempt failed;
    3. wait for the running connects, for at most :meth:`wait` seconds (None:
       no bound but the dial's own deadline);
    4. report each connect that failed to :meth:`failed`; the first that
       connected wins, and the front end closes every other one it started.

    Guarantees: every target is started exactly once, in :func:`interleave`
    order; the next start is due :data:`ATTEMPT_DELAY` after the previous one,
    or at once when an attempt fails or none is running. Not decided here: the
    dial's overall deadline (the front end's ``dial_timeout``), which may end
    the race before every target was tried.
    """

    def __init__(self, address: Address, targets: Sequence[Target], delay: float = ATTEMPT_DELAY) -> None:
        """*targets* are *address*'s, as resolved; *delay* replaces
        :data:`ATTEMPT_DELAY` (tests pass 0 to start every attempt at once)."""
        self._queue = deque(interleave(targets))
        self._delay = delay
        self._due: float | None = None  # when the next start is due (monotonic); None: at once
        self.running = 0
        """Attempts started and not yet reported failed."""
        self.error: OSError = OSError(errno.EADDRNOTAVAIL, f"no address found for {address.text}")
        """The last attempt's failure (before any: that there was no address to try)."""

    def start(self, now: float) -> Target | None:
        """The target to start connecting to at *now*, if one is due, else None."""
        if not self._queue:
            return None
        if self.running and self._due is not None and now < self._due:
            return None
        self.running += 1
        self._due = now + self._delay
        return self._queue.popleft()

    def failed(self, error: OSError) -> None:
        """A started attempt failed with *error*: the next one is due at once."""
        self.running -= 1
        self.error = error
        self._due = None

    def wait(self, now: float) -> float | None:
        """Seconds from *now* until the next start is due (0: due now); None
        when every target has been started."""
        if not self._queue:
            return None
        if not self.running or self._due is None:
            return 0.0
        return max(0.0, self._due - now)

    @property
    def lost(self) -> bool:
        """Whether every target was started and every attempt failed."""
        return not self._queue and not self.running
