"""A task's change and its event in one statement (issue 20 item 6: the row lock held shorter).

On PostgreSQL a PATCH reads the task, then changes it, appends its event and stores its key's
answer in one autocommitted statement that applies only if the task is still at the version
read (``tasks.single_write``), as does a DELETE; when the task changed in between, the locked
path (the task's UPDATE and the event's append as one statement too,
``eventlog.append_event(change=…)``) runs. SQLite runs them one after the other as before.
Either way: 50 concurrent PATCHes of one task, half of them with an
``Idempotency-Key`` (the receipt settles in the same transaction), commit versions 2..51 and
offsets 2..51 with no gap and no duplicate, each answer naming its own event, each event
carrying the task as that change left it, published in offset order. And a change that finds
no row appends no event (PostgreSQL: the event is appended only if the change changed a row).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy.exc import NoResultFound

from liveboard.events import RecordingPublisher
from liveboard.store import eventlog, records
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks.api import SERVICE_KEY
from liveboard.tasks.single_write import ATTEMPTS
from tests.integration.test_eventlog import make_project, request, stored_events
from tests.support.app import AppClientFactory, make_settings
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.tokens import auth

PATCHES = 50


async def test_50_concurrent_patches_of_one_task_are_gap_free_and_version_consistent(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    publisher = RecordingPublisher()
    client = await app_client_factory(make_settings(database_url), publisher=publisher)
    _, pid = await make_project(client, [])
    room = f"project:{pid}"
    task = await request(client, "POST", f"/api/projects/{pid}/tasks", "alice", {"title": "t"})
    assert task["version"] == 1
    path = f"/api/tasks/{task['id']}"

    async def patch(n: int) -> tuple[int, dict[str, Any], str | None]:
        headers = auth("alice")
        if n % 2:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        body = {"title": f"title {n}"} if n % 3 else {"description": f"notes {n}"}
        async with client.patch(path, json=body, headers=headers) as response:
            answer = json.loads(await response.text())
            return response.status, answer, response.headers.get("Liveboard-Offset")

    answers = await asyncio.gather(*(patch(n) for n in range(PATCHES)))
    assert all(status == 200 for status, _, _ in answers), answers
    versions = sorted(answer["version"] for _, answer, _ in answers)
    assert versions == list(range(2, PATCHES + 2))
    # The task was created at offset 1 (version 1): change n is version n and offset n.
    for _, answer, offset in answers:
        assert offset == str(answer["version"]), answer

    stored = await stored_events(database_url, room)
    assert [e.offset for e in stored] == list(range(1, PATCHES + 2))
    assert len({e.epoch for e in stored}) == 1
    by_version = {answer["version"]: answer for _, answer, _ in answers}
    for event in stored[1:]:
        assert event.type == "task:updated"
        assert event.data["task"]["version"] == event.offset
        assert event.data["task"] == by_version[event.offset]  # the answer is the event's task
    final = await request(client, "GET", path, "alice")
    assert final == stored[-1].data["task"]

    published = [e.offset for e in publisher.events if e.room == room]
    assert published == list(range(1, PATCHES + 2)), "published out of offset order or not all"

    await request(client, "DELETE", path, "alice")
    async with client.get(path, headers=auth("alice")) as response:
        assert response.status == 404
    last = (await stored_events(database_url, room))[-1]
    assert (last.offset, last.type, last.data) == (
        PATCHES + 2,
        "task:deleted",
        {"taskId": task["id"]},
    )


async def test_a_change_that_finds_no_row_appends_no_event(module_postgres_url: str) -> None:
    """PostgreSQL: the one statement appends the event only if its change changed a row."""
    db = Database(module_postgres_url)
    room = f"project:{uuid.uuid4().hex}"
    try:
        await migrate(db)
        async with db.write() as conn:
            await eventlog.create_room(conn, room)
        with pytest.raises(NoResultFound):
            async with db.write() as conn:
                await eventlog.append_event(
                    conn,
                    room=room,
                    type="task:deleted",
                    user_id="alice",
                    data={"taskId": "no-such-task"},
                    ts=1,
                    change=records.task_deletion("no-such-task"),
                )
        async with db.read() as conn:
            position = await eventlog.room_position(conn, room)
            assert position is not None
            assert position.offset == 0
            assert await eventlog.read_events(conn, room, after=0, limit=10) == []
    finally:
        await db.aclose()


async def test_a_task_changed_between_the_read_and_the_write_is_tried_again_then_locked(
    module_postgres_url: str, app_client_factory: AppClientFactory
) -> None:
    """PostgreSQL: another change lands between a PATCH's read and its write (a DELETE's): the
    write applies nothing; the next try decides again on the task as it is then, and after
    ``ATTEMPTS`` misses the locked path does."""
    assert ATTEMPTS == 2
    publisher = RecordingPublisher()
    client = await app_client_factory(make_settings(module_postgres_url), publisher=publisher)
    other = await app_client_factory(make_settings(module_postgres_url))  # another instance
    _, pid = await make_project(client, [])
    room = f"project:{pid}"
    task = await request(client, "POST", f"/api/projects/{pid}/tasks", "alice", {"title": "t"})
    path = f"/api/tasks/{task['id']}"
    single = client.app[SERVICE_KEY]._single
    assert single is not None
    real_read = single._read
    meddle: list[dict[str, Any]] = []

    async def read_then_meddle(*args: Any) -> Any:
        found = await real_read(*args)
        if meddle:  # another instance's change, after the read, before the write
            await request(other, "PATCH", path, "alice", meddle.pop(0))
        return found

    single._read = read_then_meddle
    # A stale edit of the title from version 1; the description changes after its first read:
    # its second try merges it over that change.
    meddle[:] = [{"description": "theirs"}]
    headers = {**auth("alice"), "Idempotency-Key": uuid.uuid4().hex}
    async with client.patch(path, json={"title": "mine", "version": 1}, headers=headers) as r:
        assert r.status == 200, await r.text()
        mine = await r.json()
        assert (r.headers["Liveboard-Merged"], r.headers["Liveboard-Offset"]) == ("title", "3")
    assert (mine["title"], mine["description"], mine["version"]) == ("mine", "theirs", 3)
    # A DELETE while the title changes after each of its reads: the locked path deletes it.
    meddle[:] = [{"title": "theirs"}, {"title": "theirs again"}]
    async with client.delete(path, headers=auth("alice")) as r:
        assert r.status == 204, await r.text()
        assert r.headers["Liveboard-Offset"] == "6"
    assert not meddle
    stored = await stored_events(module_postgres_url, room)
    versions = [(e.offset, e.data["task"]["version"]) for e in stored[:-1]]
    assert versions == [(n, n) for n in range(1, 6)]
    assert (stored[-1].offset, stored[-1].type) == (6, "task:deleted")
    mine_published = [e.offset for e in publisher.events if e.room == room]
    assert mine_published == [1, 3, 6]  # this instance's; the others were the other's
    assert len(single.turns) == 0
