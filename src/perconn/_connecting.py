"""The start of a non-blocking connect, as both front ends begin one (the
waiting for it is theirs: the dialer thread's ``selectors`` loop, or the event
loop)."""

from __future__ import annotations

import errno
import socket

from ._lookup import Target
from ._messages import strerror

__all__ = ["begin_connect", "connect_error"]

_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
"""Made non-blocking by ``socket()`` itself where the OS can (Linux): one system
call per dial fewer than ``setblocking(False)`` after it."""


def begin_connect(target: Target) -> tuple[socket.socket, int]:
    """A non-blocking socket connecting to *target*, and the outcome so far: 0
    (connected), ``errno.EINPROGRESS`` (wait until it is writable, then read
    ``SO_ERROR``), or the errno it failed with (the socket is closed then).

    A refusal over loopback is known at once: it is reported here, not after a
    trip through a selector (a dial storm is mostly these).

    Raises:
        OSError: no socket could be made.
    """
    family, proto, sockaddr = target
    sock = socket.socket(family, socket.SOCK_STREAM | _NONBLOCK, proto)
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.EINPROGRESS
    except BaseException:
        sock.close()
        raise
    if err not in (0, errno.EINPROGRESS):
        sock.close()
    return sock, err


def connect_error(err: int) -> OSError:
    """The error of a connect that failed with *err*, worded as the OS words it
    (``OSError`` picks the subclass: ``ConnectionRefusedError``, ...), by both
    front ends alike. It is a ``DialError``'s ``__cause__`` as is: an imitation
    of the event loop's wording beneath it would be a second exception per
    failed dial, for ``stats.last_error`` to keep and the garbage collector to walk."""
    return OSError(err, strerror(err))
