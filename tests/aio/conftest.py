"""Fixtures for the asyncio front end: run each test on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

Run = Callable[[Coroutine[Any, Any, Any]], Any]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def run_on(loop_factory: LoopFactory, main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run() with a chosen loop (asyncio.Runner needs 3.11; we support 3.10)."""
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    """What makes a fresh loop of each kind (uvloop skipped if absent)."""
    if request.param == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pytest.skip("uvloop is not installed")
        factory: LoopFactory = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


@pytest.fixture
def run(loop_factory: LoopFactory) -> Run:
    """Run a coroutine to completion on a fresh loop of each kind."""
    return lambda main: run_on(loop_factory, main)
