"""perconn._messages: how failures are worded (the rest is covered where each
text is used: tests/test_parity.py words every failure on both front ends)."""

from __future__ import annotations

import errno
import socket
import ssl

from perconn._messages import plain_os_error


def test_asyncio_s_wording_of_a_refused_connect_becomes_the_os_s_with_it_as_cause() -> None:
    loops = OSError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)")
    plain = plain_os_error(loops)
    assert type(plain) is ConnectionRefusedError
    assert str(plain) == "[Errno 111] Connection refused"
    assert plain.__cause__ is loops


def test_several_failed_addresses_name_the_last_errno() -> None:
    loops = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 9), "
        "[Errno 113] Connect call failed ('::1', 9, 0, 0)"
    )
    plain = plain_os_error(loops)
    assert isinstance(plain, OSError) and plain.errno == errno.EHOSTUNREACH
    assert str(plain) == "[Errno 113] No route to host"
    assert plain.__cause__ is loops


def test_an_error_worded_as_the_os_words_it_is_returned_as_is() -> None:
    plain = OSError(errno.ECONNREFUSED, "Connection refused")
    assert plain_os_error(plain) is plain


def test_errors_that_are_not_the_os_s_are_returned_as_is() -> None:
    for exc in (
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        TimeoutError("connect timed out after 1 s"),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        OSError("no errno named here"),
        ValueError("not an OSError"),
    ):
        assert plain_os_error(exc) is exc, exc


def test_a_unix_path_named_in_the_error_is_left_to_the_dial_error() -> None:
    loops = OSError(errno.ECONNREFUSED, "Connection refused", "/run/app.sock")
    plain = plain_os_error(loops)
    assert str(plain) == "[Errno 111] Connection refused" and plain.__cause__ is loops
