"""The test servers themselves, checked with plain sockets (no perconn)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from redis_server import RedisServer, RespError, read_reply, resp_command
from servers import CrashLoop, Server, scaled


def recv_all(sock: socket.socket) -> bytes:
    """Everything *sock* receives until EOF (bounded by its timeout)."""
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def echo_once(server: Server) -> bytes:
    with server.dial() as sock:
        sock.sendall(b"ping")
        return sock.recv(64)


@pytest.mark.parametrize("family", ["abstract", "tcp4", "tcp6", "unix"])
def test_servers_echo_and_come_back(make_server: Callable[..., Server], family: str) -> None:
    server = make_server("echo", family)
    assert echo_once(server) == b"ping"
    server.restart()
    assert echo_once(server) == b"ping"


def test_abstract_server_address(make_server: Callable[..., Server]) -> None:
    server = make_server("echo", "abstract")
    assert server.address.startswith("unix:@perconn-test-")
    assert server.sockaddr == "\0" + server.address.removeprefix("unix:@")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # no file behind the name
        sock.settimeout(scaled(2))
        sock.connect(b"\0" + server.address.removeprefix("unix:@").encode())
        sock.sendall(b"x")
        assert sock.recv(8) == b"x"


def test_reply_bye_answers_one_request_then_closes(make_server: Callable[..., Server]) -> None:
    server = make_server("reply_bye")
    with server.dial() as sock:
        sock.sendall(b"7\n")
        assert recv_all(sock) == b"REP 7\nBYE\n"
    with server.dial() as sock:
        sock.sendall(b"4")  # a line in pieces; what follows it is ignored
        assert server.wait_received(1, 1)
        sock.sendall(b"2\nmore\n")
        assert recv_all(sock) == b"REP 42\nBYE\n"
    assert server.wait_closes(2)


def test_reply_bye_closes_only_after_a_large_reply_is_flushed(make_server: Callable[..., Server]) -> None:
    server = make_server("reply_bye")
    line = b"a" * (3 << 20)  # more than the socket buffers hold: the server must wait for the client
    with server.dial() as sock:
        sock.sendall(line + b"\n")
        assert recv_all(sock) == b"REP " + line + b"\nBYE\n"


def test_crash_loop_restarts_count_times_and_leaves_the_server_up(make_server: Callable[..., Server]) -> None:
    server = make_server("echo")
    with CrashLoop(server, count=3, up=0.1) as loop:
        assert loop.wait(5)
    assert loop.error is None
    assert loop.restarts == 3
    assert len(loop.starts) == 4 and len(loop.ends) == 3
    times = [t for pair in zip(loop.starts, [*loop.ends, time.monotonic()], strict=True) for t in pair]
    assert times == sorted(times)
    assert all(end - start >= 0.1 for start, end in zip(loop.starts[:-1], loop.ends, strict=True))
    assert server.running
    assert echo_once(server) == b"ping"


def test_crash_loop_exit_stops_it_early(make_server: Callable[..., Server]) -> None:
    server = make_server("echo")
    began = time.monotonic()
    with CrashLoop(server, count=1000, up=0.02) as loop:
        assert loop.done.wait(0.1) is False
    assert time.monotonic() - began < scaled(2)
    assert loop.done.is_set() and loop.restarts < 1000
    assert server.running
    assert echo_once(server) == b"ping"


def test_resp_command_encoding() -> None:
    assert resp_command("GET", b"x") == b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n"


def ask(sock: socket.socket, *args: str) -> bytes:
    """Send one command, return the first line of the raw reply."""
    sock.sendall(resp_command(*args))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"EOF after {reply!r}"
        reply += chunk
    return reply


def test_redis_wants_the_password_and_survives_restart(redis_server: RedisServer) -> None:
    assert redis_server.address == f"127.0.0.1:{redis_server.port}"
    assert redis_server.password == "s3cret"
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", redis_server.port), timeout=scaled(2)) as sock:
            assert ask(sock, "GET", "x").startswith(b"-NOAUTH")
            assert ask(sock, "AUTH", "s3cret") == b"+OK\r\n"
            assert ask(sock, "PING") == b"+PONG\r\n"
        address = redis_server.address
        redis_server.restart()
        assert redis_server.address == address


def test_redis_command_helper_and_kill(make_redis: Callable[..., RedisServer]) -> None:
    redis = make_redis()
    assert redis.command("SET", "k", "v") == b"OK"
    assert redis.command("GET", "k") == b"v"
    assert isinstance(redis.command("NOSUCHCOMMAND"), RespError)
    redis.kill()
    assert not redis.running
    redis.start()
    assert redis.command("GET", "k") is None  # no persistence
    with socket.create_connection(("127.0.0.1", redis.port), timeout=scaled(2)) as sock, sock.makefile("rb") as rfile:
        sock.sendall(resp_command("RPUSH", "l", "a", "b") + resp_command("LRANGE", "l", "0", "-1"))
        assert read_reply(rfile) == 2
        assert read_reply(rfile) == [b"a", b"b"]
