"""The address parser: pure, no sockets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perconn._address import Address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo.example.com:7", Address("echo.example.com:7", host="echo.example.com", port=7)),
        ("127.0.0.1:65535", Address("127.0.0.1:65535", host="127.0.0.1", port=65535)),
        ("[::1]:8080", Address("[::1]:8080", host="::1", port=8080)),
        ("[fe80::1%lo]:1", None),
        ("unix:/tmp/x.sock", Address("unix:/tmp/x.sock", path="/tmp/x.sock")),
        ("unix:relative.sock", Address("unix:relative.sock", path="relative.sock")),
        ("unix:@name", Address("unix:@name", path="@name")),
    ],
)
def test_parses_valid_forms(text: str, expected: Address | None) -> None:
    if expected is None:  # scoped IPv6 literal: accepted, host keeps the scope
        assert parse_address(text).host == "fe80::1%lo"
    else:
        assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "missing"),
        ("example.com", "missing"),
        (":80", "empty host"),
        ("[]:80", "invalid IPv6"),
        ("host:", "not a number"),
        ("host:http", "not a number"),
        ("host:0", "out of range"),
        ("host:65536", "out of range"),
        ("host:-1", "not a number"),
        ("host:+1", "not a number"),
        ("host:٣", "not a number"),
        ("::1:80", "brackets"),
        ("[::1:80", "unbalanced"),
        ("::1]:80", "unbalanced"),
        ("[not-v6]:80", "invalid IPv6"),
        ("[1.2.3.4]:80", "invalid IPv6"),
        ("ho st:80", "whitespace"),
        ("unix:", "empty unix"),
        ("unix:/a\0b", "NUL"),
        ("unix:@", "empty abstract socket name"),
        ("tcp://host:1", 'scheme tcp:// is not supported; use "host:port", "[v6addr]:port", "unix:/path/to/socket" or'),
        ("http://example.com:80", "scheme http:// is not supported"),
    ],
)
def test_rejects_malformed_naming_argument_and_value(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert "address=" in str(info.value)
    assert repr(text) in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 7, b"host:7", ("host", 7)])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(TypeError, match="address must be a str"):
        parse_address(value)


hostnames = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}\Z")
ports = st.integers(1, 65535)


@given(hostnames, ports)
def test_hostname_round_trip(host: str, port: int) -> None:
    addr = parse_address(f"{host}:{port}")
    assert (addr.host, addr.port, addr.is_unix) == (host, port, False)


@given(st.ip_addresses(v=6), ports)
def test_ipv6_round_trip(ip: ipaddress.IPv6Address, port: int) -> None:
    addr = parse_address(f"[{ip}]:{port}")
    assert ipaddress.IPv6Address(addr.host) == ip
    assert addr.port == port


@given(st.ip_addresses(v=4), st.integers(-100000, 200000))
def test_port_range_is_enforced(ip: ipaddress.IPv4Address, port: int) -> None:
    text = f"{ip}:{port}"
    if 1 <= port <= 65535:
        assert parse_address(text).port == port
    else:
        with pytest.raises(ValueError, match="port"):
            parse_address(text)


@given(st.text(max_size=40))
def test_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        addr = parse_address(text)
    except ValueError as exc:
        assert "address=" in str(exc)
    else:
        assert addr.text == text
        assert addr.is_unix or 1 <= addr.port <= 65535


def test_abstract_socket_name_becomes_a_leading_nul() -> None:
    assert parse_address("unix:@perconn").unix_sockaddr == "\0perconn"
    assert parse_address("unix:/tmp/x").unix_sockaddr == "/tmp/x"


def test_abstract_sockets_are_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("perconn._address.sys.platform", "darwin")
    with pytest.raises(ValueError, match=r"abstract unix sockets .* exist only on Linux, not on darwin"):
        parse_address("unix:@name")
