"""Reconnects answered from memory (``realtime.admit_cache``): the room's position and recent
events and the workspace's known members, never a removed member (issue 20 item 4).

The node, hub and database are real (SQLite and PostgreSQL); the publishes are in the test's
hands (``World.deliver``), as in ``test_node_revocation.py``, so a removal can be delivered,
lost, or found later by the gap fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from liveboard import protocol
from liveboard.events import RecordingPublisher
from liveboard.protocol import BrokerEvent
from liveboard.realtime import admit_cache, subscribe_read
from liveboard.realtime.hub import Hub
from liveboard.realtime.node import Node
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks.service import TaskService
from tests.integration.test_node_revocation import Socket, World, forbidden, until
from tests.support.app import make_settings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    db = Database(database_url)
    await migrate(db)
    node = Node(make_settings(database_url), db)  # no Redis: the memory broker, not started
    publisher = RecordingPublisher()
    try:
        yield World(node, TaskService(db, publisher), publisher)
    finally:
        await node.shutdown()
        await db.aclose()


class Reads:
    """Counts the subscribe's database reads (both databases' paths)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for module, name in ((subscribe_read, "recover"), (subscribe_read, "admit_project")):
            monkeypatch.setattr(module, name, self._counting(getattr(module, name)))

    def _counting(self, read: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await read(*args, **kwargs)

        return counted


def recoveries(node: Node, source: str) -> float:
    return float(node.metrics.recoveries.labels(source)._value.get())


async def held_board(world: World) -> tuple[list[BrokerEvent], str, Socket]:
    """Dave holds the project room here; Carol subscribed once (read, remembered) and left;
    three tasks were delivered since. Returns the tasks, the room's epoch and Dave's socket."""
    await world.set_up("carol", "dave")
    _, dave = await world.subscribe("dave")
    carol, carol_socket = await world.subscribe("carol")
    epoch = str(carol_socket.of(world.project)[0]["epoch"])
    await world.node.disconnect(carol)
    tasks = [await world.task(t) for t in ("one", "two", "three")]
    world.deliver(tasks)
    assert world.node.hub.rooms[world.workspace].members == {
        world.user("carol"),
        world.user("dave"),
    }
    return tasks, epoch, dave


async def test_a_reconnect_to_a_held_room_is_answered_from_memory(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks, epoch, _ = await held_board(world)
    reads = Reads(monkeypatch)
    since = protocol.Position(tasks[0].offset, epoch)
    _, socket = await world.subscribe("carol", since)
    assert reads.count == 0
    assert recoveries(world.node, "memory") == 1
    subscribed = socket.of(world.project)[0]
    assert subscribed["recovered"] is True
    assert subscribed["offset"] == tasks[-1].offset
    assert socket.tasks(world.project) == [tasks[1].offset, tasks[2].offset]
    # Live events follow, once.
    later = await world.task("four")
    world.deliver([later])
    assert socket.tasks(world.project) == [e.offset for e in (*tasks[1:], later)]


async def test_what_memory_cannot_answer_is_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Since another epoch, since ahead of what this instance released, a user it does not know
    as a member: each is read from the database (and answered as the database says)."""
    tasks, epoch, _ = await held_board(world)
    reads = Reads(monkeypatch)
    _, socket = await world.subscribe("carol", protocol.Position(2, "another"))
    assert socket.of(world.project)[0]["recovered"] is False
    _, socket = await world.subscribe("carol", protocol.Position(tasks[-1].offset + 1, epoch))
    assert socket.of(world.project)[0]["recovered"] is False
    workspace = world.node.hub.rooms[world.workspace]
    await until(lambda: workspace.members_read, "the workspace's members read")  # (cold_reads)
    workspace.members = set()
    _, socket = await world.subscribe("carol", protocol.Position(tasks[-1].offset, epoch))
    assert socket.of(world.project)[0]["recovered"] is True
    assert reads.count == 3
    assert recoveries(world.node, "memory") == 0


async def test_a_removed_member_is_refused_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal is released here: the member is forgotten with it and her reconnect is read
    from the database, which refuses it."""
    tasks, epoch, _ = await held_board(world)
    world.deliver([await world.remove("carol")])
    assert world.user("carol") not in (world.node.hub.rooms[world.workspace].members or ())
    reads = Reads(monkeypatch)
    session, socket = world.session("carol")
    since = protocol.Position(tasks[-1].offset, epoch)
    again = protocol.Subscribe(room=world.project, since=since)
    with pytest.raises(protocol.ProtocolError) as refused:
        await world.node.subscribe(session, again)
    assert refused.value.code == "forbidden"
    assert reads.count == 1
    assert socket.tasks(world.project) == []


async def test_a_removal_not_yet_released_ends_the_subscription_from_memory(
    world: World,
) -> None:
    """The removal's publish is lost: Carol reconnects from memory (this instance does not know
    yet). The next project event names the removal's workspace offset; it waits, the hole is
    filled from the log, the removal ends Carol's subscription, and she never gets that event."""
    tasks, epoch, dave = await held_board(world)
    removal = await world.remove("carol")  # lost
    _, socket = await world.subscribe("carol", protocol.Position(tasks[-1].offset, epoch))
    assert recoveries(world.node, "memory") == 1
    after = await world.task("after the removal")
    assert after.workspace_offset >= removal.offset
    world.deliver([after])
    await until(lambda: forbidden(socket, world.project), "the removal applied")
    assert after.offset not in socket.tasks(world.project)
    assert world.user("carol") not in (world.node.hub.rooms[world.workspace].members or ())
    await until(lambda: after.offset in dave.tasks(world.project), "dave's event")


async def test_a_workspace_room_that_loses_continuity_forgets_its_members(world: World) -> None:
    await held_board(world)
    project = world.node.hub.rooms[world.project]
    assert project.recent
    workspace = world.node.hub.rooms[world.workspace]
    world.node.repair.resync_room(workspace)
    assert workspace.members is None
    assert workspace.recent is not None
    assert not workspace.recent
    assert not project.recent  # (and Dave's subscription ended: the room is gone here)
    assert world.project not in world.node.hub.rooms


async def test_the_first_reconnect_keeps_what_it_read_for_the_next(
    world: World, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted instance: the first reconnect to a room reads its history and the events
    before it; the next reconnects of that room, from further back, come from memory (once
    their user is known: the workspace's members are read after the first, ``cold_reads``)."""
    await world.set_up("carol", "dave")
    for title in ("one", "two", "three", "four"):
        await world.task(title)
    snapshot = await world.service.snapshot(world.owner, world.pid)
    head, epoch = snapshot.offset, snapshot.epoch
    _, carol = await world.subscribe("carol", protocol.Position(head, epoch))
    dave, first = await world.subscribe("dave", protocol.Position(head - 1, epoch))
    assert first.tasks(world.project) == [head]
    await world.node.disconnect(dave)
    reads = Reads(monkeypatch)
    from_memory = recoveries(world.node, "memory")
    _, second = await world.subscribe("dave", protocol.Position(head - 3, epoch))
    assert second.tasks(world.project) == [head - 2, head - 1, head]
    assert carol.tasks(world.project) == []
    if "postgres" in database_url:  # SQLite reads no events before the history
        assert reads.count == 0
        assert recoveries(world.node, "memory") == from_memory + 1


def test_a_member_is_remembered_only_from_a_read_not_older_than_the_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``remember_member``: a read older than what the workspace room has released (a removal
    may be among what it released since) is not remembered; nor one of another epoch."""
    from liveboard.realtime.hub import Room
    from liveboard.realtime.ordering import RoomSequencer
    from liveboard.store.admission import Admission

    workspace = Room("workspace:w")
    workspace.sequencer = RoomSequencer("e", 11)  # released up to 10
    rooms = {workspace.name: workspace}

    def admission(offset: int, epoch: str = "e") -> Admission:
        position = protocol.Position(offset, epoch)
        return Admission(workspace_id="w", position=position, workspace_head=position)

    admit_cache.remember_member(rooms, "old", admission(9))
    admit_cache.remember_member(rooms, "other-epoch", admission(10, "f"))
    admit_cache.remember_member(rooms, "now", admission(10))
    admit_cache.remember_member(rooms, "ahead", admission(12))
    assert workspace.members == {"now", "ahead"}
    admit_cache.forget_member(workspace, "now")
    assert workspace.members == {"ahead"}
    monkeypatch.setattr(admit_cache, "MAX_MEMBERS", 1)
    admit_cache.remember_member(rooms, "one too many", admission(10))
    assert workspace.members == {"ahead"}


async def test_after_one_reconnect_every_member_is_answered_from_memory(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first reconnect memory cannot answer reads the database; then the workspace's
    members are read at once, so another member this instance never saw is answered from
    memory; a member removed later is forgotten and refused by the database."""
    tasks, epoch, _ = await held_board(world)
    for name in ("erin", "frank"):  # members this instance has not seen
        await world.service.add_member(world.owner, world.wid, world.user(name), "member")
    world.deliver(await world.published())  # their member:added
    since = protocol.Position(tasks[0].offset, epoch)
    reads = Reads(monkeypatch)
    await world.subscribe("erin", since)
    assert reads.count == 1
    workspace = world.node.hub.rooms[world.workspace]
    await until(lambda: workspace.members_read, "the workspace's members read")
    assert {world.user(name) for name in ("erin", "frank")} <= (workspace.members or set())
    _, socket = await world.subscribe("frank", since)
    assert reads.count == 1
    assert recoveries(world.node, "memory") == 1
    assert socket.of(world.project)[0]["recovered"] is True
    assert socket.tasks(world.project) == [e.offset for e in tasks[1:]]
    world.deliver([await world.remove("frank")])
    assert world.user("frank") not in (workspace.members or set())
    session, _ = world.session("frank")
    with pytest.raises(protocol.ProtocolError) as refused:
        await world.node.subscribe(session, protocol.Subscribe(room=world.project, since=since))
    assert refused.value.code == "forbidden"
    assert reads.count == 2


async def test_reconnects_to_a_cold_room_wait_for_its_one_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted instance: members reconnect to a room nobody holds here, all at once. One
    reads the database; the others wait for it and are answered from memory."""
    names = [f"user-{n}" for n in range(6)]
    await world.set_up(*names)
    for title in ("one", "two", "three"):
        await world.task(title)
    snapshot = await world.service.snapshot(world.owner, world.pid)
    # (At the head: SQLite keeps no events before a history for later reconnects.)
    since = protocol.Position(snapshot.offset, snapshot.epoch)
    reads = Reads(monkeypatch)
    sessions = [world.session(name) for name in names]
    again = protocol.Subscribe(room=world.project, since=since)
    await asyncio.gather(*(world.node.subscribe(session, again) for session, _ in sessions))
    assert reads.count == 1
    assert recoveries(world.node, "database") == 1
    assert recoveries(world.node, "memory") == len(names) - 1
    for _, socket in sessions:
        assert socket.of(world.project)[0]["recovered"] is True
        assert socket.of(world.project)[0]["offset"] == snapshot.offset


def test_members_read_at_once_are_remembered_only_from_a_read_not_older_than_the_room() -> None:
    """``remember_members``: as ``remember_member``, for a whole read of the workspace."""
    from liveboard.realtime.hub import Room
    from liveboard.realtime.ordering import RoomSequencer

    workspace = Room("workspace:w")
    workspace.sequencer = RoomSequencer("e", 11)  # released up to 10
    rooms = {workspace.name: workspace}
    assert not admit_cache.remember_members(rooms, "w", protocol.Position(9, "e"), ["old"])
    assert not admit_cache.remember_members(rooms, "w", protocol.Position(10, "f"), ["epoch"])
    assert not admit_cache.remember_members(rooms, "x", protocol.Position(10, "e"), ["other"])
    assert workspace.members is None
    assert not workspace.members_read
    assert admit_cache.remember_members(rooms, "w", protocol.Position(10, "e"), ["a", "b"])
    assert workspace.members == {"a", "b"}
    assert workspace.members_read
    Hub.forget_recent(workspace)
    assert workspace.members is None
    assert not workspace.members_read
