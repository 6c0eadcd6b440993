"""The outbound buffer's policy (perconn._outbox), driven as the front ends drive
it: queue while disconnected, hand the queue to a fresh connection write by
write, publish it only once empty, discard at close."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from perconn._outbox import Outbox


def test_a_write_fits_only_in_the_room_left() -> None:
    box = Outbox(10)
    assert box.fits(10) and not box.fits(11)
    box.put(b"123456")
    assert (len(box), box.size) == (1, 6)
    assert box.fits(4) and not box.fits(5)
    assert not box.never_fits(10) and box.never_fits(11)


def test_a_zero_buffer_queues_nothing() -> None:
    box = Outbox(0)
    assert not box.fits(1)
    assert box.never_fits(1)


def test_writes_are_handed_in_order_and_leave_the_queue_for_good() -> None:
    box = Outbox(100)
    first, second = b"one", b"two"
    box.put(first)
    box.put(second)
    assert box.head() is first
    box.handed(first)
    assert box.head() is second and box.size == 3
    box.handed(second)
    assert box.head() is None and box.size == 0


def test_handed_after_a_discard_changes_nothing() -> None:
    box = Outbox(100)
    data = b"abc"
    box.put(data)
    assert box.discard() == (1, 3)
    box.handed(data)  # the flusher finishing its send after close() discarded the queue
    assert (len(box), box.size, box.dropped_writes) == (0, 0, 1)


def test_discard_counts_what_it_drops_as_dropped_writes() -> None:
    box = Outbox(100)
    box.refused()
    box.put(b"a")
    box.put(b"bc")
    assert box.discard() == (2, 3)
    assert box.dropped_writes == 3
    assert box.discard() == (0, 0)


# An operation of the simulation: ("write", size) while disconnected; ("connect", k):
# a connection comes up and fails after k writes were handed to it (k = -1: it
# survives and is published); ("close",): the Conn closes.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 40)),
        st.tuples(st.just("connect"), st.integers(-1, 5)),
    ),
    max_size=60,
)


@given(limit=st.integers(0, 120), script=ops, close_at_end=st.booleans())
def test_any_run_delivers_an_ordered_subsequence_never_a_duplicate_or_fragment(
    limit: int, script: list[tuple[str, int]], close_at_end: bool
) -> None:
    box = Outbox(limit)
    accepted: list[bytes] = []  # writes queued, in the order their calls returned
    delivered: list[bytes] = []  # writes handed to some connection, in order
    refused = 0
    for n, (op, arg) in enumerate(script):
        if op == "write":
            data = n.to_bytes(2, "big") * arg  # distinct per write: a duplicate would show
            if box.fits(len(data)):
                box.put(data)
                accepted.append(data)
            else:
                box.refused()
                refused += 1
        else:  # a connection comes up: the flusher hands the queue, then publishes it
            handed = 0
            while (head := box.head()) is not None and handed != arg:
                delivered.append(head)
                box.handed(head)
                handed += 1
            if arg == -1:
                assert box.head() is None and box.size == 0  # published only once empty
        assert 0 <= box.size <= limit  # memory bounded by the buffer, whatever the outage
        assert box.size == sum(map(len, accepted)) - sum(map(len, delivered))
    discarded = box.discard() if close_at_end else (0, 0)
    assert delivered == accepted[: len(delivered)]  # a prefix: in order, each whole, none twice
    assert len(delivered) + len(box) + discarded[0] == len(accepted)
    assert box.dropped_writes == refused + discarded[0]


def test_a_batch_takes_the_oldest_writes_that_fit_together_and_at_least_one() -> None:
    box = Outbox(100)
    for data in (b"aaaa", b"bbbb", b"cc", b"dddddddd"):
        box.put(data)
    assert box.batch(10) == [b"aaaa", b"bbbb", b"cc"]
    assert box.batch(3) == [b"aaaa"]  # larger than the batch: alone
    assert len(box) == 4  # a batch is only a look: handed() takes them out
    assert Outbox(10).batch(10) == []
