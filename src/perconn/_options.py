"""The options both front ends take, validated once, before any I/O.

:func:`make_options` is the one source of the options' names, defaults and
documentation; ``Conn(...)`` and ``connect(...)`` of both front ends bind their
arguments to its signature (:func:`bind_options`), so a mistake is named after
the function the program called.
"""

from __future__ import annotations

import inspect
import logging
import math
import ssl as _ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from ._address import Address, parse_addresses
from ._backoff import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, Backoff

if TYPE_CHECKING:
    from typing_extensions import TypedDict

    from ._errors import ConnectionIOError

__all__ = [
    "DEFAULT_DIAL_TIMEOUT",
    "DEFAULT_KEEPALIVE",
    "ConnectOptions",
    "LoggerLike",
    "Options",
    "bind_options",
    "document_options",
    "make_options",
]

LoggerLike = Union[logging.Logger, "logging.LoggerAdapter[logging.Logger]"]

DEFAULT_LOGGER_NAME = "perconn"

DEFAULT_DIAL_TIMEOUT = 30.0
"""Seconds: the default bound of one dial (a connection that will never come is
given up on in the order of gRPC's 20 s)."""

DEFAULT_KEEPALIVE = 30.0
"""Seconds: by default a dead peer is noticed within this long."""

HookT = TypeVar("HookT")

if TYPE_CHECKING:

    class ConnectOptions(TypedDict, Generic[HookT], total=False):
        """The keyword options of ``Conn``/``connect``, for type checkers; *HookT*
        is the front end's ``on_connect`` type."""

        dial_timeout: float | None
        logger: LoggerLike | None
        retry_min: float
        retry_max: float
        jitter: bool
        on_connect: HookT | None
        on_disconnect: Callable[[ConnectionIOError], object] | None
        max_attempts: int | None
        give_up_after: float | None
        keepalive: float | None
        ssl: bool | _ssl.SSLContext | None
        server_hostname: str | None
        buffer: int


@dataclass(frozen=True)
class Options:
    """Everything a front end needs to run one persistent connection."""

    addresses: tuple[Address, ...]
    """Where to dial, in order of preference (one, or several for failover)."""
    dial_timeout: float | None
    logger: LoggerLike
    backoff: Backoff
    on_connect: Callable[[Any], object] | None = None
    on_disconnect: Callable[[Any], object] | None = None
    max_attempts: int | None = None
    give_up_after: float | None = None
    keepalive: float | None = DEFAULT_KEEPALIVE
    ssl: _ssl.SSLContext | None = None
    server_hostname: str | None = None
    buffer: int = 0

    @property
    def label(self) -> str:
        """The address(es), as messages name them."""
        return ", ".join(a.text for a in self.addresses)

    def hostname(self, address: Address) -> str | None:
        """The name TLS verifies (and sends as SNI) when dialing *address*."""
        return self.server_hostname or address.host or None


def _kind(value: object) -> str:
    return f"{type(value).__name__}: {value!r:.80}"


def _seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {what}, got {_kind(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return seconds


def _callback(name: str, value: object) -> Callable[[Any], object] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {_kind(value)}")
    return value


def make_options(
    address: str | Sequence[str],
    *,
    dial_timeout: float | None = DEFAULT_DIAL_TIMEOUT,
    logger: LoggerLike | None = None,
    retry_min: float = DEFAULT_RETRY_MIN,
    retry_max: float = DEFAULT_RETRY_MAX,
    jitter: bool = True,
    on_connect: Callable[[Any], object] | None = None,
    on_disconnect: Callable[[Any], object] | None = None,
    max_attempts: int | None = None,
    give_up_after: float | None = None,
    keepalive: float | None = DEFAULT_KEEPALIVE,
    ssl: bool | _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    buffer: int = 0,
) -> Options:
    """Validate the arguments of ``Conn``/``connect`` and bundle them.

    Args:
        address: ``"host:port"``, ``"[v6addr]:port"``, ``"unix:/path/to/socket"``
            or ``"unix:@name"`` (a Linux abstract socket); or a non-empty sequence
            of them, tried in order on every dial round (failover).
        dial_timeout: seconds for one dial attempt of one address (connecting and
            ``on_connect`` together; default :data:`DEFAULT_DIAL_TIMEOUT`); None
            leaves connecting to the OS.
        logger: a ``logging.Logger`` or ``LoggerAdapter``; receives a WARNING per
            failed dial and per dropped connection, an INFO per established
            connection and an ERROR on giving up. None means ``logging.getLogger("perconn")``.
        retry_min: the first backoff step, in seconds.
        retry_max: the cap on backoff steps, in seconds.
        jitter: randomise every backoff sleep (False: exact doubling).
        on_connect: called with a ``Link`` on each fresh connection before any
            call uses it (the handshake: a password, a subscription); awaited by
            the asyncio ``Conn``. If it raises, the dial counts as failed.
        on_disconnect: called with the ``ConnectionIOError`` each time an
            established connection ends (never for ``close()``).
        max_attempts: give up after this many consecutive failed dials (None: never).
        give_up_after: give up after this many seconds without a connection (None: never).
        keepalive: seconds within which a peer that vanished (no FIN, no RST) is
            noticed on an established TCP connection, idle or not (default
            :data:`DEFAULT_KEEPALIVE`; see :mod:`perconn._sockopts`); None leaves
            the OS defaults.
        ssl: None (or False) for plain connections; True for
            ``ssl.create_default_context()``; or an ``ssl.SSLContext``. Every
            connection then completes a TLS handshake as part of its dial, before
            ``on_connect``; a handshake that fails is a failed dial.
        server_hostname: the name TLS verifies and sends as SNI; default: the host
            of the address dialed. Required over a ``unix:`` address unless the
            context's ``check_hostname`` is off.
        buffer: bytes of whole writes kept while no connection is up, sent in
            order on the next connection before any later write (0: writes wait
            for a connection). ``close()`` discards what is queued; ``flush()``
            first to send it.

    Raises:
        TypeError: an argument has the wrong type (named in the message, with its value).
        ValueError: an argument has a bad value (malformed address, non-positive
            or non-finite seconds, ``retry_max < retry_min``).
    """
    addresses = parse_addresses(address)
    timeout = _seconds("dial_timeout", dial_timeout, allow_none=True)
    rmin = _seconds("retry_min", retry_min)
    rmax = _seconds("retry_max", retry_max)
    assert rmin is not None and rmax is not None
    if rmax < rmin:
        raise ValueError(f"retry_max must be >= retry_min, got retry_max={retry_max!r} < retry_min={retry_min!r}")
    if not isinstance(jitter, bool):
        raise TypeError(f"jitter must be a bool, got {_kind(jitter)}")
    if logger is None:
        logger = logging.getLogger(DEFAULT_LOGGER_NAME)
    elif not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        raise TypeError(f"logger must be a logging.Logger or LoggerAdapter, got {_kind(logger)}")
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(f"max_attempts must be an int or None, got {_kind(max_attempts)}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts!r}")
    context, hostname = _tls(ssl, server_hostname, addresses)
    if isinstance(buffer, bool) or not isinstance(buffer, int):
        raise TypeError(f"buffer must be an int (bytes), got {_kind(buffer)}")
    if buffer < 0:
        raise ValueError(f"buffer must be >= 0 bytes, got {buffer!r}")
    return Options(
        addresses=addresses,
        dial_timeout=timeout,
        logger=logger,
        backoff=Backoff(rmin, rmax, jitter),
        on_connect=_callback("on_connect", on_connect),
        on_disconnect=_callback("on_disconnect", on_disconnect),
        max_attempts=max_attempts,
        give_up_after=_seconds("give_up_after", give_up_after, allow_none=True),
        keepalive=_seconds("keepalive", keepalive, allow_none=True),
        ssl=context,
        server_hostname=hostname,
        buffer=buffer,
    )


def _tls(
    ssl: object, server_hostname: object, addresses: tuple[Address, ...]
) -> tuple[_ssl.SSLContext | None, str | None]:
    """The TLS context and server name the options ask for, checked."""
    if ssl is None or ssl is False:
        context = None
    elif ssl is True:
        context = _ssl.create_default_context()
    elif isinstance(ssl, _ssl.SSLContext):
        context = ssl
    else:
        raise TypeError(f"ssl must be None, True or an ssl.SSLContext, got {_kind(ssl)}")
    if server_hostname is not None:
        if not isinstance(server_hostname, str):
            raise TypeError(f"server_hostname must be a str or None, got {_kind(server_hostname)}")
        if not server_hostname or server_hostname != server_hostname.strip():
            raise ValueError(f"server_hostname must be a non-empty name without spaces, got {server_hostname!r}")
        if context is None:
            raise ValueError(f"server_hostname={server_hostname!r} is given without ssl; pass ssl=True or a context")
    elif context is not None and context.check_hostname:
        unix = [a.text for a in addresses if a.is_unix]
        if unix:
            raise ValueError(
                f"server_hostname must be given to verify TLS over {unix[0]!r} (a unix address has no host name), "
                "unless the ssl context's check_hostname is False"
            )
    return context, server_hostname


SIGNATURE = inspect.signature(make_options).replace(return_annotation=inspect.Signature.empty)
"""The signature of ``Conn``/``connect`` of both front ends."""


def bind_options(caller: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Options:
    """Validate a call ``caller(*args, **kwargs)`` against :data:`SIGNATURE`.

    Raises:
        TypeError: a positional option, an unknown or missing argument (naming
            *caller*), or an option of the wrong type.
        ValueError: an option with a bad value.
    """
    names = list(SIGNATURE.parameters)
    if len(args) > 1:
        extra = ", ".join(repr(a) for a in args[1:])
        raise TypeError(
            f"{caller}() takes the address as its only positional argument; "
            f"pass the options by keyword (got {len(args)} positional arguments: the address, then {extra})"
        )
    for name in kwargs:
        if name not in SIGNATURE.parameters:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}; its options are {names[1:]}")
    if args and "address" in kwargs:
        raise TypeError(f"{caller}() got the address twice, positionally and as address=")
    if not args and "address" not in kwargs:
        raise TypeError(f"{caller}() missing its required argument: address")
    return make_options(*args, **kwargs)  # type: ignore[arg-type]


def document_options(obj: Any, summary: str) -> None:
    """Give a ``Conn`` class or a ``connect`` function the options' signature and
    documentation (what ``help()`` and ``inspect.signature`` show)."""
    obj.__signature__ = SIGNATURE
    args = inspect.cleandoc((make_options.__doc__ or "").partition("\n\n")[2])
    obj.__doc__ = inspect.cleandoc(summary) + "\n\n" + args
