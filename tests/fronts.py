"""One test body for both front ends: a blocking facade over ``perconn.Conn`` and
over ``perconn.aio.Conn`` (whose calls run on an event loop in a helper thread),
so a scenario checks that both behave, and word things, the same."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from servers import scaled

import perconn
import perconn.aio


class Front:
    """A front end as the tests drive it: ``open()`` gives a blocking handle."""

    name: str

    @contextmanager
    def open(self, address: str | Sequence[str], **options: Any) -> Iterator[Handle]:
        handle = self.connect(address, **options)
        try:
            yield handle
        finally:
            handle.close()

    def connect(self, address: str | Sequence[str], **options: Any) -> Handle:
        raise NotImplementedError


class Handle:
    """Calls a ``Conn``'s methods and blocks for their result, whichever front end."""

    def __init__(self, conn: Any, call: Callable[[Any], Any]) -> None:
        self.conn = conn
        self._call = call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if not callable(attr):
            return attr

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._call(lambda: attr(*args, **kwargs))

        return method


class SyncFront(Front):
    name = "sync"

    def connect(self, address: str | Sequence[str], **options: Any) -> Handle:
        return Handle(perconn.connect(address, **options), lambda fn: fn())


class AioFront(Front):
    """``perconn.aio`` on an asyncio loop running in a helper thread."""

    name = "aio"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-aio-loop", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> tuple[Any, BaseException | None]:
            try:
                result = fn()
                return (await result if inspect.isawaitable(result) else result), None
            except Exception as exc:  # handed over whole: futures would rebuild a TimeoutError without its cause
                return None, exc

        result, error = asyncio.run_coroutine_threadsafe(run(), self.loop).result(scaled(20))
        if error is not None:
            raise error
        return result

    def connect(self, address: str | Sequence[str], **options: Any) -> Handle:
        return Handle(self.call(lambda: perconn.aio.connect(address, **options)), self.call)

    def stop(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(scaled(10))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(scaled(10))
        self.loop.close()
