"""perconn.aio.lookups: the dials of one loop waiting for one real lookup (in
throwaway namespaces: a DNS server that never answers, and /etc/hosts) wait as
a group, woken together or each at its deadline, leaving nothing in the loop."""

from __future__ import annotations

import json
from pathlib import Path

from isolated import run_isolated

SCRIPT = """
import asyncio, json, socket, time
from perconn._address import parse_address
from perconn._lookup import Lookup
from perconn.aio import lookups

dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))  # takes queries and never answers: the lookup lasts the resolver's timeout

def live_timers(loop):
    return sum(not h.cancelled() for h in loop._scheduled)  # (the loop's own list: no API counts them)

async def timed(loop, lookup, seconds):
    start = loop.time()
    done = await lookups.wait_for(lookup, seconds)
    return done, loop.time() - start

async def main():
    loop = asyncio.get_running_loop()
    out = {}
    slow = Lookup(parse_address("slow.test:80"))
    waits = [asyncio.ensure_future(timed(loop, slow, s)) for s in (0.1, 0.05, None)]
    await asyncio.sleep(0)  # one pass of the loop: each wait runs until it waits
    out["registered"] = len(slow._waiters)  # the lookup's thread will call into the loop once, for all
    out["timers_while_waiting"] = live_timers(loop)  # one for the group's deadlines, not one per dial
    first, second = await waits[0], await waits[1]
    out["timed_out"] = [first[0], second[0], first[1] >= 0.1, second[1] >= 0.05, second[1] < first[1]]
    out["third_waits"] = not waits[2].done()
    waits[2].cancel()
    await asyncio.gather(waits[2], return_exceptions=True)  # its wait has ended
    out["after_cancel"] = [len(slow._waiters), live_timers(loop), slow.done]

    fast = Lookup(parse_address("localhost:80"))  # in /etc/hosts: done in a moment
    woken = await asyncio.gather(*(lookups.wait_for(fast, s) for s in (5.0, 5.0, None)))
    out["woken"] = woken
    out["after_done"] = [len(fast._waiters), live_timers(loop)]
    print(json.dumps(out))

asyncio.run(main())
dns.close()
"""


def test_dials_waiting_for_one_lookup_wait_as_a_group(tmp_path: Path) -> None:
    done = run_isolated(SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["registered"] == 1
    assert got["timers_while_waiting"] == 1
    assert got["timed_out"] == [False, False, True, True, True]  # each at its own deadline, never before
    assert got["third_waits"]  # no deadline: it waits on
    assert got["after_cancel"] == [0, 0, False]  # the last waiter gone: nothing of the group left, the lookup goes on
    assert got["woken"] == [True, True, True]
    assert got["after_done"] == [0, 0]
