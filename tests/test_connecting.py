"""``perconn._connecting``: beginning a non-blocking connect, and the spare
sockets the synchronous dialer thread begins its connects with (Linux lets a
TCP socket whose connect failed connect again), over real loopback sockets."""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable, Iterator

import pytest
from servers import Server, open_fds, refusing_port

from perconn._address import parse_address
from perconn._connecting import Spares, begin_connect, start_connect
from perconn._lookup import Target, resolve

pytestmark = pytest.mark.skipif(not Spares.ENABLED, reason="spares are kept on Linux only")

FAMILIES = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}


def target_of(address: str) -> Target:
    """The target a dial of the literal *address* connects to (as the dialer works it out)."""
    (target,) = resolve(parse_address(address))
    return target


@pytest.fixture
def spares() -> Iterator[Spares]:
    spares = Spares()
    yield spares
    spares.close()


def connected(sock: socket.socket, err: int) -> socket.socket:
    """*sock*, once its connect (outcome *err* so far) is through; fails if it failed."""
    if err == errno.EINPROGRESS:
        assert select.select([], [sock], [], 5.0)[1], "connect did not complete"
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert err == 0, errno.errorcode.get(err, err)
    return sock


@pytest.mark.parametrize("family", ["tcp4", "tcp6"])
def test_a_refused_socket_is_kept_and_connects_again(
    family: str, spares: Spares, make_server: Callable[..., Server]
) -> None:
    fds = open_fds()
    with refusing_port(family) as refusing:
        sock, err = begin_connect(target_of(refusing), spares)
    assert err == errno.ECONNREFUSED
    assert len(spares) == 1 and sock.fileno() != -1  # kept open, not closed
    kept = sock.fileno()

    server = make_server("echo", family)
    sock, err = begin_connect(target_of(server.address), spares)
    assert sock.fileno() == kept and len(spares) == 0  # the kept socket, not a new one
    with connected(sock, err):
        sock.setblocking(True)
        sock.settimeout(5.0)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"  # a whole fresh connection
        assert sock.family == FAMILIES[family]
    server.stop()
    assert open_fds() - fds == set()


def test_a_kept_socket_is_refused_afresh_each_time(spares: Spares) -> None:
    """Each connect on a kept socket is a new attempt: refused again and kept
    again, the same socket every time, no error of the previous attempt left over."""
    with refusing_port() as refusing:
        target = target_of(refusing)
        sock, err = begin_connect(target, spares)
        first = sock.fileno()
        for _ in range(5):
            sock, err = begin_connect(target, spares)
            assert (err, sock.fileno(), len(spares)) == (errno.ECONNREFUSED, first, 1)


def test_without_spares_a_refused_socket_is_closed() -> None:
    with refusing_port() as refusing:
        sock, err = begin_connect(target_of(refusing))
    assert err == errno.ECONNREFUSED
    assert sock.fileno() == -1


def test_at_most_limit_are_kept_per_family_and_close_closes_them(spares: Spares) -> None:
    fds = open_fds()
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(Spares.LIMIT + 3)]
    sockets.append(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    kept = [sock for sock in sockets if spares.keep(sock, sock.family)]
    assert kept == sockets[: Spares.LIMIT] + sockets[-1:]  # the limit is per family
    assert not spares.keep(unix, unix.family)  # TCP only
    assert len(spares) == Spares.LIMIT + 1
    spares.close()
    assert len(spares) == 0 and all(sock.fileno() == -1 for sock in kept)
    for sock in [*sockets, unix]:
        sock.close()
    assert open_fds() - fds == set()


def test_a_kept_socket_that_cannot_connect_again_is_replaced(
    spares: Spares, make_server: Callable[..., Server]
) -> None:
    """A kept socket the OS will not connect again (here: one connected already,
    which answers EISCONN) is closed and a new socket connects instead."""
    server = make_server("echo")
    stale = socket.create_connection(("127.0.0.1", int(server.address.rpartition(":")[2])))
    stale.setblocking(False)
    assert spares.keep(stale, stale.family)
    sock, err = begin_connect(target_of(server.address), spares)
    assert stale.fileno() == -1  # closed, not used
    assert sock is not stale and len(spares) == 0
    with connected(sock, err):
        pass


def test_start_connect_raises_what_failed_at_once_as_the_os_words_it(make_server: Callable[..., Server]) -> None:
    """A dial's start: a refusal known at once is raised (its socket closed),
    worded as the OS words it; otherwise the socket and whether it connected already."""
    fds = open_fds()
    with refusing_port() as refusing, pytest.raises(ConnectionRefusedError) as refused:
        start_connect(target_of(refusing))
    assert refused.value.errno == errno.ECONNREFUSED
    assert str(refused.value) == f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
    assert open_fds() - fds == set()

    server = make_server("echo", "tcp4")
    sock, at_once = start_connect(target_of(server.address))
    with connected(sock, 0 if at_once else errno.EINPROGRESS):
        pass
    server.stop()
    assert open_fds() - fds == set()
