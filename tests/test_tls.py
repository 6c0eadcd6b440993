"""TLS (``ssl=``, ``server_hostname=``) on both front ends, against a real TLS
server on loopback (tests/tls.py) with certificates from a private CA.

Every connection completes its handshake as part of its dial, before
``on_connect``; a handshake that fails is a failed dial; and every guarantee of
a plain connection holds over TLS: echo on every address family, full duplex,
per-call timeouts, a prompt ``close()`` in every state, nothing leaked,
reconnecting after a restart, the check of an idle connection before a write,
and reads following writes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Leaks, Records
from fronts import AioFront, Front, Handle, SyncFront
from servers import Server, scaled, wait_until
from sync_helpers import Call
from tls import CERTS, FAMILIES, UNIX_NAME, TlsServer, pki

import perconn
import perconn.aio
import perconn.sync
from perconn.aio.conn import _tls_over
from perconn.aio.link import Connection

FAST: dict[str, Any] = {"retry_min": 0.02, "retry_max": 0.2}
QUIET: dict[str, Any] = {"retry_min": 0.05, "retry_max": 0.05, "jitter": False}


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def make_tls_server(tmp_path: Path) -> Iterator[Callable[..., TlsServer]]:
    """Start TLS servers (mode, family "tcp4", "tcp6" or "unix", certificate);
    all stopped at teardown, where none may have had an error in its threads."""
    servers: list[TlsServer] = []

    def make(mode: str = "echo", family: str = "tcp4", cert: str = "trusted") -> TlsServer:
        path = tmp_path / f"tls{len(servers)}.sock" if family == "unix" else None
        server = TlsServer(family, mode, cert, path)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        assert not server.errors, server.errors


@pytest.fixture
def tls_server(make_tls_server: Callable[..., TlsServer]) -> TlsServer:
    """A TLS echo server on 127.0.0.1 with a certificate the tests' CA signed."""
    return make_tls_server("echo")


@pytest.fixture(params=FAMILIES)
def any_tls_server(request: pytest.FixtureRequest, make_tls_server: Callable[..., TlsServer]) -> TlsServer:
    """A TLS echo server on each kind of loopback address."""
    return make_tls_server("echo", request.param)


def tls_options(server: TlsServer, **extra: Any) -> dict[str, Any]:
    """The options to dial *server* over verified TLS (trusting the tests' CA;
    over a unix socket, naming the certificate's name), fast retries, and *extra*."""
    options: dict[str, Any] = {"ssl": pki().client_context(), **FAST}
    if server.family == "unix":
        options["server_hostname"] = UNIX_NAME
    return {**options, **extra}


def reading(conn: Handle) -> Callable[[], bool]:
    """Whether a read is blocked in *conn* (both front ends hold ``_rlock`` while waiting)."""
    return lambda: bool(conn.conn._rlock.locked())


def timed_close(conn: Handle) -> float:
    start = time.monotonic()
    conn.close()
    return time.monotonic() - start


def connection_errors(records: Records) -> list[logging.LogRecord]:
    return records.matching(logging.WARNING, perconn.ConnectionIOError)


def dial_errors(records: Records) -> list[logging.LogRecord]:
    return records.matching(logging.WARNING, perconn.DialError)


def session_hook(front: Front, seen: list[dict[str, Any]]) -> Callable[..., object]:
    """An ``on_connect`` hook for *front* that runs an echo over the fresh link and
    notes what ``get_extra_info`` says of its TLS session."""

    def facts(link: perconn.Link | perconn.aio.Link) -> dict[str, Any]:
        ssl_object = link.get_extra_info("ssl_object")
        return {
            "ssl_object": ssl_object,
            "version": None if ssl_object is None else ssl_object.version(),
            "object_peercert": None if ssl_object is None else ssl_object.getpeercert(),
            "peercert": link.get_extra_info("peercert"),
            "generation": link.generation,
        }

    if front.name == "sync":

        def hook(link: perconn.Link) -> None:
            link.write(b"hello\n")
            seen.append({**facts(link), "echo": link.readuntil(b"\n")})

        return hook

    async def async_hook(link: perconn.aio.Link) -> None:
        await link.write(b"hello\n")
        seen.append({**facts(link), "echo": await link.readuntil(b"\n")})

    return async_hook


def counting_hook(front: Front, calls: list[int]) -> Callable[..., object]:
    """An ``on_connect`` hook for *front* that notes the generation of every call."""
    if front.name == "sync":
        return lambda link: calls.append(link.generation)

    async def async_hook(link: perconn.aio.Link) -> None:
        calls.append(link.generation)

    return async_hook


# -- the TLS test server itself, with plain ssl sockets ---------------------------------


def tls_client(server: TlsServer, server_hostname: str, timeout: float = 2.0) -> ssl.SSLSocket:
    """An ssl socket to *server*, handshake done, that reports a truncated stream."""
    raw = server.dial(timeout)
    try:
        return pki().client_context().wrap_socket(raw, server_hostname=server_hostname, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tls_server_echoes_ends_streams_both_ways_and_comes_back(
    family: str, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("echo", family)
    name = {"tcp4": "127.0.0.1", "tcp6": "::1", "unix": UNIX_NAME}[family]
    with tls_client(server, name) as sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"
        server.drop_clients(close_notify=True)
        assert sock.recv(16) == b""  # an orderly TLS end
    with tls_client(server, name) as sock:
        sock.sendall(b"x")
        assert sock.recv(16) == b"x"
        server.send(b"pushed")
        assert sock.recv(16) == b"pushed"
        server.drop_clients(close_notify=False)
        with pytest.raises(ssl.SSLEOFError):  # the TCP stream ended without close_notify
            sock.recv(16)
    address = server.address
    server.restart()
    assert server.address == address
    with tls_client(server, name) as sock:
        sock.sendall(b"back")
        assert sock.recv(16) == b"back"
    assert server.wait_closes(3)
    assert server.accepts == server.handshakes == 3
    assert server.sni == [UNIX_NAME if family == "unix" else None] * 3  # no SNI for an IP address
    assert [bytes(r) for r in server.received] == [b"ping", b"x", b"back"]


def test_the_tls_server_in_silent_mode_takes_the_hello_and_never_answers(
    make_tls_server: Callable[..., TlsServer],
) -> None:
    server = make_tls_server("silent")
    with server.dial(timeout=0.2) as raw:
        sock = pki().client_context().wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)
        with sock, pytest.raises(TimeoutError):
            sock.do_handshake()
        assert server.wait_hellos(1)
    assert server.wait_closes(1) and server.handshakes == 0


@pytest.mark.parametrize("cert", CERTS[1:])
def test_the_tls_server_certificates_other_than_trusted_fail_verification(
    cert: str, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("echo", cert=cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_client(server, "127.0.0.1")
    assert server.wait_closes(1) and server.handshakes == 0 and len(server.handshake_failures) == 1


# -- arguments ---------------------------------------------------------------------------

BAD_ARGUMENTS: dict[str, tuple[str, Callable[[], dict[str, Any]], type[Exception], str]] = {
    "ssl_an_int": ("tcp4", lambda: {"ssl": 5}, TypeError, r"\bssl\b"),
    "ssl_a_str": ("tcp4", lambda: {"ssl": "yes"}, TypeError, r"\bssl\b"),
    "server_hostname_an_int": ("tcp4", lambda: {"ssl": True, "server_hostname": 5}, TypeError, "server_hostname"),
    "server_hostname_without_ssl": ("tcp4", lambda: {"server_hostname": UNIX_NAME}, ValueError, "server_hostname"),
    "unix_default_context_no_name": ("unix", lambda: {"ssl": True}, ValueError, "server_hostname"),
    "unix_checking_context_no_name": (
        "unix",
        lambda: {"ssl": pki().client_context()},
        ValueError,
        "server_hostname",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_tls_arguments_raise_before_any_io(
    front: Front, case: str, make_tls_server: Callable[..., TlsServer], leaks: Leaks
) -> None:
    family, options, error, fragment = BAD_ARGUMENTS[case]
    server = make_tls_server("echo", family)
    with pytest.raises(error, match=fragment) as info:
        front.connect(server.address, **options())
    print(f"{front.name} {case}: {info.value}")
    assert not leaks.new_threads()
    if isinstance(front, AioFront):
        assert front.call(lambda: len(asyncio.all_tasks())) == 1  # only the task asking
    assert server.accepts == 0


def test_a_unix_address_needs_no_server_hostname_if_the_context_checks_no_name(
    front: Front, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("echo", "unix")
    context = pki().client_context()
    context.check_hostname = False  # the certificate is still verified against the CA
    with front.open(server.address, ssl=context, **FAST) as conn:
        conn.write(b"unix", timeout=scaled(5))
        assert conn.readexactly(4, timeout=scaled(5)) == b"unix"
    assert server.sni == [None]


# -- connecting over TLS -----------------------------------------------------------------


def test_echo_over_tls_on_every_address_family(
    front: Front, any_tls_server: TlsServer, logger: logging.Logger, records: Records
) -> None:
    server = any_tls_server
    with front.open(server.address, logger=logger, **tls_options(server)) as conn:
        assert conn.write(b"hello, tls\n", timeout=scaled(5)) == 11
        assert conn.readuntil(b"\n", timeout=scaled(5)) == b"hello, tls\n"
        payload = bytes(range(256)) * 256  # several TLS records
        conn.write(payload, timeout=scaled(5))
        assert conn.readexactly(len(payload), timeout=scaled(5)) == payload
        assert conn.connected and conn.generation == 1
    assert server.accepts == server.handshakes == 1
    assert server.sni == [UNIX_NAME if server.family == "unix" else None]
    (info,) = records.matching(logging.INFO)
    assert info.getMessage() == f"connected to {server.address} (generation 1, after 1 attempt)"
    assert not records.matching(logging.WARNING)


def test_the_host_of_the_address_is_the_name_sent_and_verified(
    front: Front, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("echo")
    with front.open(f"localhost:{server.port}", **tls_options(server)) as conn:
        conn.write(b"by name", timeout=scaled(5))
        assert conn.readexactly(7, timeout=scaled(5)) == b"by name"
    assert server.sni == ["localhost"]


def test_server_hostname_replaces_the_host_as_the_name_sent_and_verified(
    front: Front, make_tls_server: Callable[..., TlsServer], logger: logging.Logger, records: Records
) -> None:
    server = make_tls_server("echo", cert="named")  # valid for UNIX_NAME only, not 127.0.0.1
    with front.open(server.address, logger=logger, **tls_options(server)):
        assert records.wait_for(logging.WARNING, perconn.DialError)
    assert isinstance(dial_errors(records)[0].error.__cause__, ssl.SSLCertVerificationError)  # type: ignore[attr-defined]
    with front.open(server.address, **tls_options(server, server_hostname=UNIX_NAME)) as conn:
        conn.write(b"named", timeout=scaled(5))
        assert conn.readexactly(5, timeout=scaled(5)) == b"named"
    assert server.sni[-1] == UNIX_NAME


def test_a_context_that_verifies_nothing_accepts_any_certificate(
    front: Front, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("echo", cert="untrusted")
    with front.open(server.address, ssl=pki().unverified_context(), **FAST) as conn:
        conn.write(b"anyone", timeout=scaled(5))
        assert conn.readexactly(6, timeout=scaled(5)) == b"anyone"


HANDSHAKE_FAILURES: dict[str, tuple[str, Callable[[], dict[str, Any]], type[Exception]]] = {
    "untrusted_certificate": ("untrusted", lambda: {}, ssl.SSLCertVerificationError),
    "wrong_name": ("trusted", lambda: {"server_hostname": "wrong.test"}, ssl.SSLCertVerificationError),
    "default_context_without_our_ca": ("trusted", lambda: {"ssl": True}, ssl.SSLCertVerificationError),
    "plain_tcp_server": ("plain", lambda: {}, ssl.SSLError),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_FAILURES))
def test_a_failed_tls_handshake_is_a_failed_dial_and_the_backoff_goes_on(
    front: Front,
    case: str,
    make_tls_server: Callable[..., TlsServer],
    make_server: Callable[..., Server],
    logger: logging.Logger,
    records: Records,
    leaks: Leaks,
) -> None:
    cert, extra, cause = HANDSHAKE_FAILURES[case]
    server: Server | TlsServer = make_server("echo") if cert == "plain" else make_tls_server("echo", cert=cert)
    options = {"ssl": pki().client_context(), **QUIET, **extra()}
    hooked: list[int] = []
    with front.open(server.address, logger=logger, on_connect=counting_hook(front, hooked), **options) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError, count=3)  # the backoff goes on
        with pytest.raises(TimeoutError) as info:
            conn.wait_connected(timeout=0.1)
        assert isinstance(info.value.__cause__, perconn.DialError)
        assert isinstance(info.value.__cause__.__cause__, cause)
        assert not conn.connected and conn.generation == 0
        assert timed_close(conn) < 0.1
    failures = dial_errors(records)
    print(f"{front.name} {case}: {failures[0].getMessage()}")
    assert [r.attempt for r in failures[:3]] == [1, 2, 3]  # type: ignore[attr-defined]
    for record in failures[:3]:
        error = record.error  # type: ignore[attr-defined]
        assert error.address == server.address
        assert isinstance(error.__cause__, cause), repr(error.__cause__)
        assert record.getMessage().startswith(f"dial {server.address}: ")
    assert not hooked  # on_connect runs only after a handshake that succeeded
    assert not records.matching(logging.INFO)
    if isinstance(server, TlsServer):
        assert server.handshakes == 0
    server.stop()
    leaks.assert_none()


def test_dial_timeout_bounds_a_tls_handshake_the_server_never_answers(
    front: Front, make_tls_server: Callable[..., TlsServer], logger: logging.Logger, records: Records
) -> None:
    server = make_tls_server("silent")
    options = tls_options(server, dial_timeout=0.3, **QUIET)
    start = time.monotonic()
    with front.open(server.address, logger=logger, **options) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError)
        took = time.monotonic() - start
        assert server.wait_hellos(1)  # connected, then the handshake hung
        assert records.wait_for(logging.WARNING, perconn.DialError, count=2)  # and the backoff goes on
        assert not conn.connected
    first = dial_errors(records)[0]
    print(f"{front.name}: {first.getMessage()}")
    assert isinstance(first.error.__cause__, TimeoutError)  # type: ignore[attr-defined]
    assert 0.28 <= took <= 0.3 + scaled(0.5), took


def test_dial_timeout_bounds_the_handshake_and_the_hook_together(
    front: Front, tls_server: TlsServer, logger: logging.Logger, records: Records
) -> None:
    """A hook waiting for a banner that never comes gets what the TLS handshake left
    of dial_timeout: the dial fails within about dial_timeout, not twice that."""
    if front.name == "sync":

        def hook(link: perconn.Link) -> None:
            link.readexactly(1)  # the echo server says nothing first

        on_connect: Callable[..., object] = hook
    else:

        async def async_hook(link: perconn.aio.Link) -> None:
            await link.readexactly(1)

        on_connect = async_hook
    options = tls_options(tls_server, dial_timeout=0.3, on_connect=on_connect, **QUIET)
    start = time.monotonic()
    with front.open(tls_server.address, logger=logger, **options):
        assert records.wait_for(logging.WARNING, perconn.DialError)
        took = time.monotonic() - start
    assert tls_server.handshakes >= 1
    assert isinstance(dial_errors(records)[0].error.__cause__, TimeoutError)  # type: ignore[attr-defined]
    assert 0.28 <= took <= 0.3 + scaled(0.5), took


PARITY_SCENARIOS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "untrusted_certificate": ("echo", "untrusted", {}, "certificate verify failed"),
    "handshake_timeout": ("silent", "trusted", {"dial_timeout": 0.3}, "timed out after 0.3 s"),
}


@pytest.mark.parametrize("scenario", list(PARITY_SCENARIOS))
def test_both_front_ends_word_a_tls_dial_failure_the_same(
    scenario: str, make_tls_server: Callable[..., TlsServer]
) -> None:
    mode, cert, extra, fragment = PARITY_SCENARIOS[scenario]
    server = make_tls_server(mode, cert=cert)
    said: dict[str, list[str]] = {}
    aio = AioFront()
    try:
        for front in (SyncFront(), aio):
            records = Records()
            logger = logging.getLogger(f"perconn.test.tls.parity.{scenario}.{front.name}")
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(records)
            try:
                with front.open(server.address, logger=logger, ssl=pki().client_context(), **QUIET, **extra):
                    assert records.wait_for(logging.WARNING, perconn.DialError, count=2)
            finally:
                logger.removeHandler(records)
            said[front.name] = [r.getMessage() for r in dial_errors(records)[:2]]
    finally:
        aio.stop()
    print(said)
    assert said["sync"] == said["aio"]
    assert said["sync"][0].startswith(f"dial {server.address}: ")
    assert said["sync"][0].endswith("(attempt 1); retrying in 0.05 s")
    assert fragment in said["sync"][0].lower()


# -- the TLS session, as on_connect sees it ------------------------------------------------


def test_on_connect_runs_over_tls_and_sees_the_session(front: Front, tls_server: TlsServer) -> None:
    seen: list[dict[str, Any]] = []
    with front.open(tls_server.address, on_connect=session_hook(front, seen), **tls_options(tls_server)) as conn:
        conn.write(b"after", timeout=scaled(5))
        assert conn.readexactly(5, timeout=scaled(5)) == b"after"  # the hook consumed its own echo
    (facts,) = seen
    assert facts["echo"] == b"hello\n" and facts["generation"] == 1
    assert facts["version"] in ("TLSv1.2", "TLSv1.3")
    peercert = facts["peercert"]
    assert isinstance(peercert, dict) and "subject" in peercert and "issuer" in peercert
    assert ("DNS", "localhost") in peercert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in peercert["subjectAltName"]
    assert facts["object_peercert"] == peercert
    assert tls_server.received[0].startswith(b"hello\n")


def test_a_plain_connection_has_no_tls_session(front: Front, make_server: Callable[..., Server]) -> None:
    server = make_server("echo")
    seen: list[dict[str, Any]] = []
    with front.open(server.address, on_connect=session_hook(front, seen), **FAST) as conn:
        conn.wait_connected(scaled(5))
    (facts,) = seen
    assert facts["echo"] == b"hello\n"
    assert facts["ssl_object"] is None and facts["peercert"] is None


# -- the guarantees of a plain connection, over TLS ----------------------------------------


def test_a_reader_blocked_on_tls_does_not_block_writers(
    front: Front, make_tls_server: Callable[..., TlsServer]
) -> None:
    server = make_tls_server("sink")
    with front.open(server.address, **tls_options(server)) as conn:
        conn.wait_connected(scaled(5))
        reader = Call(lambda: conn.read(100, timeout=scaled(10)))
        assert wait_until(reading(conn))
        for i in range(50):
            conn.write(b"%03d" % i, timeout=scaled(2))
        assert server.wait_received(0, 150) == b"".join(b"%03d" % i for i in range(50))
        assert reader.alive()  # still blocked while all writes completed
        server.send(b"late")
        assert reader.join().result == b"late"


def test_full_duplex_over_tls_moves_more_than_the_buffers_hold(front: Front, tls_server: TlsServer) -> None:
    """A writer and a reader at once through an echo: with either one waiting for
    the other, the writer would block once the socket buffers filled."""
    total, chunk = 4 << 20, 1 << 16
    payload = bytes(range(256)) * (chunk // 256)
    with front.open(tls_server.address, **tls_options(tls_server)) as conn:
        conn.wait_connected(scaled(5))

        def write_all() -> None:
            for _ in range(total // chunk):
                conn.write(payload, timeout=scaled(5))

        def read_all() -> int:
            got = 0
            for _ in range(total):  # bounded: at least one byte a turn
                if got >= total:
                    break
                got += len(conn.read(1 << 18, timeout=scaled(5)))
            return got

        writer, reader = Call(write_all), Call(read_all)
        assert writer.join(20).error is None
        done = reader.join(20)
        assert done.error is None and done.result == total
        assert conn.generation == 1


def test_a_read_timeout_over_tls_keeps_the_connection_and_its_bytes(front: Front, tls_server: TlsServer) -> None:
    with front.open(tls_server.address, **tls_options(tls_server)) as conn:
        conn.wait_connected(scaled(5))
        with pytest.raises(TimeoutError, match=r"^read timed out after 0\.05 s$"):
            conn.read(10, timeout=0.05)
        assert conn.connected
        conn.write(b"abc", timeout=scaled(5))
        with pytest.raises(TimeoutError):
            conn.readexactly(4, timeout=0.1)  # only "abc" can arrive: kept
        conn.write(b"d", timeout=scaled(5))
        assert conn.readexactly(4, timeout=scaled(5)) == b"abcd"
        conn.write(b"still", timeout=scaled(5))
        assert conn.readexactly(5, timeout=scaled(5)) == b"still"
        assert conn.generation == 1


@pytest.mark.parametrize("state", ["handshaking", "backoff", "connected", "reading"])
def test_close_over_tls_is_prompt_in_every_state_and_leaves_nothing(
    front: Front,
    state: str,
    make_tls_server: Callable[..., TlsServer],
    logger: logging.Logger,
    records: Records,
    leaks: Leaks,
) -> None:
    mode = "silent" if state == "handshaking" else "echo"
    cert = "untrusted" if state == "backoff" else "trusted"
    server = make_tls_server(mode, cert=cert)
    # No dial_timeout: only close() ends a handshake that hangs.
    options = tls_options(server, dial_timeout=None, retry_min=30.0, retry_max=60.0)
    conn = front.connect(server.address, logger=logger, **options)
    try:
        waiter: Call | None = None
        if state == "handshaking":
            assert server.wait_hellos(1)
            waiter = Call(lambda: conn.wait_connected())
        elif state == "backoff":
            assert records.wait_for(logging.WARNING, perconn.DialError)
            waiter = Call(lambda: conn.wait_connected())
        elif state == "connected":
            conn.write(b"x", timeout=scaled(5))
            assert conn.readexactly(1, timeout=scaled(5)) == b"x"
        else:
            conn.wait_connected(scaled(5))
            waiter = Call(lambda: conn.read(10))
            assert wait_until(reading(conn))
        took = timed_close(conn)
    finally:
        conn.close()
    assert took < 0.1, took
    if waiter is not None:
        assert isinstance(waiter.join().error, perconn.ClosedConnectionError)
    assert not records.matching(logging.ERROR)
    server.stop()
    leaks.assert_none()


def test_many_tls_lives_leave_nothing_behind(front: Front, tls_server: TlsServer, leaks: Leaks) -> None:
    for i in range(6):
        conn = front.connect(tls_server.address, **tls_options(tls_server))
        try:
            conn.write(b"x", timeout=scaled(5))
            assert conn.readexactly(1, timeout=scaled(5)) == b"x"
            if i % 2:
                tls_server.drop_clients(close_notify=i % 4 == 1)
        finally:
            conn.close()
    tls_server.stop()
    leaks.assert_none()


def test_a_tls_server_restart_fails_the_blocked_read_once_then_reconnects(
    front: Front, any_tls_server: TlsServer, logger: logging.Logger, records: Records
) -> None:
    server = any_tls_server
    with front.open(server.address, logger=logger, **tls_options(server)) as conn:
        conn.write(b"one", timeout=scaled(5))
        assert conn.readexactly(3, timeout=scaled(5)) == b"one"
        reader = Call(lambda: conn.read(100, timeout=scaled(10)))
        assert wait_until(reading(conn))
        server.restart()
        error = reader.join().error
        assert isinstance(error, perconn.ConnectionIOError) and error.op == "read"
        print(f"{front.name} {server.family}: {error!r} from {error.__cause__!r}")
        conn.write(b"two", timeout=scaled(5))
        assert conn.readexactly(3, timeout=scaled(5)) == b"two"
        assert conn.generation == 2
    assert server.handshakes == 2
    assert len(connection_errors(records)) == 1
    # The first redial may find the server not listening yet (stop() closes the listener first).
    redials = 1 + len(records.matching(logging.WARNING, perconn.DialError))
    assert [r.getMessage() for r in records.matching(logging.INFO)] == [
        f"connected to {server.address} (generation 1, after 1 attempt)",
        f"connected to {server.address} (generation 2, after {redials} attempt{'' if redials == 1 else 's'})",
    ]


CLOSINGS = pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "truncated"])


@CLOSINGS
def test_a_write_after_the_server_closed_an_idle_tls_connection_goes_out_on_a_new_one(
    front: Front, close_notify: bool, tls_server: TlsServer, logger: logging.Logger, records: Records
) -> None:
    """As over plain TCP: the sync front end checks an idle connection before a
    write, the asyncio one hears of the end from its transport; either way the
    write is not lost in the closed connection."""
    with front.open(tls_server.address, logger=logger, **tls_options(tls_server)) as conn:
        conn.write(b"one", timeout=scaled(5))
        assert conn.readexactly(3, timeout=scaled(5)) == b"one"
        idle_from = time.monotonic()
        tls_server.drop_clients(close_notify=close_notify)
        assert tls_server.wait_closes(1)
        if front.name == "aio":
            assert records.wait_for(logging.WARNING, perconn.ConnectionIOError)
        else:  # the rule is defined by time: the write checks once the connection sat idle that long
            time.sleep(max(0.0, idle_from + perconn.sync.IDLE_PROBE_AFTER - time.monotonic()))
        conn.write(b"two", timeout=scaled(5))
        assert tls_server.wait_received(1, 3) == b"two"
        assert conn.readexactly(3, timeout=scaled(5)) == b"two"
        assert conn.generation == 2
    (warning,) = connection_errors(records)
    print(f"{front.name} close_notify={close_notify}: {warning.getMessage()} ({warning.error.__cause__!r})")  # type: ignore[attr-defined]
    if front.name == "sync":
        assert warning.error.op == "write"  # type: ignore[attr-defined]
        assert warning.getMessage().startswith(f"write {tls_server.address}: ")
    assert "generation 1 dropped" in warning.getMessage()


@CLOSINGS
def test_the_end_of_a_tls_stream_is_a_connection_error_then_a_new_connection(
    front: Front,
    close_notify: bool,
    make_tls_server: Callable[..., TlsServer],
    logger: logging.Logger,
    records: Records,
) -> None:
    server = make_tls_server("sink")
    with front.open(server.address, logger=logger, **tls_options(server)) as conn:
        conn.write(b"req", timeout=scaled(5))  # a reply is owed: the end of the connection is raised to the next read
        assert server.wait_received(0, 3) == b"req"
        server.drop_clients(close_notify=close_notify)
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.read(10, timeout=scaled(5))
        print(f"{front.name} close_notify={close_notify}: {info.value} ({info.value.__cause__!r})")
        conn.write(b"next", timeout=scaled(5))
        assert server.wait_received(1, 4) == b"next"
        assert conn.generation == 2
        with pytest.raises(TimeoutError):  # the end was raised once; the new connection is quiet
            conn.read(10, timeout=0.1)
    assert len(connection_errors(records)) == 1


@CLOSINGS
def test_reads_follow_writes_over_tls(
    front: Front, close_notify: bool, tls_server: TlsServer, logger: logging.Logger, records: Records
) -> None:
    """A write on a newer connection discards the older one's unread bytes (logged with their count)."""
    with front.open(tls_server.address, logger=logger, **tls_options(tls_server)) as conn:
        conn.write(b"abc", timeout=scaled(5))
        with pytest.raises(TimeoutError):
            conn.readexactly(5, timeout=0.1)  # "abc" arrives and is kept
        tls_server.drop_clients(close_notify=close_notify)
        if front.name == "aio":  # its transport hears of the end; sync's write checks
            assert wait_until(lambda: conn.generation == 2, 5.0)
        conn.write(b"x", timeout=scaled(5))
        assert conn.read(10, timeout=scaled(5)) == b"x"  # the reply to the write, never "abc"
        assert conn.generation == 2
    (discard,) = [r for r in records.matching(logging.WARNING) if "discarded" in r.getMessage()]
    assert "discarded 3 unread bytes of connection 1" in discard.getMessage()


def test_aio_a_tls_dial_cancelled_as_its_handshake_completes_leaves_its_descriptor_free(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A close() cancels the dial wherever it is; here, in the loop iteration where the handshake
    # completed, before the dial resumes (asyncio's SSLProtocol patched to cancel it there). The
    # dial's socket is then closed, as _dial_once does, and the next socket, given the same
    # descriptor number, must be usable on the loop: no transport of the cancelled dial may still
    # be open on it (else "File descriptor N is used by transport": seen once in 20 runs of the
    # suite, every later dial failing so).
    host, _, port = tls_server.address.rpartition(":")
    tls = {"ssl": pki().client_context(), "server_hostname": "localhost", "ssl_handshake_timeout": scaled(5)}
    nobody: Any = weakref.ref(set())  # (the Conn a Connection reports to: gone)
    dials: list[asyncio.Task[Connection]] = []
    completed = asyncio.sslproto.SSLProtocol._on_handshake_complete  # type: ignore[attr-defined]

    def complete_then_cancel(protocol: Any, exc: BaseException | None) -> None:
        completed(protocol, exc)
        dials[-1].cancel()

    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "_on_handshake_complete", complete_then_cancel)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.create_connection((host, int(port)), timeout=scaled(5))
        sock.setblocking(False)
        fd = sock.fileno()
        dials.append(loop.create_task(_tls_over(loop, lambda: Connection(nobody, loop, "tls", []), sock, tls)))
        with pytest.raises(asyncio.CancelledError):
            await dials[-1]
        sock.close()  # what _dial_once does with the socket of a dial that failed
        await asyncio.sleep(0)
        with socket.socket() as reuse:
            assert reuse.fileno() == fd
            loop.add_writer(fd, lambda: None)  # what the next dial does (RuntimeError if a transport holds fd)
            loop.remove_writer(fd)

    asyncio.run(main())
