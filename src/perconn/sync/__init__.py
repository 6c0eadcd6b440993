"""The synchronous front end: :class:`Conn` (``perconn.Conn``), its ``connect``,
and the :class:`Link` an ``on_connect`` hook is given."""

from __future__ import annotations

from .conn import CLOSE_BUDGET, IDLE_PROBE_AFTER, Conn, OnConnect, connect
from .link import MAX_CHUNK, Link

__all__ = ["CLOSE_BUDGET", "IDLE_PROBE_AFTER", "MAX_CHUNK", "Conn", "Link", "OnConnect", "connect"]
