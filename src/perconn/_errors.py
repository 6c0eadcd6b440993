"""The exceptions perconn raises.

All derive from :class:`Error`, itself an :class:`OSError`, so code that already
catches socket errors keeps working. "You closed it" (:class:`ClosedConnectionError`)
and "the network broke it" (:class:`ConnectionIOError`) are different errors.
"""

from __future__ import annotations

__all__ = ["ClosedConnectionError", "ConnectionIOError", "DialError", "Error"]


class Error(OSError):
    """Base class of every exception perconn raises (timeouts excepted: those are
    the builtin :class:`TimeoutError`)."""


class ClosedConnectionError(Error):
    """An operation was attempted on, or was pending when closing, a closed ``Conn``."""

    def __init__(self, message: str = "connection is closed") -> None:
        super().__init__(message)


class DialError(Error):
    """One attempt to dial the remote address failed.

    The library keeps retrying on its own; this error is what the logger is
    given, so a program can see why. The underlying exception is ``__cause__``.

    Attributes:
        address: the address as the user wrote it.
    """

    def __init__(self, address: str, cause: BaseException) -> None:
        super().__init__(f"dial {address}: {cause}")
        self.address = address
        self.__cause__ = cause


class ConnectionIOError(Error):
    """An I/O operation failed on an established connection.

    The connection it happened on is closed and a new one is being dialed in the
    background; the next operation uses it. The underlying exception is
    ``__cause__`` (:class:`EOFError` when the peer closed the connection).

    Attributes:
        op: ``"read"``, ``"write"`` or ``"close"``.
        partial: the bytes a ``readexactly``/``readuntil`` call had received on
            the failed connection before it failed (``b""`` otherwise): they are
            handed back here rather than lost.
    """

    def __init__(self, op: str, cause: BaseException, partial: bytes = b"") -> None:
        super().__init__(f"{op}: {cause}")
        self.op = op
        self.partial = partial
        self.__cause__ = cause


def peer_closed() -> EOFError:
    """The cause recorded when the peer closed the connection (read EOF)."""
    return EOFError("connection closed by peer")
