"""Parsing and validating the remote address a ``Conn`` dials.

Accepted forms: ``"host:port"``, ``"[v6addr]:port"``, ``"unix:/path/to/socket"``
and ``"unix:@name"`` (a Linux abstract socket, as socat and systemd write it).
Parsing is pure: it never resolves a name (DNS is looked up afresh on every dial).
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Address", "parse_address", "parse_addresses"]

UNIX_PREFIX = "unix:"
FORMS = '"host:port", "[v6addr]:port", "unix:/path/to/socket" or "unix:@name"'
"""The address forms, as error messages list them."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Address:
    """A parsed address: either ``host``/``port`` (TCP) or ``path`` (unix socket).

    ``text`` is the address exactly as the user wrote it, for messages and logs.
    """

    text: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def unix_sockaddr(self) -> str:
        """The path to pass to ``connect()``: ``@name`` becomes the abstract ``\\0name``."""
        return "\0" + self.path[1:] if self.path.startswith("@") else self.path


def _bad(address: str, why: str) -> ValueError:
    return ValueError(f"address={address!r}: {why}")


def parse_address(address: object) -> Address:
    """Parse *address*, raising ``TypeError``/``ValueError`` naming it if malformed.

    Hosts are not resolved here; a hostname is only checked to be non-empty and
    free of whitespace. An IPv6 literal must be bracketed and valid.
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, got {type(address).__name__}: {address!r}")
    scheme = _SCHEME.match(address)
    if scheme and scheme.group(1) != "unix":
        raise _bad(address, f"scheme {scheme.group(1)}:// is not supported; use {FORMS}")
    if address.startswith(UNIX_PREFIX):
        path = address[len(UNIX_PREFIX) :]
        if not path:
            raise _bad(address, "empty unix socket path")
        if "\0" in path:
            raise _bad(address, "unix socket path contains a NUL byte")
        if path.startswith("@"):
            if len(path) == 1:
                raise _bad(address, "empty abstract socket name after @")
            if not sys.platform.startswith("linux"):
                raise _bad(address, f"abstract unix sockets (unix:@name) exist only on Linux, not on {sys.platform}")
        return Address(text=address, path=path)
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise _bad(address, f'missing ":port" (expected {FORMS})')
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise _bad(address, "unbalanced brackets around IPv6 address")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(address, f"invalid IPv6 address {host!r} in brackets") from None
    elif ":" in host:
        raise _bad(address, "IPv6 address must be in brackets, as in [::1]:7")
    if not host:
        raise _bad(address, "empty host")
    if any(c.isspace() for c in host):
        raise _bad(address, "host contains whitespace")
    if not (port_text.isascii() and port_text.isdigit()):
        raise _bad(address, f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _bad(address, f"port {port} out of range 1..65535")
    return Address(text=address, host=host, port=port)


def parse_addresses(address: object) -> tuple[Address, ...]:
    """Parse one address (a ``str``) or a non-empty sequence of them, in order of
    preference; errors name the element at fault (``address[1]='...'``)."""
    if isinstance(address, str):
        return (parse_address(address),)
    if isinstance(address, (bytes, bytearray)) or not isinstance(address, Sequence):
        raise TypeError(f"address must be a str or a sequence of str, got {type(address).__name__}: {address!r:.80}")
    if not address:
        raise ValueError(f"address must name at least one address, got {address!r}")
    parsed = []
    for i, each in enumerate(address):
        try:
            parsed.append(parse_address(each))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"address[{i}]: {exc}") from None
    return tuple(parsed)
