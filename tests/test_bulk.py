"""Bulk reads, both front ends: a ``readexactly`` of megabytes (the hot path
that joins its chunks once) returns every byte in order, and one that the
peer's close cuts short hands back what arrived as ``partial``."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fronts import Front
from servers import scaled

import perconn

BULK = 3 * 2**20 + 17
"""Bytes: many ``recv`` calls' worth, not a multiple of any chunk size."""


@contextmanager
def bulk_server(payload: bytes) -> Iterator[str]:
    """A server that sends ``hello``, waits for one byte, sends *payload* and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(scaled(10))

    def serve() -> None:
        try:
            peer, _ = server.accept()
        except OSError:
            return
        with peer:
            peer.settimeout(scaled(10))
            peer.sendall(b"hello")
            if peer.recv(1):
                peer.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        thread.join(scaled(10))


@pytest.mark.timeout(60)
def test_a_bulk_readexactly_returns_every_byte_in_order(front: Front) -> None:
    payload = os.urandom(BULK + 5)
    with bulk_server(payload) as address, front.open(address) as conn:
        assert conn.readexactly(5, timeout=scaled(5)) == b"hello"  # (it proves the connection)
        conn.write(b"g")
        assert conn.readexactly(BULK) == payload[:BULK]  # no timeout: the hot path
        assert conn.readexactly(5) == payload[BULK:]


@pytest.mark.timeout(60)
def test_a_bulk_readexactly_cut_short_hands_back_what_arrived(front: Front) -> None:
    payload = os.urandom(BULK)
    with bulk_server(payload) as address, front.open(address) as conn:
        assert conn.readexactly(5, timeout=scaled(5)) == b"hello"
        conn.write(b"g")
        with pytest.raises(perconn.ConnectionIOError) as caught:
            conn.readexactly(BULK + 1)
        assert caught.value.partial == payload
        assert isinstance(caught.value.__cause__, EOFError)
