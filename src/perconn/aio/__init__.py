"""The asyncio front end: :class:`Conn` (``perconn.aio.Conn``), its ``connect``,
and the :class:`Link` an ``on_connect`` hook is given. Same options, defaults
and rules as :mod:`perconn`'s synchronous ``Conn``."""

from __future__ import annotations

from .._reading import DEFAULT_LIMIT
from .conn import FLUSH_ON_CLOSE, Conn, OnConnect, connect
from .link import Link

__all__ = ["DEFAULT_LIMIT", "FLUSH_ON_CLOSE", "Conn", "Link", "OnConnect", "connect"]
