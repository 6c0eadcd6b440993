"""Bad arguments, for every method of both front ends: a wrong type is a ``TypeError``, a wrong
value a ``ValueError``, each naming the argument and the value, raised before any
I/O, and nothing is lost."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fronts import Front
from servers import Server, scaled

BAD_TIMEOUTS: list[tuple[Any, type[Exception], str]] = [
    ("1", TypeError, "timeout must be a number of seconds or None, got str: '1'"),
    (True, TypeError, "timeout must be a number of seconds or None, got bool: True"),
    (-1, ValueError, "timeout must be a finite number >= 0 or None, got -1"),
    (math.nan, ValueError, "timeout must be a finite number >= 0 or None, got nan"),
    (math.inf, ValueError, "timeout must be a finite number >= 0 or None, got inf"),
]

TIMED: list[tuple[str, tuple[Any, ...]]] = [
    ("read", (1,)),
    ("readexactly", (1,)),
    ("readuntil", ()),
    ("write", (b"x",)),
    ("wait_connected", ()),
]

Case = tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]

WRONG: list[Case] = [
    ("read", ("10",), {}, TypeError, "n must be an int, got str: '10'"),
    ("read", (2.0,), {}, TypeError, "n must be an int, got float: 2.0"),
    ("read", (-1,), {}, ValueError, "n must be >= 0, got -1"),
    ("readexactly", (None,), {}, TypeError, "n must be an int, got NoneType: None"),
    ("readexactly", (-5,), {}, ValueError, "n must be >= 0, got -5"),
    ("readuntil", ("\n",), {}, TypeError, "separator must be bytes-like, got str: '\\n'"),
    ("readuntil", (b"",), {}, ValueError, "separator must not be empty, got b''"),
    ("readuntil", (b"\n",), {"limit": 0}, ValueError, "limit must be >= 1, got 0"),
    ("readuntil", (b"\n",), {"limit": "64"}, TypeError, "limit must be an int, got str: '64'"),
    ("write", ("text",), {}, TypeError, "data must be bytes-like, got str: 'text'"),
    ("write", (None,), {}, TypeError, "data must be bytes-like, got NoneType: None"),
    ("write", (42,), {}, TypeError, "data must be bytes-like, got int: 42"),
]
CASES: list[Case] = WRONG + [
    (method, args, {"timeout": bad}, error, message) for method, args in TIMED for bad, error, message in BAD_TIMEOUTS
]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "error", "message"), CASES, ids=[f"{c[0]}-{c[4][:40]}" for c in CASES]
)
def test_bad_arguments_are_named_and_lose_nothing(
    front: Front,
    make_server: Any,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    server: Server = make_server("echo")
    with front.open(server.address) as conn:
        conn.write(b"kept")
        assert conn.readexactly(2, timeout=scaled(5)) == b"ke"  # "pt" stays buffered
        with pytest.raises(error) as info:
            getattr(conn, method)(*args, **kwargs)
        assert str(info.value) == message
        assert conn.readexactly(2, timeout=scaled(5)) == b"pt"  # nothing lost
        assert conn.connected and conn.generation == 1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"address": "tcp://h:1"}, ValueError, "address='tcp://h:1': scheme tcp:// is not supported"),
        ({"address": 7}, TypeError, "address must be a str or a sequence of str, got int: 7"),
        ({"address": []}, ValueError, "address must name at least one address, got []"),
        ({"address": ["h:1", "h"]}, ValueError, "address[1]: address='h': missing \":port\""),
        ({"address": ["h:1", 2]}, TypeError, "address[1]: address must be a str, got int: 2"),
        ({"address": "h:1", "keepalive": 0}, ValueError, "keepalive must be a finite number > 0, got 0"),
        ({"address": "h:1", "retry_min": "1"}, TypeError, "retry_min must be a number of seconds, got str: '1'"),
        ({"address": "h:1", "max_attempts": 0}, ValueError, "max_attempts must be >= 1 or None, got 0"),
    ],
)
def test_bad_options_fail_before_any_io(
    front: Front, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        front.connect(**options)
    assert str(info.value).startswith(message)
