"""Every sentence perconn shows a person, in exceptions and in log records.

Both front ends build their texts here, so the same event reads the same from
``perconn.Conn`` and ``perconn.aio.Conn``. Texts never start with the logger's
name (a log format usually prints it already) and print durations as a person
writes them (``0.3 s``).
"""

from __future__ import annotations

import functools
import os
import re
import socket
import ssl

__all__ = [
    "callback_failed",
    "cause_text",
    "closed",
    "connected",
    "dial_failed",
    "dialed",
    "discarded",
    "dropped",
    "duration",
    "io_failed",
    "not_connected",
    "plain_os_error",
    "strerror",
    "timed_out",
]

_ERRNO = re.compile(r"\[Errno (\d+)\]")

strerror = functools.cache(os.strerror)
"""``os.strerror``, remembered: a dial storm asks for the text of one errno
thousands of times a second (a program that changes ``LC_MESSAGES`` later keeps
the first wording)."""


def duration(seconds: float) -> str:
    """``0.3 s``, ``5 s``, ``12.5 s``, ``120 s``: at most three decimals, no float noise."""
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if 0 < seconds < 0.001:
        return f"{seconds:.2g} s"
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def plain_os_error(exc: BaseException) -> BaseException:
    """The OS error *exc* stands for, worded as the operating system words it.

    asyncio words a refused connect ``[Errno 111] Connect call failed ('127.0.0.1', 9)``
    and several failed addresses ``Multiple exceptions: ...`` (what an
    ``on_connect`` hook may raise); perconn's own dialers raise
    ``[Errno 111] Connection refused`` (:func:`perconn._connecting.connect_error`).
    This returns the latter form (the last errno named, as a dial reports its
    last address), with *exc* as its ``__cause__``; an error worded so already,
    and any other exception, is returned unchanged.
    """
    if not isinstance(exc, OSError) or isinstance(exc, (socket.gaierror, TimeoutError, ssl.SSLError)):
        return exc  # (an SSLError's errno is OpenSSL's, not the OS's)
    code = exc.errno
    if code is None:
        found = _ERRNO.findall(str(exc))
        if not found:
            return exc
        code = int(found[-1])
    if code <= 0:
        return exc
    text = strerror(code)
    if exc.errno == code and exc.strerror == text and not exc.filename:
        return exc
    plain = OSError(code, text)  # OSError(errno, ...) builds the matching subclass (ConnectionRefusedError, ...)
    plain.__cause__ = exc
    return plain


def cause_text(cause: BaseException) -> str:
    """How a cause reads inside a sentence: its message, or its type if it has none."""
    return str(cause) or type(cause).__name__


def dial_failed(address: str, cause: BaseException) -> str:
    """The text of a :class:`perconn.DialError`."""
    return f"dial {address}: {cause_text(cause)}"


def io_failed(op: str, address: str, cause: BaseException) -> str:
    """The text of a :class:`perconn.ConnectionIOError` (*address* may be unknown: empty)."""
    return f"{op} {address}: {cause_text(cause)}" if address else f"{op}: {cause_text(cause)}"


def closed() -> str:
    """The text of a :class:`perconn.ClosedConnectionError`."""
    return "connection is closed"


def timed_out(op: str, seconds: float) -> str:
    """An operation that did not finish within its timeout."""
    return f"{op} timed out after {duration(seconds)}"


def not_connected(address: str, seconds: float, last_error: BaseException | None) -> str:
    """A call that waited *seconds* for a connection that did not come up.

    *last_error* is the newest failure (a dial's or the last connection's), if any.
    """
    text = f"not connected to {address} within {duration(seconds)}"
    cause = getattr(last_error, "__cause__", None)
    if last_error is None or cause is None:
        return f"{text}; the first dial is still in progress"
    if getattr(last_error, "op", None) is None:  # a DialError
        return f"{text}; last dial: {cause_text(cause)}"
    return f"{text}; the last connection ended: {last_error}"


# -- log records (each names what failed, how, and what happens next) ---------


def dialed(error: BaseException, attempt: int, delay: float | None, following: str | None = None) -> str:
    """WARNING: a dial failed and the next follows after *delay* seconds (None:
    giving up), to the *following* address of the same round if there is one."""
    if following is not None:
        then = f"trying {following} next"
    else:
        then = "giving up" if delay is None else f"retrying in {duration(delay)}"
    return f"{error} (attempt {attempt}); {then}"


def dropped(error: BaseException, generation: int, delay: float) -> str:
    """WARNING: an established connection failed; redialing after *delay* seconds."""
    return f"{error}; generation {generation} dropped, reconnecting in {duration(delay)}"


def discarded(address: str, nbytes: int, generation: int) -> str:
    """WARNING: reads moved on to the connection a write went to."""
    return (
        f"discarded {nbytes} unread byte{'' if nbytes == 1 else 's'} of connection {generation} to {address}: "
        "a write went out on a newer connection, so reads follow it"
    )


def callback_failed(name: str, exc: BaseException) -> str:
    """ERROR: a user callback raised (reconnecting goes on)."""
    return f"{name} raised {type(exc).__name__}: {cause_text(exc)}; ignored"


def connected(address: str, generation: int, attempts: int) -> str:
    """INFO: a connection was established."""
    return f"connected to {address} (generation {generation}, after {attempts} attempt{'' if attempts == 1 else 's'})"


def queued_discarded(address: str, writes: int, nbytes: int, why: str = "closed") -> str:
    """WARNING: closing (``close()``, or giving up: *why*) discarded the writes still queued."""
    queued = f"{writes} queued write{'' if writes == 1 else 's'} ({nbytes} byte{'' if nbytes == 1 else 's'})"
    if why == "closed":
        return f"closed with {queued} not sent to {address}: discarded (flush() before close() sends them)"
    return f"giving up: {queued} not sent to {address}, discarded"


def no_room(seconds: float, size: int, limit: int) -> str:
    """A write that found neither a connection nor room in the buffer in time."""
    return (
        f"write not queued within {duration(seconds)}: the buffer holds {size} of {limit} bytes and no connection is up"
    )


def flush_timed_out(seconds: float, writes: int, nbytes: int) -> str:
    """``flush()`` ran out of time with writes still queued (they stay queued)."""
    plural = "" if writes == 1 else "s"
    return f"flush timed out after {duration(seconds)} with {writes} write{plural} ({nbytes} bytes) still queued"
