"""What the asyncio front end's tests share: a fast-retrying ``opened`` Conn,
waiting for a state the loop reaches, and counting tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from servers import scaled

import perconn.aio

FAST: dict[str, Any] = {"retry_min": 0.02, "retry_max": 0.2}


@asynccontextmanager
async def opened(address: str, **kwargs: Any) -> AsyncIterator[perconn.aio.Conn]:
    conn = perconn.aio.connect(address, **{**FAST, **kwargs})
    try:
        yield conn
    finally:
        await conn.close()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until *predicate* holds (a state the code under test reaches
    in its own callbacks, such as a task blocking on a future)."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def no_other_tasks() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}
