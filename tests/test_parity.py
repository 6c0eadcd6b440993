"""Both front ends, side by side: the same failure raises and logs the same words;
timeouts name their cause; the stream conventions and ``Conn(address, ...)``."""

from __future__ import annotations

import logging
import re
import socket
import time
import traceback
from collections.abc import Callable

import pytest
from conftest import Records
from fronts import Front
from servers import Server, blackhole, refusing_port, scaled, wait_until

import perconn
from perconn._sockopts import keepalive_plan

QUIET = {"retry_min": 0.05, "retry_max": 0.05, "jitter": False}


def without_ports(text: str) -> str:
    """*text* with port numbers blanked, so two runs against different servers compare."""
    return re.sub(r":\d+\b", ":PORT", text)


def messages(records: Records, level: int = logging.WARNING) -> list[str]:
    return [without_ports(r.getMessage()) for r in records.matching(level)]


# -- timeouts name their cause ---------------------------------------------------


def test_a_timeout_waiting_for_a_connection_names_the_last_dial_error(
    front: Front, logger: logging.Logger, records: Records
) -> None:
    with refusing_port() as address, front.open(address, logger=logger, **QUIET) as conn:
        assert records.wait_for(logging.WARNING, perconn.DialError)
        calls: list[Callable[[], object]] = [
            lambda: conn.wait_connected(timeout=0.3),
            lambda: conn.read(10, timeout=0.3),
            lambda: conn.readexactly(10, timeout=0.3),
            lambda: conn.write(b"x", timeout=0.3),
        ]
        expected = f"not connected to {address} within 0.3 s; last dial: [Errno 111] Connection refused"
        for call in calls:
            with pytest.raises(TimeoutError) as info:
                call()
            assert str(info.value) == expected
            assert isinstance(info.value.__cause__, perconn.DialError)
            assert isinstance(info.value.__cause__.__cause__, ConnectionRefusedError)


def test_a_timeout_before_any_dial_failed_says_the_first_dial_is_in_progress(front: Front) -> None:
    with blackhole() as address, front.open(address) as conn:
        with pytest.raises(TimeoutError) as info:
            conn.wait_connected(timeout=0.2)
        assert str(info.value) == f"not connected to {address} within 0.2 s; the first dial is still in progress"
        assert info.value.__cause__ is None


def test_a_read_timeout_on_a_live_connection_says_how_long(front: Front, echo_server: Server) -> None:
    with front.open(echo_server.address) as conn:
        conn.wait_connected(timeout=scaled(5))
        with pytest.raises(TimeoutError, match=r"^read timed out after 0\.1 s$"):
            conn.read(1, timeout=0.1)
        with pytest.raises(TimeoutError, match=r"^read timed out after 0\.15 s$"):
            conn.readuntil(b"\n", timeout=0.15)


# -- one wording, both front ends ------------------------------------------------


def run_scenario(front: Front, scenario: Callable[[Front, logging.Logger], list[str]]) -> list[str]:
    """Run *scenario* with a fresh logger; return what it reported, ports blanked."""
    records = Records()
    logger = logging.getLogger(f"perconn.test.parity.{front.name}.{scenario.__name__}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(records)
    try:
        reported = scenario(front, logger)
    finally:
        logger.removeHandler(records)
    return reported + messages(records, logging.INFO)[:1] + messages(records)


def refused_dial(front: Front, logger: logging.Logger) -> list[str]:
    with refusing_port() as address, front.open(address, logger=logger, **QUIET):
        assert logger.handlers[0].wait_for(logging.WARNING, perconn.DialError, count=2)  # type: ignore[attr-defined]
    return []


def peer_ends(front: Front, logger: logging.Logger, *, reset: bool) -> list[str]:
    """The peer closes (or resets) a connection while a reply is owed: the next
    read raises its end. The server never answers the owed write, so no read can
    take the reply before the end arrives (with an echo, one did: then nothing
    was owed, the end was not raised, and the read waited on the next connection)."""
    server = Server("tcp4", "sink")
    try:
        with front.open(server.address, logger=logger, **QUIET) as conn:
            conn.wait_connected(timeout=scaled(5))
            assert server.wait_accepts(1)
            server.send(b"hello")
            assert conn.readexactly(5, timeout=scaled(5)) == b"hello"  # it proved itself: redialed at once
            conn.write(b"x")  # a reply is owed: the end of the connection is raised to the next read
            server.wait_received(0, 1)
            server.drop_clients(reset=reset)
            with pytest.raises(perconn.ConnectionIOError) as info:
                conn.read(1, timeout=scaled(5))
            assert isinstance(info.value.__cause__, ConnectionResetError if reset else EOFError)
            return [without_ports(str(info.value))]
    finally:
        server.stop()


def dropped_by_the_peer(front: Front, logger: logging.Logger) -> list[str]:
    return peer_ends(front, logger, reset=False)


def reset_by_the_peer(front: Front, logger: logging.Logger) -> list[str]:
    return peer_ends(front, logger, reset=True)


@pytest.mark.parametrize("scenario", [refused_dial, dropped_by_the_peer, reset_by_the_peer], ids=lambda s: s.__name__)
def test_both_front_ends_word_a_failure_the_same(
    scenario: Callable[[Front, logging.Logger], list[str]],
) -> None:
    from fronts import AioFront, SyncFront

    aio = AioFront()
    try:
        said = {front.name: run_scenario(front, scenario) for front in (SyncFront(), aio)}
    finally:
        aio.stop()
    assert said["sync"] == said["aio"]
    for text in said["sync"]:
        assert not text.startswith("perconn")  # the logger's name is the format's to print
    expected = {
        "refused_dial": [
            "dial 127.0.0.1:PORT: [Errno 111] Connection refused (attempt 1); retrying in 0.05 s",
            "dial 127.0.0.1:PORT: [Errno 111] Connection refused (attempt 2); retrying in 0.05 s",
        ],
        "dropped_by_the_peer": [
            "read 127.0.0.1:PORT: connection closed by peer",
            "connected to 127.0.0.1:PORT (generation 1, after 1 attempt)",
            "read 127.0.0.1:PORT: connection closed by peer; generation 1 dropped, reconnecting in 0 s",
        ],
        "reset_by_the_peer": [
            "read 127.0.0.1:PORT: [Errno 104] Connection reset by peer",
            "connected to 127.0.0.1:PORT (generation 1, after 1 attempt)",
            "read 127.0.0.1:PORT: [Errno 104] Connection reset by peer; generation 1 dropped, reconnecting in 0 s",
        ],
    }[scenario.__name__]
    assert said["sync"][: len(expected)] == expected


def test_a_refused_dial_s_cause_is_the_os_error_itself_on_both_front_ends(front: Front) -> None:
    # One exception under the DialError, worded as the OS words it: no wording
    # of the event loop's beneath it (that would be one more object per failed
    # dial for stats.last_error to keep and the garbage collector to walk).
    records = Records()
    logger = logging.getLogger(f"perconn.test.parity.cause.{front.name}")
    logger.propagate = False
    logger.addHandler(records)
    try:
        with refusing_port() as address, front.open(address, logger=logger, **QUIET):
            assert records.wait_for(logging.WARNING, perconn.DialError)
    finally:
        logger.removeHandler(records)
    error = records.matching(logging.WARNING, perconn.DialError)[0].error  # type: ignore[attr-defined]
    cause = error.__cause__
    assert type(cause) is ConnectionRefusedError and str(cause) == "[Errno 111] Connection refused"
    assert cause.__cause__ is None


# -- Conn(address, ...) and the stream conventions ----------------------------------


def test_conn_is_callable_like_connect(front: Front, echo_server: Server) -> None:
    cls = perconn.Conn if front.name == "sync" else perconn.aio.Conn
    handle = front.connect(echo_server.address)  # through connect()
    try:
        direct = front.call(lambda: cls(echo_server.address, dial_timeout=5.0))  # type: ignore[attr-defined]
    except AttributeError:  # the sync facade has no loop to call on
        direct = cls(echo_server.address, dial_timeout=5.0)
    assert type(direct) is type(handle.conn)
    try:
        from fronts import Handle

        conn = Handle(direct, handle._call)
        conn.write(b"hi")
        assert conn.readexactly(2, timeout=scaled(5)) == b"hi"
        assert repr(conn.conn).startswith(f"<{cls.__module__}.Conn {echo_server.address} connected")
    finally:
        Handle(direct, handle._call).close()
        handle.close()


def test_stream_conventions(front: Front, echo_server: Server) -> None:
    with front.open(echo_server.address) as conn:
        assert conn.readexactly(0) == b"" and conn.read(0) == b""
        conn.write(b"abc")
        assert conn.readexactly(1, timeout=scaled(5)) == b"a"
        assert conn.read(10**12, timeout=scaled(5)) == b"bc"  # what is there, not a terabyte allocated
        conn.write(b"x" * 300_000)
        got = b""
        while len(got) < 300_000:
            got += conn.read(10**12, timeout=scaled(5))
        assert got == b"x" * 300_000


def test_abstract_unix_sockets(front: Front, make_server: Callable[..., Server]) -> None:
    server = make_server("echo", "abstract")
    assert server.address.startswith("unix:@")
    with front.open(server.address) as conn:
        conn.write(b"abstract")
        assert conn.readexactly(8, timeout=scaled(5)) == b"abstract"


# -- production transport: keepalive, several addresses ------------------------------


def test_every_tcp_connection_gets_the_keepalive_options(front: Front, echo_server: Server) -> None:
    with front.open(echo_server.address, keepalive=10.0) as conn:
        conn.wait_connected(timeout=scaled(5))
        link = conn.conn._link
        sock = link.sock if front.name == "sync" else link.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        plan = keepalive_plan(10.0)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == plan.idle
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == plan.interval
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == plan.count
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10000


def test_several_addresses_are_tried_in_order(
    front: Front, make_server: Callable[..., Server], logger: logging.Logger, records: Records
) -> None:
    second = make_server("echo")
    with refusing_port() as first, front.open([first, second.address], logger=logger, **QUIET) as conn:
        conn.write(b"hi")
        assert conn.readexactly(2, timeout=scaled(5)) == b"hi"
        assert conn.stats.address == second.address == conn.address
        assert conn.stats.dial_failures == 1
        (warning,) = records.matching(logging.WARNING, perconn.DialError)
        assert warning.getMessage() == (
            f"dial {first}: [Errno 111] Connection refused (attempt 1); trying {second.address} next"
        )
        (info,) = records.matching(logging.INFO)
        assert info.getMessage() == f"connected to {second.address} (generation 1, after 1 attempt)"


def test_a_failure_under_unanswered_writes_is_told_to_the_next_write(
    front: Front, make_server: Callable[..., Server]
) -> None:
    """A connection that failed (here: reset) after writes went out on it, noticed
    by no call (the transport, or a liveness check, saw it): the next write raises
    its ConnectionIOError, once; the write after goes to a fresh connection."""
    server = make_server("sink")
    with front.open(server.address, **QUIET) as conn:
        conn.write(b"lost?")
        server.wait_received(0, 5)
        server.drop_clients(reset=True)
        deadline = time.monotonic() + scaled(5)
        while conn.connected and time.monotonic() < deadline:  # sync: a non-blocking check; aio: the transport
            time.sleep(0.005)
        with pytest.raises(perconn.ConnectionIOError) as info:
            conn.write(b"next")
        assert info.value.op == "write" and isinstance(info.value.__cause__, ConnectionResetError)
        assert conn.write(b"again", timeout=scaled(5)) == 5
        assert server.wait_received(1, 5) == b"again"


class HookFailed(Exception):
    pass


def failing_hook(front: Front) -> Callable[..., object]:
    """An ``on_connect`` hook (of *front*'s kind) that raises :class:`HookFailed`."""
    if front.name == "sync":

        def hook(link: perconn.Link) -> None:
            raise HookFailed("no")

        return hook

    async def async_hook(link: perconn.aio.Link) -> None:
        raise HookFailed("no")

    return async_hook


def test_a_failed_dial_keeps_no_traceback_of_perconns_frames_but_a_hooks_keeps_its(
    front: Front, echo_server: Server
) -> None:
    # stats.last_error keeps the error alive: a traceback would keep every frame
    # of the dial with it (memory, and objects the garbage collector walks, in
    # a storm of 10,000 Conns); one into the user's hook is worth keeping.
    with refusing_port() as address, front.open(address, **QUIET) as conn:
        assert wait_until(lambda: conn.stats.dial_failures >= 1, scaled(5))
        error = conn.stats.last_error
        assert isinstance(error, perconn.DialError) and isinstance(error.__cause__, ConnectionRefusedError)
        assert error.__cause__.__traceback__ is None
    with front.open(echo_server.address, on_connect=failing_hook(front), **QUIET) as conn:
        assert wait_until(lambda: conn.stats.dial_failures >= 1, scaled(5))
        cause = conn.stats.last_error.__cause__
        assert isinstance(cause, HookFailed)
        assert cause.__traceback__ is not None
        names = [frame.f_code.co_name for frame, _ in traceback.walk_tb(cause.__traceback__)]
        assert "hook" in names or "async_hook" in names
