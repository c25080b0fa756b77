"""REST: a PATCH from a stale version is merged unless its fields changed since (issue 17, item 5).

The rule (``liveboard.tasks.merge``, docs/protocol.md "Edits from a stale version"): a PATCH
whose ``version`` (or ``If-Match``) is stale is applied when none of the fields it changes was
changed after that version, and its answer says so with ``Liveboard-Merged``; otherwise 409
naming the fields, and nothing is applied. Every test runs on a fresh SQLite file and on
PostgreSQL; the races run many times on both (PostgreSQL is where the two requests really run
at once, each in its own transaction).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from liveboard.auth import Actor
from liveboard.errors import ApiError
from liveboard.events import RecordingPublisher
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.store.schema import MERGE_COLUMNS
from liveboard.tasks.changes import TaskChanges
from liveboard.tasks.service import TaskService
from tests.support.contract import TASK_KEYS, assert_error, assert_event
from tests.support.postgres import (
    DATABASE_PARAMS,
    fresh_postgres_database,
    module_database_url_fixture,  # noqa: F401
)
from tests.support.rest import Board, rest_board_fixture  # noqa: F401
from tests.support.tokens import auth

MERGED = "Liveboard-Merged"


async def patch(
    board: Board,
    tid: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    user: str = "alice",
) -> tuple[int, Any, str | None]:
    """One PATCH; (status, JSON body, the ``Liveboard-Merged`` header or None)."""
    async with board.client.request(
        "PATCH", f"/api/tasks/{tid}", json=body, headers={**auth(user), **(headers or {})}
    ) as response:
        return response.status, json.loads(await response.text()), response.headers.get(MERGED)


async def read(board: Board, tid: str) -> dict[str, Any]:
    status, task = await board.call("GET", f"/api/tasks/{tid}")
    assert status == 200, task
    return dict(task)


async def at_version_2(board: Board) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task (version 1) whose title was then changed (version 2): (v1, v2)."""
    _wid, _project, v1 = await board.setup(bob="member")
    status, v2, merged = await patch(board, v1["id"], {"title": "Bob's title", "version": 1})
    assert (status, v2["version"], merged) == (200, 2, None)
    return v1, v2


# Merged


@pytest.mark.parametrize("form", ["body", "If-Match", "weak If-Match"])
async def test_a_stale_edit_of_another_field_is_merged_and_says_so(board: Board, form: str) -> None:
    v1, v2 = await at_version_2(board)
    before = board.event_count()
    body: dict[str, Any] = {"description": "Alice's notes"}
    headers = {
        "body": None,
        "If-Match": {"If-Match": '"1"'},
        "weak If-Match": {"If-Match": 'W/"1"'},
    }[form]
    if headers is None:
        body["version"] = 1
    status, task, merged = await patch(board, v1["id"], body, headers=headers)
    assert status == 200, task
    assert merged == "description"
    assert set(task) == TASK_KEYS  # the body's shape is unchanged
    assert task["version"] == 3
    assert (task["title"], task["description"]) == ("Bob's title", "Alice's notes")
    assert await read(board, v1["id"]) == task
    events = board.events()[before:]
    assert len(events) == 1
    assert_event(
        events[0],
        type_="task:updated",
        room=f"project:{v1['projectId']}",
        user="alice",
        # Only what this PATCH changed, relative to the task as it was (version 2).
        data={"task": task, "changes": {"description": {"from": "", "to": "Alice's notes"}}},
    )
    assert events[0]["data"]["task"]["version"] == v2["version"] + 1


async def test_every_merged_field_is_named_and_unassigning_merges_too(board: Board) -> None:
    _wid, project, task = await board.setup(bob="member")
    tid = task["id"]
    status, _, _ = await patch(board, tid, {"assigneeId": "bob"})
    assert status == 200
    status, _, _ = await patch(board, tid, {"title": "v3"})  # title set at 3
    assert status == 200
    # From version 2 (assignee set at 2, description at 1): both apply.
    before = board.event_count()
    status, got, merged = await patch(
        board, tid, {"description": "d", "assigneeId": None, "version": 2}
    )
    assert (status, merged, got["version"]) == (200, "description, assigneeId", 4), got
    assert (got["assigneeId"], got["description"], got["title"]) == (None, "d", "v3")
    (event,) = board.events()[before:]
    assert event["data"]["changes"] == {
        "description": {"from": "", "to": "d"},
        "assigneeId": {"from": "bob", "to": None},
    }
    assert event["room"] == f"project:{project['id']}"


async def test_a_move_since_the_version_collides_with_no_edit(board: Board) -> None:
    _wid, _project, v1 = await board.setup()
    tid = v1["id"]
    status, moved = await board.call("POST", f"/api/tasks/{tid}/move", body={"toStatus": "done"})
    assert (status, moved["version"]) == (200, 2)
    status, task, merged = await patch(board, tid, {"title": "Renamed", "version": 1})
    assert (status, merged) == (200, "title"), task
    assert (task["title"], task["status"], task["order"], task["version"]) == (
        "Renamed",
        "done",
        moved["order"],
        3,
    )
    # A move still needs the current version: merging is for edits only.
    status, error = await board.call(
        "POST", f"/api/tasks/{tid}/move", body={"toStatus": "todo", "version": 2}
    )
    assert_error(status, error, 409, "conflict")


async def test_an_edit_at_the_current_version_is_not_marked_merged(board: Board) -> None:
    v1, _v2 = await at_version_2(board)
    status, task, merged = await patch(board, v1["id"], {"description": "x", "version": 2})
    assert (status, task["version"], merged) == (200, 3, None)
    status, task, merged = await patch(board, v1["id"], {"description": "y"})
    assert (status, task["version"], merged) == (200, 4, None)


async def test_a_stale_edit_that_changes_nothing_answers_the_task_and_emits_nothing(
    board: Board,
) -> None:
    v1, v2 = await at_version_2(board)
    before = board.event_count()
    # The title it asks for is already the task's: nothing to overwrite, nothing to apply.
    status, task, merged = await patch(board, v1["id"], {"title": "Bob's title", "version": 1})
    assert (status, merged) == (200, None)
    assert task == v2
    assert board.event_count() == before


# Conflicts


@pytest.mark.parametrize("use_if_match", [False, True])
async def test_a_stale_edit_of_the_same_field_is_409_naming_it(
    board: Board, use_if_match: bool
) -> None:
    v1, v2 = await at_version_2(board)
    before = board.event_count()
    body: dict[str, Any] = {"title": "Alice's title"}
    headers = {"If-Match": '"1"'} if use_if_match else None
    if not use_if_match:
        body["version"] = 1
    status, error, merged = await patch(board, v1["id"], body, headers=headers)
    assert_error(status, error, 409, "conflict")
    assert error["error"]["details"] == {"currentVersion": 2, "fields": ["title"]}
    assert "title" in error["error"]["message"]
    assert merged is None
    assert await read(board, v1["id"]) == v2
    assert board.event_count() == before


async def test_one_colliding_field_refuses_the_whole_edit(board: Board) -> None:
    v1, v2 = await at_version_2(board)
    before = board.event_count()
    status, error, _ = await patch(
        board, v1["id"], {"title": "Alice's title", "description": "notes", "version": 1}
    )
    assert_error(status, error, 409, "conflict")
    assert error["error"]["details"]["fields"] == ["title"]
    assert await read(board, v1["id"]) == v2  # the description was not applied either
    assert board.event_count() == before


async def test_a_version_ahead_of_the_task_is_still_409_naming_no_field(board: Board) -> None:
    v1, v2 = await at_version_2(board)
    status, error, _ = await patch(board, v1["id"], {"description": "x", "version": 3})
    assert_error(status, error, 409, "conflict")
    assert error["error"]["details"] == {"currentVersion": 2}
    assert await read(board, v1["id"]) == v2


async def test_a_field_edited_after_a_merge_collides_from_before_the_merge(board: Board) -> None:
    v1, _v2 = await at_version_2(board)
    tid = v1["id"]
    status, _, merged = await patch(board, tid, {"description": "a", "version": 1})
    assert (status, merged) == (200, "description")  # description set at 3
    status, error, _ = await patch(board, tid, {"description": "b", "version": 2})
    assert_error(status, error, 409, "conflict")
    assert error["error"]["details"] == {"currentVersion": 3, "fields": ["description"]}
    status, task, merged = await patch(board, tid, {"description": "b", "version": 3})
    assert (status, merged, task["version"]) == (200, None, 4)


# Races


async def test_two_stale_edits_of_different_fields_racing_both_apply(board: Board) -> None:
    _wid, _project, first = await board.setup(bob="member")
    for round_ in range(15):
        task = first if round_ == 0 else await board.task(first["projectId"])
        tid = task["id"]
        before = board.event_count()
        (s1, t1, m1), (s2, t2, m2) = await asyncio.gather(
            patch(board, tid, {"title": f"title {round_}", "version": 1}),
            patch(board, tid, {"description": f"notes {round_}", "version": 1}, user="bob"),
        )
        assert (s1, s2) == (200, 200), (t1, t2)
        # Exactly one went second: it found version 2, merged, and said so.
        assert (m1, m2) in ((None, "description"), ("title", None))
        assert sorted([t1["version"], t2["version"]]) == [2, 3]
        final = await read(board, tid)
        assert (final["title"], final["description"], final["version"]) == (
            f"title {round_}",
            f"notes {round_}",
            3,
        )
        events = board.events()[before:]
        assert [e["data"]["task"]["version"] for e in events] == [2, 3]
        assert [set(e["data"]["changes"]) for e in events] in (
            [{"title"}, {"description"}],
            [{"description"}, {"title"}],
        )


async def test_two_stale_edits_of_the_same_field_racing_one_wins(board: Board) -> None:
    _wid, _project, first = await board.setup(bob="member")
    for round_ in range(15):
        task = first if round_ == 0 else await board.task(first["projectId"])
        tid = task["id"]
        before = board.event_count()
        answers = await asyncio.gather(
            patch(board, tid, {"title": "Alice's", "version": 1}),
            patch(board, tid, {"title": "Bob's", "version": 1}, user="bob"),
        )
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200, 409], answers
        won = next(body for status, body, _ in answers if status == 200)
        lost = next(body for status, body, _ in answers if status == 409)
        assert lost["error"]["details"] == {"currentVersion": 2, "fields": ["title"]}
        assert await read(board, tid) == won
        assert board.event_count() == before + 1


# Rows older than the field versions


@pytest.fixture(params=DATABASE_PARAMS, name="own_database_url")
def own_database_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test alone: its schema is taken back to before migration 2."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


async def test_migration_2_and_changes_made_without_field_versions_never_merge(
    own_database_url: str,
) -> None:
    db = Database(own_database_url)
    try:
        await migrate(db)
        service = TaskService(db, RecordingPublisher())
        alice = Actor("alice")
        wid = (await service.create_workspace(alice, "W")).id
        pid = (await service.create_project(alice, wid, "P", None)).id
        old = await service.create_task(alice, pid, title="old")
        await service.move_task(alice, old.id, "done")  # version 2
        # Back to the schema before migration 2, as a database made by an older release.
        async with db.write() as conn:
            for column in MERGE_COLUMNS:
                await conn.execute(text(f"ALTER TABLE {db.table('tasks')} DROP COLUMN {column}"))
            await conn.execute(
                text(f"DELETE FROM {db.table('schema_migrations')} WHERE version = 2")
            )
        await db.aclose()
        db = Database(own_database_url)  # new connections: no statement cached on the old table
        assert await migrate(db) == [2]
        assert await migrate(db) == []
        service = TaskService(db, RecordingPublisher())

        # When the old row's fields last changed is not known: from a stale version, a conflict.
        await refused(service, alice, old.id, TaskChanges(description="d"), 1, 2, "description")
        # At the current version it applies; from then on the task's history is recorded, with
        # every field not set by that change counted as set at the version before it (2).
        edited = await service.update_task(
            alice, old.id, TaskChanges(title="new"), expected_version=2
        )
        assert (edited.task.version, edited.merged) == (3, ())
        await service.move_task(alice, old.id, "todo")  # version 4
        edited = await service.update_task(
            alice, old.id, TaskChanges(title="newer"), expected_version=3
        )
        assert (edited.task.version, edited.merged) == (5, ("title",))
        await refused(service, alice, old.id, TaskChanges(description="d"), 1, 5, "description")
        edited = await service.update_task(
            alice, old.id, TaskChanges(description="d"), expected_version=2
        )
        assert (edited.task.version, edited.merged) == (6, ("description",))

        # A change made by a release that does not record field versions (an instance not yet
        # upgraded, during a rolling upgrade): its UPDATE, as that release writes it.
        async with db.write() as conn:
            await conn.execute(
                text(
                    f"UPDATE {db.table('tasks')} SET title = 'theirs', version = version + 1 "
                    "WHERE id = :id"
                ),
                {"id": old.id},
            )
        # Version 7's change is not known: every field counts as changed at 7.
        await refused(service, alice, old.id, TaskChanges(assignee_id="alice"), 6, 7, "assigneeId")
        edited = await service.update_task(
            alice, old.id, TaskChanges(description="e"), expected_version=7
        )
        assert (edited.task.version, edited.task.title, edited.merged) == (8, "theirs", ())
        # Recorded again from 8 on: the title (7, unknown) collides from 6, not from 7.
        await refused(service, alice, old.id, TaskChanges(title="mine"), 6, 8, "title")
        edited = await service.update_task(
            alice, old.id, TaskChanges(title="mine"), expected_version=7
        )
        assert (edited.task.version, edited.merged) == (9, ("title",))
    finally:
        await db.aclose()


async def refused(
    service: TaskService,
    actor: Actor,
    tid: str,
    changes: TaskChanges,
    expected: int,
    current: int,
    field: str,
) -> None:
    """The edit from ``expected`` is a 409 naming ``field``; the task stays at ``current``."""
    with pytest.raises(ApiError) as error:
        await service.update_task(actor, tid, changes, expected_version=expected)
    assert (error.value.status, error.value.details) == (
        409,
        {"currentVersion": current, "fields": [field]},
    )
    assert (await service.get_task(actor, tid)).version == current
