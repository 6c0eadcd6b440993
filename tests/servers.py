"""Real loopback servers the tests dial: restartable, killable, countable.

Each server runs one thread with a selector; the test thread talks to it by
commands that it waits on (events, never sleeps). Servers are independent of
any event loop, so the sync and asyncio tests share them.
"""

from __future__ import annotations

import os
import queue
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

SCALE = float(os.environ.get("PERCONN_TEST_SCALE", "1"))
"""One factor for every wait in the tests, for slow machines."""


def scaled(seconds: float) -> float:
    return seconds * SCALE


MODES = ("echo", "accept_close", "close_after_first", "sink", "no_read", "reply_bye")
FAMILIES = ("tcp4", "tcp6", "unix", "abstract")


class Server:
    """A listening server on 127.0.0.1, ::1, a unix socket or a Linux abstract unix
    socket (family "abstract", address ``unix:@name``), in one of MODES:

    - ``echo``: send back what is received.
    - ``accept_close``: accept, then close at once.
    - ``close_after_first``: receive one chunk, record it, close.
    - ``sink``: record everything received, answer nothing.
    - ``no_read``: accept and never read (the client's writes back up).
    - ``reply_bye``: a line server answering one request per connection: for the
      first full line ``X\\n`` it sends ``REP X\\nBYE\\n`` and closes, the reply and
      the FIN in one TCP segment (so a client that read the reply can see the
      close); anything the client sends after is ignored.

    ``stop()`` closes the listener and every connection (a server going away);
    ``start()`` listens again on the same address (a server coming back).
    """

    def __init__(self, family: str = "tcp4", mode: str = "echo", unix_path: Path | None = None) -> None:
        assert mode in MODES, mode
        assert family in FAMILIES, family
        self.family = family
        self.mode = mode
        self._unix_path = unix_path
        self._cond = threading.Condition()
        self.accepts = 0
        self.closes = 0  # connections the server closed or saw close
        self.received: list[bytearray] = []  # per accepted connection, in sink/close_after_first/reply_bye modes
        self._abstract_name = f"perconn-test-{secrets.token_hex(8)}" if family == "abstract" else None
        self._sockaddr: object = None
        self._thread: threading.Thread | None = None
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self.start()

    # -- addresses ----------------------------------------------------------

    @property
    def address(self) -> str:
        """The address in perconn's notation."""
        if self.family == "unix":
            return f"unix:{self._sockaddr}"
        if self.family == "abstract":
            return f"unix:@{self._abstract_name}"
        host, port = self._sockaddr[0], self._sockaddr[1]  # type: ignore[index]
        return f"[{host}]:{port}" if self.family == "tcp6" else f"{host}:{port}"

    @property
    def sockaddr(self) -> str | tuple[str, int] | tuple[str, int, int, int]:
        """The address for ``socket.connect`` (abstract: the name with its leading NUL)."""
        if self.family == "abstract":
            return f"\0{self._abstract_name}"
        return self._sockaddr  # type: ignore[return-value]

    def dial(self, timeout: float = 2.0) -> socket.socket:
        """A plain socket connected to the server (any family), with *timeout* (scaled) set."""
        fam = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}.get(self.family, socket.AF_UNIX)
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.settimeout(scaled(timeout))
            sock.connect(self.sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    def _listener(self) -> socket.socket:
        if self.family == "abstract":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(f"\0{self._abstract_name}")  # the name goes away with the socket: no file to unlink
        elif self.family == "unix":
            assert self._unix_path is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if self._unix_path.exists():
                self._unix_path.unlink()
            sock.bind(str(self._unix_path))
            self._sockaddr = str(self._unix_path)
        else:
            fam = socket.AF_INET6 if self.family == "tcp6" else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            default = ("::1", 0) if fam == socket.AF_INET6 else ("127.0.0.1", 0)
            sock.bind(self._sockaddr or default)  # type: ignore[arg-type]
            self._sockaddr = sock.getsockname()
        sock.listen(4096)  # room for a thousand Conns dialing at once (a full queue drops SYNs: retried in 1 s)
        return sock

    # -- life ---------------------------------------------------------------

    def start(self) -> None:
        assert self._thread is None, "already running"
        self._listen = self._listener()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()  # here, not in the thread: all its fds exist once start() returns
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"test-server {self.mode}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every connection; the address stays reserved for start()."""
        if self._thread is None:
            return

        def halt() -> None:
            self._running = False

        self._call(halt)
        self._thread.join(scaled(5))
        self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    @property
    def running(self) -> bool:
        """Whether the server listens (between start() and stop())."""
        return self._thread is not None

    def restart(self) -> None:
        self.stop()
        self.start()

    def drop_clients(self, reset: bool = False) -> None:
        """Close every accepted connection (with RST if *reset*), keep listening."""

        def drop() -> None:
            for sock in list(self._clients):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._close_client(sock)

        self._call(drop)

    def send(self, data: bytes) -> None:
        """Send *data* to every accepted connection (in order with other commands)."""

        def push() -> None:
            for sock in list(self._clients):
                self._queue(sock, data)

        self._call(push)

    def wait_accepts(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least *n* connections were accepted."""
        with self._cond:
            return self._cond.wait_for(lambda: self.accepts >= n, scaled(timeout))

    def wait_closes(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least *n* connections were closed (by either side)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.closes >= n, scaled(timeout))

    def wait_received(self, conn_index: int, nbytes: int, timeout: float = 5.0) -> bytes:
        """Wait until connection *conn_index* delivered *nbytes* (sink mode)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self.received) > conn_index and len(self.received[conn_index]) >= nbytes, scaled(timeout)
            )
            assert ok, f"connection {conn_index} did not deliver {nbytes} bytes: {self.received}"
            return bytes(self.received[conn_index])

    # -- the server thread --------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()
        self._commands.put((fn, done))
        self._wake_w.send(b"\0")
        assert done.wait(scaled(5)), "test server did not answer"

    def _close_client(self, sock: socket.socket) -> None:
        self._sel.unregister(sock)
        self._clients.pop(sock)
        self._pending.pop(sock, None)
        if sock in self._closing:
            self._closing.discard(sock)
            self._discard_input(sock)  # unread input would turn the close into a RST
        sock.close()
        with self._cond:
            self.closes += 1
            self._cond.notify_all()

    def _run(self) -> None:
        self._clients: dict[socket.socket, int] = {}
        self._pending: dict[socket.socket, bytearray] = {}  # echo output the client has not taken yet
        self._closing: set[socket.socket] = set()  # close once their pending output is flushed
        self._sel.register(self._listen, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while self._running:
                for key, events in self._sel.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        self._wake_r.recv(64)
                        while not self._commands.empty():
                            fn, done = self._commands.get()
                            fn()
                            done.set()
                    elif sock is self._listen:
                        self._accept()
                    elif sock in self._clients:
                        if events & selectors.EVENT_WRITE:
                            self._flush(sock)
                        if events & selectors.EVENT_READ and sock in self._clients:
                            self._serve(sock)
        finally:
            # The listener first: a client that sees its connection close and redials
            # at once must find the port refusing, not an old backlog about to vanish.
            self._sel.unregister(self._listen)
            self._listen.close()
            for sock in list(self._clients):
                self._close_client(sock)
            self._sel.close()

    def _queue(self, sock: socket.socket, data: bytes) -> None:
        """Send *data* to *sock* without ever blocking the server thread: what the
        client does not take now waits in a buffer, and while that buffer is large
        the server stops reading from the client (as a real server pushes back)."""
        self._pending.setdefault(sock, bytearray()).extend(data)
        self._flush(sock)

    def _flush(self, sock: socket.socket) -> None:
        out = self._pending.get(sock)
        if out:
            try:
                del out[: sock.send(out)]
            except BlockingIOError:
                pass
            except OSError:
                self._close_client(sock)
                return
        backlog = len(out or b"")
        if not backlog and sock in self._closing:
            with suppress(OSError):  # the FIN right behind the last bytes (corked: with them)
                sock.shutdown(socket.SHUT_WR)
            self._close_client(sock)
            return
        wanted = (selectors.EVENT_READ if backlog < (1 << 20) else 0) | (selectors.EVENT_WRITE if backlog else 0)
        if self._sel.get_key(sock).events != wanted:
            self._sel.modify(sock, wanted or selectors.EVENT_WRITE)

    def _close_after_flush(self, sock: socket.socket) -> None:
        """Close *sock* as soon as everything queued for it has been sent."""
        self._closing.add(sock)
        self._flush(sock)

    @staticmethod
    def _discard_input(sock: socket.socket) -> None:
        for _ in range(64):  # bounded: a client that keeps sending gets a RST after all
            try:
                if not sock.recv(65536):
                    return
            except OSError:
                return

    def _accept(self) -> None:
        client, _ = self._listen.accept()
        with self._cond:
            index = self.accepts
            self.accepts += 1
            self.received.append(bytearray())
            self._cond.notify_all()
        self._clients[client] = index
        client.setblocking(False)
        self._sel.register(client, selectors.EVENT_READ)
        if self.mode == "accept_close":
            self._close_client(client)
        elif self.mode == "no_read":  # watch only for the client going away
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def _serve(self, sock: socket.socket) -> None:
        if self.mode == "no_read":
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    self._close_client(sock)
            except OSError:
                self._close_client(sock)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_client(sock)
            return
        if sock in self._closing:  # answered already: ignore the rest
            return
        if self.mode == "echo":
            self._queue(sock, data)
            return
        with self._cond:
            got = self.received[self._clients[sock]]
            got += data
            self._cond.notify_all()
        if self.mode == "close_after_first":
            self._close_client(sock)
        elif self.mode == "reply_bye" and b"\n" in data:
            line = bytes(got[: got.find(b"\n")])
            if sock.family != socket.AF_UNIX:  # the reply and the FIN leave in one segment
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            self._queue(sock, b"REP " + line + b"\nBYE\n")
            if sock in self._clients:  # the send may have found it gone
                self._close_after_flush(sock)


class CrashLoop:
    """Restart *server* *count* times in a background thread, keeping it up *up*
    seconds each time (``stop()``, then ``start()`` at once), as a crash-looping
    server does; at the end the server is left up for good.

    ``starts[i]`` and ``ends[i]`` are the monotonic times up-window *i* began (after
    ``start()`` returned; window 0 at the thread's start) and ended (before ``stop()``
    was called): the server surely listened in between. The last window has no end.
    ``done`` is set once the loop is over (``error`` holds what it raised, if anything).
    ``__exit__`` ends the loop early (bounded) and re-raises the loop's error::

        with CrashLoop(server, count=3, up=0.2) as loop:
            assert loop.done.wait(5)
    """

    def __init__(self, server: Server, count: int, up: float) -> None:
        assert count >= 0 and up >= 0, (count, up)
        self.server = server
        self.count = count
        self.up = up
        self.restarts = 0
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-server crash-loop", daemon=True)

    def __enter__(self) -> CrashLoop:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._halt.set()
        self._thread.join(scaled(15))  # a stop() or start() in flight is bounded by 5 s each
        assert not self._thread.is_alive(), "crash loop did not stop"
        if self.error is not None and exc_type is None:
            raise self.error

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until the loop is over (*timeout* scaled)."""
        return self.done.wait(scaled(timeout))

    def _run(self) -> None:
        try:
            if not self.server.running:
                self.server.start()
            self.starts.append(time.monotonic())
            for _ in range(self.count):
                if self._halt.wait(self.up):
                    break
                self.ends.append(time.monotonic())
                self.server.stop()
                self.server.start()
                self.starts.append(time.monotonic())
                self.restarts += 1
        except BaseException as e:  # reported by __exit__
            self.error = e
            if not self.server.running:  # leave it up if we can
                with suppress(OSError):
                    self.server.start()
        finally:
            self.done.set()


@contextmanager
def refusing_port(family: str = "tcp4") -> Iterator[str]:
    """An address whose port refuses connections: bound (so nobody else takes it), not listening."""
    fam = socket.AF_INET6 if family == "tcp6" else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.bind(("::1", 0) if family == "tcp6" else ("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        yield f"[::1]:{port}" if family == "tcp6" else f"127.0.0.1:{port}"
    finally:
        sock.close()


@contextmanager
def blackhole() -> Iterator[str]:
    """A listener that never accepts, with its queue full: connects to it hang
    until their timeout (the SYN is dropped), as to a host that went silent."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):  # bounded: the queue of a listen(0) socket holds one or two
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(addr)
            except TimeoutError:
                break
        else:
            raise AssertionError("could not fill the listen queue")
        yield f"{addr[0]}:{addr[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def open_fds() -> set[int]:
    """The file descriptors this process has open right now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.005) -> bool:
    """Poll *predicate* until true or *timeout*: only for state no event reports
    (threads ending, fds closing), never to synchronise with the code under test."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
