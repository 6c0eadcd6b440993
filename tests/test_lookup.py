"""Name lookups bounded by dial_timeout, for both front ends, against a DNS server
that never answers (in throwaway namespaces): the dial fails in time, the lookup
is not repeated while it is pending (by any Conn of the process), and nothing
keeps the program from exiting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from isolated import HOSTS_HELPERS, run_isolated

from perconn._address import parse_address
from perconn._lookup import Lookup, Resolver, is_literal

RECORDS = """
import logging
records = []  # what the Conns' logger "t" emits
handler = logging.Handler()
handler.emit = records.append
logger = logging.getLogger("t")
logger.addHandler(handler)
logger.propagate = False
"""

SCRIPT = (
    RECORDS
    + """
import asyncio, json, socket, threading, time
import perconn, perconn.aio

FRONT = {front!r}
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))  # takes queries and never answers: a lookup lasts the resolver's timeout
queries = []
threading.Thread(target=lambda: [queries.append(dns.recvfrom(512)) for _ in range(1000)], daemon=True).start()
options = dict(dial_timeout=0.3, retry_min=0.05, retry_max=0.05, jitter=False, logger=logger)

def lookups():
    return sum(t.name.startswith("perconn-lookup") for t in threading.enumerate())

CONNS = 20  # dialing the same name: they share its one pending lookup
if FRONT == "sync":
    conns = [perconn.connect("slow.test:80", **options) for _ in range(CONNS)]
    start, most = time.monotonic(), 0
    while len(records) < 2 * CONNS and time.monotonic() - start < 5:
        time.sleep(0.01)
        most = max(most, lookups())
    took = time.monotonic() - start
    for conn in conns:
        conn.close()
else:
    async def main():
        conns = [perconn.aio.connect("slow.test:80", **options) for _ in range(CONNS)]
        start, most = time.monotonic(), 0
        while len(records) < 2 * CONNS and time.monotonic() - start < 5:
            await asyncio.sleep(0.01)
            most = max(most, lookups())
        took = time.monotonic() - start
        await asyncio.gather(*(conn.close() for conn in conns))
        return took, most
    took, most = asyncio.run(main())
causes = sorted(set(str(r.error.__cause__) for r in records))
print(json.dumps({{"took": took, "most_lookups": most, "causes": causes}}))
"""
)


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_dial_timeout_bounds_a_lookup_that_never_ends(front: str, tmp_path: Path) -> None:
    start = time.monotonic()
    done = run_isolated(SCRIPT.format(front=front), tmp_path)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    # Two dials of 0.3 s each (and a 0.05 s sleep) by each Conn, within the resolver's own timeout (1 s).
    assert got["took"] < 0.9, got
    assert got["causes"] == ["lookup of slow.test timed out after 0.3 s"], got
    # The pending lookup is waited for again, never doubled: by twenty Conns, one thread.
    assert got["most_lookups"] == 1
    assert wall < 15  # the program exited without waiting for the lookup


FOUND_LATER = (
    HOSTS_HELPERS
    + RECORDS
    + """
import asyncio, time
import perconn, perconn.aio

FRONT = "<front>"
listener, port = serve_on("127.0.0.1")  # the service is up; its name is not in /etc/hosts (nor DNS) yet
options = dict(retry_min=0.02, retry_max=0.05, logger=logger)

def failed_lookups():
    return sum(isinstance(r.error.__cause__, socket.gaierror) for r in records if r.error is not None)

def wait_for_failures(count):
    start = time.monotonic()
    while failed_lookups() < count and time.monotonic() - start < 5:
        time.sleep(0.01)

if FRONT == "sync":
    conn = perconn.connect(f"late.test:{port}", **options)
    wait_for_failures(3)
    point("late.test", "127.0.0.1")  # the name appears
    conn.wait_connected(5)
    print(failed_lookups() >= 3, conn.generation, conn.stats.address == f"late.test:{port}")
    conn.close()
else:
    async def main():
        conn = perconn.aio.connect(f"late.test:{port}", **options)
        await asyncio.to_thread(wait_for_failures, 3)
        point("late.test", "127.0.0.1")
        await conn.wait_connected(5)
        print(failed_lookups() >= 3, conn.generation, conn.stats.address == f"late.test:{port}")
        await conn.close()
    asyncio.run(main())
"""
)


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_a_name_whose_lookup_failed_is_looked_up_again(front: str, tmp_path: Path) -> None:
    # A failed lookup is not kept: once the name resolves, the next dial finds it.
    done = run_isolated(FOUND_LATER.replace("<front>", front), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1", "True"]


def test_literals_need_no_lookup_thread() -> None:
    resolver = Resolver()
    assert is_literal(parse_address("127.0.0.1:7")) and is_literal(parse_address("[::1]:7"))
    assert is_literal(parse_address("unix:/tmp/x"))
    assert not is_literal(parse_address("localhost:7"))
    assert resolver.lookup(parse_address("127.0.0.1:7")) == [(2, 6, ("127.0.0.1", 7))]


def test_every_conn_of_the_process_shares_the_pending_lookup_of_a_name() -> None:
    # Two Conns' resolvers: the second dial of a name waits for the lookup the
    # first began, until a dial has used its result; the next then looks up afresh.
    first, second = Resolver(), Resolver()
    address = parse_address("localhost:7")
    pending = first.lookup(address)
    assert isinstance(pending, Lookup)
    assert second.lookup(address) is pending
    second.finished(pending)
    again = first.lookup(address)
    assert isinstance(again, Lookup) and again is not pending
    first.finished(again)
