"""Validation of the options both ``connect`` functions take.

Every check happens here, before any I/O, and names the argument and the bad value.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, Union

from ._address import Address, parse_address
from ._backoff import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, Backoff

__all__ = ["LoggerLike", "Options", "connect_function", "make_options"]

P = ParamSpec("P")
T = TypeVar("T")

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
    address: str,
    *,
    dial_timeout: float | None = None,
    logger: LoggerLike | None = None,
    retry_min: float = DEFAULT_RETRY_MIN,
    retry_max: float = DEFAULT_RETRY_MAX,
    jitter: bool = True,
) -> Options:
    """Validate the arguments of ``connect`` and bundle them.

    Args:
        address: ``"host:port"``, ``"[v6addr]:port"`` or ``"unix:/path/to/socket"``.
        dial_timeout: seconds for one dial attempt; None leaves it to the OS.
        logger: a ``logging.Logger`` or ``LoggerAdapter``; receives a WARNING per
            failed dial and per dropped connection and an INFO per established
            connection. None means ``logging.getLogger("perconn")``.
        retry_min: the first backoff step, in seconds.
        retry_max: the cap on backoff steps, in seconds.
        jitter: randomise every backoff sleep (False: exact doubling).

    Raises:
        TypeError: an argument has the wrong type (named in the message, with its value).
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


def connect_function(
    make: Callable[P, Options], build: Callable[[Options], T], module: str, summary: str
) -> Callable[P, T]:
    """Make a front end's ``connect``: *make*'s parameters (one signature, one set
    of defaults for both front ends), validated by *make*, then ``build(options)``.
    Its docstring is *summary* followed by *make*'s."""

    @functools.wraps(make)
    def connect(*args: P.args, **kwargs: P.kwargs) -> T:
        return build(make(*args, **kwargs))

    connect.__module__ = module
    connect.__name__ = connect.__qualname__ = "connect"
    connect.__signature__ = inspect.signature(make).replace(return_annotation=build)  # type: ignore[attr-defined]
    connect.__doc__ = summary + "\n\n" + inspect.cleandoc((make.__doc__ or "").partition("\n\n")[2])
    return connect
