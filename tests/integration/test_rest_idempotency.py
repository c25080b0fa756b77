"""REST: ``Idempotency-Key`` on every mutation and answers that name their event (CONTRACT §6.1).

Every test runs on a fresh SQLite file and on PostgreSQL, against the real app on a real port.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
from multidict import CIMultiDict
from sqlalchemy import event as sa_event
from sqlalchemy import inspect

from liveboard.app import DATABASE_KEY
from liveboard.config import Settings
from liveboard.store import eventlog, migrations
from liveboard.store import idempotency as store_idempotency
from liveboard.store.database import Database
from liveboard.tasks import idempotency as gate_module
from liveboard.tasks.idempotency import GATE_KEY, IdempotencyGate
from tests.support.app import AppClientFactory
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture, start_board  # noqa: F401
from tests.support.tokens import auth, unique

POSITION = ("Liveboard-Offset", "Liveboard-Epoch")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: CIMultiDict[str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def same_as(self, other: Reply) -> bool:
        """Status, body bytes and the headers an answer is made of (not Date or Server)."""
        kept = {k.lower() for k in ("ETag", "Content-Type", *POSITION)}
        mine = {k.lower(): v for k, v in self.headers.items() if k.lower() in kept}
        theirs = {k.lower(): v for k, v in other.headers.items() if k.lower() in kept}
        return (self.status, self.body, mine) == (other.status, other.body, theirs)


async def send(
    board: Board,
    method: str,
    path: str,
    user: str = "alice",
    *,
    key: str | None = None,
    exact_key: bool = False,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request. ``key`` is made the test's own (the PostgreSQL database is shared by the
    module's tests, and keys belong to users) unless ``exact_key``."""
    all_headers = CIMultiDict(auth(user))
    if key is not None:
        if not exact_key:
            key = board.__dict__.setdefault("_key_prefix", secrets.token_hex(4)) + key
        all_headers["Idempotency-Key"] = key
    all_headers.update(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    async with board.client.request(method, path, data=data, headers=all_headers) as response:
        raw = await response.read()
        return Reply(response.status, raw, CIMultiDict(response.headers))


def position_of(reply: Reply) -> tuple[int, str] | None:
    if POSITION[0] not in reply.headers:
        assert POSITION[1] not in reply.headers
        return None
    return int(reply.headers[POSITION[0]]), reply.headers[POSITION[1]]


async def twice(board: Board, method: str, path: str, key: str, **kwargs: Any) -> Reply:
    """Send a keyed request twice; the second answer must be the first, and emit nothing."""
    first = await send(board, method, path, key=key, **kwargs)
    published = board.event_count()
    again = await send(board, method, path, key=key, **kwargs)
    assert again.same_as(first), (first, again)
    assert board.event_count() == published, "a repeat emitted an event"
    return first


# Replays


async def test_every_mutation_answers_a_repeat_with_its_first_answer(board: Board) -> None:
    me = unique("owner")
    ws = await twice(board, "POST", "/api/workspaces", "k-ws", user=me, body={"name": "Team"})
    assert ws.status == 201
    assert position_of(ws) is None  # creating a workspace emits nothing
    wid = ws.json()["id"]
    status, workspaces = await board.call("GET", "/api/workspaces", me)
    assert [w["id"] for w in workspaces] == [wid]

    member = await twice(
        board, "POST", f"/api/workspaces/{wid}/members", "k-m", user=me, body={"userId": "bob"}
    )
    assert member.status == 201
    project = await twice(
        board, "POST", f"/api/workspaces/{wid}/projects", "k-p", user=me, body={"name": "B"}
    )
    assert project.status == 201
    pid = project.json()["id"]
    created = await twice(
        board, "POST", f"/api/projects/{pid}/tasks", "k-t", user=me, body={"title": "Docs"}
    )
    assert created.status == 201
    assert created.headers["ETag"] == '"1"'
    tid = created.json()["id"]
    patched = await twice(
        board, "PATCH", f"/api/tasks/{tid}", "k-e", user=me, body={"title": "More docs"}
    )
    assert (patched.status, patched.json()["version"]) == (200, 2)
    moved = await twice(
        board, "POST", f"/api/tasks/{tid}/move", "k-mv", user=me, body={"toStatus": "done"}
    )
    assert (moved.status, moved.json()["status"]) == (200, "done")
    deleted = await twice(board, "DELETE", f"/api/tasks/{tid}", "k-d", user=me)
    assert (deleted.status, deleted.body) == (204, b"")
    removed = await twice(board, "DELETE", f"/api/workspaces/{wid}/members/bob", "k-r", user=me)
    assert removed.status == 204

    # Each mutation that emitted named its own event, and each emitted exactly one.
    events = board.events()
    assert [e["type"] for e in events] == [
        "member:added",
        "project:created",
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
        "member:removed",
    ]
    replies = [member, project, created, patched, moved, deleted, removed]
    for reply, event in zip(replies, events, strict=True):
        assert position_of(reply) == (event["offset"], event["epoch"]), (reply, event)
    assert [e["offset"] for e in board.events(room=f"project:{pid}")] == [1, 2, 3, 4]
    assert [e["offset"] for e in board.events(room=f"workspace:{wid}")] == [1, 2, 3]
    status, snapshot = await board.call("GET", f"/api/projects/{pid}/tasks", me)
    assert (status, snapshot["tasks"], snapshot["offset"]) == (200, [], 4)


async def test_a_repeat_is_answered_even_where_running_it_again_would_fail(board: Board) -> None:
    """The first deleted the task and added the member: a second run would be 404 and 409."""
    wid, _project, task = await board.setup()
    first = await send(board, "DELETE", f"/api/tasks/{task['id']}", key="del")
    assert first.status == 204
    assert (await send(board, "DELETE", f"/api/tasks/{task['id']}")).status == 404
    assert (await send(board, "DELETE", f"/api/tasks/{task['id']}", key="del")).same_as(first)
    body = {"userId": "carol", "role": "admin"}
    added = await send(board, "POST", f"/api/workspaces/{wid}/members", key="add", body=body)
    assert added.status == 201
    again = await send(board, "POST", f"/api/workspaces/{wid}/members", key="add", body=body)
    assert again.same_as(added)
    assert len(board.events("task:deleted")) == 1
    assert len(board.events("member:added")) == 1


async def test_the_same_key_with_another_request_is_422(board: Board) -> None:
    _wid, project, task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    first = await send(board, "POST", path, key="k", body={"title": "one"})
    assert first.status == 201
    published = board.event_count()
    for method, other_path, body, headers in [
        ("POST", path, {"title": "two"}, None),  # another body
        ("POST", path, {"title": "one", "description": ""}, None),  # other bytes, same meaning
        ("POST", f"/api/tasks/{task['id']}/move", {"toStatus": "done"}, None),  # another route
        ("POST", path, {"title": "one"}, {"If-Match": '"1"'}),  # another precondition
    ]:
        reply = await send(board, method, other_path, key="k", body=body, headers=headers)
        assert reply.status == 422, reply
        assert reply.json()["error"]["code"] == "validation_error"
        assert "Idempotency-Key" in reply.json()["error"]["message"]
    assert board.event_count() == published
    # The first request's own repeat is still answered as before.
    assert (await send(board, "POST", path, key="k", body={"title": "one"})).same_as(first)
    # A different X-Connection-Id is the same request (a retry after a reconnect).
    moved = await send(board, "POST", path, key="k", body={"title": "one"},
                       headers={"X-Connection-Id": "conn-2"})  # fmt: skip
    assert moved.same_as(first)


async def test_keys_belong_to_their_user(board: Board) -> None:
    _wid, project, _task = await board.setup(bob="member")
    path = f"/api/projects/{project['id']}/tasks"
    mine = await send(board, "POST", path, "alice", key="shared", body={"title": "x"})
    theirs = await send(board, "POST", path, "bob", key="shared", body={"title": "x"})
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["createdById"] == "bob"
    assert len(board.events("task:created")) == 3  # setup's, alice's and bob's


async def test_a_failed_request_stores_nothing_and_runs_again(board: Board) -> None:
    _wid, project, task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    bad = await send(board, "POST", path, key="k", body={"title": "x", "status": "nope"})
    assert bad.status == 422
    assert (
        await send(board, "POST", path, key="k", body={"title": "x", "status": "nope"})
    ).status == 422
    stale = await send(
        board, "POST", f"/api/tasks/{task['id']}/move", key="m",
        body={"toStatus": "done", "version": 7},
    )  # fmt: skip
    assert stale.status == 409
    # Nothing was kept for either key: another request may use them, and runs.
    good = await send(board, "POST", path, key="k", body={"title": "y"})
    assert good.status == 201
    moved = await send(
        board, "POST", f"/api/tasks/{task['id']}/move", key="m",
        body={"toStatus": "done", "version": 1},
    )  # fmt: skip
    assert moved.status == 200


# Answers that name their event


async def test_a_mutation_that_emits_nothing_names_no_event(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}"
    unchanged = await send(board, "PATCH", path, body={"title": task["title"]})
    assert unchanged.status == 200
    assert position_of(unchanged) is None
    stay = await send(board, "POST", f"{path}/move", body={"toStatus": task["status"]})
    assert (stay.status, position_of(stay)) == (200, None)
    changed = await send(board, "PATCH", path, body={"title": "new"})
    event = board.events("task:updated")[-1]
    assert position_of(changed) == (event["offset"], event["epoch"])
    assert changed.headers["ETag"] == '"2"'
    refused = await send(board, "PATCH", path, body={"title": "newer", "version": 1})
    assert refused.status == 409
    assert position_of(refused) is None


# Bad keys


@pytest.mark.parametrize(
    "value",
    ["", "x" * 256, "tab\there", "caf\u00e9"],
    ids=["empty", "too-long", "tab", "non-ascii"],
)
async def test_a_key_that_is_not_1_to_255_printable_ascii_is_400(board: Board, value: str) -> None:
    _wid, project, _task = await board.setup()
    published = board.event_count()
    path = f"/api/projects/{project['id']}/tasks"
    reply = await send(board, "POST", path, key=value, exact_key=True, body={"title": "x"})
    assert reply.status == 400, reply
    assert reply.json()["error"]["code"] == "bad_request"
    assert "Idempotency-Key" in reply.json()["error"]["message"]
    assert board.event_count() == published


async def test_two_keys_in_one_request_are_400(board: Board) -> None:
    _wid, project, _task = await board.setup()
    headers = CIMultiDict(auth("alice"))
    headers.add("Idempotency-Key", "a")
    headers.add("Idempotency-Key", "b")
    async with board.client.post(
        f"/api/projects/{project['id']}/tasks", json={"title": "x"}, headers=headers
    ) as response:
        assert response.status == 400


async def test_the_longest_key_and_every_printable_character_work(board: Board) -> None:
    _wid, project, _task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    nonce = secrets.token_hex(4)
    for key in [nonce + "k" * 247, nonce + "".join(chr(c) for c in range(0x21, 0x7F))]:
        first = await send(board, "POST", path, key=key, exact_key=True, body={"title": "x"})
        assert first.status == 201
        again = await send(board, "POST", path, key=key, exact_key=True, body={"title": "x"})
        assert again.same_as(first)


# In flight


@asynccontextmanager
async def writers_held(settings: Settings, room: str) -> AsyncIterator[None]:
    """Hold the lock a writer of ``room`` needs until the block ends: the room's row on
    PostgreSQL, the database's write lock on SQLite."""
    url = settings.database_url
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        async with pg.transaction():
            rooms = f"{settings.db_schema}.rooms"
            await pg.execute(f"SELECT 1 FROM {rooms} WHERE room = $1 FOR UPDATE", room)
            yield
    finally:
        await pg.close()


async def test_a_repeat_while_the_first_is_in_flight_is_409(
    board: Board, settings: Settings
) -> None:
    _wid, project, _task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    published = board.event_count()
    async with writers_held(settings, f"project:{project['id']}"):
        # Both reach the server; whichever comes second is refused at once, while the other
        # waits inside its transaction for the lock this test holds.
        attempts = [
            asyncio.ensure_future(send(board, "POST", path, key="k", body={"title": "x"}))
            for _ in range(2)
        ]
        done, pending = await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        refused = done.pop().result()
        assert refused.status == 409, refused
        assert refused.json()["error"]["code"] == "conflict"
        assert refused.json()["error"]["details"] == {"reason": "idempotency_key_in_flight"}
        assert not done
        assert len(pending) == 1
    first = await pending.pop()
    assert first.status == 201
    assert board.event_count() == published + 1
    assert (await send(board, "POST", path, key="k", body={"title": "x"})).same_as(first)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_repeat_on_another_instance_waits_for_the_first_and_gets_its_answer(
    board: Board, settings: Settings, app_client_factory: AppClientFactory
) -> None:
    """Two instances on one PostgreSQL database: the repeat waits behind the first's locks,
    then answers from the key the first committed. One task, one event, one answer."""
    other = await start_board(app_client_factory, settings)
    _wid, project, _task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    async with writers_held(settings, f"project:{project['id']}"):
        key = secrets.token_hex(8)  # the same key at both instances
        a = asyncio.ensure_future(
            send(board, "POST", path, key=key, exact_key=True, body={"title": "x"})
        )
        b = asyncio.ensure_future(
            send(other, "POST", path, key=key, exact_key=True, body={"title": "x"})
        )
        await wait_for_lock_waiters(settings, 2)
    ra, rb = await a, await b
    assert ra.status == 201
    assert ra.same_as(rb)
    assert len(board.events("task:created")) + len(other.events("task:created")) == 2
    _status, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert [t["title"] for t in snapshot["tasks"]].count("x") == 1
    assert snapshot["offset"] == 2


async def wait_for_lock_waiters(settings: Settings, count: int) -> None:
    """Until ``count`` backends of this database wait for a lock (both requests are in)."""
    pg = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(500):
            waiting = await pg.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} requests never waited for the lock")
    finally:
        await pg.close()


# Lifetime


async def test_keys_are_pruned_after_their_lifetime(board: Board, settings: Settings) -> None:
    _wid, project, _task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    first = await send(board, "POST", path, key="k", body={"title": "x"})
    assert first.status == 201
    db = Database(settings.database_url)
    try:
        now = time.time()
        kept = IdempotencyGate(db, settings.idempotency_ttl, clock=lambda: now)
        assert await kept.prune() == 0  # younger than the lifetime: kept
        assert (await send(board, "POST", path, key="k", body={"title": "x"})).same_as(first)
        later = IdempotencyGate(db, 60.0, clock=lambda: now + 61.0)
        assert await later.prune() >= 1
    finally:
        await db.aclose()
    again = await send(board, "POST", path, key="k", body={"title": "x"})
    assert again.status == 201
    assert again.json()["id"] != first.json()["id"]  # the key was forgotten: it ran again


async def test_pruning_goes_in_bounded_batches(
    board: Board, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wid, project, _task = await board.setup()
    path = f"/api/projects/{project['id']}/tasks"
    for n in range(5):
        assert (await send(board, "POST", path, key=f"k{n}", body={"title": "x"})).status == 201
    db = Database(settings.database_url)
    try:
        # Far enough ahead that every key of the module's earlier tests is old as well.
        gate = IdempotencyGate(db, 1.0, clock=lambda: time.time() + 3600.0)
        monkeypatch.setattr(gate_module, "PRUNE_BATCH", 2)
        monkeypatch.setattr(gate_module, "PRUNE_ROUNDS", 100_000)
        batches: list[int] = []
        prune_batch = store_idempotency.prune

        async def counted(*args: Any, **kwargs: Any) -> int:
            batches.append(await prune_batch(*args, **kwargs))
            return batches[-1]

        monkeypatch.setattr(store_idempotency, "prune", counted)
        assert await gate.prune() >= 5
        assert max(batches) == 2
        assert batches[-1] < 2
        assert await gate.prune() == 0
    finally:
        await db.aclose()


async def test_the_app_prunes_with_its_configured_lifetime(board: Board) -> None:
    gate = board.client.app[GATE_KEY]
    assert isinstance(gate, IdempotencyGate)
    assert await gate.prune() == 0


async def test_the_position_named_is_in_the_log(board: Board, settings: Settings) -> None:
    _wid, project, _task = await board.setup()
    reply = await send(
        board, "POST", f"/api/projects/{project['id']}/tasks", key="k", body={"title": "x"}
    )
    position = position_of(reply)
    assert position is not None
    db = Database(settings.database_url)
    try:
        async with db.read() as conn:
            events = await eventlog.read_events(
                conn, f"project:{project['id']}", after=position[0] - 1, limit=5
            )
    finally:
        await db.aclose()
    assert [(e.offset, e.epoch, e.type) for e in events] == [(*position, "task:created")]
    assert events[0].data["task"] == reply.json()


async def test_migration_3_adds_the_keys_to_a_database_made_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        with monkeypatch.context() as patched:
            patched.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
            assert await migrations.migrate(db) == [1, 2]
        async with db.read() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert "idempotency_keys" not in tables
        # Migration 3, and the later ones (none of them needs the keys to exist).
        assert await migrations.migrate(db) == [v for v, _, _ in migrations.MIGRATIONS[2:]]
        assert await migrations.migrate(db) == []
        claim = store_idempotency.Claim("u", "k", "f" * 64)
        async with db.write() as conn:
            assert await store_idempotency.record(
                conn, claim, status=201, body=b"{}", headers={}, now_ms=1
            )
            assert not await store_idempotency.record(
                conn, claim, status=201, body=b"{}", headers={}, now_ms=2
            )
        async with db.read() as conn:
            stored = await store_idempotency.recall(conn, "u", "k")
        assert stored == store_idempotency.StoredAnswer("f" * 64, 201, b"{}", {})
    finally:
        await db.aclose()


async def test_a_key_costs_a_mutation_one_statement(board: Board) -> None:
    """Counted at the driver: the same PATCH without and with a key, on both databases. On
    PostgreSQL the key's answer is stored by the PATCH's one write statement
    (``tasks.single_write``): read, then write, with a key or without; on SQLite the key costs
    one statement more in the PATCH's transaction."""
    _wid, _project, task = await board.setup()
    db = board.client.app[DATABASE_KEY]
    engine = db.engine.sync_engine
    statements: list[str] = []
    drivers: list[Any] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def log(record: Any) -> None:
        statements.append(record.query)

    def watch(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in drivers:  # asyncpg: every query it runs, SQLAlchemy's or not
            driver.add_query_logger(log)
            drivers.append(driver)

    listener = ("before_cursor_execute", count) if db.is_sqlite else ("checkout", watch)
    sa_event.listen(engine, *listener)
    try:
        costs = []
        for n, key in enumerate([None, "k", None, "k2"]):
            statements.clear()
            body = {"title": f"title {n}"}
            reply = await send(board, "PATCH", f"/api/tasks/{task['id']}", key=key, body=body)
            assert reply.status == 200
            costs.append(len(statements))
    finally:
        sa_event.remove(engine, *listener)
        for driver in drivers:
            driver.remove_query_logger(log)
    if db.is_sqlite:
        assert costs[1] == costs[0] + 1
        assert costs[3] == costs[2] + 1
    else:
        assert costs == [2, 2, 2, 2]


async def test_a_merged_edit_is_replayed_with_its_merge_header(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}"
    assert (await send(board, "PATCH", path, body={"description": "theirs"})).status == 200
    body = {"title": "mine", "version": 1}  # stale, but the title did not change since
    first = await send(board, "PATCH", path, key="merge", body=body)
    assert (first.status, first.headers.get("Liveboard-Merged")) == (200, "title")
    published = board.event_count()
    again = await send(board, "PATCH", path, key="merge", body=body)
    assert again.same_as(first)
    assert again.headers.get("Liveboard-Merged") == "title"
    assert board.event_count() == published
