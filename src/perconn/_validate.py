"""Checks and helpers for per-call arguments (sizes, separators, timeouts), shared
by both front ends. Connection options are checked in :mod:`perconn._options`.

A wrong type is a ``TypeError``, a wrong value a ``ValueError``; both name the
argument and the value, and are raised before any I/O.
"""

from __future__ import annotations

import math
import time

from . import _messages

__all__ = [
    "check_bytes",
    "check_count",
    "check_separator",
    "check_size",
    "check_timeout",
    "deadline_after",
    "timed_out",
]


def _kind(value: object) -> str:
    return f"{type(value).__name__}: {value!r:.60}"


def check_count(name: str, n: object) -> int:
    """Return *n* if it is an int >= 0 (a number of bytes to read), else raise naming *name*."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {_kind(n)}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def check_size(name: str, n: object) -> int:
    """Return *n* if it is an int >= 1 (a bound in bytes), else raise naming *name*."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {_kind(n)}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def check_bytes(name: str, data: object) -> memoryview:
    """A flat byte view of the bytes-like *data*, or a ``TypeError`` naming *name*."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, got {_kind(data)}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def check_separator(separator: object) -> bytes:
    """*separator* as bytes if it is non-empty and bytes-like, else raise naming it."""
    if separator.__class__ is not bytes:
        separator = bytes(check_bytes("separator", separator))
    if not separator:
        raise ValueError("separator must not be empty, got b''")
    return separator


def check_timeout(timeout: object) -> float | None:
    """Return *timeout* as seconds (None = wait forever); raise if it is not >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {_kind(timeout)}")
    if not timeout >= 0 or math.isinf(timeout):  # catches NaN too
        raise ValueError(f"timeout must be a finite number >= 0 or None, got {timeout!r}")
    return float(timeout)


def deadline_after(timeout: object) -> float | None:
    """The monotonic deadline *timeout* seconds from now (None = no deadline)."""
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def timed_out(op: str, seconds: float) -> TimeoutError:
    """The error for an operation that did not finish within *seconds*."""
    return TimeoutError(_messages.timed_out(op, seconds))
