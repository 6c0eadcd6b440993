"""Shared fixtures: real loopback servers, a capturing logger, leak counters."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fronts import AioFront, Front, SyncFront
from redis_server import RedisServer, RedisUnavailable
from servers import Server, open_fds, wait_until


class Records(logging.Handler):
    """Collects the log records of a private logger, with an event per record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
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

    def wait_for(self, level: int, error_type: type[BaseException] | None = None, count: int = 1) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.matching(level, error_type)) >= count, 5.0)


@pytest.fixture(scope="session", autouse=True)
def uvloop_warmed_up() -> None:
    """libuv opens a pipe pair once per process, the first time a uvloop loop
    runs, and keeps it for good: opened before any test counts descriptors
    (every test module's, not only tests/aio's: a uvloop dial in
    tests/test_eyeballs_dial.py run alone counted them as left open)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


@pytest.fixture
def records(request: pytest.FixtureRequest) -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(f"perconn.test.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def logger(records: Records, request: pytest.FixtureRequest) -> logging.Logger:
    return logging.getLogger(f"perconn.test.{request.node.name}")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers (family "tcp4", "tcp6", "unix" or "abstract"; a mode); all stopped at teardown."""
    servers: list[Server] = []

    def make(mode: str = "echo", family: str = "tcp4") -> Server:
        path = tmp_path / f"s{len(servers)}.sock" if family == "unix" else None
        server = Server(family, mode, path)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start real redis-server processes (``make(password=None)``); all stopped at
    teardown. Skips the test when there is no redis-server binary."""
    servers: list[RedisServer] = []

    def make(password: str | None = None) -> RedisServer:
        try:
            server = RedisServer(password)
        except RedisUnavailable as e:
            pytest.skip(str(e))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def redis_server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server on 127.0.0.1 with the password "s3cret"."""
    return make_redis(password="s3cret")


@pytest.fixture
def echo_server(make_server: Callable[..., Server]) -> Server:
    return make_server("echo")


@pytest.fixture(params=["tcp4", "tcp6", "unix"])
def any_echo_server(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Server:
    """An echo server on each kind of loopback address."""
    return make_server("echo", request.param)


def describe(fds: set[int]) -> dict[int, str]:
    """What each file descriptor is (socket:[inode], pipe:[...], a path)."""
    found = {}
    for fd in fds:
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            found[fd] = "closed meanwhile"
    return found


def hub_state() -> str:
    """What the synchronous dialer thread is doing (for a leak report)."""
    from perconn.sync.hub import hub

    jobs = list(hub._jobs)
    return f"(dialer: {len(jobs)} jobs: {[(type(j.request).__name__, j.request) for j in jobs][:3]})"


class Leaks:
    """Counts threads and file descriptors before a test, to compare after close()."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = open_fds()

    def new_threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in self.threads and t.name.startswith("perconn")]

    def new_fds(self) -> set[int]:
        return open_fds() - self.fds

    def assert_none(self, timeout: float = 1.0) -> None:
        """No perconn thread and no new fd within *timeout* (the contract: 1 s)."""
        assert wait_until(lambda: not self.new_threads(), timeout), f"threads left: {self.new_threads()} {hub_state()}"
        assert wait_until(lambda: not self.new_fds(), timeout), f"fds left: {describe(self.new_fds())}"


@pytest.fixture
def leaks() -> Leaks:
    return Leaks()


@pytest.fixture(params=["sync", "aio"])
def front(request: pytest.FixtureRequest) -> Iterator[Front]:
    """Each front end behind one blocking facade (see fronts.py)."""
    if request.param == "sync":
        yield SyncFront()
        return
    aio = AioFront()
    try:
        yield aio
    finally:
        aio.stop()
