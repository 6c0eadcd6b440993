"""What both ``Conn`` front ends share as read-only state: their options, their
lifecycle and the connection that is up (if any)."""

from __future__ import annotations

from typing import Generic, TypeVar

from ._options import Options
from ._state import Lifecycle

__all__ = ["ConnBase"]

LinkT = TypeVar("LinkT")


class ConnBase(Generic[LinkT]):
    """The accessors every front end's ``Conn`` offers, over the shared core."""

    _opts: Options
    _life: Lifecycle
    _link: LinkT | None  # the connection writes go to; None while dialing or closed

    @property
    def _closed(self) -> bool:
        """Whether ``close()`` was called: the lifecycle is the one record of it."""
        return self._life.closed

    @property
    def address(self) -> str:
        """The remote address, as given to ``connect``."""
        return self._opts.address.text

    @property
    def connected(self) -> bool:
        """Whether a connection is up right now (it may fail the next moment)."""
        return self._link is not None

    @property
    def generation(self) -> int:
        """How many connections have been established so far (0 before the first)."""
        return self._life.generation

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "dialing"
        cls = type(self)
        return f"<{cls.__module__}.{cls.__qualname__} {self.address} {state} generation={self.generation}>"
