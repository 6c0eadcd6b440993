"""The start of a non-blocking connect, as both front ends begin one (the
waiting for it is theirs: the dialer thread's ``selectors`` loop, or the event
loop)."""

from __future__ import annotations

import errno
import socket
import sys

from ._lookup import Target
from ._messages import strerror

__all__ = ["Spares", "begin_connect", "connect_error", "start_connect"]

_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
"""Made non-blocking by ``socket()`` itself where the OS can (Linux): one system
call per dial fewer than ``setblocking(False)`` after it."""


class Spares:
    """TCP sockets whose connect failed, kept to begin later connects with: a
    refused dial then costs two ``connect`` calls, not a ``socket``, a
    ``connect``, a ``getsockopt`` and a ``close`` (a dial storm is mostly
    refused dials). Linux lets a TCP socket whose connect failed connect again,
    afresh: no port, address or error of the failed connect is kept. Elsewhere
    nothing is kept.

    At most :attr:`LIMIT` of each family are kept. One thread uses it (the
    synchronous dialer thread); its owner closes them with :meth:`close` (the
    dialer thread, when it ends with the last dialing ``Conn``).
    """

    LIMIT = 16
    ENABLED = sys.platform == "linux"

    def __init__(self) -> None:
        self._pools: dict[int, list[socket.socket]] = {socket.AF_INET: [], socket.AF_INET6: []} if self.ENABLED else {}

    def keep(self, sock: socket.socket, family: int) -> bool:
        """Keep *sock* (a TCP socket of *family* whose connect failed) for a later
        connect; False if there is no room (or nothing is kept here): close it.
        (*family* is the caller's to say: ``sock.family`` costs an enum conversion.)"""
        pool = self._pools.get(family)
        if pool is None or len(pool) >= self.LIMIT:
            return False
        pool.append(sock)
        return True

    def __len__(self) -> int:
        return sum(map(len, self._pools.values()))

    def close(self) -> None:
        """Close every socket kept."""
        for pool in self._pools.values():
            while pool:
                pool.pop().close()


def begin_connect(target: Target, spares: Spares | None = None) -> tuple[socket.socket, int]:
    """A non-blocking socket connecting to *target*, and the outcome so far: 0
    (connected), ``errno.EINPROGRESS`` (wait until it is writable, then read
    ``SO_ERROR``), or the errno it failed with (then the socket is closed, or
    kept in *spares*: the caller leaves it alone).

    A refusal over loopback is known at once: it is reported here, not after a
    trip through a selector (a dial storm is mostly these). With *spares*, a
    TCP connect begins on a socket kept there if there is one.

    Raises:
        OSError: no socket could be made.
    """
    family, proto, sockaddr = target
    pool = None if spares is None else spares._pools.get(family)
    spare = pool.pop() if pool else None
    sock = spare if spare is not None else socket.socket(family, socket.SOCK_STREAM | _NONBLOCK, proto)
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if spare is not None and err in _UNUSABLE:  # (not seen: a kernel that would not connect it again)
            sock.close()
            return begin_connect(target)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            if pool is None:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.EINPROGRESS
            else:
                # Linux: a second connect tells how the first went, as SO_ERROR
                # would, and leaves a refused socket ready to connect again.
                err = sock.connect_ex(sockaddr)
                err = _SECOND.get(err, err)
    except BaseException:
        sock.close()
        raise
    if err not in (0, errno.EINPROGRESS) and (spares is None or not spares.keep(sock, family)):
        sock.close()
    return sock, err


def start_connect(target: Target, spares: Spares | None = None) -> tuple[socket.socket, bool]:
    """:func:`begin_connect`, for a dial: the socket, and whether it is connected
    already (else the connect is in progress: wait until it is writable, then
    read ``SO_ERROR``).

    Raises:
        OSError: the connect failed at once (:func:`connect_error`; the socket is
            closed, or kept in *spares*), or no socket could be made.
    """
    sock, err = begin_connect(target, spares)
    if err not in (0, errno.EINPROGRESS):
        raise connect_error(err)
    return sock, not err


_SECOND = {errno.EALREADY: errno.EINPROGRESS, errno.EISCONN: 0}
"""What a second connect's outcome means where it is not a failure's errno:
the first is still in progress, or it connected."""

_UNUSABLE = frozenset({errno.EALREADY, errno.EISCONN, errno.EINVAL, errno.ECONNABORTED})
"""Outcomes of a connect on a kept socket that mean it could not be used again:
a new socket is made instead."""


def connect_error(err: int) -> OSError:
    """The error of a connect that failed with *err*, worded as the OS words it
    (``OSError`` picks the subclass: ``ConnectionRefusedError``, ...), by both
    front ends alike. It is a ``DialError``'s ``__cause__`` as is: an imitation
    of the event loop's wording beneath it would be a second exception per
    failed dial, for ``stats.last_error`` to keep and the garbage collector to walk."""
    return OSError(err, strerror(err))
