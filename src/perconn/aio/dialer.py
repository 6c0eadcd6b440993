"""Connecting for the asyncio front end: race the addresses a name resolved to,
as :mod:`perconn._eyeballs` says (Happy Eyeballs), one task per attempt.

perconn resolves names itself (:mod:`perconn._lookup`, bounded by
``dial_timeout``), so the loop's own ``create_connection(happy_eyeballs_delay=)``
cannot be used: this races non-blocking connects on sockets it opens, and the
caller hands the winner to ``create_connection(sock=)``.
"""

from __future__ import annotations

import asyncio
import socket

from .._address import Address
from .._connecting import connect_error, start_connect
from .._eyeballs import ATTEMPT_DELAY, Race
from .._lookup import Target

__all__ = ["connect_first", "finish_connect"]


async def connect_first(
    loop: asyncio.AbstractEventLoop, address: Address, targets: list[Target], delay: float = ATTEMPT_DELAY
) -> socket.socket:
    """Open a connected, non-blocking socket to the first of *targets* that accepts.

    A new attempt starts every *delay* seconds (or at once when one fails); the
    first to connect wins. Every other socket opened is closed before this
    returns or raises, cancellation included: cancelling it (the ``Conn``
    closing, or its ``dial_timeout`` running out) cancels every attempt.

    Not bounded here: the caller bounds the whole dial (``dial_timeout``) by
    cancelling it.

    Raises:
        OSError: every target failed (the error of the last to fail, worded
            as the OS words it: :func:`perconn._connecting.connect_error`).
    """
    if len(targets) == 1:  # nothing to race (a literal, a unix path, one address): no task of its own
        return await _attempt(loop, targets[0])
    race = Race(address, targets, delay)
    attempts: list[asyncio.Task[socket.socket]] = []
    winner: socket.socket | None = None
    try:
        winner = await _race(loop, race, attempts)
    finally:
        try:
            await _abandon(attempts)
        except BaseException:  # cancelled while the losers closed: the winner goes too
            if winner is not None:
                winner.close()
            raise
    return winner


async def _race(
    loop: asyncio.AbstractEventLoop, race: Race, attempts: list[asyncio.Task[socket.socket]]
) -> socket.socket:
    """Run *race*, keeping the attempts not yet over in *attempts* (in the order
    started); return the winner's socket (its task removed from *attempts*)."""
    while True:  # ends: each pass starts or ends an attempt, or waits for the next start
        now = loop.time()
        while (target := race.start(now)) is not None:  # bounded by the number of targets
            attempts.append(loop.create_task(_attempt(loop, target)))
        if race.lost:
            raise race.error
        done, _ = await asyncio.wait(attempts, timeout=race.wait(now), return_when=asyncio.FIRST_COMPLETED)
        for task in [task for task in attempts if task in done]:  # in the order started
            attempts.remove(task)
            error = task.exception()
            if error is None:
                return task.result()
            if not isinstance(error, OSError):
                raise error
            race.failed(error)


async def _attempt(loop: asyncio.AbstractEventLoop, target: Target) -> socket.socket:
    """One connection attempt: a non-blocking socket connected to *target*.
    The socket is closed if connecting fails or the attempt is cancelled."""
    sock, connected = start_connect(target)
    return sock if connected else await finish_connect(loop, sock)


async def finish_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> socket.socket:
    """*sock*, once its connect (begun by :func:`~perconn._connecting.start_connect`,
    in progress) has connected; closed if it fails or this is cancelled.

    What ``loop.sock_connect`` does, minus its trip through the loop when the
    outcome is known at once; a failure is worded as the OS words it (as the
    synchronous dialer words it), not as ``sock_connect`` would.

    Raises:
        OSError: the connect failed (:func:`~perconn._connecting.connect_error`).
    """
    try:
        await _writable(loop, sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise connect_error(err)
    except BaseException:  # the loop has stopped watching the socket by now: closing it is safe
        sock.close()
        raise
    return sock


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until *fd* is writable (a connect in progress is over)."""
    ready = loop.create_future()
    loop.add_writer(fd, _set_done, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_if_connected(task: asyncio.Task[socket.socket]) -> None:
    """Done callback of a losing attempt: close its socket if it connected after all."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def _abandon(attempts: list[asyncio.Task[socket.socket]]) -> None:
    """Cancel the losing *attempts* and wait until each has closed its socket.

    If this wait is itself cancelled the attempts still close their sockets,
    a moment later, on their own.
    """
    for task in attempts:
        task.cancel()
        task.add_done_callback(_close_if_connected)
    if attempts:
        await asyncio.wait(attempts)
