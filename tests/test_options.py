"""Validation of connect()'s options: clear errors, before any I/O."""

from __future__ import annotations

import inspect
import logging
import math
import pydoc
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
        ({"on_connect": "auth"}, TypeError, "on_connect must be callable or None, got str: 'auth'"),
        ({"on_disconnect": 1}, TypeError, "on_disconnect must be callable or None, got int: 1"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1 or None, got 0"),
        ({"max_attempts": 2.0}, TypeError, "max_attempts must be an int or None, got float: 2.0"),
        ({"give_up_after": -1}, ValueError, "give_up_after must be a finite number > 0, got -1"),
    ],
)
def test_bad_options_are_named(overrides: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        make_options("localhost:7", **overrides)
    assert fragment in str(info.value)


def test_defaults() -> None:
    opts = make_options("localhost:7")
    assert opts.logger is logging.getLogger("perconn")
    assert opts.dial_timeout == 30.0 and opts.keepalive == 30.0
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


FRONT_ENDS = [(perconn.connect, perconn.Conn), (perconn.aio.connect, perconn.aio.Conn)]


@pytest.mark.parametrize("callable_", [f for pair in FRONT_ENDS for f in pair], ids=repr)
def test_conn_and_connect_share_one_signature_and_document_it(callable_: Any) -> None:
    parameters = inspect.signature(make_options).parameters
    assert inspect.signature(callable_).parameters == parameters
    assert list(parameters)[:3] == ["address", "dial_timeout", "logger"]
    assert all(p.kind is p.KEYWORD_ONLY for p in list(parameters.values())[1:])
    shown = pydoc.render_doc(callable_, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "retry_min: the first backoff step" in shown
    header = next(line for line in shown.splitlines() if "(address" in line)
    assert "dial_timeout" in header and "give_up_after" in header and "Options" not in header


def test_connect_functions_are_named_connect() -> None:
    for connect, _ in FRONT_ENDS:
        assert connect.__name__ == "connect"
    assert "running event loop" in (perconn.aio.connect.__doc__ or "")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f("h:1", 5.0), "takes the address as its only positional argument; pass the options by keyword"),
        (lambda f: f("h:1", dial_timeut=5), "got an unexpected keyword argument 'dial_timeut'; its options are ["),
        (lambda f: f(), "missing its required argument: address"),
        (lambda f: f("h:1", address="h:2"), "got the address twice"),
    ],
)
def test_misused_calls_name_the_function(call: Any, message: str) -> None:
    for connect, conn_type in FRONT_ENDS:
        for fn, name in ((connect, "connect"), (conn_type, "Conn")):
            with pytest.raises(TypeError) as info:
                call(fn)
            assert str(info.value).startswith(f"{name}() ") and message in str(info.value)


def test_exceptions_form_one_family_under_oserror() -> None:
    for cls in (perconn.ClosedConnectionError, perconn.DialError, perconn.ConnectionIOError):
        assert issubclass(cls, perconn.Error)
    assert issubclass(perconn.Error, OSError)
    cause = ConnectionResetError()
    err = perconn.ConnectionIOError("read", cause, address="h:1")
    assert (err.op, err.__cause__, err.partial, err.address) == ("read", cause, b"", "h:1")
    assert str(err) == "read h:1: ConnectionResetError"
    assert issubclass(perconn.GaveUpError, perconn.ClosedConnectionError)
    dial = perconn.DialError("h:1", cause)
    assert (dial.address, dial.__cause__) == ("h:1", cause)
