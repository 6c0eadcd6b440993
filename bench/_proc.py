"""Process plumbing shared by the benchmark scripts: a parent that runs each
measurement in a child process of its own, reads the figures the child reports
and kills it after a hard timeout; spare ports, file-descriptor limits, CPU
pinning; and ending a run on Ctrl-C or SIGTERM.

Each script imports it the one way that works both when run as a script
(``python bench/scale.py``: ``bench/`` is ``sys.path[0]``) and as part of the
package (``python -m bench``)::

    if TYPE_CHECKING or __package__:  # part of the bench package (python -m bench; mypy checks this one)
        from . import _proc
    else:  # run as a script (python bench/scale.py): bench/ is sys.path[0]
        import _proc

(``python -m bench``'s own ``__main__.py`` is never a script: ``from . import _proc``.)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

# -- ports, limits, CPUs ------------------------------------------------------------


def spare_port() -> int:
    """A free port of 127.0.0.1 below the kernel's ephemeral range: no other
    program's ``bind(0)`` or outgoing connection takes it by chance while the
    bench is not listening on it (a server down, a port meant to refuse)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    if low > 4096:
        pick = random.Random()
        for _ in range(200):
            port = pick.randrange(low // 2, low)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # no room below the range: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(want: int = 0) -> int:
    """Raise RLIMIT_NOFILE to *want* if allowed (root may raise the hard limit),
    else the soft limit to the hard one; the soft limit in force. Many
    connections need many file descriptors, more than the usual soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(want, hard) if hard != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def steady_malloc(limit: int = 1 << 25) -> bool:
    """Keep glibc's ``malloc`` from giving big buffers back to the OS between
    round trips; False where it cannot be told (no glibc).

    A 1 MiB echo makes and frees 1 MiB ``bytes`` every round trip. Where glibc
    serves them from a heap it keeps, a round trip is cheap; where it maps them
    afresh or trims the heap after them (it adjusts its thresholds as it goes,
    and it depends on what else lies on the heap), each costs hundreds of page
    faults: the client's CPU per round trip then swings fourfold from one round
    to the next, whichever contender is running. Fixed thresholds (``mallopt``)
    make every contender allocate alike, as a long-running program settles to.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, limit)) and bool(mallopt(m_mmap_threshold, limit))


def pin(cpu: int | None, pid: int = 0) -> None:
    """Pin the process *pid* (0: this one) to *cpu*; None leaves it to the scheduler."""
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """This process pinned to *cpu* (None: not pinned) for the block, and given
    back the CPUs it had after, so what runs later is not pinned."""
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        pin(cpu)
        yield
    finally:
        if mask is not None:
            os.sched_setaffinity(0, mask)


# -- the child process ----------------------------------------------------------------


def emit(**values: object) -> None:
    """Report figures to the parent, one JSON object a line, at once (so a child
    killed later has reported all it got to)."""
    print(json.dumps(values), flush=True)


def as_child(timeout: float, work: Callable[[], object]) -> NoReturn:
    """Do *work* as the whole of a child process, and exit at once after (threads
    or tasks it left behind die with it). An exception is reported as
    ``emit(error=...)``; a ``SIGALRM`` ends the child should its parent be gone
    and *timeout* seconds long past (its servers end with it)."""
    signal.alarm(math.ceil(timeout) + 10)
    try:
        work()
    except BaseException as exc:
        emit(error=f"{type(exc).__name__}: {exc}")
    finally:
        sys.stdout.flush()
        os._exit(0)


# -- the parent -------------------------------------------------------------------------


def report(line: str) -> dict[str, Any] | None:
    """The JSON object a child reported on *line* (:func:`emit`); None for any other line."""
    with contextlib.suppress(ValueError):
        got = json.loads(line)
        if isinstance(got, dict):
            return got
    return None


def run_child(script: str, args: Sequence[str], timeout: float, take: Callable[[dict[str, Any]], object]) -> bool:
    """Run *script* (a bench's ``__file__``) again with *args* (its ``--child``
    options) in a process and session of its own, handing *take* each object it
    reports (:func:`emit`) as it comes; True if it was still running after *timeout*
    seconds. The child and all it started are killed after the timeout, and
    when this process is interrupted."""
    command = [sys.executable, os.path.abspath(script), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            if (got := report(line)) is not None:
                take(got)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        killed = True
    finally:  # timed out, or this process was interrupted: the child goes too
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and what it started
            proc.wait()
        reader.join(5)
        stdout.close()
    return killed


def stop_server(proc: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """End a server process that exits when its stdin closes: close it, wait up
    to *grace* seconds, kill the server if it lingers; close its stdout."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


# -- ending a run -------------------------------------------------------------------------


def stop(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so the child process in flight is killed too."""
    raise KeyboardInterrupt


def is_parent(child: str | None, child_main: Callable[[], object]) -> bool:
    """A script's two roles: as a child (*child*, its ``--child`` option, is
    set) run *child_main* and return False; as the parent, take SIGTERM as
    Ctrl-C (:func:`stop`) and return True."""
    if child:
        child_main()
        return False
    signal.signal(signal.SIGTERM, stop)
    return True


def main(run: Callable[[], None]) -> None:
    """Run a bench's *run*; Ctrl-C (or SIGTERM, :func:`stop` installed) ends it
    with ``interrupted`` and status 130, no traceback: the child processes are
    gone already (:func:`run_child` kills them on the way out)."""
    try:
        run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
