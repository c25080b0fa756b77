"""Revocation inside one node, with the delivery of each event in the test's hands (issue 16).

The cluster tests (``test_cluster_revocation.py``) reach the paths that Redis, the audit and a
killed instance take. These reach the ones a cluster cannot aim at: a project event that names
no workspace offset (as an instance of the previous version publishes it), a hole of a project
room or of a ``since`` history read while a removal is committed but not applied here, and a
workspace room whose continuity is lost. The node, its hub and its admission are the real ones,
on a real database (a SQLite file and PostgreSQL); the task service commits through the real
event log, and its publisher only records, so each test decides which publish reaches the node
(``World.deliver``) and which is lost. Sockets are ``FakeConnection`` s (``tests.support.fakes``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import msgspec
import pytest

from liveboard import protocol
from liveboard.auth import Actor, Principal
from liveboard.events import RecordingPublisher
from liveboard.protocol import BrokerEvent, ProtocolError, project_room, workspace_room
from liveboard.realtime import repair as repair_module
from liveboard.realtime import subscribe_read
from liveboard.realtime.node import Node
from liveboard.realtime.session import Session
from liveboard.realtime.transport import Connection
from liveboard.store import admission as store_admission
from liveboard.store import eventlog
from liveboard.store.admission import admit_project
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks.service import TaskService
from tests.support.app import make_settings
from tests.support.fakes import FakeConnection
from tests.support.timing import timeout

pytestmark = pytest.mark.timeout(30)


class Socket(FakeConnection):
    """A session's connection, and its transport."""

    def of(self, room: str) -> list[dict[str, object]]:
        return [m for m in self.messages() if m.get("room") == room]

    def tasks(self, room: str) -> list[object]:
        """Offsets of the task events of ``room`` written to this socket."""
        return [m["offset"] for m in self.of(room) if str(m["type"]).startswith("task:")]


class World:
    """One node, the service that writes the log, a workspace with a project, and its users."""

    def __init__(self, node: Node, service: TaskService, publisher: RecordingPublisher) -> None:
        self.node = node
        self.service = service
        self.publisher = publisher
        self.tag = secrets.token_hex(3)
        self.owner = Actor(f"owner-{self.tag}")
        self.wid = ""
        self.pid = ""

    @property
    def project(self) -> str:
        return project_room(self.pid)

    @property
    def workspace(self) -> str:
        return workspace_room(self.wid)

    def user(self, name: str) -> str:
        return f"{name}-{self.tag}"

    async def set_up(self, *members: str) -> None:
        self.wid = (await self.service.create_workspace(self.owner, "W")).id
        for name in members:
            await self.service.add_member(self.owner, self.wid, self.user(name), "member")
        self.pid = (await self.service.create_project(self.owner, self.wid, "P", None)).id
        await self.service.writer.drain()
        self.publisher.events.clear()  # committed before anyone subscribed

    def session(self, name: str) -> tuple[Session, Socket]:
        socket = Socket()
        user = self.user(name)
        principal = Principal(user_id=user, name=name, expires_at=time.time() + 3600)
        session = Session(cast(Connection, socket), f"c-{name}", principal, self.node.settings)
        self.node.register(session)
        return session, socket

    async def subscribe(
        self, name: str, since: protocol.Position | None = None
    ) -> tuple[Session, Socket]:
        session, socket = self.session(name)
        await self.node.subscribe(session, protocol.Subscribe(room=self.project, since=since))
        assert socket.of(self.project)[0]["type"] == "subscribed", socket.messages()
        return session, socket

    async def published(self) -> list[BrokerEvent]:
        """What the service published since the last call (committed, not yet delivered)."""
        await self.service.writer.drain()  # a change returns before its hand-over finishes
        events, self.publisher.events = self.publisher.events, []
        return events

    def deliver(self, events: list[BrokerEvent]) -> None:
        """What the broker would hand the node."""
        self.node.on_events(events)

    async def remove(self, name: str) -> BrokerEvent:
        """Remove ``name`` from the workspace; its publish is lost (returned, not delivered)."""
        await self.service.remove_member(self.owner, self.wid, self.user(name))
        [removal] = await self.published()
        return removal

    async def task(self, title: str) -> BrokerEvent:
        """Create a task; its publish is returned, not delivered."""
        await self.service.create_task(self.owner, self.pid, title=title)
        [event] = await self.published()
        return event


def as_previous_version(event: BrokerEvent) -> BrokerEvent:
    """The event as an instance of the previous version publishes it: no workspace offset."""
    return msgspec.structs.replace(event, workspace_offset=0)


async def until(condition: Callable[[], bool], what: str, wait: float = 5.0) -> None:
    deadline = time.monotonic() + timeout(wait)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


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


def forbidden(socket: Socket, room: str) -> bool:
    return {"type": "unsubscribed", "room": room, "reason": "forbidden"} in socket.of(room)


# A workspace room that loses continuity takes its project rooms' subscriptions with it


def lose_by_hole(world: World, parked: BrokerEvent) -> None:
    """The event names a workspace offset the log does not have: the hole cannot be filled."""
    world.deliver([msgspec.structs.replace(parked, workspace_offset=parked.workspace_offset + 5)])
    assert world.node.hub.rooms[world.workspace].waiting, "the event was not parked"


def lose_by_epoch(world: World, parked: BrokerEvent) -> None:
    """The workspace room's log was reset: an event of another epoch arrives (while the
    event waits for the workspace offset after the head, not in the log yet)."""
    world.deliver([msgspec.structs.replace(parked, workspace_offset=parked.workspace_offset + 1)])
    assert world.node.hub.rooms[world.workspace].waiting, "the event was not parked"
    reset = BrokerEvent(
        type="member:added",
        room=world.workspace,
        offset=1,
        epoch="another",
        ts=0,
        user_id=world.owner.user_id,
        data={"userId": "erin", "role": "member"},
    )
    world.deliver([reset])


@pytest.mark.parametrize("lose", [lose_by_hole, lose_by_epoch], ids=["hole", "epoch"])
async def test_a_workspace_room_that_loses_continuity_resyncs_its_project_rooms(
    world: World, monkeypatch: pytest.MonkeyPatch, lose: Callable[[World, BrokerEvent], None]
) -> None:
    """The project subscriptions of a workspace here rely on its room to apply removals. Once
    that room cannot be continued (a hole the log cannot fill, ``GAP_ATTEMPTS`` times; a new
    epoch), a removal may be missed: they are sent ``resync`` and end, like the room's own
    subscribers, and the events parked for that room are dropped, not released later."""
    monkeypatch.setattr(repair_module, "GAP_WAIT", 0.001)
    await world.set_up("carol", "dave")
    carol, carol_socket = await world.subscribe("carol")
    dave, dave_socket = await world.subscribe("dave")
    lose(world, await world.task("parked"))
    resync = {"type": "resync", "room": world.project, "reason": "continuity_lost"}
    await until(
        lambda: (
            resync in carol_socket.of(world.project) and resync in dave_socket.of(world.project)
        ),
        "the project subscribers' resync",
    )
    assert carol.subscriptions == dave.subscriptions == {}
    workspace = world.node.hub.rooms.get(world.workspace)
    assert workspace is None or workspace.waiting == []
    assert world.node.hub.rooms == {}
    await until(lambda: not world.node._interest, "the rooms' broker interest to be released")
    # nothing parked or read later reaches either of them
    world.deliver([await world.task("later")])
    await world.node.repair.audit()
    assert carol_socket.tasks(world.project) == dave_socket.tasks(world.project) == []


# Events read from the log are released after the workspace room is read forward (F16-3)


async def test_a_project_hole_read_from_the_log_after_an_unapplied_removal(world: World) -> None:
    """An instance of the previous version publishes a task with no workspace offset: nothing
    holds it, and it opens a hole of its project room here. The gap fill reads the hole from
    the log; the removal committed before both, whose publish was lost, must end Carol's
    subscription before either is released (``LogRepair._fill_gap`` reads the workspace room on)."""
    await world.set_up("carol", "dave")
    carol, carol_socket = await world.subscribe("carol")
    _, dave_socket = await world.subscribe("dave")
    await world.remove("carol")  # lost
    await world.task("committed after the removal, lost too")
    second = await world.task("committed after the removal")
    world.deliver([as_previous_version(second)])
    await until(lambda: dave_socket.tasks(world.project) == [1, 2], "the gap fill")
    assert carol_socket.tasks(world.project) == [], "the removed member got a later event"
    assert forbidden(carol_socket, world.project)
    assert carol.subscriptions == {}


async def test_a_since_history_hole_read_after_the_removal_committed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Carol resubscribes with ``since``. Her history is read in the snapshot of her admission;
    the removal and a task commit right after it (the removal's publish is lost, the task comes
    from an instance of the previous version, so it is released live and held for her). What
    lies between her history and the held task is read from the log (``Node._stream_from``),
    after the removal committed: the removal must end her subscription before anything after
    it goes out. One event per log read, so that her history leaves such a range."""
    monkeypatch.setattr(repair_module, "READ_BATCH", 1)
    await world.set_up("carol", "dave")
    _, dave_socket = await world.subscribe("dave")
    for title in ("one", "two"):
        world.deliver([await world.task(title)])
    epoch = str(dave_socket.of(world.project)[0]["epoch"])
    read_events = eventlog.read_events
    reads = 0

    async def after_read(result: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 1:  # Carol's history: the snapshot is taken
            await world.remove("carol")  # lost
            world.deliver([as_previous_version(await world.task("after the removal"))])
        return result

    async def history_then_removal(*args: Any, **kwargs: Any) -> list[BrokerEvent]:
        return await after_read(await read_events(*args, **kwargs))  # type: ignore[no-any-return]

    # On PostgreSQL the history is read with the admission in one statement (``recover``).
    recover = store_admission.recover

    async def recovery_then_removal(*args: Any, **kwargs: Any) -> Any:
        return await after_read(await recover(*args, **kwargs))

    monkeypatch.setattr(eventlog, "read_events", history_then_removal)
    monkeypatch.setattr(subscribe_read, "recover", recovery_then_removal)
    carol, carol_socket = await world.subscribe("carol", protocol.Position(0, epoch))
    assert reads >= 2, "her history left no range to read from the log"
    assert dave_socket.tasks(world.project) == [1, 2, 3]
    assert 3 not in carol_socket.tasks(world.project), "the removed member got a later event"
    assert forbidden(carol_socket, world.project)
    assert carol.subscriptions == {}


async def test_the_audit_applies_the_removal_before_the_project_events_it_reads(
    world: World,
) -> None:
    """The issue's case in one node: both publishes lost, the audit reads both rooms from the
    log, the project room first (it was joined before its workspace room was watched)."""
    await world.set_up("carol", "dave")
    carol, carol_socket = await world.subscribe("carol")
    _, dave_socket = await world.subscribe("dave")
    await world.remove("carol")  # lost
    await world.task("committed after the removal")  # lost
    assert list(world.node.hub.rooms) == [world.project, world.workspace]
    await world.node.repair.audit()
    assert dave_socket.tasks(world.project) == [1]
    assert carol_socket.tasks(world.project) == [], "the removed member got a later event"
    assert forbidden(carol_socket, world.project)
    assert carol.subscriptions == {}


# A subscribe that fails or is refused leaves the node as it found it


async def interest(world: World) -> dict[str, int]:
    """The node's broker interest per room, and the workspace room's watchers, once the
    node's background tasks (it drops interest in them) are done."""
    await asyncio.gather(*world.node._tasks)
    rooms = dict(world.node._interest)
    workspace = world.node.hub.rooms.get(world.workspace)
    rooms["watchers"] = 0 if workspace is None else workspace.watchers
    return rooms


@pytest.mark.parametrize("failing", [2, 3], ids=["range read", "workspace read forward"])
async def test_a_log_read_failing_after_the_subscription_is_registered(
    world: World, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """The database fails while Carol's ``since`` stream is read (after ``subscribed``): the
    range between her history and a held event, or the workspace room's read forward after
    it. The subscription must be undone once, its workspace room's watch and broker interest
    included, so that the room Dave still wants stays subscribed after her disconnect."""
    monkeypatch.setattr(repair_module, "READ_BATCH", 1)
    await world.set_up("carol", "dave")
    dave, dave_socket = await world.subscribe("dave")
    for title in ("one", "two"):
        world.deliver([await world.task(title)])
    third = await world.task("three")
    epoch = str(dave_socket.of(world.project)[0]["epoch"])
    before = await interest(world)
    unsubscribed: list[str] = []

    async def unsubscribe(room: str) -> None:
        unsubscribed.append(room)

    monkeypatch.setattr(world.node.broker, "unsubscribe", unsubscribe)
    read_events = eventlog.read_events
    rooms: list[str] = []

    async def read_then_fail(conn: Any, room: str, **kwargs: Any) -> list[BrokerEvent]:
        rooms.append(room)
        if len(rooms) == failing:
            raise ConnectionResetError("the database went away")
        events = await read_events(conn, room, **kwargs)
        if len(rooms) == 1:  # her history is read: an event arrives and is held for her
            world.deliver([third])
        return events

    # On PostgreSQL her history is read with the admission in one statement (``recover``).
    recover = store_admission.recover

    async def recover_then_hold(*args: Any, **kwargs: Any) -> Any:
        rooms.append(kwargs["room"])
        recovery = await recover(*args, **kwargs)
        world.deliver([third])
        return recovery

    monkeypatch.setattr(eventlog, "read_events", read_then_fail)
    monkeypatch.setattr(subscribe_read, "recover", recover_then_hold)
    carol, _ = world.session("carol")
    subscribe = protocol.Subscribe(room=world.project, since=protocol.Position(0, epoch))
    with pytest.raises(ConnectionResetError):
        await world.node.subscribe(carol, subscribe)
    assert rooms == [world.project, world.project, world.workspace][:failing]
    assert carol.subscriptions == {}
    assert await interest(world) == before, "the failed subscription left something behind"
    await world.node.disconnect(carol)  # the endpoint closes the connection (1011)
    assert await interest(world) == before, "the disconnect undid the subscription a second time"
    assert unsubscribed == []
    monkeypatch.setattr(eventlog, "read_events", read_events)
    world.deliver([await world.task("four")])
    assert dave_socket.tasks(world.project) == [1, 2, 3, 4]
    assert dave.subscriptions == {world.project: world.wid}


@pytest.mark.parametrize("snapshot", ["after", "before"])
async def test_a_resubscribe_refused_after_a_removal_released_while_it_read(
    world: World, monkeypatch: pytest.MonkeyPatch, snapshot: str
) -> None:
    """Carol resubscribes to a room she is subscribed to; while her admission reads, her
    removal is committed and released here, which ends the subscription she had. Whether her
    snapshot is from before the removal (refused for the revocation seen meanwhile) or after it
    (not a member), the answer is ``forbidden`` and nothing is undone twice. It used to be a
    ``resync`` (an invitation to resubscribe) or a KeyError (closing the connection, 1011)."""
    await world.set_up("carol", "dave")
    carol, carol_socket = await world.subscribe("carol")
    _, dave_socket = await world.subscribe("dave")

    async def with_removal(*args: Any) -> Any:
        if snapshot == "after":
            removal = await world.remove("carol")
            admission = await admit_project(*args)
        else:
            admission = await admit_project(*args)
            removal = await world.remove("carol")
        world.deliver([removal])  # its publish arrives while she reads
        return admission

    monkeypatch.setattr(subscribe_read, "admit_project", with_removal)
    with pytest.raises(ProtocolError) as refused:
        await world.node.subscribe(carol, protocol.Subscribe(room=world.project, id=7))
    assert refused.value.code == "forbidden"
    assert carol_socket.of(world.project)[1:] == [
        {"type": "unsubscribed", "room": world.project, "reason": "forbidden"}
    ]
    assert carol.subscriptions == {}
    daves = {world.project: 1, world.workspace: 1, "watchers": 1}
    assert await interest(world) == daves
    await world.node.disconnect(carol)
    assert await interest(world) == daves
    world.deliver([await world.task("after")])
    assert dave_socket.tasks(world.project) == [1]
    assert carol_socket.tasks(world.project) == []
