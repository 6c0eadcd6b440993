"""A real ``redis-server`` process on 127.0.0.1 for the tests, plus a tiny RESP codec.

The server runs in the foreground (``--daemonize no``) as our child, on a free
port, with no persistence and its own temporary ``--dir``; ``stop()``/``start()``
bring it down and back on the same port, ``kill()`` is a crash (SIGKILL).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Union

from servers import scaled

HOST = "127.0.0.1"

Reply = Union[bytes, int, None, "RespError", list["Reply"]]
"""A decoded RESP reply: simple and bulk strings are bytes, a null is None."""


class RespError(Exception):
    """A RESP error reply (``-ERR ...``), returned by read_reply as a value."""

    def __init__(self, message: bytes) -> None:
        super().__init__(message.decode(errors="replace"))
        self.message = message


class RedisUnavailable(RuntimeError):
    """No redis-server binary on PATH."""


def redis_binary() -> str:
    """The path of redis-server, or RedisUnavailable."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisUnavailable("redis-server not found on PATH (apt-get install redis-server; .ci/run installs it)")
    return path


def resp_command(*args: bytes | str) -> bytes:
    """Encode a command as a RESP array of bulk strings: resp_command("GET", "x")."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(rfile: IO[bytes]) -> Reply:
    """Read one RESP2 reply from a binary file (``sock.makefile("rb")``); an error
    reply is returned as a RespError, a closed connection raises EOFError."""
    line = rfile.readline()
    if not line.endswith(b"\r\n"):
        raise EOFError(f"connection closed mid-reply: {line!r}")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        return RespError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = rfile.read(size + 2)
        if len(data) != size + 2:
            raise EOFError("connection closed mid-reply")
        return data[:size]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [read_reply(rfile) for _ in range(count)]
    raise ValueError(f"not a RESP reply: {line!r}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on 127.0.0.1 (raises RedisUnavailable without the binary).

    ``address`` is ``"127.0.0.1:N"`` (perconn notation); ``password`` is what
    ``AUTH`` wants (None: no password). ``close()`` (or leaving ``with``) stops it
    and removes its directory.
    """

    START_TIMEOUT = 10.0
    STOP_TIMEOUT = 5.0

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.password = password
        self.port = port or free_port()
        self._pick_port = port is None  # another port may be tried if this one was taken meanwhile
        self.dir = Path(tempfile.mkdtemp(prefix="perconn-redis-"))
        self.log_path = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- life ---------------------------------------------------------------

    def start(self) -> None:
        """Start redis-server on self.port; return once it answers PING (at most 10 s)."""
        assert not self.running, "already running"
        for _ in range(3):  # bounded: a new port only when the first choice was taken meanwhile
            if self._spawn():
                self._pick_port = False  # from now on the address stays
                return
            if not (self._pick_port and b"Address already in use" in self._log_tail()):
                break
            self.port = free_port()
        raise RuntimeError(
            f"redis-server did not come up on {self.address}:\n{self._log_tail().decode(errors='replace')}"
        )

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL after 5 s. The port is kept for start()."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- talking to it ------------------------------------------------------

    def command(self, *args: bytes | str, timeout: float = 2.0) -> Reply:
        """Run one command on a fresh connection (authenticated if there is a password)."""
        with socket.create_connection((HOST, self.port), timeout=scaled(timeout)) as sock:
            rfile = sock.makefile("rb")
            try:
                if self.password is not None:
                    sock.sendall(resp_command("AUTH", self.password))
                    auth = read_reply(rfile)
                    if isinstance(auth, RespError):
                        raise auth
                sock.sendall(resp_command(*args))
                return read_reply(rfile)
            finally:
                rfile.close()

    # -- internals ----------------------------------------------------------

    def _spawn(self) -> bool:
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--daemonize", "no"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.dir), "--logfile", ""]
        if self.password is not None:
            args += ["--requirepass", self.password]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if self._wait_ready(scaled(self.START_TIMEOUT)):
            return True
        self.kill()
        return False

    def _wait_ready(self, timeout: float) -> bool:
        """Poll with PING until redis answers, it exits, or *timeout* runs out."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ping():
                return True
            try:  # a pause between attempts that ends at once if redis exits
                self._proc.wait(0.02)
                return False
            except subprocess.TimeoutExpired:
                pass
        return False

    def _ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                request = resp_command("PING")
                if self.password is not None:
                    request = resp_command("AUTH", self.password) + request
                sock.sendall(request)
                with sock.makefile("rb") as rfile:
                    replies = [read_reply(rfile) for _ in range(2 if self.password is not None else 1)]
        except (OSError, EOFError):
            return False
        return replies[-1] == b"PONG"

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(scaled(self.STOP_TIMEOUT))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(scaled(self.STOP_TIMEOUT))

    def _log_tail(self, size: int = 4000) -> bytes:
        try:
            return self.log_path.read_bytes()[-size:]
        except OSError:
            return b""
