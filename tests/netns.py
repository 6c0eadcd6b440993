"""Fault injection in throwaway network namespaces.

:func:`run_in_netns` runs a Python script with this interpreter inside a fresh
network namespace (``unshare -n``: only loopback, brought up; no packet leaves
it; the namespace dies with the script's last process), where the script may
rewrite iptables at will. The script imports its tools from this module (the
tests directory is on its ``PYTHONPATH``):

- iptables faults on loopback: :func:`drop_port` / :func:`undrop_port` (a
  half-open path: every TCP packet to or from a port dropped), :func:`reject_with_rst`
  / :func:`unreject` (each packet to a port answered with a RST), :func:`drop_syn`
  / :func:`undrop_syn` (a blackholed dial: only SYNs to a port dropped);
- :class:`EchoServer`, a restartable echo server thread, and
  :func:`spawn_echo_server`, the same in a child process (to SIGKILL);
- :class:`Front`, a blocking facade over ``perconn.connect`` and (with its loop
  in a helper thread) ``perconn.aio.connect``, so one script serves both;
- :class:`Recorder`, a logger that keeps its records, stamped with ``time.monotonic()``;
- :func:`report`, which prints the script's measurements as its last stdout
  line (JSON); the test reads them back with :func:`figures`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from servers import scaled

__all__ = [
    "EchoServer",
    "Front",
    "Handle",
    "Recorder",
    "drop_port",
    "drop_syn",
    "figures",
    "free_port",
    "open_fds",
    "reject_with_rst",
    "report",
    "round_trip",
    "run_in_netns",
    "spawn_echo_server",
    "undrop_port",
    "undrop_syn",
    "unreject",
]

SCRIPT_TIMEOUT = 20.0
"""Seconds (scaled) a script may run before it and everything it started are killed."""


# -- running a script in a namespace (the test's side) ------------------------------------------


@functools.lru_cache(maxsize=1)
def netns_unavailable() -> str | None:
    """Why a network namespace with iptables cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    missing = [tool for tool in ("unshare", "ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} to make a network namespace with iptables"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && iptables -S INPUT"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace with iptables here: {probe.stderr.strip()}"
    return None


def run_in_netns(
    script: str, tmp_path: Path, *args: str, timeout: float = SCRIPT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run *script* with this interpreter in a fresh network namespace (loopback
    up, iptables usable), *args* as its ``sys.argv[1:]``; skip the test if such a
    namespace cannot be made. The script runs in its own process group, all of
    which is killed if it outlives *timeout* (scaled) seconds."""
    import pytest  # here, not at the top: scripts import this module too

    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    source = tmp_path / "script.py"
    source.write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(source), *args]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and any server it spawned: the namespace goes too
            stdout, stderr = proc.communicate(timeout=10)
            stderr += f"\n[killed: the script ran over {scaled(timeout):.0f} s]"
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def figures(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The measurements a script printed last (see :func:`report`); fails the
    test, with the script's stderr, if it did not finish cleanly."""
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"script failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    found: dict[str, Any] = json.loads(lines[-1])
    return found


# -- iptables on loopback (the script's side) ----------------------------------------------------


def _iptables(*rule: str) -> None:
    subprocess.run(["iptables", *rule], check=True, capture_output=True, timeout=10)


def _half_open(action: str, port: int) -> None:
    _iptables(action, "INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP")
    _iptables(action, "INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), "-j", "DROP")


def drop_port(port: int) -> None:
    """Drop every TCP packet to or from *port* on loopback, both ways: connections
    to it go half-open (no FIN, no RST, nothing), new dials hang."""
    _half_open("-I", port)


def undrop_port(port: int) -> None:
    """Undo :func:`drop_port`: the path heals."""
    _half_open("-D", port)


def reject_with_rst(port: int) -> None:
    """Answer every TCP packet sent to *port* with a RST: an established connection
    is reset by its next segment, new dials are refused."""
    _iptables(
        "-I", "INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"
    )


def unreject(port: int) -> None:
    """Undo :func:`reject_with_rst`."""
    _iptables(
        "-D", "INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"
    )


def drop_syn(port: int) -> None:
    """Drop the SYNs sent to *port*: dials to it hang (a blackholed host)."""
    _iptables("-I", "INPUT", "-i", "lo", "-p", "tcp", "--syn", "--dport", str(port), "-j", "DROP")


def undrop_syn(port: int) -> None:
    """Undo :func:`drop_syn`."""
    _iptables("-D", "INPUT", "-i", "lo", "-p", "tcp", "--syn", "--dport", str(port), "-j", "DROP")


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (in a fresh namespace it stays free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EchoServer:
    """An echo server on 127.0.0.1: one thread accepting, one per client.
    ``stop()`` closes the listener and every connection (FIN) and joins the
    threads; ``start()`` listens again on the same port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.accepts = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EchoServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def drop_clients(self) -> None:
        """Close every accepted connection (FIN); keep listening."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes its thread, which closes it

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.drop_clients()
        for thread in self._threads:
            thread.join(5)
        assert not any(t.is_alive() for t in self._threads), "echo server threads did not stop"
        self._threads.clear()
        if listener is not None:
            listener.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _spawn(self, target: Callable[[socket.socket], None], sock: socket.socket) -> None:
        thread = threading.Thread(target=target, args=(sock,), name="echo-server", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:  # stopping: this one came too late
                    client.close()
                    return
                self._clients.add(client)
                self.accepts += 1
            self._spawn(self._echo, client)

    def _echo(self, client: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()


ECHO_SERVER_MAIN = """
import sys, threading
from netns import EchoServer
EchoServer(int(sys.argv[1])).start()
print("ready", flush=True)
threading.Event().wait(60)  # bounded: the script kills it long before
"""


def spawn_echo_server(port: int) -> subprocess.Popen[str]:
    """An :class:`EchoServer` on *port* in a child process (in this namespace and
    process group), once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER_MAIN, str(port)], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"echo server on {port} did not start: {line!r}"
    return proc


# -- both front ends behind one blocking facade ----------------------------------------------------


class Handle:
    """A ``Conn`` of either front end; every method call and attribute read
    blocks for its result (asyncio: runs on the front's loop)."""

    def __init__(self, conn: Any, call: Callable[[Callable[[], Any]], Any]) -> None:
        self.conn = conn
        self._call = call

    def __getattr__(self, name: str) -> Any:
        attr = self._call(lambda: getattr(self.conn, name))
        if not callable(attr):
            return attr

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._call(lambda: attr(*args, **kwargs))

        return method


class Front:
    """``Front("sync")`` drives ``perconn.connect``; ``Front("aio")`` drives
    ``perconn.aio.connect`` on asyncio's default loop, run in a helper thread."""

    def __init__(self, name: str) -> None:
        assert name in ("sync", "aio"), name
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        if name == "aio":
            self.loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self.loop.run_forever, name="test-aio-loop", daemon=True)
            self._thread.start()

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """*fn()* (awaited if it returns an awaitable), on the loop for asyncio."""
        if self.loop is None:
            return fn()

        async def run() -> tuple[Any, BaseException | None]:
            try:
                result = fn()
                return (await result if inspect.isawaitable(result) else result), None
            except Exception as exc:  # handed over whole: futures would rebuild a TimeoutError without its cause
                return None, exc

        result, error = asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)
        if error is not None:
            raise error
        return result

    def connect(self, address: str | Sequence[str], **options: Any) -> Handle:
        connect = self.connect_function
        return Handle(self.call(lambda: connect(address, **options)), self.call)

    @property
    def connect_function(self) -> Callable[..., Any]:
        import perconn
        import perconn.aio

        return perconn.aio.connect if self.name == "aio" else perconn.connect

    def tasks(self) -> list[str]:
        """The names of the tasks on the loop (none for sync), the caller's own excepted."""
        if self.loop is None:
            return []
        names: list[str] = self.call(
            lambda: [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        )
        return names

    def stop(self) -> None:
        if self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def round_trip(conn: Handle, payload: bytes, tries: int = 20, timeout: float = 5.0) -> int:
    """Write *payload* (ending in a newline) and read its echo, retrying (up to
    *tries* times, *timeout* seconds in all) when the connection drops under it;
    the number of ``ConnectionIOError`` it met."""
    import perconn

    deadline = time.monotonic() + timeout
    for failures in range(tries):
        left = max(0.01, deadline - time.monotonic())
        try:
            conn.write(payload, timeout=left)
            echoed = conn.readuntil(b"\n", timeout=max(0.01, deadline - time.monotonic()))
        except perconn.ConnectionIOError:
            continue
        assert echoed == payload, (echoed, payload)
        return failures
    raise AssertionError(f"no round trip of {payload!r} in {tries} tries")


# -- measuring ------------------------------------------------------------------------------------


class Recorder(logging.Handler):
    """A private logger (``.logger``) that keeps its records, each stamped with
    ``record.mono = time.monotonic()`` when emitted."""

    def __init__(self, name: str = "faults") -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()
        self.logger = logging.getLogger(f"perconn.test.{name}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        record.mono = time.monotonic()
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def matching(self, level: int, error_type: type[BaseException] | None = None) -> list[logging.LogRecord]:
        with self._cond:
            return [
                r
                for r in self.records
                if r.levelno == level and (error_type is None or isinstance(getattr(r, "error", None), error_type))
            ]

    def wait_for(
        self, level: int, error_type: type[BaseException] | None = None, count: int = 1, timeout: float = 5.0
    ) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.matching(level, error_type)) >= count, timeout)


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each is."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # os.listdir's own descriptor, closed meanwhile
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def report(**measured: Any) -> None:
    """Print the script's measurements as its last stdout line."""
    print(json.dumps(measured, default=repr), flush=True)
