"""The two servers under test, each with the same operations for the scenarios.

* ``LiveboardTarget``: ``liveboard serve`` instances on PostgreSQL and the private Redis.
  Events for scenarios A/B/D take the *direct path*: the harness appends the event rows to the
  event log (``events`` rows plus ``rooms.last_offset``, in one transaction, as the task service
  does) and then PUBLISHes the event JSON on the room's channel ``liveboard:room:{room}``, exactly
  what an instance's broker does after a commit; every liveboard instance subscribed to the
  room fans it out. ``ts`` is stamped after the commit, just before the PUBLISH, so the measured
  latency is publish → receipt (the database write is not in it). Scenario C goes through the
  REST API instead (``PATCH /api/tasks/{id}``), ``ts`` being the service's commit time.
* ``SocketioTarget``: ``bench/peers/socketio_server.py`` instances. Events are emitted the
  Socket.IO way, ``emit(type, envelope, room=room)`` on a write-only ``AsyncRedisManager``
  (its messages are collected and PUBLISHed in one pipeline per batch), so they travel over the
  same Redis to every instance, which emits to its local room members. The envelope is the same
  JSON as liveboard's. Scenario C: ``POST /api/tasks/{id}`` on the peer (same database work).

Both keep ``heads``: the last offset published to each room, which is what every subscriber of
that room must end up having received.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import socketio
from redis.asyncio import Redis

from bench.infra import (
    PYTHON,
    Postgres,
    Process,
    RedisServer,
    cpu_split,
    free_port,
    wait_http,
    write_calls,
)

SECRET = "bench-secret-not-for-production"
OWNER = "owner"


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def task_dict(task_id: str, project_id: str, title: str, version: int) -> dict[str, Any]:
    """A realistic task body, like the API's (the event payload is ~0.6 kB, as in real use)."""
    return {
        "id": task_id,
        "projectId": project_id,
        "title": title,
        "description": "A task the benchmark updates; its event carries the whole task.",
        "status": "in_progress",
        "order": 3.0,
        "assigneeId": "u1",
        "createdById": OWNER,
        "version": version,
        "createdAt": "2026-11-26T03:09:08.123Z",
        "updatedAt": iso_now(),
    }


class Room:
    """One project room the benchmark uses: its name, task and log position."""

    __slots__ = ("epoch", "head", "name", "project_id", "task_id")

    def __init__(self, project_id: str, task_id: str, epoch: str, head: int) -> None:
        self.project_id = project_id
        self.name = f"project:{project_id}"
        self.task_id = task_id
        self.epoch = epoch
        self.head = head


class Target(abc.ABC):
    """What both servers offer to the scenarios."""

    name = ""
    proto = ""
    instances: list[Process]
    #: Seconds an instance may take to answer its readiness check after it was started (a
    #: machine shared with other jobs can take tens of seconds just to import).
    ready_timeout = 30.0

    def __init__(self, workdir: Path, redis: RedisServer, postgres: Postgres) -> None:
        self.workdir = workdir
        self.redis = redis
        self.postgres = postgres
        self.instances = []
        self.ports: list[int] = []
        self.rooms: list[Room] = []
        self.database_url: str | None = None
        self._redis: Redis | None = None

    async def create_database(self, name: str) -> None:
        """Use a fresh PostgreSQL database from now on (for the next start)."""
        self.database_url = await self.postgres.create(name)

    def url(self, index: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}"

    def http(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    @property
    def heads(self) -> dict[str, int]:
        return {room.name: room.head for room in self.rooms}

    def cpu(self, index: int = 0) -> float:
        return self.instances[index].cpu()

    def cpu_system(self, index: int = 0) -> float:
        return self.instances[index].cpu_system()

    def rss_kb(self, index: int = 0) -> int:
        return self.instances[index].rss_kb()

    def write_calls(self, index: int = 0) -> int:
        return self.instances[index].write_calls()

    @property
    def pid(self) -> int:
        return self.instances[0].pid

    def redis_client(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis.url)
        return self._redis

    async def counters(self, index: int = 0) -> dict[str, float]:
        """The server's own counters (liveboard: /metrics), to explain a phase."""
        return {}

    @abc.abstractmethod
    async def start(self, count: int = 1) -> None:
        """Implemented by each server under test."""

    async def _ready(
        self, started: list[tuple[int, Process]], path: str, *, register: bool = True
    ) -> None:
        """Wait for every started instance to answer; on failure none is left running."""
        try:
            for port, process in started:
                await wait_http(f"http://127.0.0.1:{port}{path}", self.ready_timeout, process)
        except BaseException:
            for _port, process in started:
                process.stop(kill=True)
            raise
        if register:
            for port, process in started:
                self.ports.append(port)
                self.instances.append(process)

    @abc.abstractmethod
    async def setup(self, projects: int, users: int) -> None:
        """Implemented by each server under test."""

    @abc.abstractmethod
    async def publish(self, rooms: list[Room]) -> None:
        """One event to each of ``rooms`` (a room may appear several times), in order."""

    @abc.abstractmethod
    async def mutate(self, http: aiohttp.ClientSession, room: Room, title: str) -> bool:
        """Implemented by each server under test."""

    async def stop(self, *, kill: bool = False) -> None:
        for process in self.instances:
            process.stop(kill=kill)
        self.instances = []
        self.ports = []
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def restart(self, count: int = 1) -> None:
        """Kill and start again (e.g. after an overload left a backlog); rooms are kept."""
        await self.stop(kill=True)
        await self.start(count)


class LiveboardTarget(Target):
    name = "liveboard"
    proto = "lb"

    def __init__(self, workdir: Path, redis: RedisServer, postgres: Postgres) -> None:
        super().__init__(workdir, redis, postgres)
        self.owner_token = ""
        self.workspace_id = ""
        #: More environment for the instances (e.g. ``LIVEBOARD_API_KEYS``).
        self.extra_env: dict[str, str] = {}
        #: More ``liveboard serve`` arguments (e.g. ``--workers 2``).
        self.serve_args: list[str] = []
        #: Stamp Redis events with the time before the append (see ``carry``).
        self.ts_before_write = False
        self._db: asyncpg.Connection | None = None
        self.schema = "liveboard"
        self._encode = msgspec.json.Encoder().encode

    async def start(self, count: int = 1) -> None:
        from liveboard.auth import issue_token

        assert self.database_url is not None, "create_database first"
        self.owner_token = issue_token(SECRET, OWNER, name="Owner", ttl=7200)
        env = {
            "LIVEBOARD_DATABASE_URL": self.database_url,
            "LIVEBOARD_JWT_SECRET": SECRET,
            **self.broker_env(),
            "LIVEBOARD_LOG_FORMAT": "text",
            **self.extra_env,
        }
        started = []
        for index in range(count):
            port = free_port()
            argv = [PYTHON, "-m", "liveboard", "serve", "--port", str(port), *self.serve_args]
            log = self.workdir / f"liveboard-{len(self.instances) + index}.log"
            started.append((port, Process(f"liveboard:{port}", argv, log, env)))
            if index == 0 and count > 1:  # let the first one apply the migrations alone
                await self._ready(started, "/healthz", register=False)
        await self._ready(started, "/readyz")

    def broker_env(self) -> dict[str, str]:
        """How the instances carry events between them: Redis."""
        return {"LIVEBOARD_REDIS_URL": self.redis.url}

    async def counters(self, index: int = 0) -> dict[str, float]:
        wanted = ("gap_fills", "catch_ups", "resyncs", "slow_consumer", "broker_reconnects")
        out: dict[str, float] = {}
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{self.http(index)}/metrics") as r,
            ):
                text = await r.text()
        except (aiohttp.ClientError, OSError):
            return out
        for line in text.splitlines():
            if line.startswith("liveboard_") and any(w in line for w in wanted):
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    async def db(self) -> asyncpg.Connection:
        """The harness's connection, its ``search_path`` on the schema liveboard's tables are in
        (``liveboard`` today; ``public`` in trees older than ``LIVEBOARD_DB_SCHEMA``, which
        ``--against`` may run)."""
        if self._db is None:
            self._db = await asyncpg.connect(self.database_url)
            self.schema = await self._db.fetchval(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = 'members' AND c.relkind = 'r'"
                " ORDER BY n.nspname = 'liveboard' DESC LIMIT 1"
            )
            await self._db.execute(f'SET search_path TO "{self.schema}"')
        return self._db

    async def setup(self, projects: int, users: int) -> None:
        """A workspace (owner ``owner``), ``projects`` projects with one task each, and users
        ``u0``… as members (inserted in bulk: adding 20k members through the API is not what
        is measured)."""
        headers = {"Authorization": f"Bearer {self.owner_token}"}
        async with aiohttp.ClientSession(self.http(), headers=headers) as http:

            async def call(method: str, path: str, body: Any = None) -> Any:
                # The owner makes hundreds of calls here: past the per-user REST rate limit
                # (CONTRACT: 429 rate_limited), a client waits and tries again (for a while).
                deadline = time.monotonic() + 30.0
                while True:
                    async with http.request(method, path, json=body) as r:
                        if r.status != 429 or time.monotonic() > deadline:
                            r.raise_for_status()
                            return await r.json()
                    await asyncio.sleep(0.25)

            if not self.workspace_id:
                self.workspace_id = (await call("POST", "/api/workspaces", {"name": "bench"}))["id"]
            while len(self.rooms) < projects:
                name = f"bench {len(self.rooms)}"
                path = f"/api/workspaces/{self.workspace_id}/projects"
                pid = (await call("POST", path, {"name": name}))["id"]
                tid = (await call("POST", f"/api/projects/{pid}/tasks", {"title": "bench"}))["id"]
                snapshot = await call("GET", f"/api/projects/{pid}/tasks")
                self.rooms.append(Room(pid, tid, snapshot["epoch"], snapshot["offset"]))
        db = await self.db()
        present = await db.fetchval(
            "SELECT count(*) FROM members WHERE workspace_id = $1", self.workspace_id
        )
        if present < users + 1:
            now = iso_now()
            await db.execute(
                "DELETE FROM members WHERE workspace_id = $1 AND user_id LIKE 'u%'",
                self.workspace_id,
            )
            await db.copy_records_to_table(
                "members",
                schema_name=self.schema,
                records=[(self.workspace_id, f"u{i}", "member", now) for i in range(users)],
                columns=["workspace_id", "user_id", "role", "created_at"],
            )

    async def publish(self, rooms: list[Room]) -> None:
        db = await self.db()
        rows = []
        before = int(time.time() * 1000)
        for room in rooms:
            room.head += 1
            title = f"Benchmark task, revision {room.head}"
            data = {
                "task": task_dict(room.task_id, room.project_id, title, room.head),
                "changes": {"title": {"from": "previous title", "to": title}},
            }
            rows.append((room, room.head, data))
        names = [r.name for r, _o, _d in rows]
        offsets = [o for _r, o, _d in rows]
        last = {r.name: r.head for r, _o, _d in rows}
        # One statement, so one round trip: atomic on its own, like the server's transaction
        # (the log has the events before Redis carries them). Fewer round trips keep the
        # harness and PostgreSQL from competing with the server for the 2 cores.
        await db.execute(
            "WITH appended AS ("
            ' INSERT INTO events (room, "offset", epoch, type, ts, user_id, origin, data)'
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],"
            " $5::bigint[], $6::text[], $7::text[], $8::text[]))"
            " UPDATE rooms SET last_offset = v.o FROM unnest($9::text[], $10::bigint[])"
            " AS v(r, o) WHERE rooms.room = v.r",
            names,
            offsets,
            [r.epoch for r, _o, _d in rows],
            ["task:updated"] * len(rows),
            [before] * len(rows),
            [OWNER] * len(rows),
            [None] * len(rows),
            [self._encode(d).decode() for _r, _o, d in rows],
            list(last),
            list(last.values()),
        )
        await self.carry(rows, before)

    async def carry(self, rows: list[tuple[Room, int, dict[str, Any]]], before: int) -> None:
        """What an instance's broker does after the commit: PUBLISH each event on Redis.

        Stamped now (publish → receipt), or with ``ts_before_write`` at ``before``, the time
        stamped in the log's rows, which the postgres broker delivers: comparing brokers, both
        latencies then start before the append."""
        ts = before if self.ts_before_write else int(time.time() * 1000)
        pipe = self.redis_client().pipeline(transaction=False)
        for room, offset, data in rows:
            event = {
                "type": "task:updated",
                "room": room.name,
                "offset": offset,
                "epoch": room.epoch,
                "ts": ts,
                "userId": OWNER,
                "data": data,
            }
            pipe.publish(b"liveboard:room:" + room.name.encode(), self._encode(event))
        await pipe.execute()

    async def mutate(self, http: aiohttp.ClientSession, room: Room, title: str) -> bool:
        async with http.patch(
            f"{self.http()}/api/tasks/{room.task_id}",
            json={"title": title},
            headers={"Authorization": f"Bearer {self.owner_token}"},
        ) as r:
            await r.read()
            if r.status == 200:
                room.head += 1
                return True
            return False

    async def stop(self, *, kill: bool = False) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
            self._db = None
        await super().stop(kill=kill)


class LiveboardPostgresTarget(LiveboardTarget):
    """liveboard on the postgres broker (``LIVEBOARD_BROKER=postgres``, no Redis): after the
    append, one ``pg_notify`` per room names the offsets appended, as the broker's publish
    does, and every instance reads them from the log."""

    name = "liveboard-pg"

    def broker_env(self) -> dict[str, str]:
        return {"LIVEBOARD_BROKER": "postgres"}

    async def carry(self, rows: list[tuple[Room, int, dict[str, Any]]], before: int) -> None:
        from liveboard.realtime.brokers.postgres import payload_of

        spans: dict[str, tuple[int, int]] = {}
        for room, offset, _data in rows:
            first, last = spans.get(room.name, (offset, offset))
            spans[room.name] = (min(first, offset), max(last, offset))
        db = await self.db()
        await db.execute(
            "SELECT pg_notify('liveboard_events', p) FROM unnest($1::text[]) AS p",
            [payload_of(name, first, last, "bench") for name, (first, last) in spans.items()],
        )


def process_tree_cpu(pid: int) -> tuple[float, float]:
    """(utime + stime, stime) of ``pid`` and its living children (``serve --workers``: the
    supervisor and its workers), in seconds."""
    total, system = 0.0, 0.0
    for one in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            user, sys_ = cpu_split(one)
            total, system = total + user + sys_, system + sys_
    return total, system


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from every thread's ``/proc/…/children``)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


class LiveboardWorkersTarget(LiveboardTarget):
    """``liveboard serve --workers N`` on Redis: N processes on one port (SO_REUSEPORT), each a
    full instance. Its CPU is the supervisor's and every worker's."""

    def __init__(
        self, workdir: Path, redis: RedisServer, postgres: Postgres, workers: int = 2
    ) -> None:
        super().__init__(workdir, redis, postgres)
        self.name = f"liveboard-w{workers}"
        self.server_workers = workers
        self.serve_args = ["--workers", str(workers)]

    async def start(self, count: int = 1) -> None:
        """Start, then wait until every worker listens (until then the kernel spreads new
        connections over the workers already listening only)."""
        from tests.support.workers import listening_workers

        await super().start(count)
        for index, port in enumerate(self.ports):
            deadline = time.monotonic() + 60
            while len(listening_workers(self.worker_pids(index), port)) < self.server_workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: not every worker listens after 60 s")
                await asyncio.sleep(0.1)

    def spread(self, index: int = 0) -> list[int]:
        """Established connections per worker (sorted, largest first)."""
        from tests.support.workers import worker_of_client_ports

        owners = worker_of_client_ports(self.worker_pids(index), self.ports[index]).values()
        return sorted((list(owners).count(pid) for pid in set(owners)), reverse=True)

    def cpu(self, index: int = 0) -> float:
        return process_tree_cpu(self.instances[index].pid)[0]

    def cpu_system(self, index: int = 0) -> float:
        return process_tree_cpu(self.instances[index].pid)[1]

    def write_calls(self, index: int = 0) -> int:
        pid = self.instances[index].pid
        total = 0
        for one in (pid, *children(pid)):
            with contextlib.suppress(OSError):
                total += write_calls(one)
        return total

    def worker_pids(self, index: int = 0) -> list[int]:
        return children(self.instances[index].pid)


class LiveboardSourceTarget(LiveboardTarget):
    """liveboard run from another source tree (its ``src`` first on ``PYTHONPATH``, the same
    interpreter and dependencies), e.g. ``main`` against a branch in the same run."""

    name = "liveboard-base"

    def __init__(self, workdir: Path, redis: RedisServer, postgres: Postgres, src: Path) -> None:
        super().__init__(workdir, redis, postgres)
        self.extra_env["PYTHONPATH"] = str(src)


class LeanTarget(LiveboardTarget):
    """The lean server (``bench/peers/lean_server.py``): raw hiredis read, room and offset
    decoded, payload bytes forwarded, one write per socket. Events are PUBLISHed as liveboard's
    direct path does (same JSON, same pipeline), without the log append (it has no log)."""

    name = "lean"
    module = "bench.peers.lean_server"

    async def start(self, count: int = 1) -> None:
        assert count == 1, f"the {self.name} server runs one instance"
        port = free_port()
        argv = [PYTHON, "-m", self.module, "--port", str(port)]
        argv += ["--redis", self.redis.url, *self.serve_args]
        process = Process(f"{self.name}:{port}", argv, self.workdir / f"{self.name}.log", {})
        deadline = time.monotonic() + 30
        while True:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited; see {process.log_path}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    process.stop(kill=True)
                    raise RuntimeError(f"{process.name} did not listen") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        self.ports.append(port)
        self.instances.append(process)

    async def setup(self, projects: int, users: int) -> None:
        self.rooms = [Room(f"lean{i}", f"t{i}", "e1", 0) for i in range(projects)]

    async def publish(self, rooms: list[Room]) -> None:
        rows = []
        for room in rooms:
            room.head += 1
            title = f"Benchmark task, revision {room.head}"
            data = {
                "task": task_dict(room.task_id, room.project_id, title, room.head),
                "changes": {"title": {"from": "previous title", "to": title}},
            }
            rows.append((room, room.head, data))
        await self.carry(rows, int(time.time() * 1000))

    async def mutate(self, http: aiohttp.ClientSession, room: Room, title: str) -> bool:
        raise NotImplementedError("the lean server has no REST API")


class BareTarget(LeanTarget):
    """The bare server (``bench/peers/bare_server.py``): a uvloop transport and one slotted
    protocol object per socket, a set of transports per room; scenario D's memory baseline."""

    name = "bare"
    module = "bench.peers.bare_server"


class _CollectingManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """A write-only AsyncRedisManager whose messages are collected, then pipelined."""

    def __init__(self, url: str) -> None:
        super().__init__(url, write_only=True)
        self.outbox: list[str] = []

    async def _publish(self, data: Any) -> None:
        self.outbox.append(self.json.dumps(data))


class SocketioTarget(Target):
    name = "python-socketio"
    proto = "sio"

    def __init__(self, workdir: Path, redis: RedisServer, postgres: Postgres) -> None:
        super().__init__(workdir, redis, postgres)
        self._manager = _CollectingManager(redis.url)
        self._epoch = os.urandom(4).hex()
        self._token = ""

    async def start(self, count: int = 1) -> None:
        started = []
        for index in range(count):
            port = free_port()
            argv = [PYTHON, "-m", "bench.peers.socketio_server", "--port", str(port)]
            argv += ["--redis-url", self.redis.url, "--jwt-secret", SECRET]
            if self.database_url is not None:
                argv += ["--database-url", self.database_url]
            log = self.workdir / f"socketio-{len(self.instances) + index}.log"
            started.append((port, Process(f"socketio:{port}", argv, log)))
            if index == 0 and count > 1:  # let the first one create the tables alone
                await self._ready(started, "/healthz", register=False)
        await self._ready(started, "/healthz")

    async def setup(self, projects: int, users: int) -> None:
        """Rooms need no set-up on the peer (no membership); with a database, the C tables."""
        while len(self.rooms) < projects:
            index = len(self.rooms)
            self.rooms.append(Room(f"sio{index}", f"t_sio{index}", self._epoch, 0))
        if self.database_url is not None:
            db = await asyncpg.connect(self.database_url)
            try:
                for room in self.rooms:
                    await db.execute(
                        "INSERT INTO peer_tasks VALUES ($1, $2, 'bench', '', 'todo', 1.0, NULL,"
                        " $3, 1, $4, $4) ON CONFLICT DO NOTHING",
                        room.task_id,
                        room.project_id,
                        OWNER,
                        iso_now(),
                    )
                    await db.execute(
                        "INSERT INTO peer_rooms VALUES ($1, $2, $3) ON CONFLICT (room) DO UPDATE"
                        " SET last_offset = peer_rooms.last_offset",
                        room.name,
                        room.epoch,
                        room.head,
                    )
                    room.head = await db.fetchval(
                        "SELECT last_offset FROM peer_rooms WHERE room = $1", room.name
                    )
            finally:
                await db.close()

    async def publish(self, rooms: list[Room]) -> None:
        ts = int(time.time() * 1000)
        manager = self._manager
        for room in rooms:
            room.head += 1
            title = f"Benchmark task, revision {room.head}"
            event = {
                "type": "task:updated",
                "room": room.name,
                "offset": room.head,
                "epoch": room.epoch,
                "ts": ts,
                "userId": OWNER,
                "data": {
                    "task": task_dict(room.task_id, room.project_id, title, room.head),
                    "changes": {"title": {"from": "previous title", "to": title}},
                },
            }
            await manager.emit("task:updated", event, room=room.name)
        outbox, manager.outbox = manager.outbox, []
        pipe = self.redis_client().pipeline(transaction=False)
        for message in outbox:
            pipe.publish(manager.channel, message)
        await pipe.execute()

    async def mutate(self, http: aiohttp.ClientSession, room: Room, title: str) -> bool:
        from liveboard.auth import issue_token

        if not self._token:
            self._token = issue_token(SECRET, OWNER, ttl=7200)
        token = self._token
        async with http.post(
            f"{self.http()}/api/tasks/{room.task_id}",
            json={"title": title},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            await r.read()
            if r.status == 200:
                room.head += 1
                return True
            return False


def write_tokens(path: Path, users: int) -> None:
    """JWTs for users ``u0``…``u{users-1}`` (names ``User i``), valid for two hours."""
    from liveboard.auth import issue_token

    now = time.time()
    tokens = [
        issue_token(SECRET, f"u{i}", name=f"User {i}", ttl=7200, now=now) for i in range(users)
    ]
    path.write_text(json.dumps(tokens))


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)
