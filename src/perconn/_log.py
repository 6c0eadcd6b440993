"""The log records both front ends emit (their words are in :mod:`perconn._messages`).

Each record carries the perconn error it is about as ``record.error`` (None when
it is about no error), so handlers can act on it; records about a failure also
carry what happens next as ``record.delay`` (seconds before the next dial, None
when giving up), and a failed dial its ``record.attempt``.

A record nothing would see is not made (:func:`heard`): by default the
``perconn`` logger has only a ``NullHandler``, and a dial storm would otherwise
spend a quarter of its CPU building records for it to drop.
"""

from __future__ import annotations

import logging

from . import _messages
from ._errors import ConnectionIOError, DialError, GaveUpError
from ._options import LoggerLike

__all__ = [
    "heard",
    "log_callback_failed",
    "log_connected",
    "log_dial_failed",
    "log_discarded",
    "log_dropped",
    "log_gave_up",
    "log_queued_discarded",
]


def heard(logger: LoggerLike, level: int) -> bool:
    """Whether a record of *level* given to *logger* would reach a handler that
    does anything: False when the logger is not enabled for it, or when every
    handler it would reach is a ``logging.NullHandler`` (which drops a record
    unseen, its filters unasked) and the logger has no filter of its own (that
    may count what it sees). No handler at all is heard: logging's last resort
    prints it. Adapters and ``Logger`` subclasses are always heard: they may do
    anything with a record."""
    if not logger.isEnabledFor(level):
        return False
    if type(logger) is not logging.Logger or logger.filters:
        return True
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if type(handler) is not logging.NullHandler:
                return True
            found = True
        current = current.parent if current.propagate else None
    return not found


def log_dial_failed(
    logger: LoggerLike, error: DialError, attempt: int, delay: float | None, following: str | None = None
) -> None:
    """WARNING: a dial failed; the next one follows after *delay* seconds (None:
    giving up), to the *following* address of the same round if there is one."""
    if heard(logger, logging.WARNING):
        extra = {"error": error, "attempt": attempt, "delay": delay}
        logger.warning("%s", _messages.dialed(error, attempt, delay, following), extra=extra)


def log_dropped(logger: LoggerLike, error: ConnectionIOError, generation: int, delay: float) -> None:
    """WARNING: an established connection failed; redialing after *delay* seconds."""
    if heard(logger, logging.WARNING):
        extra = {"error": error, "generation": generation, "delay": delay}
        logger.warning("%s", _messages.dropped(error, generation, delay), extra=extra)


def log_connected(logger: LoggerLike, address: str, generation: int, attempts: int) -> None:
    """INFO: a connection was established."""
    if heard(logger, logging.INFO):
        logger.info("%s", _messages.connected(address, generation, attempts), extra={"error": None})


def log_gave_up(logger: LoggerLike, error: GaveUpError) -> None:
    """ERROR: the ``Conn`` gave up and closed itself."""
    if heard(logger, logging.ERROR):
        logger.error("%s", error, extra={"error": error})


def log_discarded(logger: LoggerLike, address: str, nbytes: int, generation: int) -> None:
    """WARNING: unread bytes of an older connection were discarded (reads follow writes)."""
    if heard(logger, logging.WARNING):
        logger.warning("%s", _messages.discarded(address, nbytes, generation), extra={"error": None})


def log_callback_failed(logger: LoggerLike, name: str, exc: BaseException) -> None:
    """ERROR, with the traceback: a user callback raised."""
    if heard(logger, logging.ERROR):
        logger.error("%s", _messages.callback_failed(name, exc), exc_info=exc, extra={"error": exc})


def log_queued_discarded(logger: LoggerLike, address: str, writes: int, nbytes: int, why: str = "closed") -> None:
    """WARNING: closing (*why*: ``"closed"`` or ``"gave up"``) discarded queued
    writes; ``record.writes`` and ``record.nbytes`` say how many (plain integers)."""
    if heard(logger, logging.WARNING):
        extra = {"error": None, "writes": writes, "nbytes": nbytes}
        logger.warning("%s", _messages.queued_discarded(address, writes, nbytes, why), extra=extra)
