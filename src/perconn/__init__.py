"""perconn: pseudo-persistent client network connections.

Name a remote address once and get one object to read and write for the life
of the program; perconn dials in the background, reconnects with jittered
exponential backoff, logs every failure and still raises I/O errors to you.
``perconn.Conn`` is the thread-safe synchronous front end; ``perconn.aio.Conn``
the asyncio one. Both drive the same I/O-free core.
"""

from __future__ import annotations

import logging

from ._backoff import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN
from ._errors import ClosedConnectionError, ConnectionIOError, DialError, Error, GaveUpError
from ._options import DEFAULT_DIAL_TIMEOUT, DEFAULT_KEEPALIVE
from ._reading import DEFAULT_LIMIT
from ._state import Stats
from .sync import Conn, Link, connect

__all__ = [
    "DEFAULT_DIAL_TIMEOUT",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_LIMIT",
    "DEFAULT_RETRY_MAX",
    "DEFAULT_RETRY_MIN",
    "ClosedConnectionError",
    "Conn",
    "ConnectionIOError",
    "DialError",
    "Error",
    "GaveUpError",
    "Link",
    "Stats",
    "connect",
]

__version__ = "0.1.0"

# A library stays silent unless the program configures logging.
logging.getLogger("perconn").addHandler(logging.NullHandler())
