"""Events from another backend's own transactions: ``liveboard_emit`` (CONTRACT §6.3; issue 18).

Real ``liveboard serve`` processes on one PostgreSQL database and a private ``redis-server``; the
"app" is plain asyncpg on the same database, with a ``comments`` table of its own in ``public``
(liveboard's tables are in the ``liveboard`` schema), calling ``liveboard_emit`` by the name its
default ``search_path`` finds:

* committed: subscribers on every instance get the event, in order, with the next offset,
  in the envelope of §6.3 (``userId`` null), between liveboard's own events;
* rolled back: no event, and no offset consumed;
* many transactions from 10 connections interleaved with liveboard's own task changes in the same
  room: gap-free, each event once, on every instance (``LIVEBOARD_EMIT_TRANSACTIONS``, 1,000 for
  the issue's count; ``make test`` runs 200);
* Redis stopped: still delivered on every instance (the wake-up does not use Redis);
* an instance SIGKILLed while the app commits: the others deliver on;
* the listening connection killed by the database: the instance listens again and keeps
  delivering at once;
* every instance SIGKILLed right after the commit: after the restart a subscriber resuming
  from its position gets the event, within 5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest

from tests.support.cluster import Cluster
from tests.support.cluster_setup import shared_board, subscriber
from tests.support.contract import Json, project_room
from tests.support.timing import timeout
from tests.support.watcher import Watcher, assert_sequence

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

#: External transactions in the concurrency test (the issue's full count: 1000).
TRANSACTIONS = int(os.environ.get("LIVEBOARD_EMIT_TRANSACTIONS", "200"))
#: Concurrent app connections making them.
CONNECTIONS = 10
#: After a stream looks complete, how long to listen on for a late duplicate (past an audit).
QUIET = 1.2


def room_events(watcher: Watcher, room: str) -> list[Json]:
    """Every event of ``room`` the watcher received, custom types included (``ts`` marks an
    event: ``subscribed`` has an offset but no ``ts``)."""
    return [
        r.message
        for r in watcher.received
        if r.message.get("room") == room and "ts" in r.message and "offset" in r.message
    ]


async def until_offset(watcher: Watcher, room: str, offset: int, wait: float) -> float:
    return await watcher.until(
        lambda: any(int(e["offset"]) >= offset for e in room_events(watcher, room)),
        wait,
        f"event with offset {offset} in {room}",
    )


@pytest.fixture(name="app_pool")
async def app_pool_fixture(cluster_database: str) -> AsyncIterator[asyncpg.Pool]:
    """The app's connections and its own table (in ``public``, where an app keeps its tables)."""
    pool = await asyncpg.create_pool(cluster_database, min_size=1, max_size=CONNECTIONS)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS comments ("
        " id bigserial PRIMARY KEY, task_id text NOT NULL, body text NOT NULL)"
    )
    try:
        yield pool
    finally:
        await pool.close()


async def add_comment(conn: asyncpg.Connection, room: str, task_id: str, body: str) -> int:
    """The app's write: its row and its event, in one transaction; the event's offset."""
    async with conn.transaction():
        comment_id = await conn.fetchval(
            "INSERT INTO comments (task_id, body) VALUES ($1, $2) RETURNING id", task_id, body
        )
        data = json.dumps({"taskId": task_id, "commentId": comment_id, "body": body})
        offset: int = await conn.fetchval(
            "SELECT liveboard_emit($1, 'comment:added', $2::jsonb)", room, data
        )
    return offset


async def position(conn: asyncpg.Connection, room: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await conn.fetchval("SELECT liveboard_position($1)", room))
    return found


async def test_a_committed_event_reaches_every_instance_in_order(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    watchers = [
        Watcher(await subscriber(b1, owner, room), "owner@1"),
        Watcher(await subscriber(b2, alice, room), "alice@2"),
    ]
    task = await b1.task(owner, pid, "with comments")  # offset 1
    expected = ["task:created"]
    async with app_pool.acquire() as conn:
        for n in range(3):
            before = await position(conn, room)
            offset = await add_comment(conn, room, str(task["id"]), f"comment {n}")
            assert offset == before["offset"] + 1
            expected.append("comment:added")
            await b2.patch(alice, str(task["id"]), {"title": f"title {n}"})
            expected.append("task:updated")
        head = await position(conn, room)
    assert head["offset"] == len(expected)
    for w in watchers:
        await until_offset(w, room, head["offset"], wait=5)
    await asyncio.sleep(QUIET)
    for w in watchers:
        events = room_events(w, room)
        assert_sequence(events, 1, head["offset"], w.name)
        assert [e["type"] for e in events] == expected, w.name
        comment = events[1]
        assert set(comment) == {"type", "room", "offset", "epoch", "ts", "userId", "data"}
        assert comment["userId"] is None
        assert comment["epoch"] == head["epoch"]
        assert comment["data"]["body"] == "comment 0"
        assert abs(comment["ts"] - time.time() * 1000) < 120_000


async def test_a_rolled_back_event_is_not_delivered_and_takes_no_offset(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    (b1,) = await cluster.start(1)
    owner = cluster.user("owner")
    _, pid = await shared_board(cluster, owner)
    room = project_room(pid)
    watcher = Watcher(await subscriber(b1, owner, room), "owner@1")
    async with app_pool.acquire() as conn:
        start = await position(conn, room)
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO comments (task_id, body) VALUES ('t', 'no')")
        emitted = await conn.fetchval("SELECT liveboard_emit($1, 'comment:added', '{}')", room)
        assert emitted == start["offset"] + 1  # taken inside the transaction…
        await transaction.rollback()  # …and given back
        assert await position(conn, room) == start
        assert await conn.fetchval("SELECT count(*) FROM comments WHERE body = 'no'") == 0
        offset = await add_comment(conn, room, "t", "yes")
    assert offset == start["offset"] + 1
    await until_offset(watcher, room, offset, wait=5)
    await asyncio.sleep(QUIET)
    events = room_events(watcher, room)
    assert [(e["offset"], e["data"]["body"]) for e in events] == [(offset, "yes")]


async def test_concurrent_external_transactions_and_own_changes_are_gap_free(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    tasks = [str((await b1.task(owner, pid, f"t{i}"))["id"]) for i in range(4)]
    watchers = [
        Watcher(await subscriber(b1, owner, room), "owner@1"),
        Watcher(await subscriber(b2, alice, room), "alice@2"),
    ]
    async with app_pool.acquire() as conn:
        base = (await position(conn, room))["offset"]
    offsets: list[int] = []

    async def app_connection(index: int) -> None:
        async with app_pool.acquire() as conn:
            for n in range(index, TRANSACTIONS, CONNECTIONS):
                offsets.append(await add_comment(conn, room, tasks[n % 4], f"c{n}"))

    own_changes = 0
    stop = asyncio.Event()

    async def liveboard_writer(board_index: int, user: str) -> None:
        nonlocal own_changes
        board = (b1, b2)[board_index]
        n = 0
        while not stop.is_set():
            await board.patch(user, tasks[board_index], {"title": f"{user} {n}"})
            own_changes += 1
            n += 1
            await asyncio.sleep(0.03)  # under the REST rate limit (50 calls/s per user)

    writers = [asyncio.create_task(liveboard_writer(0, owner))]
    writers.append(asyncio.create_task(liveboard_writer(1, alice)))
    await asyncio.gather(*(app_connection(i) for i in range(CONNECTIONS)))
    stop.set()
    await asyncio.gather(*writers)

    async with app_pool.acquire() as conn:
        head = (await position(conn, room))["offset"]
        comments = await conn.fetchval("SELECT count(*) FROM comments WHERE body LIKE 'c%'")
    assert comments >= TRANSACTIONS
    assert head == base + TRANSACTIONS + own_changes
    assert len(set(offsets)) == TRANSACTIONS
    for w in watchers:
        await until_offset(w, room, head, wait=15)
    await asyncio.sleep(QUIET)
    for w in watchers:
        events = [e for e in room_events(w, room) if int(e["offset"]) > base]
        assert_sequence(events, base + 1, head, w.name)
        bodies = [e["data"]["body"] for e in events if e["type"] == "comment:added"]
        assert sorted(bodies) == sorted(f"c{n}" for n in range(TRANSACTIONS)), w.name
        assert [int(e["offset"]) for e in events if e["type"] == "comment:added"] == sorted(offsets)


async def test_delivered_on_every_instance_while_redis_is_down(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    watchers = [
        Watcher(await subscriber(b1, owner, room), "owner@1"),
        Watcher(await subscriber(b2, alice, room), "alice@2"),
    ]
    await asyncio.to_thread(cluster.redis.stop)
    await cluster.wait_ready([b1, b2], degraded=True, wait=5)
    async with app_pool.acquire() as conn:
        offsets = [await add_comment(conn, room, "t", f"during {n}") for n in range(5)]
    for w in watchers:
        await until_offset(w, room, offsets[-1], wait=5)
        assert_sequence(room_events(w, room), offsets[0], offsets[-1], w.name)


async def test_the_listening_connection_comes_back_after_the_database_ends_it(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    watchers = [
        Watcher(await subscriber(b1, owner, room), "owner@1"),
        Watcher(await subscriber(b2, alice, room), "alice@2"),
    ]
    async with app_pool.acquire() as conn:
        listening = (
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        ended = {row["pid"] for row in await conn.fetch(listening)}
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", ended)
        assert len(ended) == 2  # one listening connection per instance
        # Listening again on new connections (the instances reconnect after RETRY_MIN, 0.1 s);
        # a terminated backend may still be listed for a moment, so count only new ones.
        deadline = time.monotonic() + timeout(10)
        while len({row["pid"] for row in await conn.fetch(listening)} - ended) < 2:
            assert time.monotonic() < deadline, "the instances did not listen again"
            await asyncio.sleep(0.05)
        before = [(await cluster.metrics(b))["liveboard_wakeups_total"] for b in (b1, b2)]
        offset = await add_comment(conn, room, "t", "after the cut")
    for w in watchers:
        await until_offset(w, room, offset, wait=5)
    after = [(await cluster.metrics(b))["liveboard_wakeups_total"] for b in (b1, b2)]
    # Delivered by the wake-up on both instances, not only by the audit.
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


async def test_every_instance_killed_right_after_the_commit(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, _ = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    client = await subscriber(b1, owner, room)
    reply = await client.subscribe(room)
    since = {"offset": reply["offset"], "epoch": reply["epoch"]}
    await client.close()
    async with app_pool.acquire() as conn:
        offset = await add_comment(conn, room, "t", "then the crash")
    for server in cluster.servers:  # SIGKILL, right after the commit
        server.kill()
    c1, c2 = await cluster.start(2)
    restarted = time.monotonic()
    for board, user in ((c1, owner), (c2, alice)):
        resumed = await board.connect(user)
        answer = await resumed.subscribe(room, since=since)
        assert answer["type"] == "subscribed", answer
        assert answer.get("recovered", True), answer
        watcher = Watcher(resumed, user)
        await until_offset(watcher, room, offset, wait=5)
        assert time.monotonic() - restarted < timeout(5)
        events = room_events(watcher, room)
        assert [(e["offset"], e["data"]["body"]) for e in events] == [(offset, "then the crash")]
        await watcher.stop()
        await resumed.close()


async def test_an_instance_killed_at_the_commit_does_not_stop_the_others(
    cluster: Cluster, app_pool: asyncpg.Pool
) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice = cluster.user("owner"), cluster.user("alice")
    _, pid = await shared_board(cluster, owner, alice)
    room = project_room(pid)
    await subscriber(b1, owner, room)
    survivor = Watcher(await subscriber(b2, alice, room), "alice@2")
    async with app_pool.acquire() as conn:
        committing = asyncio.create_task(add_comment(conn, room, "t", "as one instance dies"))
        cluster.servers[0].kill()  # SIGKILL while the commit is on its way
        offset = await committing
        later = await add_comment(conn, room, "t", "after it died")
    await until_offset(survivor, room, later, wait=5)
    assert_sequence(room_events(survivor, room), offset, later, survivor.name)
