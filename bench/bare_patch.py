"""The baseline of ``bench.rest_cost``: a bare server doing a PATCH's SQL with asyncpg directly.

``PATCH /api/tasks/{id}`` with ``{"title": …}`` runs, on one pooled asyncpg connection, the
statements liveboard runs for it on PostgreSQL, compiled from liveboard's own SQLAlchemy
statements (so the SQL is the same, not a copy that could drift): BEGIN; the task's row lock
with its project and the caller's role (``records._LOCK_TASK_FOR_CHANGE``); the task's UPDATE
(``records._SAVE_TASK`` with the columns liveboard writes for a title change) and the event's
append (``eventlog``), one statement or two as the liveboard it is run with does; COMMIT.
It answers the task as JSON. With a liveboard that has ``tasks.single_write``, it runs what that
runs instead: the read (no lock) and the one write statement of ``store.task_writes``, no
transaction. What it leaves out is what liveboard adds around that SQL:
token verification, the rules (merge, access), SQLAlchemy's execution path, the publish, the
request's middlewares.

    python -m bench.bare_patch --port 8123 --dsn postgresql://…/db [--schema liveboard]

Not a server to use: no authentication, one user (``--user``), titles only.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from liveboard.protocol import project_room, workspace_room
from liveboard.store import eventlog, records
from liveboard.store.schema import FIELD_VERSION_COLUMNS

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class _Statement:
    """A SQLAlchemy statement compiled for asyncpg: ``$n`` parameters, in ``names`` order."""

    def __init__(self, statement: Any, column_keys: list[str] | None = None) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect(), column_keys=column_keys)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or [])
        binds = compiled.binds.values()  # its literals (the room's +1), with their values
        self.fixed = {compiled.bind_names[b]: b.value for b in binds if not b.required}

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [self.fixed[n] if n in self.fixed else values[n] for n in self.names]


_SAVE_COLUMNS = ["title", *FIELD_VERSION_COLUMNS.values(), "fields_at", "version", "updated_at"]
LOCK = _Statement(records._LOCK_TASK_FOR_CHANGE)
SAVE = _Statement(records._SAVE_TASK, _SAVE_COLUMNS)
APPEND = _Statement(eventlog._APPEND_POSTGRES_DEPENDENT)
#: The task's UPDATE and the event's append as one statement, as liveboard runs them since
#: ``eventlog.append_event(change=…)``; None when this file runs with a liveboard from
#: before that (a before/after comparison), which runs them as two.
SAVE_AND_APPEND: _Statement | None = None
if hasattr(records, "task_change"):
    _set = {c: bindparam(f"set_{c}") for c in _SAVE_COLUMNS}
    SAVE_AND_APPEND = _Statement(eventlog._append_postgres(records._SAVE_TASK.values(_set))[1])


#: The read and the one compare-and-set write of ``tasks.single_write`` (no transaction), as
#: liveboard runs a PATCH on PostgreSQL since then; None with a liveboard from before (a
#: before/after comparison), which runs the transaction above.
SINGLE: Any = None
try:
    from liveboard.store.task_writes import Statements
except ImportError:  # a liveboard from before tasks.single_write
    pass
else:
    SINGLE = Statements


async def patch_single(request: web.Request) -> web.Response:
    """The PATCH as ``tasks.single_write`` runs it: read (no lock), one write statement."""
    pool: asyncpg.Pool = request.app["pool"]
    sql = request.app["single"]
    body = _decode(await request.read())
    task_id = request.match_info["task_id"]
    user = request.app["user"]
    async with pool.acquire() as conn:
        while True:  # until the write finds the task at the version read (liveboard: locked)
            task = await _single_attempt(conn, sql, task_id, user, body["title"])
            if task is not None:
                return web.Response(body=_encode(task), content_type="application/json")


async def _single_attempt(
    conn: asyncpg.Connection, sql: Any, task_id: str, user: str, title: str
) -> dict[str, Any] | None:
    """One read and one write; None if the task changed in between (nothing written)."""
    row = await conn.fetchrow(sql._read, task_id, user, None)
    if row is None or row["role"] is None:
        raise web.HTTPNotFound()
    version = row["version"] + 1
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    task = {
        "id": task_id,
        "projectId": row["project_id"],
        "title": title,
        "description": row["description"],
        "status": row["status"],
        "order": row["sort_order"],
        "rank": row["sort_rank"],
        "assigneeId": row["assignee_id"],
        "createdById": row["created_by_id"],
        "version": version,
        "createdAt": row["created_at"],
        "updatedAt": now,
    }
    data = {"task": task, "changes": {"title": {"from": row["title"], "to": title}}}
    kept = row["version"] if row["fields_at"] != row["version"] else None
    written = await conn.fetchrow(
        sql._edit,
        project_room(row["project_id"]),
        workspace_room(row["workspace_id"]),
        task_id,
        row["version"],
        "task:updated",
        time.time_ns() // 1_000_000,
        user,
        None,
        _encode(data).decode(),
        title,
        row["description"],
        row["assignee_id"],
        version,
        kept or row["description_version"] or row["version"],
        kept or row["assignee_version"] or row["version"],
        version,
        now,
    )
    return None if written is None else task


async def patch(request: web.Request) -> web.Response:
    pool: asyncpg.Pool = request.app["pool"]
    body = _decode(await request.read())
    task_id = request.match_info["task_id"]
    async with pool.acquire() as conn, conn.transaction():
        who = {"task_id": task_id, "user_id": request.app["user"]}
        row = await conn.fetchrow(LOCK.sql, *LOCK.args(who))
        if row is None or row["member_role"] is None:
            raise web.HTTPNotFound()
        version = row["version"] + 1
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        values: dict[str, Any] = {col: row[col] or row["version"] for col in _SAVE_COLUMNS[1:4]}
        values.update(title=body["title"], title_version=version, fields_at=version)
        values.update(version=version, updated_at=now, task_id=task_id)
        if SAVE_AND_APPEND is None:
            await conn.execute(SAVE.sql, *SAVE.args(values))
        task = {
            "id": task_id,
            "projectId": row["project_id"],
            "title": body["title"],
            "description": row["description"],
            "status": row["status"],
            "order": row["sort_order"],
            "rank": row["sort_rank"],
            "assigneeId": row["assignee_id"],
            "createdById": row["created_by_id"],
            "version": version,
            "createdAt": row["created_at"],
            "updatedAt": now,
        }
        data = {"task": task, "changes": {"title": {"from": row["title"], "to": body["title"]}}}
        event = {
            "head_room": project_room(row["project_id"]),
            "depends_on": workspace_room(row["project_workspace_id"]),
            "event_type": "task:updated",
            "event_ts": time.time_ns() // 1_000_000,
            "event_user_id": request.app["user"],
            "event_origin": None,
            "event_data": _encode(data).decode(),
        }
        if SAVE_AND_APPEND is None:
            await conn.fetchrow(APPEND.sql, *APPEND.args(event))
        else:
            setting = {f"set_{c}": v for c, v in values.items() if c != "task_id"}
            both = {**event, **setting, "task_id": task_id}
            await conn.fetchrow(SAVE_AND_APPEND.sql, *SAVE_AND_APPEND.args(both))
    return web.Response(body=_encode(task), content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", default="liveboard")
    parser.add_argument("--user", default="owner")
    args = parser.parse_args()

    async def startup(app: web.Application) -> None:
        app["pool"] = await asyncpg.create_pool(
            args.dsn, min_size=10, max_size=10, server_settings={"search_path": args.schema}
        )

    async def cleanup(app: web.Application) -> None:
        await app["pool"].close()

    app = web.Application()
    app["user"] = args.user
    if SINGLE is not None:
        app["single"] = SINGLE(lambda name: f"{args.schema}.{name}")
    app.router.add_patch("/api/tasks/{task_id}", patch if SINGLE is None else patch_single)
    app.router.add_get("/healthz", healthz)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    import uvloop

    loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
