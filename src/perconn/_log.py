"""The log records both front ends emit: one wording, one place.

Each record carries the perconn error it is about as ``record.error`` (None for
the INFO record of an established connection), so handlers can act on it.
"""

from __future__ import annotations

from ._errors import ConnectionIOError, DialError
from ._options import LoggerLike

__all__ = ["log_connected", "log_dial_failed", "log_io_failed"]


def log_dial_failed(logger: LoggerLike, error: DialError, attempt: int, delay: float) -> None:
    """WARNING: a dial failed; the next one follows after *delay* seconds."""
    logger.warning("perconn: %s (attempt %d); retrying in %.3fs", error, attempt, delay, extra={"error": error})


def log_io_failed(logger: LoggerLike, address: str, error: ConnectionIOError) -> None:
    """WARNING: an I/O operation failed on an established connection."""
    logger.warning("perconn: %s: %s; reconnecting", address, error, extra={"error": error})


def log_connected(logger: LoggerLike, address: str, generation: int, attempts: int) -> None:
    """INFO: a connection was established."""
    logger.info(
        "perconn: connected to %s (generation %d, after %d attempt%s)",
        address,
        generation,
        attempts,
        "" if attempts == 1 else "s",
        extra={"error": None},
    )
