"""The dial gate of a loop (perconn.aio.pacing): the dials' backoff sleeps and
their turns, on a real loop (asyncio's and uvloop). The policy itself is
tested on an injected clock in tests/test_pacing.py."""

from __future__ import annotations

import asyncio
import gc
import weakref

from aio_helpers import until
from servers import refusing_port

import perconn.aio
from perconn._pacing import START
from perconn.aio import pacing

from .conftest import LoopFactory, Run, run_on


def test_a_turn_after_a_delay_comes_no_sooner_and_in_the_order_due(run: Run) -> None:
    async def main() -> list[tuple[str, float, float]]:
        loop = asyncio.get_running_loop()
        woke: list[tuple[str, float, float]] = []

        async def dial(name: str, delay: float) -> None:
            asked = loop.time()
            await pacing.turn(delay)
            woke.append((name, delay, loop.time() - asked))

        # The long sleep arms the gate's timer first: the short one must not wait for it.
        await asyncio.wait_for(asyncio.gather(dial("long", 1.0), dial("short", 0.03), dial("now", 0.0)), 10)
        return woke

    woke = run(main())
    assert [name for name, _, _ in woke] == ["now", "short", "long"]
    for name, delay, slept in woke:  # (less a millisecond: uvloop's clock counts milliseconds)
        assert slept >= delay - 0.001, f"{name}: {slept:.3f} s for a {delay} s sleep"
    assert woke[1][2] < woke[2][1], "the short sleep woke when due, not with the long one"


def test_more_dials_due_than_a_tick_allows_wait_their_turn_and_all_start(run: Run) -> None:
    many = 3 * START  # the first tick lets START through

    async def main() -> tuple[list[int], bool]:
        order: list[int] = []

        async def dial(i: int) -> None:
            await pacing.turn(0.01)
            order.append(i)

        await asyncio.wait_for(asyncio.gather(*(dial(i) for i in range(many))), 10)
        gate = pacing._gates[asyncio.get_running_loop()]
        for _ in range(100):  # the tick goes on while dials ran, then stops (bounded: 100 ticks)
            if gate.due is None:
                break
            await asyncio.sleep(gate.pacer.tick)
        return order, gate.due is None and not gate.sleeping and not gate.waiting

    order, idle = run(main())
    assert sorted(order) == list(range(many))
    assert order == sorted(order), "dials due at once start first come, first served"
    assert idle, "the gate keeps no timer once nobody sleeps or waits"


def test_a_cancelled_sleeper_is_passed_over_and_dropped(run: Run) -> None:
    async def main() -> tuple[bool, int, int]:
        loop = asyncio.get_running_loop()
        gate = pacing.Gate()
        sleeping = gate.turn(loop, 0.02)
        assert isinstance(sleeping, asyncio.Future)
        other = gate.turn(loop, 0.04)
        sleeping.cancel()  # its dial task was cancelled: the Conn closed
        gate.forget()  # (one cancelled of two: kept, passed over when due)
        kept = len(gate.sleeping)
        await asyncio.wait_for(other, 10)
        last = gate.turn(loop, 10.0)
        assert isinstance(last, asyncio.Future)
        last.cancel()
        gate.forget()  # (all that is left is cancelled: dropped)
        return sleeping.cancelled(), kept, len(gate.sleeping)

    cancelled, kept, left = run(main())
    assert cancelled and kept == 2 and left == 0


def test_a_loop_whose_conns_were_closed_is_not_kept_alive_by_its_gate(loop_factory: LoopFactory) -> None:
    # A dial asleep in the gate when its Conn closes must not leave the loop
    # referenced from the module's table of gates (a leak per loop).
    async def main() -> None:
        with refusing_port() as address:
            conn = perconn.aio.connect(address, retry_min=60, retry_max=60)
            await until(lambda: conn.stats.dial_failures >= 1)
            assert pacing._gates[asyncio.get_running_loop()].sleeping  # asleep in the gate
            await conn.close()

    made: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    def factory() -> asyncio.AbstractEventLoop:
        loop = loop_factory()
        made.append(weakref.ref(loop))
        return loop

    run_on(factory, main())
    gc.collect()
    assert made[0]() is None, "the closed loop is still referenced"
