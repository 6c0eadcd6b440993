"""Validation of connect()'s options: clear errors, before any I/O."""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import pytest

import perconn
import perconn.aio
from perconn._options import make_options


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"retry_min": 0}, ValueError, "retry_min must be a finite number > 0, got 0"),
        ({"retry_min": -1.5}, ValueError, "retry_min must be a finite number > 0, got -1.5"),
        ({"retry_min": math.nan}, ValueError, "retry_min"),
        ({"retry_max": math.inf}, ValueError, "retry_max must be a finite number > 0, got inf"),
        ({"retry_min": 5.0, "retry_max": 2.0}, ValueError, "retry_max must be >= retry_min, got retry_max=2.0"),
        ({"dial_timeout": 0}, ValueError, "dial_timeout must be a finite number > 0, got 0"),
        ({"dial_timeout": -3}, ValueError, "dial_timeout"),
        ({"dial_timeout": "5"}, TypeError, "dial_timeout must be a number of seconds or None, got str: '5'"),
        ({"retry_min": "1"}, TypeError, "retry_min must be a number of seconds, got str: '1'"),
        ({"retry_max": True}, TypeError, "retry_max must be a number of seconds, got bool: True"),
        ({"jitter": 1}, TypeError, "jitter must be a bool, got int: 1"),
        ({"logger": print}, TypeError, "logger must be a logging.Logger or LoggerAdapter"),
    ],
)
def test_bad_options_are_named(overrides: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        make_options("localhost:7", **overrides)
    assert fragment in str(info.value)


def test_defaults() -> None:
    opts = make_options("localhost:7")
    assert opts.logger is logging.getLogger("perconn")
    assert opts.dial_timeout is None
    assert (opts.backoff.retry_min, opts.backoff.retry_max, opts.backoff.jitter) == (1.0, 60.0, True)


def test_accepts_logger_adapters_and_int_seconds() -> None:
    adapter = logging.LoggerAdapter(logging.getLogger("x"), {})
    opts = make_options("localhost:7", logger=adapter, retry_min=2, retry_max=2, dial_timeout=3)
    assert opts.logger is adapter
    assert opts.backoff.retry_min == opts.backoff.retry_max == 2.0
    assert opts.dial_timeout == 3.0


def test_library_logger_is_silent_by_default() -> None:
    handlers = logging.getLogger("perconn").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_both_connect_functions_share_one_signature_and_document_it() -> None:
    parameters = inspect.signature(make_options).parameters
    for connect, conn_type in ((perconn.connect, perconn.Conn), (perconn.aio.connect, perconn.aio.Conn)):
        assert inspect.signature(connect).parameters == parameters
        assert inspect.signature(connect).return_annotation is conn_type
        assert connect.__name__ == "connect"
        assert connect.__doc__ is not None and "retry_min: the first backoff step" in connect.__doc__
    assert "running event loop" in (perconn.aio.connect.__doc__ or "")


def test_exceptions_form_one_family_under_oserror() -> None:
    for cls in (perconn.ClosedConnectionError, perconn.DialError, perconn.ConnectionIOError):
        assert issubclass(cls, perconn.Error)
    assert issubclass(perconn.Error, OSError)
    cause = ConnectionResetError()
    err = perconn.ConnectionIOError("read", cause)
    assert (err.op, err.__cause__, err.partial) == ("read", cause, b"")
    dial = perconn.DialError("h:1", cause)
    assert (dial.address, dial.__cause__) == ("h:1", cause)
