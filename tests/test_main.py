"""``python -m perconn``, run as a subprocess against the real test servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import Server, refusing_port, scaled
from tls import TlsServer, pki

from perconn._cli import parse_size

FAST = ["--retry-min", "0.02", "--retry-max", "0.1"]
"""Redial at once after a drop: the tests wait for events, not for the backoff."""


LAUNCH = """
import runpy, signal, sys
ignored = sys.argv.pop(1).split(",")
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.SIG_IGN if signum.name in ignored else signal.SIG_DFL)
runpy.run_module("perconn", run_name="__main__", alter_sys=True)
"""
"""``python -m perconn`` with SIGINT and SIGTERM as the test says (first
argument: the names of those ignored, as ``nohup`` or a shell's background job
leaves them), not as the test runner happened to inherit them: a runner
started in the background ignores SIGINT, and so would every CLI it starts."""


class Cli:
    """One ``python -m perconn`` process with pipes on all three streams; its
    standard output and standard error are collected by threads, and waited on."""

    def __init__(self, args: list[str], cwd: Path, stdout: int = subprocess.PIPE, ignoring: str = "") -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-c", LAUNCH, ignoring, *args],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self._cond = threading.Condition()
        self.stdout = bytearray()
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._collect_stderr, daemon=True)]
        if stdout == subprocess.PIPE:
            self._threads.append(threading.Thread(target=self._collect_stdout, daemon=True))
        for thread in self._threads:
            thread.start()

    def _collect_stdout(self) -> None:
        assert self.proc.stdout is not None
        while data := os.read(self.proc.stdout.fileno(), 65536):
            with self._cond:
                self.stdout += data
                self._cond.notify_all()

    def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr.append(line.decode())
                self._cond.notify_all()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def eof(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_stderr(self, fragment: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        """Wait until *count* lines of standard error contain *fragment*; return them."""

        def found() -> list[str]:
            return [line for line in self.stderr if fragment in line]

        with self._cond:
            ok = self._cond.wait_for(lambda: len(found()) >= count, scaled(timeout))
            assert ok, f"no {count} stderr lines with {fragment!r} in {self.stderr}"
            return found()

    def wait_stdout(self, data: bytes, timeout: float = 5.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: data in self.stdout, scaled(timeout))
            assert ok, f"{data!r} not in stdout {bytes(self.stdout)!r}"

    def wait(self, timeout: float = 10.0) -> int:
        """The exit status, once the process ended and its output was all collected."""
        try:
            status = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:  # make it say where it hangs (faulthandler: every thread's stack)
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(scaled(5))
            for thread in self._threads:
                thread.join(scaled(5))
            raise AssertionError(f"still running after {timeout} s:\n{self.errors}") from None
        for thread in self._threads:
            thread.join(scaled(5))
        return status

    @property
    def errors(self) -> str:
        with self._cond:
            return "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    """Start ``python -m perconn *args``; every process is killed at teardown."""
    started: list[Cli] = []

    def start(*args: str, stdout: int = subprocess.PIPE, ignoring: str = "") -> Cli:
        process = Cli(list(args), tmp_path, stdout, ignoring)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def numbered(start: int, stop: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(start, stop))


def delivered(server: Server) -> bytes:
    """Everything the sink received, over all its connections, in order."""
    return b"".join(bytes(r) for r in server.received)


def assert_clean(errors: str) -> None:
    assert "Traceback" not in errors, errors


# -- arguments --------------------------------------------------------------------


def test_help_shows_an_example(cli: Callable[..., Cli]) -> None:
    run = cli("--help")
    assert run.wait() == 0
    text = run.stdout.decode()
    assert "tail -F app.log | python -m perconn logs.example:5140 --buffer 1MiB" in text
    assert "exit status" in text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "ADDRESS"),
        (["no-port"], "address='no-port'"),
        (["127.0.0.1:7", "[::1]:99999"], "address[1]"),
        (["--buffer", "1XB", "127.0.0.1:7"], "argument --buffer"),
        (["--buffer", "-5", "127.0.0.1:7"], "argument --buffer"),
        (["--retry-min", "0", "127.0.0.1:7"], "argument --retry-min"),
        (["--retry-min", "2", "--retry-max", "1", "127.0.0.1:7"], "argument --retry-max"),
        (["--dial-timeout", "nan", "127.0.0.1:7"], "argument --dial-timeout"),
        (["--max-attempts", "0", "127.0.0.1:7"], "argument --max-attempts"),
        (["--max-attempts", "two", "127.0.0.1:7"], "argument --max-attempts"),
        (["--flush-timeout", "-1", "127.0.0.1:7"], "argument --flush-timeout"),
        (["--when-full", "later", "127.0.0.1:7"], "argument --when-full"),
        (["--server-hostname", "example.com", "127.0.0.1:7"], "argument --server-hostname"),
        (["--cafile", "no-such-file.pem", "127.0.0.1:7"], "argument --cafile"),
        (["--ssl", "unix:/tmp/x.sock"], "--server-hostname"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(cli: Callable[..., Cli], args: list[str], named: str) -> None:
    run = cli(*args)
    assert run.wait() == 2
    assert "python -m perconn: error: " in run.errors
    assert named in run.errors
    assert_clean(run.errors)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("65536", 65536),
        ("100B", 100),
        ("512k", 512 * 1024),
        ("64KiB", 64 * 1024),
        ("64 kib", 64 * 1024),
        ("1MiB", 1 << 20),
        ("1M", 1 << 20),
        ("1MB", 10**6),
        ("1kB", 1000),
        ("1.5MiB", 3 << 19),
        ("2GiB", 2 << 30),
    ],
)
def test_sizes_take_the_usual_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1XB", "1iB", "MiB", "1 2", "1e3", "1KiBs"])
def test_sizes_that_are_not(text: str) -> None:
    with pytest.raises(ValueError, match="size in bytes"):
        parse_size(text)


# -- shipping -----------------------------------------------------------------------


def test_lines_arrive_in_order_at_a_sink(cli: Callable[..., Cli], make_server: Callable[..., Server]) -> None:
    sink = make_server("sink")
    lines = numbered(0, 2000) + b"the last line has no newline"
    run = cli(sink.address)
    run.send(lines)
    run.eof()
    assert run.wait() == 0, run.errors
    assert sink.wait_received(0, len(lines)) == lines
    run.wait_stderr(f"connected to {sink.address}")
    run.wait_stderr("end of input: 2001 lines sent, 0 refused, 0 discarded")
    assert_clean(run.errors)


def test_the_peers_bytes_go_to_standard_output(cli: Callable[..., Cli], make_server: Callable[..., Server]) -> None:
    echo = make_server("echo")
    run = cli(echo.address)
    run.send(b"hello\n")
    run.wait_stdout(b"hello\n")
    run.send(b"a line in ")  # held until its newline: lines go out whole
    run.send(b"two pieces\n")
    run.wait_stdout(b"hello\na line in two pieces\n")
    run.eof()
    assert run.wait() == 0, run.errors
    assert bytes(run.stdout) == b"hello\na line in two pieces\n"
    run.wait_stderr("end of input: 2 lines sent, 0 refused, 0 discarded")


def test_quiet_says_nothing_when_every_line_was_sent(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    sink = make_server("sink")
    run = cli("--quiet", sink.address)
    run.send(b"one\ntwo\n")
    run.eof()
    assert run.wait() == 0
    assert sink.wait_received(0, 8) == b"one\ntwo\n"
    assert run.errors == ""


def test_a_collector_restarted_mid_stream_gets_every_line_once_in_order(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    sink = make_server("sink")
    run = cli(*FAST, "--buffer", "1MiB", sink.address)
    before = numbered(0, 500)
    run.send(before)
    sink.wait_received(0, len(before))
    sink.stop()
    run.wait_stderr("dropped")  # the program saw the collector go
    during = numbered(500, 1000)
    run.send(during)  # queued: there is room in the buffer
    sink.start()
    run.wait_stderr("connected to", count=2)
    after = numbered(1000, 1500)
    run.send(after)
    run.eof()
    assert run.wait() == 0, run.errors
    assert delivered(sink) == before + during + after
    run.wait_stderr("end of input: 1500 lines sent, 0 refused, 0 discarded")
    assert_clean(run.errors)


def test_end_of_input_during_an_outage_waits_for_the_collector(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    sink = make_server("sink")
    run = cli(*FAST, "--buffer", "64KiB", sink.address)
    run.send(b"first\n")
    sink.wait_received(0, 6)
    sink.stop()
    run.wait_stderr("dropped")
    run.send(b"second\nthird\n")
    run.eof()
    run.wait_stderr("dial ")  # flushing: redialing a collector that is still down
    assert run.proc.poll() is None
    sink.start()
    assert run.wait() == 0, run.errors
    assert delivered(sink) == b"first\nsecond\nthird\n"
    run.wait_stderr("end of input: 3 lines sent, 0 refused, 0 discarded")


def test_without_a_buffer_lines_wait_for_the_collector(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    sink = make_server("sink")
    sink.stop()
    run = cli(*FAST, sink.address)
    run.send(numbered(0, 100))
    run.eof()
    run.wait_stderr("Connection refused")
    sink.start()
    assert run.wait() == 0, run.errors
    assert delivered(sink) == numbered(0, 100)


def test_failover_to_the_second_address(cli: Callable[..., Cli], make_server: Callable[..., Server]) -> None:
    sink = make_server("sink")
    with refusing_port() as refusing:
        run = cli(*FAST, refusing, sink.address)
        run.send(b"hello\n")
        run.eof()
        assert run.wait() == 0, run.errors
    assert sink.wait_received(0, 6) == b"hello\n"
    run.wait_stderr(f"trying {sink.address} next")
    run.wait_stderr(f"connected to {sink.address}")


def test_tls_with_a_ca_file(cli: Callable[..., Cli], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    pki().ca.cert_pem.write_to_path(str(ca))
    server = TlsServer("tcp4", "echo")
    try:
        run = cli("--cafile", str(ca), "--server-hostname", "localhost", server.address)
        run.send(b"over tls\n")
        run.wait_stdout(b"over tls\n")
        run.eof()
        assert run.wait() == 0, run.errors
    finally:
        server.stop()
    assert server.sni == ["localhost"]


# -- losing lines ----------------------------------------------------------------------


def test_an_unreachable_address_gives_up_after_max_attempts(cli: Callable[..., Cli]) -> None:
    with refusing_port() as address:
        run = cli("--max-attempts", "2", "--retry-min", "0.5", "--buffer", "1KiB", address)
        run.send(b"a\nb\nc\n")  # standard input stays open: giving up ends the program
        assert run.wait() == 1, run.errors
    lines = run.wait_stderr("gave up")
    assert any("max_attempts=2" in line for line in lines)
    run.wait_stderr("gave up: 0 lines sent, 0 refused, 3 discarded")
    assert_clean(run.errors)


def test_a_queue_that_cannot_flush_in_time_is_discarded(cli: Callable[..., Cli]) -> None:
    with refusing_port() as address:
        run = cli("--buffer", "1KiB", "--flush-timeout", "0.3", address)
        run.send(numbered(0, 5))
        run.eof()
        assert run.wait() == 1, run.errors
    run.wait_stderr("not sent within --flush-timeout 0.3 s: 0 lines sent, 0 refused, 5 discarded")
    assert_clean(run.errors)


def test_drop_refuses_the_lines_that_do_not_fit(cli: Callable[..., Cli]) -> None:
    with refusing_port() as address:
        run = cli("--buffer", "10", "--flush-timeout", "0", address)
        run.send(b"line1\nline2\nline3\n")  # 6 bytes each: only the first fits
        run.eof()
        assert run.wait() == 1, run.errors
    run.wait_stderr("0 lines sent, 2 refused, 1 discarded")


@pytest.mark.parametrize("mode", ["queued", "waiting"])
def test_ctrl_c_exits_at_once_discarding_what_is_queued(cli: Callable[..., Cli], mode: str) -> None:
    with refusing_port() as address:
        buffering = ["--buffer", "1KiB"] if mode == "queued" else []
        run = cli("--retry-min", "0.1", *buffering, address)
        run.send(b"a\nb\nc\n")
        run.wait_stderr("(attempt 2)")  # running for a while: the lines were read
        start = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        assert run.wait() == 130
        assert time.monotonic() - start < scaled(1.0)
    # Queued, or (without a buffer) one waiting for a connection and the rest read after it.
    run.wait_stderr("interrupted: 0 lines sent, 0 refused, 3 discarded")
    assert_clean(run.errors)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_the_moment_it_is_connected_is_never_missed(
    cli: Callable[..., Cli], make_server: Callable[..., Server], signum: int
) -> None:
    # The signal lands while the main thread still starts the threads, is about
    # to wait, or on another thread: a lock's wait missed such a signal about 1
    # run in 40 under load, and a KeyboardInterrupt raised inside Thread.start()
    # broke its lock (RuntimeError, status 1).
    echo = make_server("echo")
    for _ in range(10):
        run = cli("-q", echo.address)
        run.send(b"ping\n")
        run.wait_stdout(b"ping\n")
        run.proc.send_signal(signum)
        assert run.wait() == 128 + signum, run.errors


def test_a_signal_ignored_at_start_stays_ignored(cli: Callable[..., Cli], make_server: Callable[..., Server]) -> None:
    # As under nohup, or in a shell's background job: Ctrl-C is not for it, SIGTERM still is.
    echo = make_server("echo")
    run = cli(echo.address, ignoring="SIGINT")
    run.send(b"ping\n")
    run.wait_stdout(b"ping\n")
    run.proc.send_signal(signal.SIGINT)
    run.send(b"pong\n")
    run.wait_stdout(b"ping\npong\n")  # still running: it echoed a line sent after the SIGINT
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 128 + signal.SIGTERM, run.errors


def test_ctrl_c_while_connected(cli: Callable[..., Cli], make_server: Callable[..., Server]) -> None:
    echo = make_server("echo")
    run = cli(echo.address)
    run.send(b"ping\n")
    run.wait_stdout(b"ping\n")
    start = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    assert run.wait() == 130
    assert time.monotonic() - start < scaled(1.0)
    run.wait_stderr("interrupted: 1 line sent, 0 refused, 0 discarded")
    assert_clean(run.errors)


def test_sigterm_exits_143_discarding_what_is_queued(cli: Callable[..., Cli]) -> None:
    with refusing_port() as address:
        run = cli("--retry-min", "0.1", "--buffer", "1KiB", address)
        run.send(b"a\nb\n")
        run.wait_stderr("(attempt 2)")
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait() == 128 + signal.SIGTERM
    run.wait_stderr("terminated: 0 lines sent, 0 refused, 2 discarded")
    assert_clean(run.errors)


def test_standard_output_closed_does_not_stop_shipping(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    echo = make_server("echo")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads the output: writing it fails with EPIPE
    try:
        run = cli(echo.address, stdout=write_end)
    finally:
        os.close(write_end)
    run.send(b"one\n")
    run.send(b"two\n")
    run.eof()
    assert run.wait() == 0, run.errors
    assert echo.wait_accepts(1)
    run.wait_stderr("end of input: 2 lines sent, 0 refused, 0 discarded")
    assert_clean(run.errors)


def test_a_collector_restarted_under_a_steady_stream_is_reconnected(
    cli: Callable[..., Cli], make_server: Callable[..., Server]
) -> None:
    sink = make_server("sink")
    run = cli(*FAST, "--buffer", "64KiB", sink.address)
    stop = threading.Event()

    def feed() -> None:  # lines as fast as the pipe takes them, until told to stop
        n = 0
        with contextlib.suppress(OSError, ValueError):  # the program is gone (killed at teardown)
            while not stop.is_set():
                run.send(numbered(n, n + 100))
                n += 100

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        run.wait_stderr("connected to")
        sink.wait_received(0, 100_000)
        sink.stop()
        run.wait_stderr("dropped")
        sink.start()
        run.wait_stderr("connected to", count=2)  # installed while the stream went on
    finally:
        stop.set()
        feeder.join(scaled(5))
    run.eof()
    assert run.wait() in (0, 1), run.errors  # 1: lines refused while the buffer was full
    numbers = [int(line.split()[1]) for line in delivered(sink).splitlines()]
    assert numbers == sorted(set(numbers)), "lines arrived twice or out of order"
    assert any(sink.received[1:]), "nothing arrived after the restart"
    run.wait_stderr("end of input: ")
