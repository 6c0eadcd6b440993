"""Validation of the options both ``connect`` functions take.

Every check happens here, before any I/O, and names the argument and the bad value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Union

from ._address import Address, parse_address
from ._backoff import Backoff

__all__ = ["LoggerLike", "Options", "make_options"]

LoggerLike = Union[logging.Logger, "logging.LoggerAdapter[logging.Logger]"]

DEFAULT_LOGGER_NAME = "perconn"


@dataclass(frozen=True)
class Options:
    """Everything a front end needs to run one persistent connection."""

    address: Address
    dial_timeout: float | None
    logger: LoggerLike
    backoff: Backoff


def _seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}: {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return seconds


def make_options(
    address: object,
    *,
    dial_timeout: object,
    logger: object,
    retry_min: object,
    retry_max: object,
    jitter: object,
) -> Options:
    """Validate the arguments of ``connect`` and bundle them.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a bad value (malformed address, non-positive
            or non-finite seconds, ``retry_max < retry_min``).
    """
    addr = parse_address(address)
    timeout = _seconds("dial_timeout", dial_timeout, allow_none=True)
    rmin = _seconds("retry_min", retry_min)
    rmax = _seconds("retry_max", retry_max)
    assert rmin is not None and rmax is not None
    if rmax < rmin:
        raise ValueError(f"retry_max must be >= retry_min, got retry_max={retry_max!r} < retry_min={retry_min!r}")
    if not isinstance(jitter, bool):
        raise TypeError(f"jitter must be a bool, got {type(jitter).__name__}: {jitter!r}")
    if logger is None:
        logger = logging.getLogger(DEFAULT_LOGGER_NAME)
    elif not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        raise TypeError(f"logger must be a logging.Logger or LoggerAdapter, got {type(logger).__name__}: {logger!r}")
    return Options(address=addr, dial_timeout=timeout, logger=logger, backoff=Backoff(rmin, rmax, jitter))
