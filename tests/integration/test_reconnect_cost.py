"""What makes a reconnect cheap (issue 20 item 4), against a real PostgreSQL and a real server.

* The recovery read of a subscribe with ``since`` is one statement on the asyncpg connection
  (``admission.recover``); it must answer exactly what the multi-statement read it replaced
  answers (membership, both heads, the oldest offset kept, the history), for every kind of
  ``since``: within the history, at the head, ahead of it, of another epoch, beyond
  ``history_size``; for project and workspace rooms; and nothing for a non-member or a removed
  member.
* ``Database.warm`` opens the pool's kept connections before the server listens.
* ``LIVEBOARD_MAX_HANDSHAKES``: while that many subscribes are under way, an upgrade is refused
  with 503 and ``Retry-After`` (counted as ``busy``); the subscribe under way still recovers,
  and the refused client gets in once it is done.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest

from liveboard.protocol import Position
from liveboard.store import eventlog
from liveboard.store.admission import (
    Recovery,
    admit_project,
    admit_workspace,
    recover,
    recovery_statements,
)
from liveboard.store.database import Database
from tests.support.cluster import Cluster
from tests.support.cluster_setup import shared_board
from tests.support.contract import project_room, workspace_room
from tests.support.timing import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

HISTORY = 5
#: Events before the head read as well (the hub's recent events).
RECENT = 2


async def _classic(
    db: Database, kind: str, rid: str, room: str, user: str, since: Position
) -> Recovery | None:
    """The read the one statement replaced: admission, oldest offset, history, in a snapshot;
    and, as ``read``, the history with up to ``RECENT`` events before it."""
    async with db.read() as conn:
        admit = admit_project if kind == "project" else admit_workspace
        admission = await admit(conn, rid, room, user)
        if admission is None:
            return None
        oldest = await eventlog.oldest_offset(conn, room)
        head = admission.position
        read = []
        if since.epoch == head.epoch and head.offset - since.offset <= HISTORY:
            after = min(since.offset, head.offset - RECENT)
            read = await eventlog.read_events(
                conn, room, after=after, up_to=head.offset, limit=1000 + RECENT
            )
    history = [e for e in read if e.offset > since.offset]
    return Recovery(admission=admission, oldest=oldest, history=history, read=read)


async def test_one_statement_reads_what_the_snapshot_did_and_storms_are_capped(
    cluster: Cluster,
) -> None:
    """(The server is capped at one handshake, for the next part: one start for both.)"""
    (board,) = await cluster.start(1, env={"LIVEBOARD_MAX_HANDSHAKES": "1"})
    owner, member, stranger = (cluster.user(n) for n in ("owner", "member", "stranger"))
    wid, pid = await shared_board(cluster, owner, member)
    for n in range(8):
        await board.task(owner, pid, f"task {n}")
    epoch = str((await board.snapshot(owner, pid))["epoch"])
    db = Database(cluster.database_url, pool_size=3)
    try:
        assert await db.warm() == 3
        assert db.engine.pool.checkedin() == 3  # type: ignore[attr-defined]
        project_sql, workspace_sql = recovery_statements(db.table)
        rooms = [
            ("project", pid, project_room(pid), project_sql),
            ("workspace", wid, workspace_room(wid), workspace_sql),
        ]
        for kind, rid, room, sql in rooms:
            for since in (
                Position(0, epoch),  # beyond the history size
                Position(3, epoch),  # within it
                Position(7, epoch),
                Position(8, epoch),  # the project room's head
                Position(50, epoch),  # ahead of the room
                Position(4, "another"),
            ):
                for user in (member, stranger):
                    async with db.driver() as driver:
                        one = await recover(
                            driver,
                            sql,
                            rid=rid,
                            room=room,
                            user_id=user,
                            since=since,
                            history_size=HISTORY,
                            limit=1000,
                            recent=RECENT,
                        )
                    classic = await _classic(db, kind, rid, room, user, since)
                    assert one == classic, (kind, since, user)
                    assert (one is None) == (user == stranger)
        # A removed member is refused at once, whatever ``since`` says.
        await board.call("DELETE", f"/api/workspaces/{wid}/members/{member}", owner, expect=204)
        async with db.driver() as driver:
            gone = await recover(
                driver,
                project_sql,
                rid=pid,
                room=project_room(pid),
                user_id=member,
                since=Position(7, epoch),
                history_size=HISTORY,
                limit=1000,
            )
        assert gone is None
    finally:
        await db.aclose()
    await upgrades_past_the_handshake_cap_get_503_with_retry_after(cluster, owner, pid)


async def upgrades_past_the_handshake_cap_get_503_with_retry_after(
    cluster: Cluster, owner: str, pid: str
) -> None:
    (board,) = cluster.boards
    room = project_room(pid)
    await board.task(owner, pid, "before")
    snapshot = await board.snapshot(owner, pid)
    since = {"offset": snapshot["offset"], "epoch": snapshot["epoch"]}
    await board.task(owner, pid, "missed")
    first = await board.connect(owner)
    # The recovery read waits on the lock: the first subscribe stays under way.
    locker = await asyncpg.connect(cluster.database_url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE liveboard.events IN ACCESS EXCLUSIVE MODE")
        under_way = asyncio.create_task(first.subscribe(room, since, wait=30.0))
        refusal: aiohttp.WSServerHandshakeError | None = None
        for _ in range(100):
            try:
                second = await board.connect(owner)
            except aiohttp.WSServerHandshakeError as exc:
                refusal = exc
                break
            await second.close()  # the subscribe was not under way yet
            await asyncio.sleep(0.05)
        assert refusal is not None, "no upgrade was refused while a subscribe was under way"
        assert refusal.status == 503
        assert refusal.headers is not None
        assert refusal.headers.get("Retry-After") == "1"
        await transaction.rollback()
    finally:
        with contextlib.suppress(Exception):
            await locker.close()
    reply = await under_way
    assert reply["type"] == "subscribed"
    assert reply["recovered"] is True
    assert [e["offset"] for e in await first.events(1)] == [snapshot["offset"] + 1]
    later = await board.connect(owner)  # nothing under way: admitted
    assert (await later.subscribe(room))["type"] == "subscribed"

    async def busy() -> bool:
        metrics = await cluster.metrics(board)
        return metrics.get('liveboard_connections_rejected_total{reason="busy"}', 0) >= 1

    await wait_until(busy, wait=5)
    for client in (first, later):
        await client.close()
