"""The exceptions perconn raises.

All derive from :class:`Error`, itself an :class:`OSError`, so code that already
catches socket errors keeps working. "You closed it" (:class:`ClosedConnectionError`)
and "the network broke it" (:class:`ConnectionIOError`) are different errors.
Their texts are worded in :mod:`perconn._messages`.
"""

from __future__ import annotations

from . import _messages

__all__ = [
    "ClosedConnectionError",
    "ConnectionIOError",
    "DialError",
    "Error",
    "GaveUpError",
    "peer_closed",
    "reconnect_requested",
]


class Error(OSError):
    """Base class of every exception perconn raises (timeouts excepted: those are
    the builtin :class:`TimeoutError`)."""


class ClosedConnectionError(Error):
    """An operation was attempted on, or was pending when closing, a closed ``Conn``."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or _messages.closed())


class GaveUpError(ClosedConnectionError):
    """The ``Conn`` gave up dialing (``max_attempts``, ``give_up_after``, or an
    ``on_connect`` hook raised it) and closed itself. ``__cause__`` is the last
    failure. An ``on_connect`` hook raises it to give up at once (a wrong
    password should not retry forever)."""


class DialError(Error):
    """One attempt to dial the remote address failed.

    The library keeps retrying on its own; this error is what the logger is
    given, so a program can see why. The underlying exception is ``__cause__``,
    worded as the operating system words it whichever front end dialed (an
    exception worded otherwise, say asyncio's ``Connect call failed`` from an
    ``on_connect`` hook, is that one's ``__cause__``).

    Attributes:
        address: the address as the user wrote it.
    """

    def __init__(self, address: str, cause: BaseException) -> None:
        cause = _messages.plain_os_error(cause)
        super().__init__(_messages.dial_failed(address, cause))
        self.address = address
        self.__cause__ = cause


class ConnectionIOError(Error):
    """An I/O operation failed on an established connection.

    The connection it happened on is closed and a new one is being dialed in the
    background; the next operation uses it. The underlying exception is
    ``__cause__`` (:class:`EOFError` when the peer closed the connection).

    Attributes:
        op: ``"read"``, ``"write"`` or ``"close"``: what noticed the failure.
        address: the address the connection was made to.
        partial: the bytes a ``readexactly``/``readuntil`` call had received on
            the failed connection before it failed (``b""`` otherwise): they are
            handed back here rather than lost.
    """

    def __init__(self, op: str, cause: BaseException, partial: bytes = b"", *, address: str = "") -> None:
        super().__init__(_messages.io_failed(op, address, cause))
        self.op = op
        self.address = address
        self.partial = partial
        self.__cause__ = cause


def reconnect_requested() -> ConnectionAbortedError:
    """The cause recorded when ``reconnect()`` dropped the connection."""
    return ConnectionAbortedError("dropped by reconnect()")


def peer_closed() -> EOFError:
    """The cause recorded when the peer closed the connection (read EOF)."""
    return EOFError("connection closed by peer")
