"""The dial gate of a loop (perconn.aio.pacing): the dials' backoff sleeps and
their turns, on a real loop (asyncio's and uvloop). The policy itself is
tested on an injected clock in tests/test_pacing.py."""

from __future__ import annotations

import asyncio

from perconn._pacing import START
from perconn.aio import pacing

from .conftest import Run


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
            if gate.timer is None:
                break
            await asyncio.sleep(gate.pacer.tick)
        return order, gate.timer is None and not gate.sleeping and not gate.waiting

    order, idle = run(main())
    assert sorted(order) == list(range(many))
    assert order == sorted(order), "dials due at once start first come, first served"
    assert idle, "the gate keeps no timer once nobody sleeps or waits"


def test_a_cancelled_sleeper_is_passed_over(run: Run) -> None:
    async def main() -> bool:
        sleeping = pacing.turn(0.02)
        sleeping.cancel()  # its dial task was cancelled: the Conn closed
        other = pacing.turn(0.04)
        await asyncio.wait_for(other, 10)
        return sleeping.cancelled()

    assert run(main())
