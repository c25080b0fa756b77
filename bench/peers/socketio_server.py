"""The python-socketio peer: a small server doing liveboard's real-time job the Socket.IO way.

python-socketio 5 (``AsyncServer``) on aiohttp and uvloop, with ``AsyncRedisManager`` on the
benchmark's Redis so that several instances share rooms, as a Socket.IO user would deploy it.

* Connect: Engine.IO v4 over WebSocket (``/socket.io/?EIO=4&transport=websocket``); the
  Socket.IO ``CONNECT`` packet carries ``{"token": JWT}``, verified with PyJWT (HS256, ``sub``
  and ``exp`` required, the same secret and claims as liveboard); a bad token is refused.
* ``subscribe`` ``{room}`` joins the room and acknowledges ``{"type": "subscribed", room}``.
  Unlike liveboard there is no membership check in a database and no history: this peer does
  less work per subscription than liveboard.
* ``presence`` ``{action: join|leave, room}``: the room's present users (in this process), sent
  as ``presence:update`` (liveboard's shape) to the room through the manager; a disconnect
  leaves.
* Events reach rooms the Socket.IO way: any process calls ``emit(type, envelope, room=room)``
  on an ``AsyncRedisManager`` (the benchmark uses a write-only one), which publishes on Redis;
  every instance emits to its local members of the room. The envelope is liveboard's event
  JSON, so both servers carry the same payload.
* ``POST /api/tasks/{id}`` (with ``--database-url``): the mutation of scenario C, the same work
  as liveboard's ``PATCH``: one PostgreSQL transaction updates the task, takes the room's next
  offset (``UPDATE … RETURNING``) and appends the event row; then the event is emitted.

Run: ``python -m bench.peers.socketio_server --port P --redis-url URL --jwt-secret S``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import time
from typing import Any

import jwt
import socketio
from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_tasks (
    id text PRIMARY KEY, project_id text NOT NULL, title text NOT NULL,
    description text NOT NULL, status text NOT NULL, sort_order double precision NOT NULL,
    assignee_id text, created_by_id text NOT NULL, version integer NOT NULL,
    created_at text NOT NULL, updated_at text NOT NULL);
CREATE TABLE IF NOT EXISTS peer_rooms (
    room text PRIMARY KEY, epoch text NOT NULL, last_offset bigint NOT NULL);
CREATE TABLE IF NOT EXISTS peer_events (
    room text NOT NULL, "offset" bigint NOT NULL, epoch text NOT NULL, type text NOT NULL,
    ts bigint NOT NULL, user_id text NOT NULL, data text NOT NULL,
    PRIMARY KEY (room, "offset"));
"""


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def build(redis_url: str, secret: str, database_url: str | None) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)
    users: dict[str, tuple[str, str]] = {}  # sid → (user id, name)
    presence: dict[str, dict[str, tuple[str, str]]] = {}  # room → sid → (user id, name)
    present_in: dict[str, set[str]] = {}  # sid → rooms

    def presence_update(room: str, joined: list[str], left: list[str]) -> dict[str, Any]:
        present = {user: name for user, name in presence.get(room, {}).values()}
        return {
            "type": "presence:update",
            "room": room,
            "users": [{"userId": u, "name": present[u]} for u in sorted(present)],
            "joined": joined,
            "left": left,
        }

    async def leave_presence(sid: str, room: str) -> None:
        members = presence.get(room)
        if members is None or sid not in members:
            return
        user, _name = members.pop(sid)
        present_in.get(sid, set()).discard(room)
        still = any(u == user for u, _ in members.values())
        if not members:
            del presence[room]
        if not still:
            await sio.emit("presence:update", presence_update(room, [], [user]), room=room)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            return False
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return False
        users[sid] = (str(claims["sub"]), str(claims.get("name") or claims["sub"]))
        return True

    @sio.event
    async def disconnect(sid: str, *args: Any) -> None:
        for room in present_in.pop(sid, set()):
            await leave_presence(sid, room)
        users.pop(sid, None)

    @sio.event
    async def subscribe(sid: str, data: Any) -> dict[str, Any]:
        room = data.get("room") if isinstance(data, dict) else None
        if not isinstance(room, str) or not room.startswith(("project:", "workspace:")):
            return {"type": "error", "code": "invalid_room"}
        await sio.enter_room(sid, room)
        return {"type": "subscribed", "room": room}

    @sio.on("presence")
    async def on_presence(sid: str, data: Any) -> None:
        room = data.get("room") if isinstance(data, dict) else None
        if not isinstance(room, str) or room not in sio.rooms(sid):
            return
        if data.get("action") == "leave":
            await leave_presence(sid, room)
            return
        user, name = users[sid]
        members = presence.setdefault(room, {})
        already = any(u == user for u, _ in members.values())
        members[sid] = (user, name)
        present_in.setdefault(sid, set()).add(room)
        if already:
            await sio.emit("presence:update", presence_update(room, [], []), to=sid)
        else:
            await sio.emit("presence:update", presence_update(room, [user], []), room=room)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)

    if database_url is not None:
        import asyncpg

        pool_key = web.AppKey("pool", asyncpg.Pool)

        async def open_pool(app: web.Application) -> None:
            pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
            async with pool.acquire() as conn, conn.transaction():
                # Instances may start together: one creates the tables, the others wait.
                await conn.execute("SELECT pg_advisory_xact_lock(727274)")
                await conn.execute(SCHEMA)
            app[pool_key] = pool

        async def close_pool(app: web.Application) -> None:
            await app[pool_key].close()

        app.on_startup.append(open_pool)
        app.on_cleanup.append(close_pool)

        async def mutate(request: web.Request) -> web.Response:
            header = request.headers.get("Authorization", "")
            try:
                claims = jwt.decode(
                    header.removeprefix("Bearer "),
                    secret,
                    algorithms=["HS256"],
                    options={"require": ["exp", "sub"]},
                )
            except jwt.PyJWTError:
                return web.json_response({"error": {"code": "unauthorized"}}, status=401)
            body = await request.json()
            title = str(body["title"])
            task_id = request.match_info["tid"]
            ts = time.time_ns() // 1_000_000
            async with request.app[pool_key].acquire() as conn, conn.transaction():
                old = await conn.fetchrow(
                    "SELECT * FROM peer_tasks WHERE id = $1 FOR UPDATE", task_id
                )
                if old is None:
                    return web.json_response({"error": {"code": "not_found"}}, status=404)
                row = await conn.fetchrow(
                    "UPDATE peer_tasks SET title = $2, version = version + 1, updated_at = $3"
                    " WHERE id = $1 RETURNING *",
                    task_id,
                    title,
                    iso_now(),
                )
                room = f"project:{row['project_id']}"
                head = await conn.fetchrow(
                    "UPDATE peer_rooms SET last_offset = last_offset + 1 WHERE room = $1"
                    " RETURNING last_offset, epoch",
                    room,
                )
                task = {
                    "id": row["id"],
                    "projectId": row["project_id"],
                    "title": row["title"],
                    "description": row["description"],
                    "status": row["status"],
                    "order": row["sort_order"],
                    "assigneeId": row["assignee_id"],
                    "createdById": row["created_by_id"],
                    "version": row["version"],
                    "createdAt": row["created_at"],
                    "updatedAt": row["updated_at"],
                }
                data = {"task": task, "changes": {"title": {"from": old["title"], "to": title}}}
                await conn.execute(
                    'INSERT INTO peer_events (room, "offset", epoch, type, ts, user_id, data)'
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    room,
                    head["last_offset"],
                    head["epoch"],
                    "task:updated",
                    ts,
                    claims["sub"],
                    json.dumps(data),
                )
            event = {
                "type": "task:updated",
                "room": room,
                "offset": head["last_offset"],
                "epoch": head["epoch"],
                "ts": ts,
                "userId": claims["sub"],
                "data": data,
            }
            await sio.emit("task:updated", event, room=room)
            return web.json_response(task)

        app.router.add_post("/api/tasks/{tid}", mutate)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jwt-secret", required=True)
    parser.add_argument("--database-url", help="PostgreSQL, for the mutation endpoint")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING)
    import uvloop

    app = build(args.redis_url, args.jwt_secret, args.database_url)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        print(f"socketio peer listening on {args.host}:{args.port}", flush=True)
        try:
            await asyncio.Event().wait()  # until the process is stopped
        finally:
            await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
