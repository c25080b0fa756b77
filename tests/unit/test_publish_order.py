"""The per-room publish order of committed events (``liveboard.tasks.publish_order``), no I/O.

Transactions are simulated: each takes its tickets in the order its room's row lock would
grant them (registration order), then "ends" and resumes in any order, as coroutines do after
their COMMITs come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveboard.protocol import BrokerEvent
from liveboard.tasks.publish_order import Outbox, PublishOrder

ROOMS = ["project:p1", "project:p2", "workspace:w1"]


def ev(room: str, offset: int) -> BrokerEvent:
    return BrokerEvent(
        type="task:updated",
        room=room,
        offset=offset,
        epoch="e1",
        ts=1_764_120_000_000 + offset,
        user_id="alice",
        data={},
    )


class Recorder:
    """An EventPublisher that keeps each call's events."""

    def __init__(self) -> None:
        self.calls: list[list[BrokerEvent]] = []

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        self.calls.append(list(events))

    def offsets(self, room: str) -> list[int]:
        return [e.offset for call in self.calls for e in call if e.room == room]


def test_a_ticket_with_nobody_ahead_has_its_turn_without_suspending() -> None:
    order = PublishOrder()
    ticket = order.register("project:p1", 1)
    turn = order.turn(ticket)
    with pytest.raises(StopIteration):  # the coroutine finished at its first step
        turn.send(None)
    order.release(ticket)
    assert order.waiting_rooms() == 0


async def test_a_later_ticket_waits_for_the_earlier_one_to_be_released() -> None:
    order = PublishOrder()
    first, second = order.register("project:p1", 1), order.register("project:p1", 2)
    waiting = asyncio.create_task(order.turn(second))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    await order.turn(first)  # first in line: no wait
    order.release(first)
    await asyncio.wait_for(waiting, 1)
    order.release(second)
    assert order.waiting_rooms() == 0


async def test_releases_out_of_order_free_the_line_only_up_to_the_first_unreleased() -> None:
    order = PublishOrder()
    t1, t2, t3 = (order.register("project:p1", n) for n in (1, 2, 3))
    waiting = asyncio.create_task(order.turn(t3))
    order.release(t2)  # rolled back
    await asyncio.sleep(0)
    assert not waiting.done()
    assert not order.is_first(t3)
    order.release(t1)
    await asyncio.wait_for(waiting, 1)
    assert order.is_first(t3)
    order.release(t3)
    order.release(t3)  # idempotent
    assert order.waiting_rooms() == 0


async def test_rooms_have_independent_lines() -> None:
    order = PublishOrder()
    busy = order.register("project:p1", 1)
    other = order.register("project:p2", 1)
    await asyncio.wait_for(order.turn(other), 1)
    order.release(other)
    order.release(busy)
    assert order.waiting_rooms() == 0


async def test_a_cancelled_waiter_that_releases_lets_the_next_one_go() -> None:
    order = PublishOrder()
    t1, t2, t3 = (order.register("project:p1", n) for n in (1, 2, 3))

    async def after_commit(ticket: object) -> None:
        assert ticket is t2
        try:
            await order.turn(t2)
        finally:
            order.release(t2)

    cancelled = asyncio.create_task(after_commit(t2))
    third = asyncio.create_task(order.turn(t3))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    order.release(t1)
    await asyncio.wait_for(third, 1)
    order.release(t3)
    assert order.waiting_rooms() == 0


async def test_an_outbox_takes_one_ticket_per_room_and_publishes_its_events_in_one_call() -> None:
    order = PublishOrder()
    recorder = Recorder()
    outbox = Outbox(order)
    outbox.add(ev("project:p1", 1))
    outbox.add(ev("project:p1", 2))
    outbox.add(ev("workspace:w1", 7))
    assert order.waiting_rooms() == 2
    await outbox.publish(recorder)
    assert [[(e.room, e.offset) for e in call] for call in recorder.calls] == [
        [("project:p1", 1), ("project:p1", 2), ("workspace:w1", 7)]
    ]
    assert order.waiting_rooms() == 0


async def test_an_outbox_without_events_publishes_nothing() -> None:
    recorder = Recorder()
    outbox = Outbox(PublishOrder())
    await outbox.publish(recorder)
    outbox.abandon()
    assert recorder.calls == []


async def test_an_abandoned_outbox_leaves_every_line() -> None:
    order = PublishOrder()
    recorder = Recorder()
    failed, later = Outbox(order), Outbox(order)
    failed.add(ev("project:p1", 1))
    failed.add(ev("workspace:w1", 1))
    later.add(ev("project:p1", 1))  # the rolled-back offset, taken again
    later.add(ev("workspace:w1", 1))
    failed.abandon()
    await asyncio.wait_for(later.publish(recorder), 1)
    assert recorder.offsets("project:p1") == [1]
    assert recorder.offsets("workspace:w1") == [1]
    assert order.waiting_rooms() == 0


async def test_the_next_publish_does_not_wait_for_the_previous_one_to_return() -> None:
    """Handing over is ordered; the broker round trips that follow are not chained."""
    order = PublishOrder()
    started: list[int] = []
    unblock = asyncio.Event()

    class SlowPublisher:
        async def publish(self, events: Sequence[BrokerEvent]) -> None:
            started.append(events[0].offset)  # before the first suspension: in order
            await unblock.wait()  # a PUBLISH that takes its time

    slow = SlowPublisher()
    first, second = Outbox(order), Outbox(order)
    first.add(ev("project:p1", 1))
    second.add(ev("project:p1", 2))
    later = asyncio.create_task(second.publish(slow))
    earlier = asyncio.create_task(first.publish(slow))
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [1, 2]
    assert not earlier.done()
    assert not later.done()
    unblock.set()
    await asyncio.wait_for(asyncio.gather(earlier, later), 1)
    assert order.waiting_rooms() == 0


# A transaction: the rooms it appends to, whether it commits, and how many loop turns pass
# between its registration and the moment its coroutine resumes after the commit.
transactions = st.lists(
    st.tuples(
        st.lists(st.sampled_from(ROOMS), min_size=1, max_size=3),
        st.booleans(),
        st.integers(min_value=0, max_value=6),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(transactions)
def test_committed_events_are_published_in_offset_order_whatever_order_commits_resume(
    plan: list[tuple[list[str], bool, int]],
) -> None:
    async def run() -> tuple[Recorder, dict[str, list[int]], PublishOrder]:
        order = PublishOrder()
        recorder = Recorder()
        heads = dict.fromkeys(ROOMS, 0)
        committed: dict[str, list[int]] = {room: [] for room in ROOMS}
        outboxes = []
        for rooms, commits, _ in plan:  # one at a time, as the rooms' row locks grant them
            outbox = Outbox(order)
            before = dict(heads)
            for room in rooms:
                heads[room] += 1
                outbox.add(ev(room, heads[room]))
                if commits:
                    committed[room].append(heads[room])
            if not commits:  # rolled back: its offsets are taken again by the next writer
                heads = before
            outboxes.append(outbox)

        async def after_commit(outbox: Outbox, commits: bool, delay: int) -> None:
            try:
                for _ in range(delay):
                    await asyncio.sleep(0)
                if commits:
                    await outbox.publish(recorder)
            finally:
                outbox.abandon()

        await asyncio.wait_for(
            asyncio.gather(
                *(
                    after_commit(outbox, commits, delay)
                    for outbox, (_, commits, delay) in zip(outboxes, plan, strict=True)
                )
            ),
            5,
        )
        return recorder, committed, order

    recorder, committed, order = asyncio.run(run())
    for room in ROOMS:  # every committed event once, in offset order (1, 2, … n)
        assert recorder.offsets(room) == committed[room]
        assert committed[room] == list(range(1, len(committed[room]) + 1))
    assert order.waiting_rooms() == 0


class SlowBroker:
    """An EventPublisher whose broker round trip lasts until ``done`` is set."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.done = asyncio.Event()

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        self.started.extend(e.offset for e in events)
        await self.done.wait()


async def test_a_hand_over_returns_before_the_broker_is_done_and_keeps_the_room_order() -> None:
    order = PublishOrder()
    broker = SlowBroker()
    first, second = Outbox(order), Outbox(order)
    first.add(ev("project:p1", 1))
    second.add(ev("project:p1", 2))
    # The second transaction committed first; it waits for its turn, then hands over.
    later = asyncio.create_task(second.hand_over(broker))
    await asyncio.sleep(0)
    earlier = await first.hand_over(broker)
    assert earlier is not None
    assert not earlier.done()
    handing = await asyncio.wait_for(later, 1)
    assert handing is not None
    await asyncio.sleep(0)
    assert broker.started == [1, 2]  # both calls began, in offset order, neither finished
    assert order.waiting_rooms() == 0  # the line moved on without waiting for the broker
    broker.done.set()
    await asyncio.wait_for(asyncio.gather(earlier, handing), 1)


async def test_a_reserved_ticket_holds_back_a_later_placed_one_until_placed_below_it() -> None:
    """A statement sent before another write's event was placed may land below it."""
    order = PublishOrder()
    recorder = Recorder()
    statement, transaction = Outbox(order), Outbox(order)
    statement.reserve("project:p1")  # sent; its answer has not come back
    transaction.add(ev("project:p1", 2))  # appended after the statement committed offset 1
    later = asyncio.create_task(transaction.publish(recorder))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not later.done()
    statement.add(ev("project:p1", 1))  # the answer: offset 1
    await asyncio.wait_for(statement.publish(recorder), 1)
    await asyncio.wait_for(later, 1)
    assert recorder.offsets("project:p1") == [1, 2]
    assert order.waiting_rooms() == 0


async def test_a_ticket_reserved_after_one_was_placed_does_not_hold_it_back() -> None:
    order = PublishOrder()
    recorder = Recorder()
    placed, reserved = Outbox(order), Outbox(order)
    placed.add(ev("project:p1", 1))
    reserved.reserve("project:p1")  # sent after: it can only land above 1
    await asyncio.wait_for(placed.publish(recorder), 1)
    assert recorder.offsets("project:p1") == [1]
    reserved.abandon()  # its statement changed nothing
    assert order.waiting_rooms() == 0


async def test_a_reservation_given_up_lets_the_line_move_on() -> None:
    order = PublishOrder()
    recorder = Recorder()
    given_up, placed = Outbox(order), Outbox(order)
    given_up.reserve("project:p1")
    placed.add(ev("project:p1", 1))
    waiting = asyncio.create_task(placed.publish(recorder))
    await asyncio.sleep(0)
    assert not waiting.done()
    given_up.abandon()  # the statement failed, or appended nothing
    await asyncio.wait_for(waiting, 1)
    assert recorder.offsets("project:p1") == [1]
    assert order.waiting_rooms() == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(ROOMS[:2]), st.booleans(), st.booleans()), max_size=20),
    st.data(),
)
def test_statements_and_transactions_mixed_publish_in_offset_order(
    writes: list[tuple[str, bool, bool]], data: st.DataObject
) -> None:
    """Writes that are one autocommitted statement (reserve when sent, place when answered)
    and writes in transactions (register under the row lock, commit later) interleaved in
    any order the rooms' row locks allow, their answers and commits resuming in any order:
    every committed event is published once, in offset order."""

    async def run() -> tuple[Recorder, dict[str, list[int]], PublishOrder]:
        order = PublishOrder()
        recorder = Recorder()
        heads = dict.fromkeys(ROOMS, 0)
        holder: dict[str, int | None] = dict.fromkeys(ROOMS, None)  # the row lock's holder
        committed: dict[str, list[int]] = {room: [] for room in ROOMS}
        outboxes = [Outbox(order) for _ in writes]
        # Each write's steps, in order: statement = send, execute (commits), answer;
        # transaction = append (takes the lock), end (commit or roll back), resume.
        step = [0] * len(writes)
        answers: dict[int, BrokerEvent | None] = {}
        tasks: list[asyncio.Task[None]] = []

        async def finish(i: int, commits: bool) -> None:
            try:
                if commits:
                    await outboxes[i].publish(recorder)
            finally:
                outboxes[i].abandon()

        while True:
            ready = [
                i
                for i, (room, single, _) in enumerate(writes)
                if step[i] < 3
                and not (step[i] == 1 and single and holder[room] is not None)
                and not (step[i] == 0 and not single and holder[room] is not None)
            ]
            if not ready:
                break
            i = data.draw(st.sampled_from(ready))
            room, single, commits = writes[i]
            if single and step[i] == 0:
                outboxes[i].reserve(room)
            elif single and step[i] == 1:  # executes and commits at once (or changes nothing)
                answers[i] = None
                if commits:
                    heads[room] += 1
                    committed[room].append(heads[room])
                    answers[i] = ev(room, heads[room])
            elif single:
                answer = answers[i]
                if answer is not None:
                    outboxes[i].add(answer)
                tasks.append(asyncio.create_task(finish(i, answer is not None)))
            elif step[i] == 0:
                heads[room] += 1
                holder[room] = i
                outboxes[i].add(ev(room, heads[room]))
            elif step[i] == 1:
                holder[room] = None
                if commits:
                    committed[room].append(heads[room])
                else:
                    heads[room] -= 1  # rolled back: the next writer takes the offset again
            else:
                tasks.append(asyncio.create_task(finish(i, commits)))
            step[i] += 1
            for _ in range(data.draw(st.integers(0, 2))):
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return recorder, committed, order

    recorder, committed, order = asyncio.run(run())
    for room in ROOMS:
        assert recorder.offsets(room) == committed[room]
        assert committed[room] == list(range(1, len(committed[room]) + 1))
    assert order.waiting_rooms() == 0
