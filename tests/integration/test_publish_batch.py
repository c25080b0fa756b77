"""Group commit of published events (``tasks.publish_batch``) on real SQLite and PostgreSQL.

Publishes started in one turn of the event loop go into one batch, so each test decides what
shares a transaction. Each checks the answers (own offset, or the error a publish alone would
get), the log read back (gap-free per room, each event once) and what reached the publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import msgspec
import pytest

from liveboard.actor import Actor
from liveboard.errors import ApiError
from liveboard.events import RecordingPublisher
from liveboard.protocol import BrokerEvent, Published, RoomName
from liveboard.store import eventlog
from liveboard.store import idempotency as store_idempotency
from liveboard.store.database import Database
from liveboard.store.idempotency import Claim
from liveboard.store.migrations import migrate
from liveboard.tasks import publish_batch
from liveboard.tasks.publish_batch import PublishBatcher
from liveboard.tasks.receipts import Answer, KeyTakenError, Receipt
from liveboard.tasks.service import TaskService
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.timing import timeout

OWNER = Actor(user_id="owner")
KEY_ID = "0123456789abcdef"
_encode = msgspec.json.Encoder().encode


@dataclass
class Setup:
    db: Database
    service: TaskService
    publisher: RecordingPublisher
    workspace: RoomName
    projects: list[RoomName]


@pytest.fixture(name="setup")
async def setup_fixture(database_url: str) -> AsyncIterator[Setup]:
    db = Database(database_url)
    await migrate(db)
    publisher = RecordingPublisher()
    service = TaskService(db, publisher)
    ws = await service.create_workspace(OWNER, "W")
    projects = [
        RoomName("project", (await service.create_project(OWNER, ws.id, f"P{n}", None)).id)
        for n in range(3)
    ]
    await service.writer.drain()
    publisher.events.clear()
    try:
        yield Setup(db, service, publisher, RoomName("workspace", ws.id), projects)
    finally:
        await db.aclose()


def batcher_of(setup: Setup, *, in_flight: int = 1) -> PublishBatcher:
    return PublishBatcher(setup.service.writer, max_in_flight=in_flight)


def receipt(key: str | None = None, body: bytes = b"{}") -> Receipt:
    claim = None if key is None else Claim(KEY_ID, key, f"fp-{key}-{body!r}", service=True)
    return Receipt(lambda value: Answer(201, _encode(value)), claim)


async def publish(
    batcher: PublishBatcher, room: RoomName, n: int, answer: Receipt | None = None
) -> Published:
    data = {"n": n}
    return await batcher.publish(room, "test:event", data, _encode(data).decode(), answer)


async def log_of(db: Database, room: RoomName) -> list[BrokerEvent]:
    async with db.read() as conn:
        return await eventlog.read_events(conn, str(room), after=0, limit=10_000)


async def head_of(db: Database, room: RoomName) -> int:
    async with db.read() as conn:
        position = await eventlog.room_position(conn, str(room))
    assert position is not None
    return position.offset


async def settled(*calls: Any) -> list[Any]:
    """Run ``calls`` started in one turn (one batch), each answer or the exception it raised,
    once what they committed has reached the publisher."""
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout(10))


async def handed_over(setup: Setup) -> list[BrokerEvent]:
    """What reached the publisher, once every hand-over started has run."""
    await setup.service.writer.drain()
    return setup.publisher.events


def assert_gap_free(events: list[BrokerEvent]) -> None:
    assert [e.offset for e in events] == list(range(1, len(events) + 1))


async def test_one_turn_of_publishes_is_one_transaction_with_an_offset_each(
    setup: Setup,
) -> None:
    batcher = batcher_of(setup)
    rooms = setup.projects
    answers = await settled(*(publish(batcher, rooms[n % 3], n) for n in range(30)))
    assert batcher.batches == 1
    assert batcher.batched_events == 30
    for index, room in enumerate(rooms):
        mine = [a for n, a in enumerate(answers) if n % 3 == index]
        assert [a.offset for a in mine] == list(range(1, 11))  # in the order they came
        assert {a.room for a in mine} == {str(room)}
        logged = await log_of(setup.db, room)
        assert_gap_free(logged)
        assert [e.data["n"] for e in logged] == list(range(index, 30, 3))
        assert all(e.user_id is None and e.type == "test:event" for e in logged)
        handed = [e for e in await handed_over(setup) if e.room == str(room)]
        assert [e.offset for e in handed] == list(range(1, 11))
    # A project room's event names its workspace room's head, as liveboard's own writes do.
    workspace_head = await head_of(setup.db, setup.workspace)
    assert {e.workspace_offset for e in setup.publisher.events} == {workspace_head}


async def test_a_batch_is_bounded_by_members_and_by_bytes(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = setup.projects[0]
    batcher = PublishBatcher(setup.service.writer, max_batch=2, max_in_flight=1)
    answers = await settled(*(publish(batcher, room, n) for n in range(5)))
    assert [a.offset for a in answers] == [1, 2, 3, 4, 5]
    assert batcher.batches == 3  # 2 + 2 + 1
    monkeypatch.setattr(publish_batch, "MAX_BATCH_BYTES", 16)  # two of {"n":N} (7 bytes each)
    batcher = batcher_of(setup)
    answers = await settled(*(publish(batcher, room, n) for n in range(5, 10)))
    assert [a.offset for a in answers] == [6, 7, 8, 9, 10]
    assert batcher.batches == 3
    assert_gap_free(await log_of(setup.db, room))


async def test_a_member_whose_room_does_not_exist_takes_no_offset(setup: Setup) -> None:
    batcher = batcher_of(setup)
    room, missing = setup.projects[0], RoomName("project", "no-such-project")
    answers = await settled(
        publish(batcher, room, 0), publish(batcher, missing, 1), publish(batcher, room, 2)
    )
    assert isinstance(answers[1], ApiError)
    assert answers[1].status == 404
    assert [answers[0].offset, answers[2].offset] == [1, 2]
    assert_gap_free(await log_of(setup.db, room))
    assert batcher.batches == 1
    # A batch of nothing but missing rooms commits nothing and answers 404.
    (alone,) = await settled(publish(batcher, RoomName("workspace", "nowhere"), 3))
    assert isinstance(alone, ApiError)
    assert alone.status == 404


async def test_a_member_whose_key_is_taken_rolls_back_alone(setup: Setup) -> None:
    """The batch rolls back and commits again without it: the others' offsets stay gap-free,
    the key keeps its first answer, and nothing of the repeat is published."""
    batcher = batcher_of(setup)
    room = setup.projects[0]
    first_receipt = receipt("k1")
    first = await publish(batcher, room, 0, first_receipt)
    assert first.offset == 1
    assert first_receipt.answer is not None
    assert first_receipt.answer.headers["Liveboard-Offset"] == "1"
    (await handed_over(setup)).clear()
    again, other_receipt, plain = receipt("k1"), receipt("k2"), receipt()
    answers = await settled(
        publish(batcher, room, 1, again),
        publish(batcher, room, 2, other_receipt),
        publish(batcher, room, 3, plain),
    )
    assert isinstance(answers[0], KeyTakenError)
    assert again.answer is None
    assert [answers[1].offset, answers[2].offset] == [2, 3]
    logged = await log_of(setup.db, room)
    assert_gap_free(logged)
    assert [e.data["n"] for e in logged] == [0, 2, 3]
    assert [e.offset for e in await handed_over(setup)] == [2, 3]
    async with setup.db.read_one() as conn:
        kept = await store_idempotency.recall(conn, KEY_ID, "k1", service=True)
        stored = await store_idempotency.recall(conn, KEY_ID, "k2", service=True)
    assert kept is not None
    assert kept.body == first_receipt.answer.body
    assert stored is not None
    assert other_receipt.answer is not None
    assert stored.body == other_receipt.answer.body
    assert b'"offset":2' in stored.body
    assert stored.headers["Liveboard-Offset"] == "2"


async def test_a_publish_cancelled_before_its_batch_takes_no_offset(setup: Setup) -> None:
    batcher = batcher_of(setup)
    room = setup.projects[0]
    calls = [asyncio.ensure_future(publish(batcher, room, n)) for n in range(3)]
    await asyncio.sleep(0)  # all three queued; their batch starts on the next turn
    calls[1].cancel()
    answers = await settled(*calls)
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [answers[0].offset, answers[2].offset] == [1, 2]
    assert [e.data["n"] for e in await log_of(setup.db, room)] == [0, 2]


async def test_workspace_and_project_rooms_go_in_batches_of_their_own(setup: Setup) -> None:
    """A batch locks rooms of one kind (the lock order of ``store.publish_batch``)."""
    batcher = batcher_of(setup, in_flight=2)
    project, workspace = setup.projects[0], setup.workspace
    head = await head_of(setup.db, workspace)
    answers = await settled(
        publish(batcher, project, 0), publish(batcher, workspace, 1), publish(batcher, project, 2)
    )
    assert [a.offset for a in answers] == [1, head + 1, 2]
    assert batcher.batches == 2
    assert_gap_free(await log_of(setup.db, workspace))


async def test_publishes_interleaved_with_task_writes_stay_gap_free(setup: Setup) -> None:
    """Bursts of publishes in two batches at a time, task changes into the same rooms between
    them: every room's log is gap-free, each event once, handed over in offset order."""
    batcher = batcher_of(setup, in_flight=2)
    rooms = setup.projects

    async def burst(start: int) -> list[Any]:
        return await settled(*(publish(batcher, rooms[n % 3], n) for n in range(start, start + 20)))

    async def tasks() -> None:
        for n in range(6):
            await setup.service.create_task(OWNER, rooms[n % 3].id, title=f"t{n}")

    results = await asyncio.wait_for(
        asyncio.gather(burst(0), tasks(), burst(20), burst(40)), timeout(20)
    )
    answers = [a for r in results if isinstance(r, list) for a in r]
    assert len(answers) == 60
    assert all(isinstance(a, Published) for a in answers)
    assert batcher.batched_events == 60
    assert batcher.batches < 60
    for room in rooms:
        logged = await log_of(setup.db, room)
        assert_gap_free(logged)
        assert len(logged) == 20 + 2
        handed = [e.offset for e in await handed_over(setup) if e.room == str(room)]
        assert handed == [e.offset for e in logged]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_failed_batch_commits_none_of_its_members(setup: Setup) -> None:
    batcher = batcher_of(setup)
    room = setup.projects[0]
    await publish(batcher, room, 0)
    too_long = "test:" + "x" * 70  # past the column: the database refuses the statement
    answers = await settled(
        publish(batcher, room, 1),
        batcher.publish(room, too_long, {}, "{}", None),
        publish(batcher, room, 3),
    )
    assert all(isinstance(a, asyncpg.PostgresError) for a in answers)
    assert await head_of(setup.db, room) == 1
    assert (await publish(batcher, room, 4)).offset == 2
    assert_gap_free(await log_of(setup.db, room))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_room_another_transaction_holds_waits_alone(
    setup: Setup, database_url: str
) -> None:
    """An app's transaction holds a room's lock (``liveboard_emit`` before its commit): the
    publishes of that room wait for it and follow its event; those of other rooms go on."""
    batcher = batcher_of(setup, in_flight=2)
    held, free = setup.projects[0], setup.projects[1]
    app = await asyncpg.connect(database_url)
    try:
        transaction = app.transaction()
        await transaction.start()
        assert await app.fetchval("SELECT liveboard_emit($1, 'app:x', '{}')", str(held)) == 1
        waiting = asyncio.ensure_future(publish(batcher, held, 0))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        others = await settled(*(publish(batcher, free, n) for n in range(5)))
        assert [a.offset for a in others] == [1, 2, 3, 4, 5]
        assert not waiting.done()
        await transaction.commit()
        assert (await asyncio.wait_for(waiting, timeout(5))).offset == 2
    finally:
        await app.close()
    logged = await log_of(setup.db, held)
    assert_gap_free(logged)
    assert [e.type for e in logged] == ["app:x", "test:event"]
