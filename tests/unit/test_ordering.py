"""Ordering and recovery: the sequencer, the recovery merge and the ``recovered`` check."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveboard.protocol import BrokerEvent, Position, SequencedEvent
from liveboard.realtime.ordering import (
    OfferResult,
    RecoveryBuffer,
    RoomSequencer,
    is_recovered,
)


def ev(offset: int, epoch: str = "e1") -> BrokerEvent:
    return BrokerEvent(
        type="task:updated",
        room="project:p1",
        offset=offset,
        epoch=epoch,
        ts=1_764_120_000_000 + offset,
        user_id="alice",
        data={"taskId": str(offset)},
    )


def offsets(events: Sequence[SequencedEvent]) -> list[int]:
    return [event.offset for event in events]


def gap_of(seq: RoomSequencer) -> tuple[tuple[int, int] | None, float | None]:
    """The sequencer's hole and since when (read through a call: no narrowing carried over)."""
    return seq.missing, seq.gap_since


# ------------------------------------------------------------------------------ RoomSequencer


def test_in_order_events_are_delivered_at_once() -> None:
    seq = RoomSequencer("e1")
    for offset in range(1, 6):
        result = seq.offer(ev(offset), now=float(offset))
        assert result == OfferResult([ev(offset)])
    assert seq.next_offset == 6
    assert seq.position == Position(5, "e1")
    assert (seq.missing, seq.gap_since, seq.buffered) == (None, None, 0)


def test_starts_at_the_given_offset() -> None:
    seq = RoomSequencer("e1", next_offset=41)
    assert seq.position == Position(40, "e1")
    assert offsets(seq.offer(ev(40), now=0).deliver) == []
    assert offsets(seq.offer(ev(41), now=0).deliver) == [41]


def test_duplicates_are_dropped() -> None:
    seq = RoomSequencer("e1")
    assert offsets(seq.offer(ev(1), now=0).deliver) == [1]
    assert seq.offer(ev(1), now=0) == OfferResult([])
    # a duplicate of an event waiting behind a gap
    assert seq.offer(ev(3), now=0).deliver == []
    assert seq.offer(ev(3), now=0).deliver == []
    assert seq.buffered == 1
    assert offsets(seq.offer(ev(2), now=0).deliver) == [2, 3]
    assert offsets(seq.fill([ev(1), ev(2), ev(3)], now=0).deliver) == []


def test_gap_is_reported_then_filled() -> None:
    seq = RoomSequencer("e1")
    assert offsets(seq.offer(ev(1), now=1.0).deliver) == [1]
    assert seq.offer(ev(3), now=2.0).deliver == []
    assert (seq.missing, seq.gap_since) == ((2, 2), 2.0)
    assert seq.offer(ev(4), now=3.0).deliver == []
    assert (seq.missing, seq.gap_since) == ((2, 2), 2.0)
    assert seq.offer(ev(6), now=4.0).deliver == []
    assert (seq.missing, seq.buffered) == ((2, 2), 3)
    result = seq.fill([ev(2)], now=5.0)
    assert offsets(result.deliver) == [2, 3, 4]
    assert (seq.missing, seq.gap_since) == ((5, 5), 2.0)  # the hole narrowed, never closed
    assert offsets(seq.fill([ev(5), ev(6)], now=6.0).deliver) == [5, 6]
    assert (seq.missing, seq.gap_since, seq.buffered, seq.next_offset) == (None, None, 0, 7)


def test_an_expected_offset_is_a_hole_until_delivered() -> None:
    """``expect``: another room's event names an offset of this one that has not arrived."""
    seq = RoomSequencer("e1")
    seq.offer(ev(1), now=0)
    seq.expect(1, now=1.0)  # already delivered: nothing missing
    assert (seq.missing, seq.gap_since) == (None, None)
    seq.expect(3, now=2.0)
    assert (seq.missing, seq.gap_since) == ((2, 3), 2.0)
    seq.expect(2, now=3.0)  # a lower expectation does not narrow it
    assert seq.missing == (2, 3)
    assert offsets(seq.fill([ev(3), ev(2)], now=4.0).deliver) == [2, 3]
    assert gap_of(seq) == (None, None)


def test_gap_range_ends_before_the_first_buffered_event() -> None:
    seq = RoomSequencer("e1")
    seq.offer(ev(9), now=0)
    seq.offer(ev(5), now=0)
    assert seq.missing == (1, 4)
    assert offsets(seq.fill([ev(4), ev(3), ev(1), ev(2)], now=0).deliver) == [1, 2, 3, 4, 5]
    assert seq.missing == (6, 8)


def test_fill_overlapping_delivered_and_buffered_events() -> None:
    seq = RoomSequencer("e1")
    for offset in (1, 2, 5, 6):
        seq.offer(ev(offset), now=0)
    result = seq.fill([ev(offset) for offset in range(1, 9)], now=0)
    assert offsets(result.deliver) == [3, 4, 5, 6, 7, 8]
    assert seq.missing is None


def test_gap_time_restarts_for_a_new_gap() -> None:
    seq = RoomSequencer("e1")
    seq.offer(ev(2), now=1.0)
    assert seq.gap_since == 1.0
    seq.offer(ev(1), now=2.0)
    assert seq.gap_since is None
    seq.offer(ev(4), now=3.0)
    assert seq.gap_since == 3.0


@settings(max_examples=300)
@given(
    n=st.integers(1, 60),
    data=st.data(),
)
def test_any_arrival_order_yields_each_offset_once_in_order(n: int, data: st.DataObject) -> None:
    """Permutation + duplicates + losses, with missing ranges filled from the log."""
    log = {offset: ev(offset) for offset in range(1, n + 1)}
    arrived = data.draw(st.permutations(range(1, n + 1)))
    lost = data.draw(st.sets(st.sampled_from(range(1, n + 1))))
    duplicates = data.draw(st.lists(st.sampled_from(range(1, n + 1)), max_size=n))
    live = [offset for offset in arrived if offset not in lost]
    for duplicate in duplicates:
        live.insert(data.draw(st.integers(0, len(live))), duplicate)
    max_buffered = data.draw(st.sampled_from([0, 1, 3, 10_000]))

    seq = RoomSequencer("e1", max_buffered=max_buffered)
    delivered: list[int] = []
    for step, offset in enumerate(live):
        result = seq.offer(log[offset], now=float(step))
        assert not result.resync
        delivered += offsets(result.deliver)
        if data.draw(st.booleans(), label="read the log now"):
            missing = seq.missing
            if missing is not None:
                first, last = missing
                reads = [log[o] for o in range(first, last + 1)]
                delivered += offsets(seq.fill(data.draw(st.permutations(reads)), now=0).deliver)
    while seq.missing is not None:
        first, last = seq.missing
        delivered += offsets(seq.fill([log[o] for o in range(first, last + 1)], now=0).deliver)
    # The tail that never arrived live (the caller catches up on it from the log).
    delivered += offsets(seq.fill([log[o] for o in range(seq.next_offset, n + 1)], now=0).deliver)

    assert delivered == list(range(1, n + 1))
    assert seq.buffered <= max_buffered
    assert (seq.missing, seq.gap_since) == (None, None)


def state(seq: RoomSequencer) -> tuple[object, ...]:
    return (seq.epoch, seq.next_offset, seq.position, seq.missing, seq.gap_since, seq.buffered)


@given(data=st.data())
def test_take_next_is_offer_when_it_takes(data: st.DataObject) -> None:
    """Whatever came before (holes, buffered events, expected offsets, epoch changes, log
    fills), ``take_next`` takes an event only when ``offer`` would release it alone and leave
    no hole, and then leaves the sequencer as ``offer`` does; otherwise it changes nothing.
    It declines such an event only when a hole was known before it."""
    max_buffered = data.draw(st.sampled_from([0, 2, 10_000]))
    plain = RoomSequencer("e1", max_buffered=max_buffered)
    fast = RoomSequencer("e1", max_buffered=max_buffered)
    for step in range(data.draw(st.integers(1, 40))):
        now = float(step)
        action = data.draw(st.sampled_from(["event", "event", "event", "expect", "fill"]))
        if action == "expect":
            offset = data.draw(st.integers(1, 30))
            plain.expect(offset, now=now)
            fast.expect(offset, now=now)
        elif action == "fill" and plain.missing is not None:
            first, last = plain.missing
            reads = [ev(o, plain.epoch) for o in range(first, last + 1)]
            assert plain.fill(reads, now=now) == fast.fill(reads, now=now)
        else:
            epoch = data.draw(st.sampled_from(["e1", "e1", "e1", "e2"]))
            event = ev(data.draw(st.integers(1, 30)), epoch)
            before = state(fast)
            took = fast.take_next(event)
            expected = plain.offer(event, now=now)
            if took:
                assert expected == OfferResult([event])
                assert plain.missing is None
            else:
                assert state(fast) == before
                assert fast.offer(event, now=now) == expected
            if not took and expected == OfferResult([event]) and plain.missing is None:
                assert before[3] is not None  # left to offer only because a hole was known
        assert state(fast) == state(plain)


def test_take_next_takes_the_next_event_only() -> None:
    seq = RoomSequencer("e1", next_offset=5)
    assert not seq.take_next(ev(4))  # a duplicate
    assert not seq.take_next(ev(6))  # ahead of a hole
    assert not seq.take_next(ev(5, "e2"))  # another epoch
    assert state(seq) == ("e1", 5, Position(4, "e1"), None, None, 0)
    assert seq.take_next(ev(5))
    assert state(seq) == ("e1", 6, Position(5, "e1"), None, None, 0)
    seq.expect(7, now=1.0)  # a hole is known: offer decides
    assert not seq.take_next(ev(6))
    assert seq.offer(ev(6), now=2.0) == OfferResult([ev(6)])
    assert seq.missing == (7, 7)


def test_epoch_change_asks_for_resync_and_adopts_the_new_epoch() -> None:
    seq = RoomSequencer("e1")
    seq.offer(ev(1), now=0)
    seq.offer(ev(3), now=0)
    result = seq.offer(ev(5, "e2"), now=1.0)
    assert result == OfferResult([], resync=True)
    assert (seq.epoch, seq.next_offset, seq.buffered, seq.missing) == ("e2", 6, 0, None)
    assert seq.gap_since is None
    # a late event of the abandoned epoch is stale: dropped, no second resync
    assert seq.offer(ev(2, "e1"), now=2.0) == OfferResult([])
    assert seq.offer(ev(6, "e2"), now=2.0) == OfferResult([ev(6, "e2")])


def test_epoch_change_inside_fill_stops_there() -> None:
    seq = RoomSequencer("e1", next_offset=2)
    result = seq.fill([ev(2), ev(3), ev(1, "e2"), ev(2, "e2")], now=0)
    assert offsets(result.deliver) == [2, 3]
    assert result.resync
    assert (seq.epoch, seq.next_offset) == ("e2", 2)
    assert offsets(seq.offer(ev(2, "e2"), now=0).deliver) == [2]


def test_reset_forgets_buffer_and_retires_the_old_epoch() -> None:
    seq = RoomSequencer("e1")
    seq.offer(ev(4), now=0)
    seq.reset("e2", 10)
    assert (seq.epoch, seq.next_offset, seq.buffered, seq.missing) == ("e2", 10, 0, None)
    assert seq.offer(ev(10, "e1"), now=0) == OfferResult([])  # retired epoch: stale
    assert offsets(seq.offer(ev(10, "e2"), now=0).deliver) == [10]
    seq.reset("e2", 3)  # same epoch: just a new position
    assert offsets(seq.offer(ev(3, "e2"), now=0).deliver) == [3]


def test_only_recent_epochs_are_remembered() -> None:
    seq = RoomSequencer("e0")
    for i in range(1, 20):
        assert seq.offer(ev(1, f"e{i}"), now=0).resync
    assert seq.offer(ev(5, "e18"), now=0) == OfferResult([])  # recent: stale
    assert seq.offer(ev(5, "e0"), now=0).resync  # long forgotten: a new lineage again


def test_buffer_bound_drops_the_highest_and_still_reports_them_missing() -> None:
    seq = RoomSequencer("e1", max_buffered=3)
    for offset in (2, 3, 4):
        assert seq.offer(ev(offset), now=0) == OfferResult([])
    result = seq.offer(ev(5), now=0)
    assert result == OfferResult([], overflow=True)
    assert (seq.buffered, seq.missing) == (3, (1, 1))
    assert offsets(seq.offer(ev(1), now=0).deliver) == [1, 2, 3, 4]
    assert seq.missing == (5, 5)  # dropped, but known to exist
    assert offsets(seq.fill([ev(5)], now=0).deliver) == [5]
    assert seq.missing is None


def test_buffer_bound_keeps_the_lowest_offsets() -> None:
    seq = RoomSequencer("e1", max_buffered=3)
    for offset in (3, 4, 5):
        seq.offer(ev(offset), now=0)
    assert seq.offer(ev(2), now=0) == OfferResult([], overflow=True)
    assert seq.missing == (1, 1)
    assert offsets(seq.offer(ev(1), now=0).deliver) == [1, 2, 3, 4]
    assert seq.missing == (5, 5)


def test_zero_buffer_relies_on_the_log_alone() -> None:
    seq = RoomSequencer("e1", max_buffered=0)
    assert seq.offer(ev(3), now=0).overflow
    assert seq.offer(ev(7), now=0).overflow
    assert (seq.buffered, seq.missing) == (0, (1, 7))
    assert offsets(seq.fill([ev(o) for o in range(1, 8)], now=0).deliver) == list(range(1, 8))


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="next_offset"):
        RoomSequencer("e1", next_offset=0)
    with pytest.raises(ValueError, match="max_buffered"):
        RoomSequencer("e1", max_buffered=-1)
    with pytest.raises(ValueError, match="next_offset"):
        RoomSequencer("e1").reset("e1", 0)


# ------------------------------------------------------------------------------ RecoveryBuffer


def test_recovery_without_live_events() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    result = buffer.merge([ev(o) for o in range(6, 11)])
    assert offsets(result.deliver) == [6, 7, 8, 9, 10]
    assert (result.missing, result.complete, result.resync) == (None, True, False)
    assert buffer.position == Position(10, "e1")


def test_recovery_with_nothing_to_recover() -> None:
    result = RecoveryBuffer(Position(5, "e1")).merge([])
    assert (result.deliver, result.complete) == ([], True)


def test_live_events_are_held_until_the_history_arrives() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    buffer.add_live(ev(6))  # contiguous, yet held: history goes first
    buffer.add_live(ev(7))
    result = buffer.merge([ev(6), ev(7), ev(8)])
    assert offsets(result.deliver) == [6, 7, 8]
    assert result.complete


def test_history_and_live_overlap_is_deduplicated() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    for offset in (8, 9, 10):
        buffer.add_live(ev(offset))
    buffer.add_live(ev(9))
    result = buffer.merge([ev(o) for o in range(6, 10)])
    assert offsets(result.deliver) == [6, 7, 8, 9, 10]
    assert result.complete
    assert buffer.position.offset == 10


def test_history_out_of_order_with_duplicates_and_old_events() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    result = buffer.merge([ev(8), ev(3), ev(6), ev(5), ev(7), ev(6)])
    assert offsets(result.deliver) == [6, 7, 8]


def test_gap_between_history_and_live_is_reported() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    buffer.add_live(ev(10))
    buffer.add_live(ev(11))
    result = buffer.merge([ev(6), ev(7), ev(8)])
    assert offsets(result.deliver) == [6, 7, 8]
    assert (result.missing, result.complete) == ((9, 9), False)
    assert buffer.missing == (9, 9)
    buffer.add_live(ev(12))
    result = buffer.merge([ev(9)])
    assert offsets(result.deliver) == [9, 10, 11, 12]
    assert result.complete


def test_history_that_starts_too_late_is_a_gap() -> None:
    result = RecoveryBuffer(Position(5, "e1")).merge([ev(8), ev(9)])
    assert (result.deliver, result.missing) == ([], (6, 7))


def test_recovery_epoch_mismatch_asks_for_resync() -> None:
    buffer = RecoveryBuffer(Position(5, "e1"))
    buffer.add_live(ev(7, "e2"))
    result = buffer.merge([ev(6), ev(7)])
    assert (result.deliver, result.resync, result.complete) == ([], True, False)
    assert buffer.merge([ev(8)]).resync  # stays broken

    buffer = RecoveryBuffer(Position(5, "e1"))
    result = buffer.merge([ev(6), ev(7, "e2")])
    assert (result.deliver, result.resync) == ([], True)


def test_recovery_overflow_is_recovered_from_the_log() -> None:
    buffer = RecoveryBuffer(Position(0, "e1"), max_buffered=2)
    for offset in (5, 6, 7):
        buffer.add_live(ev(offset))
    result = buffer.merge([ev(o) for o in range(1, 5)])
    assert offsets(result.deliver) == [1, 2, 3, 4, 5, 6]
    assert (result.missing, result.overflow) == ((7, 7), True)
    result = buffer.merge([ev(7)])
    assert (offsets(result.deliver), result.overflow, result.complete) == ([7], False, True)


@settings(max_examples=300)
@given(data=st.data())
def test_recovery_merge_yields_each_offset_once_in_order(data: st.DataObject) -> None:
    since = data.draw(st.integers(0, 20), label="since")
    head = data.draw(st.integers(since, since + 40), label="head when history is read")
    live_end = data.draw(st.integers(since, since + 60), label="last live offset")
    # Live events come from the room's sequencer, so in order and contiguous, but they may
    # start before, at or after the end of the history read.
    live_start = data.draw(st.integers(since + 1, max(since + 1, live_end)), label="first live")
    live = list(range(live_start, live_end + 1))
    split = data.draw(st.integers(0, len(live)), label="live events before the first merge")
    max_buffered = data.draw(st.sampled_from([1, 5, 10_000]))

    buffer = RecoveryBuffer(Position(since, "e1"), max_buffered=max_buffered)
    for offset in live[:split]:
        buffer.add_live(ev(offset))
    result = buffer.merge([ev(o) for o in range(since + 1, head + 1)])
    delivered = offsets(result.deliver)
    for offset in live[split:]:
        buffer.add_live(ev(offset))
    result = buffer.merge([])
    delivered += offsets(result.deliver)
    while result.missing is not None:
        first, last = result.missing
        result = buffer.merge([ev(o) for o in range(first, last + 1)])
        delivered += offsets(result.deliver)

    # Everything known, history or live, was delivered once in order, even the live events
    # dropped for the bound (they were reported missing and read from the "log").
    assert delivered == list(range(since + 1, max(head, live_end) + 1))
    assert buffer.position.offset == max(head, live_end)


# ------------------------------------------------------------------------------- is_recovered


@pytest.mark.parametrize(
    ("since", "epoch", "current", "oldest", "expected"),
    [
        ((5, "e"), "e", 10, 1, True),
        ((5, "e"), "e", 10, 6, True),  # history reaches exactly since + 1
        ((5, "e"), "e", 10, 7, False),  # trimmed past since + 1
        ((5, "e"), "f", 10, 1, False),  # epoch changed
        ((11, "e"), "e", 10, 1, False),  # a client from the future
        ((10, "e"), "e", 10, 1, True),  # up to date
        ((10, "e"), "e", 10, 11, True),  # up to date, log holds nothing
        ((0, "e"), "e", 0, 1, True),  # an empty room
        ((0, "e"), "e", 1500, 501, False),  # only the last 1,000 kept
        ((500, "e"), "e", 1500, 501, True),
        ((499, "e"), "e", 1500, 501, False),
        ((-1, "e"), "e", 10, 1, False),  # not a position (the parser never produces it)
    ],
)
def test_is_recovered(
    since: tuple[int, str], epoch: str, current: int, oldest: int, expected: bool
) -> None:
    assert is_recovered(Position(*since), epoch, current, oldest) is expected
