"""``liveboard.emit`` / ``liveboard.position`` and the SQL functions under them (CONTRACT §6.3).

On a new SQLite file and on PostgreSQL (``database_url``), the "app" uses connections of its
own, never liveboard's ``Database``: an SQLAlchemy engine (async and sync: pysqlite, psycopg)
and asyncpg (PostgreSQL). Checked: the event lands at the next
offset with ``userId`` null and the data given, in the caller's transaction (rolled back: no
event, no offset used); bad rooms, types and data are refused before any SQL with the same
rule as the HTTP route (``protocol.custom_events``), and the SQL function refuses exactly what
the rule refuses. Migrations: liveboard's tables move out of ``public``, an app's tables of the
same names stay where they are. On SQLite a running instance delivers what the helper wrote.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
import sqlalchemy
from sqlalchemy import create_engine, inspect
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import liveboard
from liveboard.auth import Actor
from liveboard.events import RecordingPublisher
from liveboard.protocol import Position, custom_event_type_problem, project_room
from liveboard.store import eventlog, migrations
from liveboard.store.database import Database
from liveboard.tasks.service import TaskService
from tests.support.board import Board
from tests.support.postgres import fresh_postgres_database
from tests.support.servers import LiveboardProcess

#: Types the rule and the SQL function must judge alike.
TYPES = [
    "comment:added",
    "a:b",
    "x.y-z_1:k.v-w_2",
    "task:created",
    "member:removed",
    "presence:update",
    "Comment:added",
    "comment",
    "comment:",
    ":added",
    "1a:b",
    "a:b:c",
    "é:b",
    "a b:c",
    "n:" + "x" * 62,
    "n:" + "x" * 63,
]


def app_engine_url(database_url: str) -> str:
    """The SQLAlchemy URL an app would write for the test's database (a plain URL, as an app's
    own engine has it: liveboard's ``async_url`` names the driver only)."""
    if database_url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + database_url.removeprefix("sqlite:///")
    return "postgresql+asyncpg://" + database_url.split("://", 1)[1]


async def make_room(database_url: str) -> str:
    """A project room on a migrated database (made through liveboard's own service)."""
    db = Database(database_url)
    try:
        await migrations.migrate(db)
        service = TaskService(db, RecordingPublisher())
        alice = Actor(f"alice-{secrets.token_hex(3)}")  # the database is shared with other modules
        workspace = await service.create_workspace(alice, "W")
        project = await service.create_project(alice, workspace.id, "P", None)
    finally:
        await db.aclose()
    return project_room(project.id)


@pytest.fixture(name="own_postgres_url")
def own_postgres_url_fixture(postgres_server_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of this test alone."""
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture(name="room")
async def room_fixture(database_url: str) -> str:
    return await make_room(database_url)


async def logged(database_url: str, room: str) -> list[Any]:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            return await eventlog.read_events(conn, room, after=0, limit=100)
    finally:
        await db.aclose()


async def test_an_async_sqlalchemy_transaction_emits_once_committed(
    database_url: str, room: str
) -> None:
    engine = create_async_engine(app_engine_url(database_url))
    try:
        async with engine.begin() as conn:
            start = await liveboard.position(conn, room)
        assert start.offset == 0
        assert len(start.epoch) == 8
        async with engine.connect() as conn:
            await conn.begin()
            assert await liveboard.emit(conn, room, "comment:added", {"n": 0}) == 1
            await conn.rollback()
        async with engine.begin() as conn:
            assert await liveboard.emit(conn, room, "comment:added", {"n": 1}) == 1
            assert await liveboard.emit(conn, room, "comment:edited", {"n": 2}) == 2
            assert await liveboard.position(conn, room) == Position(offset=2, epoch=start.epoch)
    finally:
        await engine.dispose()
    events = await logged(database_url, room)
    assert [(e.offset, e.type, e.user_id, e.data) for e in events] == [
        (1, "comment:added", None, {"n": 1}),
        (2, "comment:edited", None, {"n": 2}),
    ]


async def test_refused_before_any_sql(database_url: str, room: str) -> None:
    engine = create_async_engine(app_engine_url(database_url))
    try:
        async with engine.begin() as conn:
            with pytest.raises(liveboard.EmitError, match="room must be project"):
                await liveboard.emit(conn, "board:1", "comment:added", {})
            with pytest.raises(liveboard.EmitError, match="type must be namespace:name"):
                await liveboard.emit(conn, room, "Comment", {})
            with pytest.raises(liveboard.EmitError, match="message type of the server"):
                await liveboard.emit(conn, room, "presence:update", {})
            with pytest.raises(liveboard.EmitError, match="data must be a JSON object"):
                await liveboard.emit(conn, room, "comment:added", [1])  # type: ignore[call-overload]
            with pytest.raises(liveboard.EmitError, match="at most 65536 bytes"):
                await liveboard.emit(conn, room, "comment:added", {"x": "y" * 70_000})
            with pytest.raises(liveboard.EmitError, match="data must be JSON"):
                await liveboard.emit(conn, room, "comment:added", {"x": object()})
    finally:
        await engine.dispose()
    assert await logged(database_url, room) == []


async def test_a_room_that_does_not_exist(database_url: str, room: str) -> None:
    engine = create_async_engine(app_engine_url(database_url))
    try:
        if database_url.startswith("sqlite"):
            async with engine.begin() as conn:
                with pytest.raises(liveboard.EmitError, match="no room 'project:nope'"):
                    await liveboard.emit(conn, "project:nope", "comment:added", {})
                with pytest.raises(liveboard.EmitError, match="no room 'project:nope'"):
                    await liveboard.position(conn, "project:nope")
        else:
            calls: tuple[Callable[[AsyncConnection], Awaitable[object]], ...] = (
                lambda c: liveboard.emit(c, "project:nope", "comment:added", {}),
                lambda c: liveboard.position(c, "project:nope"),
            )
            for call in calls:
                async with engine.connect() as conn:
                    with pytest.raises(sqlalchemy.exc.DBAPIError, match="no room 'project:nope'"):
                        await call(conn)
    finally:
        await engine.dispose()


def test_a_sync_sqlalchemy_connection_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'liveboard.db'}"
    room = asyncio.run(make_room(url))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert liveboard.emit(conn, room, "comment:added", {"body": "hi"}) == 1
            assert liveboard.position(conn, room).offset == 1
        with engine.connect() as conn:
            assert liveboard.emit(conn, room, "comment:added", {"body": "gone"}) == 2
            conn.rollback()
        with engine.begin() as conn:
            assert liveboard.position(conn, room).offset == 1
    finally:
        engine.dispose()
    events = asyncio.run(logged(url, room))
    assert [(e.offset, e.user_id, e.data) for e in events] == [(1, None, {"body": "hi"})]


@pytest.mark.postgres
def test_a_sync_sqlalchemy_connection_on_postgres(own_postgres_url: str) -> None:
    room = asyncio.run(make_room(own_postgres_url))
    engine = create_engine(own_postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            assert liveboard.emit(conn, room, "comment:added", {"body": "hi"}) == 1
            assert liveboard.position(conn, room).offset == 1
        with engine.connect() as conn:
            assert liveboard.emit(conn, room, "comment:added", {"body": "gone"}) == 2
            conn.rollback()
        with engine.begin() as conn:
            assert liveboard.position(conn, room, schema="liveboard").offset == 1
        with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DBAPIError, match="no room"):
            liveboard.emit(conn, "project:nope", "comment:added", {})
    finally:
        engine.dispose()
    events = asyncio.run(logged(own_postgres_url, room))
    assert [(e.offset, e.user_id, e.data) for e in events] == [(1, None, {"body": "hi"})]


@pytest.mark.postgres
async def test_asyncpg_and_the_rule_agree_with_the_sql_function(own_postgres_url: str) -> None:
    url = own_postgres_url
    room = await make_room(url)
    conn = await asyncpg.connect(url)
    try:
        assert await liveboard.emit(conn, room, "comment:added", {"a": 1}) == 1
        assert (await liveboard.position(conn, room)).offset == 1
        # The schema's own functions, by their qualified names.
        qualified = await liveboard.emit(conn, room, "comment:added", {}, schema="liveboard")
        assert qualified == 2
        for event_type in TYPES:
            expected = custom_event_type_problem(event_type) is None
            assert await sql_accepts(conn, room, event_type) == expected, event_type
        for data in ("[1]", "1", '"x"', "null"):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="JSON object"):
                await conn.fetchval("SELECT liveboard_emit($1, 'a:b', $2::jsonb)", room, data)
        big = json.dumps({"x": "y" * 70_000})
        with pytest.raises(asyncpg.InvalidParameterValueError, match="at most 65536"):
            await conn.fetchval("SELECT liveboard_emit($1, 'a:b', $2::jsonb)", room, big)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="room must be"):
            await conn.fetchval("SELECT liveboard_emit('tasks', 'a:b', '{}')")
        assert (await liveboard.position(conn, room)).offset == 2
    finally:
        await conn.close()


async def sql_accepts(conn: asyncpg.Connection, room: str, event_type: str) -> bool:
    """Whether ``liveboard_emit`` takes ``event_type`` (probed in a transaction rolled back)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.fetchval("SELECT liveboard_emit($1, $2, '{}'::jsonb)", room, event_type)
    except asyncpg.InvalidParameterValueError as error:
        refusal = str(error)
    else:
        refusal = ""
    finally:
        await transaction.rollback()
    assert refusal == "" or refusal.startswith("liveboard_emit: type"), refusal
    return refusal == ""


@pytest.mark.postgres
@pytest.mark.parametrize("released", [3, 2], ids=["at-3", "at-2"])
async def test_an_old_installation_moves_out_of_public(
    own_postgres_url: str, released: int
) -> None:
    """liveboard as released before migration 4 (at migration 3, or still at 2): its tables in
    public, beside the app's. Only liveboard's move."""
    url = own_postgres_url
    app = await asyncpg.connect(url)
    try:
        # The app's own migrations table (Rails names it schema_migrations: no table of the app
        # could bear one of liveboard's names while liveboard's were in public).
        await app.execute("CREATE TABLE app_migrations (version varchar PRIMARY KEY)")
        await app.execute("INSERT INTO app_migrations VALUES ('20260101')")
        if released < 3:  # a name only a later migration of liveboard's would have taken
            await app.execute("CREATE TABLE idempotency_keys (app_key text PRIMARY KEY)")
        old = Database(url, schema="public")
        try:
            original = migrations.MIGRATIONS
            migrations.MIGRATIONS = original[:released]
            try:
                assert await migrations.migrate(old) == list(range(1, released + 1))
            finally:
                migrations.MIGRATIONS = original
            service = TaskService(old, RecordingPublisher())
            workspace = await service.create_workspace(Actor("alice"), "W")
        finally:
            await old.aclose()
        new = Database(url)
        try:
            assert await migrations.migrate(new) == list(
                range(released + 1, len(migrations.MIGRATIONS) + 1)
            )
            assert await migrations.migrate(new) == []
            service = TaskService(new, RecordingPublisher())
            assert [w.id for w in await service.list_workspaces(Actor("alice"))] == [workspace.id]
            async with new.read() as conn:
                public = await conn.run_sync(
                    lambda sync: inspect(sync).get_table_names(schema="public")
                )
                ours = await conn.run_sync(
                    lambda sync: inspect(sync).get_table_names(schema="liveboard")
                )
        finally:
            await new.aclose()
        assert sorted(public) == (
            ["app_migrations"] if released >= 3 else ["app_migrations", "idempotency_keys"]
        )
        assert "idempotency_keys" in ours
        assert await app.fetchval("SELECT version FROM app_migrations") == "20260101"
        room = f"workspace:{workspace.id}"
        assert await liveboard.emit(app, room, "note:added", {}) == 1
    finally:
        await app.close()


@pytest.mark.postgres
async def test_an_apps_table_named_like_liveboards_is_left_alone(own_postgres_url: str) -> None:
    url = own_postgres_url
    app = await asyncpg.connect(url)
    try:
        await app.execute("CREATE TABLE schema_migrations (version varchar PRIMARY KEY)")
        await app.execute("CREATE TABLE tasks (id serial PRIMARY KEY, title text)")
        db = Database(url)
        try:
            assert await migrations.migrate(db) == list(range(1, len(migrations.MIGRATIONS) + 1))
        finally:
            await db.aclose()
        tables = await app.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE tablename IN ('schema_migrations', 'tasks') ORDER BY 1, 2"
        )
        assert [tuple(t) for t in tables] == [
            ("liveboard", "schema_migrations"),
            ("liveboard", "tasks"),
            ("public", "schema_migrations"),
            ("public", "tasks"),
        ]
    finally:
        await app.close()


async def test_a_running_sqlite_instance_delivers_what_the_helper_wrote(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'liveboard.db'}"
    server = LiveboardProcess(database_url=url, log_path=tmp_path / "server.log").start()
    try:
        async with Board(server) as board:
            owner = board.user("owner")
            _, pid = await board.board(owner)
            room = project_room(pid)
            client = await board.connect(owner)
            await client.subscribe(room)
            engine = create_engine(url)
            try:
                with engine.begin() as conn:
                    offset = liveboard.emit(conn, room, "comment:added", {"body": "from the app"})
            finally:
                engine.dispose()
            event = await client.next("comment:added", wait=5)  # by the audit (about 1 s)
            assert (event["offset"], event["data"]) == (offset, {"body": "from the app"})
    finally:
        server.kill()


def test_the_helpers_are_liveboards_attributes() -> None:
    from liveboard import open_log

    assert liveboard.emit is open_log.emit
    assert liveboard.position is open_log.position
    with pytest.raises(AttributeError):
        _ = liveboard.nothing_like_this
