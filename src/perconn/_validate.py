"""Checks and helpers for per-call arguments (sizes, timeouts), shared by both
front ends. Connection options are checked in :mod:`perconn._options`."""

from __future__ import annotations

import math
import time

__all__ = ["check_bytes", "check_size", "check_timeout", "deadline_after", "timed_out"]


def check_size(name: str, n: object) -> int:
    """Return *n* if it is an int >= 1, else raise naming *name* and the value."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}: {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def check_bytes(name: str, data: object) -> memoryview:
    """A flat byte view of the bytes-like *data*, or a ``TypeError`` naming *name*."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, got {type(data).__name__}: {data!r:.60}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def check_timeout(timeout: object) -> float | None:
    """Return *timeout* as seconds (None = wait forever); raise if it is not >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}: {timeout!r}")
    if not timeout >= 0 or math.isinf(timeout):  # catches NaN too
        raise ValueError(f"timeout must be a finite number >= 0 or None, got {timeout!r}")
    return float(timeout)


def deadline_after(timeout: object) -> float | None:
    """The monotonic deadline *timeout* seconds from now (None = no deadline)."""
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def timed_out(op: str, timeout: object) -> TimeoutError:
    """The error for an operation that did not finish within its *timeout*."""
    return TimeoutError(f"{op} timed out after {timeout}s")
