"""What the synchronous front end's tests share: a fast-retrying ``opened`` Conn
and a blocking call run in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from servers import scaled

import perconn

FAST: dict[str, Any] = {"retry_min": 0.02, "retry_max": 0.2}


@contextmanager
def opened(address: str, **kwargs: Any) -> Iterator[perconn.Conn]:
    conn = perconn.connect(address, **{**FAST, **kwargs})
    try:
        yield conn
    finally:
        conn.close()


class Call:
    """Run a blocking call in a thread; collect its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn,), name="test-call", daemon=True)
        self._thread.start()
        self.started.wait(scaled(5))

    def _run(self, fn: Callable[[], object]) -> None:
        self.started.set()
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 5.0) -> Call:
        self._thread.join(scaled(timeout))
        assert not self._thread.is_alive(), "call did not return"
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def done(self) -> bool:
        return not self._thread.is_alive()


def blocked_in(conn: perconn.Conn, lock_name: str) -> Callable[[], bool]:
    lock: threading.Lock = getattr(conn, lock_name)
    return lock.locked


def fill_send_buffer(conn: perconn.Conn) -> None:
    """Write until the peer (one that never reads) lets nothing more go out.

    Small writes are never torn: poll() reports writable only once a third of
    the send buffer is free. Bounded: the kernel buffers fill long before.
    """
    for _ in range(100_000):
        try:
            conn.write(b"x" * 1024, timeout=0.01)
        except TimeoutError:
            return
    raise AssertionError("the send buffer never filled")
