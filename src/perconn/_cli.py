"""``python -m perconn ADDRESS``: a reconnecting netcat, and a line shipper.

Standard input goes to the connection a line at a time (each line one write, so
it goes out whole, on one connection); what the peer sends goes to standard
output; one line per connection event goes to standard error, and a summary
when the program ends::

    tail -F app.log | python -m perconn logs.example:5140 --buffer 1MiB

Threads: the main thread only waits (Ctrl-C and SIGTERM set a flag and wake
it: see :class:`Signals`) and then closes the ``Conn``; a daemon *pump* thread
reads standard input, writes the lines and flushes at the end of input; a daemon
*forward* thread reads the peer's bytes to standard output. Both use the file
descriptors directly (``os.read``/``os.write``), so a thread left blocked on a
pipe at exit holds no lock the interpreter's shutdown needs.

Counting: every line read is *sent* (its write returned: handed to a connection,
or queued and flushed later), *refused* (its write raised: no room in the buffer
and no connection at once with ``--when-full drop``, or its connection failed
under it; never sent again, as it may have partly gone out) or *discarded*
(queued, waiting for a connection, or read but not yet written when the program
ended).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from ._backoff import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN
from ._errors import ClosedConnectionError, ConnectionIOError, GaveUpError
from ._messages import duration
from ._options import DEFAULT_DIAL_TIMEOUT, DEFAULT_KEEPALIVE
from .sync import Conn, connect

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "EXIT_INTERRUPTED",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "MAX_LINE",
    "build_parser",
    "main",
    "parse_size",
    "run",
]

PROG = "python -m perconn"
"""The program's name in usage and argument errors."""

NAME = "perconn"
"""The prefix of every line the program writes to standard error."""

DEFAULT_FLUSH_TIMEOUT = 10.0
"""Seconds the end of input waits for queued lines to be sent (``--flush-timeout``)."""

MAX_LINE = 1 << 20
"""Bytes: a longer line (binary input without newlines) is written in pieces of this size."""

READ_CHUNK = 1 << 16
"""Bytes asked of standard input, and of the connection, at once."""

JOIN_BUDGET = 0.3
"""Seconds the end waits for a thread that was inside a write, or forwarding output."""

EXIT_OK = 0
"""Every line read was sent, and the queue flushed."""
EXIT_LOST = 1
"""It gave up, or lines were refused or discarded (or standard input failed)."""
EXIT_USAGE = 2
"""Bad arguments (argparse's status)."""
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Ctrl-C (SIGINT), as a shell reports a process it killed."""
EXIT_TERMINATED = 128 + signal.SIGTERM
"""SIGTERM."""

EXAMPLES = """\
examples:
  python -m perconn localhost:7
      talk to an echo server: type lines, read the replies, Ctrl-D to end
  tail -F app.log | python -m perconn logs.example:5140 --buffer 1MiB
      ship a log, queueing up to 1 MiB of lines while the collector restarts
  python -m perconn primary.example:5140 backup.example:5140
      fail over to the backup while the primary is down
  python -m perconn --cafile ca.pem --server-hostname logs.example unix:/run/logs.sock

Standard input is sent a line at a time, each line whole on one connection;
what the peer sends goes to standard output; standard error gets one line per
connection event and a summary at the end: lines sent, refused (not taken:
with --when-full drop, no room in the buffer and no connection at once; or the
connection failed under it) and discarded (still queued at the end).

exit status: 0 every line was sent; 1 it gave up, or lines were refused or
discarded; 2 bad arguments; 130 interrupted (Ctrl-C: what is queued is
discarded); 143 terminated (SIGTERM, likewise).
"""

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<prefix>[kmgt]?)(?P<unit>(?:ib|b)?)", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """A size in bytes, as ``df``, ``dd`` and ``sort -S`` write them.

    ``65536``, ``100B``; ``64k``, ``64K``, ``64KiB`` are 64 * 1024 bytes; ``1MB``
    (or ``1kB``, ``1GB``) is decimal, 10**6; fractions are allowed (``1.5MiB``)
    and rounded down to whole bytes. Letters are case-insensitive.

    Raises:
        ValueError: *text* is not such a size.
    """
    found = _SIZE.fullmatch(text.strip())
    if found is None or (found["unit"].lower() == "ib" and not found["prefix"]):
        raise ValueError(f"expected a size in bytes such as 65536, 64KiB, 512k, 1MiB or 1MB, got {text!r}")
    base = 1000 if found["unit"].lower() == "b" and found["prefix"] else 1024
    multiple: int = base ** _POWERS[found["prefix"].lower()]
    return math.floor(float(found["number"]) * multiple)


# -- argument types: argparse prefixes their messages with "argument --name: " ---------


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _seconds(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _seconds_or_none(text: str) -> float | None:
    return None if text.strip().lower() == "none" else _seconds(text)


def _wait_seconds(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _attempts(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The program's argument parser (its ``--help`` is the manual)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A reconnecting netcat: send standard input to ADDRESS a line at a time and print\n"
        "what comes back, redialing with backoff whenever the connection breaks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "address",
        nargs="+",
        metavar="ADDRESS",
        help='"host:port", "[v6addr]:port", "unix:/path" or "unix:@name"; several: tried in this '
        "order on every dial (failover, the first preferred)",
    )
    ship = parser.add_argument_group("shipping")
    ship.add_argument(
        "--buffer",
        type=_size,
        default=0,
        metavar="SIZE",
        help="bytes of lines queued while no connection is up, sent in order on the next one "
        "(65536, 64KiB, 512k = 512 KiB, 1MiB, 1MB = 10**6; default: 0, none)",
    )
    ship.add_argument(
        "--when-full",
        choices=("block", "drop"),
        default=None,
        help="a line that can be neither sent nor queued at once: block waits for room or a "
        "connection (stalling the input), drop refuses it (counted); default: drop with --buffer, "
        "block without",
    )
    ship.add_argument(
        "--flush-timeout",
        type=_wait_seconds,
        default=DEFAULT_FLUSH_TIMEOUT,
        metavar="SECONDS",
        help="at the end of input, wait at most this long for queued lines to be sent, then discard "
        "them (default: %(default)s)",
    )
    ship.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only giving up, and the summary if lines were refused or discarded",
    )
    dial = parser.add_argument_group("dialing (the options of perconn.connect)")
    dial.add_argument(
        "--retry-min",
        type=_seconds,
        metavar="SECONDS",
        help=f"the first backoff step (default: {DEFAULT_RETRY_MIN:g})",
    )
    dial.add_argument(
        "--retry-max",
        type=_seconds,
        metavar="SECONDS",
        help=f"the cap on backoff steps (default: {DEFAULT_RETRY_MAX:g})",
    )
    dial.add_argument(
        "--dial-timeout",
        type=_seconds_or_none,
        default=DEFAULT_DIAL_TIMEOUT,
        metavar="SECONDS",
        help="bound on one dial of one address, or none (default: %(default)s)",
    )
    dial.add_argument(
        "--max-attempts",
        type=_attempts,
        metavar="N",
        help="give up after N consecutive failed dial rounds (default: never)",
    )
    dial.add_argument(
        "--give-up-after",
        type=_seconds,
        metavar="SECONDS",
        help="give up after this long without a connection (default: never)",
    )
    dial.add_argument(
        "--keepalive",
        type=_seconds_or_none,
        default=DEFAULT_KEEPALIVE,
        metavar="SECONDS",
        help="notice a vanished peer within this long, or none: the OS defaults (default: %(default)s)",
    )
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--ssl", action="store_true", help="use TLS, verifying the peer against the system's CAs")
    tls.add_argument("--cafile", metavar="PATH", help="use TLS, verifying the peer against the CAs in PATH (PEM)")
    tls.add_argument(
        "--server-hostname",
        metavar="NAME",
        help="the name TLS verifies and sends (default: the host of the address dialed; required over unix:)",
    )
    return parser


_OPTION_NAMES = ("dial_timeout", "retry_min", "retry_max", "max_attempts", "give_up_after", "server_hostname")


def _as_flags(message: str) -> str:
    """A library message in the program's terms: ``server_hostname`` → ``--server-hostname``."""
    for name in _OPTION_NAMES:
        message = message.replace(name, "--" + name.replace("_", "-"))
    return message


def _connect_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of ``perconn.connect`` the arguments ask for; exits
    with status 2 (naming the argument) where they are inconsistent."""
    retry_min, retry_max = args.retry_min, args.retry_max
    if retry_min is not None and retry_max is not None and retry_max < retry_min:
        parser.error(f"argument --retry-max: must be >= --retry-min ({retry_max:g} < {retry_min:g})")
    # One of them given: the other's default yields to it (--retry-min 120 alone raises the cap).
    if retry_min is None:
        retry_min = DEFAULT_RETRY_MIN if retry_max is None else min(DEFAULT_RETRY_MIN, retry_max)
    if retry_max is None:
        retry_max = max(DEFAULT_RETRY_MAX, retry_min)
    context: ssl.SSLContext | bool | None = None
    if args.cafile is not None:
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except OSError as exc:  # ssl.SSLError included: not PEM
            parser.error(f"argument --cafile: cannot load {args.cafile!r}: {exc}")
    elif args.ssl:
        context = True
    if args.server_hostname is not None and context is None:
        parser.error("argument --server-hostname: needs --ssl or --cafile")
    return {
        "buffer": args.buffer,
        "retry_min": retry_min,
        "retry_max": retry_max,
        "dial_timeout": args.dial_timeout,
        "max_attempts": args.max_attempts,
        "give_up_after": args.give_up_after,
        "keepalive": args.keepalive,
        "ssl": context,
        "server_hostname": args.server_hostname,
    }


# -- standard error: one line per event -------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Console:
    """Lines to standard error, whole, from any thread (``os.write``: no lock of
    ``sys.stderr`` is held by a daemon thread at exit)."""

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        line = f"{NAME}: {text}\n".encode(errors="replace")
        # (OSError: nobody reads standard error any more; the exit status still tells)
        with self._lock, contextlib.suppress(OSError):
            _write_all(self._fd, line)


class EventLines(logging.Handler):
    """The ``Conn``'s log records as one human line each on the :class:`Console`.

    The WARNING of queued writes discarded (it carries ``record.writes``) is not
    printed but counted in :attr:`discarded`: the summary reports it.
    *quiet*: print ERROR records only (giving up).
    """

    def __init__(self, console: Console, quiet: bool) -> None:
        super().__init__()
        self.console = console
        self.quiet = quiet
        self.discarded = 0

    def emit(self, record: logging.LogRecord) -> None:
        writes = getattr(record, "writes", None)
        if isinstance(writes, int):
            self.discarded += writes  # (emit runs under the handler's lock)
            return
        if self.quiet and record.levelno < logging.ERROR:
            return
        try:
            text = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self.console.say(" ".join(text.split("\n")))


# -- the program ---------------------------------------------------------------------


@dataclass
class Counts:
    """The pump's running counts of lines."""

    read: int = 0  # taken from standard input
    written: int = 0  # their write returned: sent, or queued
    refused: int = 0  # their write raised (TimeoutError, ConnectionIOError)
    timed_out: int = 0  # of those, TimeoutError: nothing sent (the Conn counts them in stats.dropped_writes)


@dataclass(frozen=True)
class Summary:
    """What became of the lines read, in the end (see the module's docstring):
    ``sent + refused + discarded`` is every line read."""

    sent: int
    refused: int
    discarded: int

    def text(self, reason: str) -> str:
        lines = "line" if self.sent == 1 else "lines"
        return f"{reason}: {self.sent} {lines} sent, {self.refused} refused, {self.discarded} discarded"


class Lines:
    """Standard input as batches of lines, one batch per ``os.read``; the last
    line may lack its newline, and one longer than :data:`MAX_LINE` comes in pieces."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.pending = b""
        """The start of a line whose newline has not come yet."""
        self.reading = False
        """Whether the pump is blocked reading (it holds no line then)."""

    def batches(self) -> Iterator[list[bytes]]:
        while True:
            self.reading = True
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            finally:
                self.reading = False
            if not chunk:
                break
            data = self.pending + chunk if self.pending else chunk
            batch = []
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                batch.append(data[start : end + 1])
                start = end + 1
            pending = data[start:]
            while len(pending) >= MAX_LINE:
                batch.append(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
            self.pending = pending
            if batch:
                yield batch
        if self.pending:
            batch, self.pending = [self.pending], b""
            yield batch


class Signals:
    """SIGINT and SIGTERM as a flag and a wake-up of the main thread, never as an
    exception.

    A signal's Python handler runs in the main thread between two bytecodes
    wherever it is; one that raises (``KeyboardInterrupt``) inside ``threading``'s
    own code (starting a thread) can leave a lock broken. And a wait on a lock
    misses a signal whose C handler ran on another thread, or just before the
    wait blocked: Ctrl-C went unnoticed about 1 run in 40 under load. So the
    handlers only note the signal; the signal also writes to a socket
    (``signal.set_wakeup_fd``), as :meth:`wake` does, and :meth:`wait` waits
    for it in ``select``. A signal that was ignored when the program started
    (``nohup``) stays ignored.
    """

    def __init__(self) -> None:
        self.caught: int | None = None
        self._r, self._w = socket.socketpair()  # (sockets: what set_wakeup_fd takes on Windows too)
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum, handler in self._handlers.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, self._caught)

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        if self.caught is None:
            self.caught = signum

    def wake(self) -> None:
        """Wake :meth:`wait` (from any thread)."""
        with contextlib.suppress(OSError):  # full of wake-ups already, or the wait is over
            self._w.send(b"\0")

    def wait(self, done: threading.Event) -> None:
        """Wait until *done* is set (and :meth:`wake` called) or a signal comes."""
        while not done.is_set() and self.caught is None:
            select.select([self._r], [], [])
            with contextlib.suppress(BlockingIOError):
                self._r.recv(4096)

    def default(self) -> None:
        """From now on a signal acts as it would on any program (a second Ctrl-C
        during the end kills at once)."""
        for signum, handler in self._handlers.items():
            signal.signal(signum, signal.SIG_IGN if handler is signal.SIG_IGN else signal.SIG_DFL)

    def restore(self) -> None:
        """Put back the handlers and the wake-up descriptor found (for a caller of :func:`main`)."""
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._handlers.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._r.close()
        self._w.close()


class Shipper:
    """Runs the pump and forward threads over one ``Conn``; the main thread waits
    in :meth:`Signals.wait` and then calls :meth:`end`."""

    def __init__(
        self, conn: Conn, *, block: bool, flush_timeout: float, events: EventLines, wake: Callable[[], None]
    ) -> None:
        self.conn = conn
        self._wake = wake
        self.events = events
        self.counts = Counts()
        self.finished = threading.Event()
        self.outcome = ""
        """Why the run ended: "eof", "flush", "gave up", "input"; set once."""
        self._timeout = None if block else 0.0
        self._flush_timeout = flush_timeout
        self._lines = Lines()
        self._lock = threading.Lock()
        self._pump = threading.Thread(target=self._pump_lines, name="perconn-cli pump", daemon=True)
        self._forward = threading.Thread(target=self._forward_output, name="perconn-cli forward", daemon=True)

    def start(self) -> None:
        self._forward.start()
        self._pump.start()

    def _finish(self, outcome: str) -> None:
        with self._lock:
            if not self.outcome:
                self.outcome = outcome
        self.finished.set()
        self._wake()

    # -- the pump thread: standard input to the connection ---------------------------

    def _pump_lines(self) -> None:
        counts, conn, timeout = self.counts, self.conn, self._timeout
        try:
            for batch in self._lines.batches():
                counts.read += len(batch)
                for line in batch:
                    try:
                        conn.write(line, timeout)
                    except TimeoutError:  # drop: no room and no connection at once
                        counts.refused += 1
                        counts.timed_out += 1
                    except ConnectionIOError:  # it failed with its connection (logged): not sent again
                        counts.refused += 1
                    except ClosedConnectionError:  # gave up, or the end closed it
                        self._finish("gave up")
                        return
                    else:
                        counts.written += 1
        except OSError as exc:
            self.events.console.say(f"reading standard input: {exc}")
            self._finish("input")
            return
        try:
            conn.flush(self._flush_timeout)
        except TimeoutError:
            self._finish("flush")
        except ClosedConnectionError:
            self._finish("gave up")
        else:
            self._finish("eof")

    # -- the forward thread: the peer's bytes to standard output --------------------

    def _forward_output(self, fd: int = 1) -> None:
        broken = False  # standard output is closed: keep reading, drop what comes
        while True:
            try:
                data = self.conn.read(READ_CHUNK)
            except ConnectionIOError:
                continue  # a drop, logged already: read from the next connection
            except ClosedConnectionError as exc:
                if isinstance(exc, GaveUpError):
                    self._finish("gave up")
                return
            if not broken:
                try:
                    _write_all(fd, data)
                except OSError:
                    broken = True

    # -- the end ------------------------------------------------------------------

    def end(self, *, interrupted: bool) -> Summary:
        """Close the ``Conn`` (discarding what is queued) and sum up."""
        with contextlib.suppress(ConnectionIOError):  # closing the socket failed: it is closed all the same
            self.conn.close()
        if not self._lines.reading:  # its next write raises ClosedConnectionError: let it stop counting
            self._pump.join(JOIN_BUDGET)
        if not interrupted:
            self._forward.join(JOIN_BUDGET)
        counts = self.counts
        read = counts.read + (1 if self._lines.pending else 0)  # a line cut short by the end is lost too
        # Closing (or giving up) discarded the queue; the Conn counted those writes,
        # with the timed-out ones, in dropped_writes (its log record may come later).
        sent = counts.written - (self.conn.stats.dropped_writes - counts.timed_out)
        return Summary(sent, counts.refused, read - sent - counts.refused)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program with *argv* (default: ``sys.argv[1:]``); return its exit status.

    Call it from the main thread: it handles SIGINT and SIGTERM there.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _connect_options(parser, args)
    console = Console()
    events = EventLines(console, args.quiet)
    logger = logging.Logger(NAME, logging.INFO)  # private: not in the logging tree
    logger.addHandler(events)
    addresses = args.address[0] if len(args.address) == 1 else list(args.address)
    signals = Signals()  # before any thread starts: from here on a signal only sets a flag
    try:
        try:
            conn = connect(addresses, logger=logger, **options)
        except (TypeError, ValueError) as exc:
            parser.error(_as_flags(str(exc)))
        block = args.when_full == "block" if args.when_full is not None else not args.buffer
        shipper = Shipper(conn, block=block, flush_timeout=args.flush_timeout, events=events, wake=signals.wake)
        shipper.start()
        signals.wait(shipper.finished)
        signals.default()
        return _end(shipper, signals.caught, args, console)
    finally:
        signals.restore()


def _end(shipper: Shipper, caught: int | None, args: argparse.Namespace, console: Console) -> int:
    """Close the ``Conn``, say what became of the lines, and return the exit status."""
    stopped = None if caught is None else 128 + caught
    summary = shipper.end(interrupted=stopped is not None)
    if stopped is not None:
        reason = "interrupted" if stopped == EXIT_INTERRUPTED else "terminated"
        status = stopped
    else:
        reason = {
            "eof": "end of input",
            "flush": f"end of input; queued lines not sent within --flush-timeout {duration(args.flush_timeout)}",
            "gave up": "gave up",
            "input": "standard input failed",
        }[shipper.outcome]
        clean = shipper.outcome == "eof" and not summary.refused and not summary.discarded
        status = EXIT_OK if clean else EXIT_LOST
    lost = summary.refused or summary.discarded or status not in (EXIT_OK, EXIT_INTERRUPTED, EXIT_TERMINATED)
    if not args.quiet or lost:
        console.say(summary.text(reason))
    return status


def run() -> NoReturn:
    """The console entry point: :func:`main`, its status as the exit status."""
    try:
        status = main()
    except KeyboardInterrupt:  # Ctrl-C while the arguments are read, before main() takes it over
        status = EXIT_INTERRUPTED
    sys.exit(status)
