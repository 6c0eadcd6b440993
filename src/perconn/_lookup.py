"""Name lookups both front ends can bound and abandon.

``getaddrinfo`` cannot be interrupted, and the OS resolver's own timeout can be
longer than ``dial_timeout``. So a name (not an IP literal, which needs no
lookup) is looked up in a daemon thread of its own, which the dialing threads or
tasks wait for as long as their budgets allow. A lookup that outlives a dial is
abandoned, not repeated: the next dial waits for the same one. Pending lookups
are shared by every ``Conn`` of the process (:class:`Resolver`): the process
never has more than one lookup of a name pending, so a thousand ``Conn`` objects
dialing one name make one lookup at a time (and, while its DNS server does not
answer, one thread waiting for it, not a thousand), and a daemon thread never
keeps the program from exiting.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable

from ._address import Address

__all__ = ["Lookup", "Resolver", "Target", "resolve"]

SockAddr = tuple[object, ...] | str

Target = tuple[int, int, SockAddr]
"""(family, proto, sockaddr): one address to try."""


def resolve(address: Address) -> list[Target]:
    """The addresses to try for *address*, looked up afresh (DNS included).
    Blocks in the OS resolver for a name; IP literals and unix paths return at once.

    Raises:
        OSError: the lookup failed (``socket.gaierror``).
    """
    if address.is_unix:
        return [(socket.AF_UNIX, 0, address.unix_sockaddr)]
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    return [(family, proto, sockaddr) for family, _, proto, _, sockaddr in infos]


def is_literal(address: Address) -> bool:
    """Whether *address* needs no name lookup (a unix path or an IP address)."""
    if address.is_unix:
        return True
    try:
        ipaddress.ip_address(address.host.partition("%")[0])
    except ValueError:
        return False
    return True


class Lookup:
    """One ``getaddrinfo`` in a daemon thread, and who to tell when it is done."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._lock = threading.Lock()
        self.done = False
        self._targets: list[Target] = []
        self._error: OSError | None = None
        self._waiters: dict[object, Callable[[], object]] = {}
        threading.Thread(target=self._run, name=f"perconn-lookup {address.text}", daemon=True).start()

    def _run(self) -> None:
        targets: list[Target] = []
        error: OSError | None = None
        try:
            targets = resolve(self.address)
        except OSError as exc:
            error = exc
        with self._lock:
            self._targets, self._error, self.done = targets, error, True
            waiters, self._waiters = self._waiters, {}
        for notify in waiters.values():
            with contextlib.suppress(Exception):  # the waiter is gone (its loop closed): nobody to tell
                notify()

    def notify(self, waiter: object, fn: Callable[[], object] | None) -> bool:
        """Call *fn* (from the lookup's thread) once it is done, for *waiter*
        (a key: a dial waiting for it), instead of any earlier *fn* of that
        waiter; None: tell that waiter nothing. Returns False if it is done already."""
        with self._lock:
            if self.done:
                return False
            if fn is None:
                self._waiters.pop(waiter, None)
            else:
                self._waiters[waiter] = fn
            return True

    def result(self) -> list[Target]:
        """The addresses found (once :attr:`done`). Raises the lookup's ``OSError``."""
        if self._error is not None:
            raise self._error
        return self._targets


_pending: dict[str, Lookup] = {}
"""The lookups pending in the process, by the address's text (a str keeps its
hash, where a dataclass hashes its fields anew on every dial)."""
_pending_lock = threading.Lock()


class Resolver:
    """One ``Conn``'s lookups: the pending one of a name, shared by every
    ``Conn`` of the process, or a new one; a dial reuses it."""

    def __init__(self) -> None:
        self._literal: dict[str, list[Target] | None] = {}  # None: a name, looked up on every dial

    def lookup(self, address: Address) -> Lookup | list[Target]:
        """The targets of *address* at once (a literal needs no lookup: they are
        worked out once), or the :class:`Lookup` to wait for: the one pending
        for *address* in the process, if any."""
        try:
            literal = self._literal[address.text]
        except KeyError:
            literal = self._literal[address.text] = resolve(address) if is_literal(address) else None
        if literal is not None:
            return literal
        with _pending_lock:
            pending = _pending.get(address.text)
            if pending is None:
                pending = _pending[address.text] = Lookup(address)
        return pending

    def take(self, lookup: Lookup) -> list[Target]:
        """What the done *lookup* found, for a dial to use: the next dial of the
        name (by any ``Conn``) looks it up afresh, whether this one found
        addresses or failed (a failure kept would fail every dial of the name
        from then on).

        Raises:
            OSError: the lookup failed.
        """
        self.finished(lookup)
        return lookup.result()

    def finished(self, lookup: Lookup) -> None:
        """*lookup*'s result was used: the next dial (of any ``Conn``) looks up afresh."""
        with _pending_lock:
            if _pending.get(lookup.address.text) is lookup:
                del _pending[lookup.address.text]
