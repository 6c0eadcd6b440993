"""Dialing for the synchronous front end: resolve (the one step nothing can
interrupt), then connect without blocking past a wake-up file descriptor, so
``close()`` can abort a dial at once."""

from __future__ import annotations

import errno
import os
import select
import socket
import time

from ._address import Address

SockAddr = tuple[object, ...] | str

__all__ = ["DialAborted", "Target", "configure", "connect_first", "resolve", "wait_fd"]


class DialAborted(Exception):
    """The wake-up descriptor became readable: the ``Conn`` is closing."""


def wait_fd(fd: int, events: int, deadline: float | None, wake_fd: int = -1) -> int:
    """Poll *fd* for *events* until *deadline* (monotonic; None = forever).

    Returns the events seen on *fd* (0 on timeout). Raises :class:`DialAborted`
    if *wake_fd* (when given) becomes readable first.
    """
    poller = select.poll()
    poller.register(fd, events)
    if wake_fd >= 0:
        poller.register(wake_fd, select.POLLIN)
    ms = None if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000.0)
    seen = 0
    for ready_fd, ready in poller.poll(ms):
        if ready_fd == wake_fd:
            raise DialAborted
        seen = ready
    return seen


def configure(sock: socket.socket) -> None:
    """Options every established TCP connection gets, as Go's dialer sets them:
    no Nagle delay (request/response protocols) and TCP keepalive (so a peer
    that vanished is eventually noticed even on an idle connection)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def _connect_one(family: int, proto: int, sockaddr: SockAddr, deadline: float | None, wake_fd: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err == errno.EINPROGRESS:
            if not wait_fd(sock.fileno(), select.POLLOUT, deadline, wake_fd):
                raise TimeoutError(errno.ETIMEDOUT, "dial timed out")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sock.setblocking(True)
        configure(sock)
        return sock
    except BaseException:
        sock.close()
        raise


Target = tuple[int, int, SockAddr]
"""(family, proto, sockaddr): one address to try."""


def resolve(address: Address) -> list[Target]:
    """The addresses to try for *address*, looked up afresh (DNS included) on
    every call. Blocks in the OS resolver, which nothing can interrupt.

    Raises:
        OSError: the lookup failed (``socket.gaierror``).
    """
    if address.is_unix:
        return [(socket.AF_UNIX, 0, address.path)]
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    return [(family, proto, sockaddr) for family, _, proto, _, sockaddr in infos]


def connect_first(address: Address, targets: list[Target], timeout: float | None, wake_fd: int) -> socket.socket:
    """Open a connected, blocking socket to the first of *targets* that accepts.

    *timeout* bounds the connecting, all targets together.

    Raises:
        OSError: connecting failed (the last target's error).
        DialAborted: *wake_fd* is or became readable.
    """
    if wait_fd(wake_fd, select.POLLIN, time.monotonic()):  # closed while resolving
        raise DialAborted
    deadline = None if timeout is None else time.monotonic() + timeout
    error: OSError = OSError(errno.EADDRNOTAVAIL, f"no address found for {address.text}")
    for family, proto, sockaddr in targets:
        try:
            return _connect_one(family, proto, sockaddr, deadline, wake_fd)
        except OSError as exc:
            error = exc
    raise error
