"""TLS for the synchronous front end: the handshake, run as part of a dial, and
:class:`TLSStream`, the encrypted stream a :class:`~perconn.sync.link.Connection`
reads and writes in place of its socket.

The encryption runs in memory (``ssl.MemoryBIO``) and the socket I/O is ours, so
both keep the guarantees of a plain connection: the handshake polls the wake-up
descriptor (``close()`` aborts it at once), a reader blocked on the socket does
not hold up a writer (full duplex), and the liveness check before a write can
look at the socket itself (``ssl.SSLSocket`` refuses ``MSG_PEEK``). One lock
serialises the calls into OpenSSL, which may not run in two threads at once; it
is never held while waiting on the socket.

End of stream: the peer's ``close_notify`` and a bare TCP close (a truncation)
both end the stream, as ``ssl.SSLSocket`` does by default; a protocol that must
tell them apart frames its messages. ``close()`` closes the socket without
sending ``close_notify``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from typing import Any

from .._errors import peer_closed
from .._validate import timed_out
from .dialer import Step, send_all, wait_fd
from .hub import Wait
from .link import MAX_CHUNK, Connection, peek, send_within

__all__ = ["TLSConnection", "TLSStream", "handshake"]

_READ_CHUNK = 2**18
_DONTWAIT = socket.MSG_DONTWAIT


def handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    hostname: str | None,
    deadline: float | None,
    budget: float | None,
) -> Step[TLSStream]:
    """Run the client side of a TLS handshake on the connected *sock* (a step of
    a dial: it yields what it waits for, so the dial can be aborted at any wait).

    Raises:
        ssl.SSLError: the handshake failed (a certificate that does not verify,
            a peer that does not speak TLS).
        TimeoutError: *deadline* passed (*budget* seconds, for the message).
        OSError: the connection failed.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=hostname)
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if outgoing.pending:
            yield from send_all(sock, outgoing.read(), deadline, "TLS handshake", budget)
        if done:
            return TLSStream(sock, tls, incoming, outgoing)
        if not (yield Wait((sock.fileno(),), (), deadline)):
            raise timed_out("TLS handshake", budget or 0.0)
        try:
            data = sock.recv(_READ_CHUNK, _DONTWAIT)
        except BlockingIOError:
            continue
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()  # the next step raises: the peer hung up mid-handshake


class TLSStream:
    """A TLS connection with the part of the socket interface a
    :class:`~perconn.sync.link.Connection` uses: ``recv(n, flags)``,
    ``sendall``, ``fileno``, ``shutdown``, ``close``.

    Threads: one reader, one writer and any number of liveness checks at once.
    ``recv`` consumes the socket only under ``_rx`` (held while it waits), so a
    liveness check that finds ``_rx`` free may move arrived bytes into the TLS
    layer without stranding a waiting reader.
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self.raw = sock
        self.tls = tls
        self._in = incoming
        self._out = outgoing
        self._lock = threading.Lock()  # around every call into OpenSSL
        self._rx = threading.Lock()  # whoever receives from the socket
        self.eof = False  # the socket reached end of stream (told to the TLS layer)

    def fileno(self) -> int:
        return self.raw.fileno()

    def _decrypt(self, n: int) -> bytes | None:
        """Up to *n* decrypted bytes, ``b""`` at end of stream, or None if the TLS
        layer needs more bytes from the socket. Raises ``ssl.SSLError``. (At
        most :data:`MAX_CHUNK` are asked of it: it allocates what is asked, and
        returns a record's worth.)"""
        with self._lock:
            try:
                return self.tls.read(n if n <= MAX_CHUNK else MAX_CHUNK)
            except ssl.SSLWantReadError:
                return None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # close_notify, or a bare close: the end either way

    def _feed(self, data: bytes) -> None:
        with self._lock:
            if data:
                self._in.write(data)
            else:
                self.eof = True
                self._in.write_eof()

    def recv(self, n: int, flags: int = 0) -> bytes:
        """Up to *n* decrypted bytes (blocking), ``b""`` at end of stream."""
        with self._rx:
            return self._recv(n, flags)

    def recv_within(self, n: int, deadline: float) -> bytes | None:
        """Up to *n* decrypted bytes, ``b""`` at end of stream, or None if none
        arrived by *deadline*. ``_rx`` is held across the wait, so a liveness
        check cannot take the bytes this waits for."""
        with self._rx:
            while True:
                with contextlib.suppress(BlockingIOError):
                    return self._recv(n, _DONTWAIT)
                if not wait_fd(self.raw.fileno(), select.POLLIN, deadline):
                    return None

    def _recv(self, n: int, flags: int) -> bytes:
        """What :meth:`recv` does, holding ``_rx``. With ``MSG_DONTWAIT``: raises
        ``BlockingIOError`` once the socket held nothing more and the TLS layer
        has no whole record."""
        while True:
            data = self._decrypt(n)
            if data is not None:
                return data
            if self.eof:
                return b""
            self._feed(self.raw.recv(_READ_CHUNK, flags))

    def sendall(self, data: bytes | memoryview) -> None:
        """Encrypt all of *data* and send it (blocking)."""
        self.raw.sendall(self.encrypt(data))

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """The records carrying *data*, after anything the TLS layer had to send."""
        with self._lock:
            self.tls.write(data)
            return self._out.read()

    def peer_gone(self) -> BaseException | None:
        """Whether the peer closed or reset the connection, as far as the socket
        can tell without blocking: bytes already arrived are moved into the TLS
        layer (unless a reader is receiving), so records the peer sent before
        closing (a session ticket, a last reply) do not hide its close."""
        if not self._rx.acquire(blocking=False):
            return peek(self.raw)  # a reader is at the socket and will see the end itself
        try:
            while not self.eof:
                self._feed(self.raw.recv(_READ_CHUNK, _DONTWAIT))
        except BlockingIOError:
            return None
        except OSError as exc:
            return exc
        finally:
            self._rx.release()
        return peer_closed()

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's TLS names: ``ssl_object``, ``peercert``, ``cipher``,
        ``compression``, ``sslcontext``; *default* for others."""
        if name == "ssl_object":
            return self.tls
        if name == "peercert":
            return self.tls.getpeercert()
        if name == "cipher":
            return self.tls.cipher()
        if name == "compression":
            return self.tls.compression()
        if name == "sslcontext":
            return self.tls.context
        return default


class TLSConnection(Connection):
    """A :class:`~perconn.sync.link.Connection` over TLS: its ``sock`` is the
    :class:`TLSStream`, its ``raw`` the socket under it."""

    __slots__ = ("stream",)

    def __init__(self, stream: TLSStream, address: str, generation: int, now: float) -> None:
        super().__init__(stream.raw, address, generation, now)
        self.sock = self.stream = stream

    def recv(self, n: int, deadline: float | None) -> bytes | None:
        return self.stream.recv(n) if deadline is None else self.stream.recv_within(n, deadline)

    def send(self, view: bytes | memoryview, deadline: float | None) -> int:
        """As a plain connection's, but *view* is encrypted only once the socket
        can take bytes: records, once made, must all go out (the next ones follow
        in sequence), so a write that times out before that has sent nothing."""
        if deadline is None:
            self.stream.sendall(view)
            return len(view)
        if not wait_fd(self.raw.fileno(), select.POLLOUT, deadline):
            return 0
        records = self.stream.encrypt(view)
        sent = send_within(self.raw, records, deadline)
        if sent == len(records):
            return len(view)
        return min(len(view) - 1, max(1, len(view) * sent // len(records)))  # torn: an estimate of the plain bytes

    def send_now(self, view: bytes | memoryview) -> bool:
        if not wait_fd(self.raw.fileno(), select.POLLOUT, 0.0):  # a deadline already past: no waiting
            return False
        records = self.stream.encrypt(view)  # made: they all go, now or as the rest
        if not super().send_now(records):
            self.rest = records
        return True

    def peer_gone(self) -> BaseException | None:
        return self.stream.peer_gone()

    def extra_info(self, name: str, default: Any = None) -> Any:
        info = self.stream.extra_info(name, _MISSING)
        return super().extra_info(name, default) if info is _MISSING else info


_MISSING = object()
