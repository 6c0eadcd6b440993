"""TLS for the tests: a private certificate authority (trustme) and a real TLS
echo server on loopback, restartable and countable, as :mod:`servers` is for
plain TCP.

:func:`pki` makes, once per process, a trusted CA with a certificate for every
name the tests dial (:data:`SERVER_NAMES`), a certificate for
:data:`UNIX_NAME` alone, and a certificate from a second CA nobody trusts.
:class:`TlsServer` serves one of them on 127.0.0.1, ::1 or a unix socket, one
thread per client (each client's socket is touched by its own thread only; the
test thread sends it commands and waits for them to be done).
"""

from __future__ import annotations

import functools
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servers import scaled

if TYPE_CHECKING:
    import trustme

UNIX_NAME = "tls.test"
"""The name a unix-socket TLS server's certificate carries (there is no host to take one from)."""

SERVER_NAMES = ("localhost", "127.0.0.1", "::1", UNIX_NAME)
"""The names (DNS and IP) the trusted server certificate is valid for."""

CERTS = ("trusted", "named", "untrusted")
"""Which certificate a :class:`TlsServer` presents: ``trusted`` (every name in
:data:`SERVER_NAMES`, from the CA :meth:`Pki.client_context` trusts), ``named``
(only :data:`UNIX_NAME`, same CA) or ``untrusted`` (every name, from another CA)."""

MODES = ("echo", "sink", "silent")
FAMILIES = ("tcp4", "tcp6", "unix")

_COMMAND_TIMEOUT = 5.0  # seconds (scaled) a client thread has to carry out a command


@dataclass(frozen=True)
class Pki:
    """The certificates of the TLS tests."""

    ca: trustme.CA
    """The CA the tests' clients trust."""
    other_ca: trustme.CA
    """A CA nobody trusts."""
    certs: dict[str, trustme.LeafCert]
    """The server certificates, by the names in :data:`CERTS`."""

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies certificates and names against :attr:`ca`."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def unverified_context(self) -> ssl.SSLContext:
        """A client context that checks neither the certificate nor the name."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def server_context(self, cert: str = "trusted") -> ssl.SSLContext:
        """A server context presenting the certificate *cert* (one of :data:`CERTS`)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.certs[cert].configure_cert(context)
        return context


@functools.lru_cache(maxsize=1)
def pki() -> Pki:
    """The tests' certificates, made once per process (trustme is a test dependency)."""
    import trustme

    ca = trustme.CA()
    other_ca = trustme.CA()
    certs = {
        "trusted": ca.issue_cert(*SERVER_NAMES),
        "named": ca.issue_cert(UNIX_NAME),
        "untrusted": other_ca.issue_cert(*SERVER_NAMES),
    }
    return Pki(ca, other_ca, certs)


class _Client:
    """One accepted connection and the thread that serves it.

    Only that thread touches the socket (an ``SSLSocket`` is not safe to share);
    others send it commands (``close``, ``close_notify``, ``send``) through a queue
    and a wake-up socket pair, and wait for each to be carried out.
    """

    def __init__(self, server: TlsServer, raw: socket.socket, index: int) -> None:
        self.server = server
        self.index = index
        self.sock: socket.socket = raw  # becomes the SSLSocket once wrapped
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._lock = threading.Lock()  # the wake-up pair against the thread closing it
        self._open = True
        self.serving = False  # the handshake is done: it takes ``send`` commands
        self._commands: queue.Queue[tuple[str, bytes, threading.Event]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"test-tls-client {index}", daemon=True)

    # -- from other threads ---------------------------------------------------

    def order(self, command: str, data: bytes = b"") -> None:
        """Have the client's thread carry out *command*; wait until it has (or has ended)."""
        done = threading.Event()
        with self._lock:
            if not self._open:
                return
            self._commands.put((command, data, done))
            self._wake_w.send(b"\0")
        for _ in range(1000):  # bounded: the thread either obeys or ends
            if done.wait(0.01) or not self.thread.is_alive():
                return
        raise AssertionError(f"TLS test server client {self.index} did not obey {command!r}")

    def join(self) -> None:
        self.thread.join(scaled(_COMMAND_TIMEOUT))
        assert not self.thread.is_alive(), f"TLS test server client {self.index} did not end"

    # -- the client's thread --------------------------------------------------

    def _run(self) -> None:
        try:
            self.sock.setblocking(False)
            if self.server.mode == "silent":
                self._listen_silently()
            elif self._handshake():
                self._serve()
        except Exception as exc:  # a test server must not raise in its threads: keep it for inspection
            self.server.note_error(exc)
        finally:
            with self._lock:
                self._open = False
                self.sock.close()
                self._wake_r.close()
                self._wake_w.close()
            while not self._commands.empty():  # nobody will carry them out: release their waiters
                self._commands.get()[2].set()
            self.server.note_close()

    def _wait(self, readable: bool, writable: bool = False, timeout: float | None = None) -> bool:
        """Wait for the socket (as asked) or a command; True if a command came."""
        rlist = [self.sock, self._wake_r] if readable else [self._wake_r]
        wlist = [self.sock] if writable else []
        ready, _, _ = select.select(rlist, wlist, [], timeout)
        return self._wake_r in ready

    def _next_command(self) -> tuple[str, bytes, threading.Event]:
        with suppress(BlockingIOError):
            self._wake_r.recv(64)
        return self._commands.get_nowait()

    def _listen_silently(self) -> None:
        """``silent`` mode: take whatever the client sends (its ClientHello), never answer."""
        for _ in range(100_000):  # bounded: a client sends a few hello-sized messages at most
            if self._wait(readable=True):
                if self._commands.empty():
                    continue
                command, _, done = self._next_command()
                done.set()
                if command in ("close", "close_notify"):
                    return
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            self.server.note_received(self.index, data, hello=True)

    def _handshake(self) -> bool:
        """The server side of the TLS handshake, interruptible by a command; True if done."""
        context = self.server.context
        tls = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = tls  # the raw socket is detached: the SSLSocket owns the descriptor now
        deadline = time.monotonic() + scaled(_COMMAND_TIMEOUT)
        for _ in range(10_000):  # bounded: a handshake takes a few round trips
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                readable, writable = True, False
            except ssl.SSLWantWriteError:
                readable, writable = False, True
            except (ssl.SSLError, OSError) as exc:  # a client that refused our certificate, or went away
                self.server.note_handshake_failure(exc)
                return False
            else:
                self.serving = True
                self.server.note_handshake()
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.server.note_handshake_failure(TimeoutError("TLS handshake timed out"))
                return False
            if self._wait(readable, writable, remaining):
                done = self._next_command()[2]
                done.set()  # a handshake cannot be interrupted politely: any command closes it
                return False
        return False

    def _serve(self) -> None:
        tls = self.sock
        assert isinstance(tls, ssl.SSLSocket)
        for _ in range(10_000_000):  # bounded; the test ends long before
            if not tls.pending() and self._wait(readable=True):
                command, data, done = self._next_command()
                try:
                    if command == "send":
                        self._send(data)
                        continue
                    self._drain()
                    if command == "close_notify":
                        with suppress(OSError, ValueError):  # sends close_notify; the peer's answer is not awaited
                            tls.unwrap()
                    return
                finally:
                    done.set()
            try:
                data = tls.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue  # a record not complete yet, or not application data
            except OSError:
                return
            if not data:  # the client's close_notify, or its end of stream
                return
            self.server.note_received(self.index, data)
            if self.server.mode == "echo":
                self._send(data)

    def _send(self, data: bytes) -> None:
        """Send all of *data* (bounded: a client that never reads times it out)."""
        self.sock.settimeout(scaled(_COMMAND_TIMEOUT))
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def _drain(self) -> None:
        """Take what the client sent and nobody read (unread input would turn a close into a reset)."""
        for _ in range(64):  # bounded: a client that keeps sending gets a reset after all
            try:
                if not self.sock.recv(65536):
                    return
            except OSError:  # SSLWantReadError included: nothing more for now
                return


class TlsServer:
    """A TLS server on 127.0.0.1, ::1 or a unix socket, in one of MODES:

    - ``echo``: send back what is received.
    - ``sink``: record everything received, answer nothing.
    - ``silent``: accept, take the ClientHello and never answer it (a handshake
      that hangs); ``hellos`` counts the connections whose hello arrived.

    It presents the certificate *cert* (see :data:`CERTS`). ``stop()`` closes the
    listener, then every connection (without close_notify), and joins every
    thread; ``start()`` listens again on the same address; ``drop_clients()``
    closes every connection, with or without close_notify, and keeps listening.
    """

    def __init__(
        self, family: str = "tcp4", mode: str = "echo", cert: str = "trusted", unix_path: Path | None = None
    ) -> None:
        assert family in FAMILIES, family
        assert mode in MODES, mode
        assert cert in CERTS, cert
        assert (family == "unix") == (unix_path is not None), (family, unix_path)
        self.family = family
        self.mode = mode
        self.context = pki().server_context(cert)
        self.context.sni_callback = self._on_sni
        self._unix_path = unix_path
        self._sockaddr: str | tuple[str, int] | tuple[str, int, int, int] | None = None
        self._cond = threading.Condition()
        self.accepts = 0
        self.closes = 0  # connections ended (by either side)
        self.hellos = 0  # silent mode: connections whose first bytes (the ClientHello) arrived
        self.handshakes = 0
        self.handshake_failures: list[BaseException] = []
        self.sni: list[str | None] = []  # the name each client sent (None: none), in order of handshake
        self.received: list[bytearray] = []  # per accepted connection, in order
        self.errors: list[BaseException] = []  # what the server's threads raised (should stay empty)
        self._clients: list[_Client] = []
        self._accepter: threading.Thread | None = None
        self.start()

    # -- addresses --------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address in perconn's notation."""
        assert self._sockaddr is not None
        if self.family == "unix":
            return f"unix:{self._sockaddr}"
        host, port = self._sockaddr[0], self._sockaddr[1]
        return f"[{host}]:{port}" if self.family == "tcp6" else f"{host}:{port}"

    @property
    def port(self) -> int:
        assert isinstance(self._sockaddr, tuple), "a unix server has no port"
        return self._sockaddr[1]

    def dial(self, timeout: float = 2.0) -> socket.socket:
        """A plain socket connected to the server, with *timeout* (scaled) set."""
        assert self._sockaddr is not None
        family = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}.get(self.family, socket.AF_UNIX)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(scaled(timeout))
            sock.connect(self._sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    def _listener(self) -> socket.socket:
        if self.family == "unix":
            assert self._unix_path is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._unix_path.unlink(missing_ok=True)
            sock.bind(str(self._unix_path))
            self._sockaddr = str(self._unix_path)
        else:
            family = socket.AF_INET6 if self.family == "tcp6" else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            default = ("::1", 0) if family == socket.AF_INET6 else ("127.0.0.1", 0)
            sock.bind(self._sockaddr or default)
            self._sockaddr = sock.getsockname()
        sock.listen(64)
        sock.setblocking(False)
        return sock

    # -- life -------------------------------------------------------------------

    def start(self) -> None:
        assert self._accepter is None, "already running"
        self._listen = self._listener()
        self._wake_r, self._wake_w = socket.socketpair()
        self._accepter = threading.Thread(target=self._accept_loop, name=f"test-tls-server {self.mode}", daemon=True)
        self._accepter.start()

    @property
    def running(self) -> bool:
        return self._accepter is not None

    def stop(self) -> None:
        """Close the listener, then every connection (no close_notify: the server
        went away); join every thread. The address stays reserved for start()."""
        if self._accepter is None:
            return
        self._wake_w.send(b"\0")
        self._accepter.join(scaled(_COMMAND_TIMEOUT))
        assert not self._accepter.is_alive(), "TLS test server did not stop accepting"
        self._accepter = None
        # The listener first: a client that sees its connection close and redials at
        # once must find the address refusing, not an old backlog about to vanish.
        self._listen.close()
        self._wake_r.close()
        self._wake_w.close()
        self._close_clients("close")

    def restart(self) -> None:
        self.stop()
        self.start()

    def drop_clients(self, close_notify: bool = False) -> None:
        """Close every connection, keep listening. With *close_notify* the server
        first sends TLS's close_notify alert (an orderly TLS end, then its FIN);
        without, it just closes the socket (a truncated TLS stream)."""
        self._close_clients("close_notify" if close_notify else "close")

    def send(self, data: bytes) -> None:
        """Send *data* to every connection that completed its handshake."""
        with self._cond:
            clients = [c for c in self._clients if c.serving]
        for client in clients:
            client.order("send", data)

    def _close_clients(self, command: str) -> None:
        with self._cond:
            clients = list(self._clients)
        for client in clients:
            client.order(command)
        for client in clients:
            client.join()
        with self._cond:
            self._clients = [c for c in self._clients if c not in clients]

    # -- waiting ----------------------------------------------------------------

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, scaled(timeout))

    def wait_accepts(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least *n* connections were accepted."""
        return self._wait_for(lambda: self.accepts >= n, timeout)

    def wait_closes(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least *n* connections ended."""
        return self._wait_for(lambda: self.closes >= n, timeout)

    def wait_hellos(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until the first bytes of at least *n* connections arrived (silent mode)."""
        return self._wait_for(lambda: self.hellos >= n, timeout)

    def wait_handshakes(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least *n* handshakes completed."""
        return self._wait_for(lambda: self.handshakes >= n, timeout)

    def wait_received(self, conn_index: int, nbytes: int, timeout: float = 5.0) -> bytes:
        """Wait until connection *conn_index* delivered *nbytes*; return what it did."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self.received) > conn_index and len(self.received[conn_index]) >= nbytes, scaled(timeout)
            )
            assert ok, f"connection {conn_index} did not deliver {nbytes} bytes: {self.received}"
            return bytes(self.received[conn_index])

    # -- the threads ------------------------------------------------------------

    def _accept_loop(self) -> None:
        try:
            for _ in range(10_000_000):  # bounded; stop() ends it long before
                ready, _, _ = select.select([self._listen, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                try:
                    raw, _ = self._listen.accept()
                except BlockingIOError:
                    continue
                with self._cond:
                    client = _Client(self, raw, self.accepts)
                    self.accepts += 1
                    self.received.append(bytearray())
                    self._clients.append(client)
                    client.thread.start()  # under the lock: whoever sees a client sees it running
                    self._cond.notify_all()
        except Exception as exc:
            self.note_error(exc)

    def _on_sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
        with self._cond:
            self.sni.append(name)

    def note_received(self, index: int, data: bytes, hello: bool = False) -> None:
        with self._cond:
            if hello and not self.received[index]:
                self.hellos += 1
            self.received[index] += data
            self._cond.notify_all()

    def note_handshake(self) -> None:
        with self._cond:
            self.handshakes += 1
            self._cond.notify_all()

    def note_handshake_failure(self, exc: BaseException) -> None:
        with self._cond:
            self.handshake_failures.append(exc)
            self._cond.notify_all()

    def note_close(self) -> None:
        with self._cond:
            self.closes += 1
            self._cond.notify_all()

    def note_error(self, exc: BaseException) -> None:
        with self._cond:
            self.errors.append(exc)
            self._cond.notify_all()
