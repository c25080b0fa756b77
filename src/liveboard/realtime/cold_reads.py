"""One database read per cold room in a reconnect storm, and each workspace's members once.

A restart's reconnect storm brings every client of a room back with ``since`` within a second
or two. Memory (``admit_cache``) answers a reconnect once the room is sequenced here and the
user is known as a member of its workspace; before that, each reconnect read the database, so
the clients that arrived while their room's first read was in flight all read it too (in a
10,000-client storm most of them, once the listen backlog let them in together).

``ColdReads`` makes them wait for that read instead:

* **A gate per room.** A reconnect that memory cannot answer takes the room's gate if nobody
  holds it, and reads the database; one that finds the gate held waits until it opens, asks
  memory again, and reads the database only if memory still cannot answer (it never waits
  twice, so a user memory will never know costs one wait at most).
* **A workspace's members, read once.** When a gate's read is done, the workspace room of its
  room is sequenced here; if its members have not been read yet, they are, in one statement
  with the workspace room's head (``admission.read_members``), and remembered under
  ``admit_cache``'s condition (``remember_members``). The gate opens after that read, so the
  clients waiting on it find every member in memory, whatever their user.

Guarantees: what a reconnect is answered is unchanged (memory answers only under
``admit_cache``'s revocation argument; everything else is read as before). A gate always opens:
after its read and the members' read, whether they succeeded or failed (a failed members' read
is logged, and tried again by the next gate). Nothing here holds a room or a session: a waiter
whose session closed meanwhile is handled by the node as any other slow read.
"""

from __future__ import annotations

import asyncio
import logging

from liveboard.background import TaskSet
from liveboard.protocol import Position
from liveboard.protocol.rooms import WORKSPACE_ROOM_PREFIX
from liveboard.realtime import admit_cache
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.subscribe_read import SubscribeRead
from liveboard.store.admission import read_members
from liveboard.store.database import Database

log = logging.getLogger("liveboard.node")


class ColdReads:
    """The gates of the rooms being read and the workspaces whose members are being read."""

    def __init__(self, hub: Hub, db: Database, tasks: TaskSet) -> None:
        self._hub = hub
        self._db = db
        self._tasks = tasks
        self._gates: dict[str, asyncio.Event] = {}
        self._members: dict[str, asyncio.Task[None]] = {}  # workspace room → its read

    async def from_memory(
        self, room: Room, user_id: str, since: Position, history_size: int
    ) -> SubscribeRead | None:
        """A reconnect answered from what the hub holds (``admit_cache``), after waiting for
        the room's read under way if there is one; None: read the database (``claim`` first)."""
        found = admit_cache.cached_recovery(self._hub.rooms, room, user_id, since, history_size)
        if found is None and (gate := self._gates.get(room.name)) is not None:
            await gate.wait()
            found = admit_cache.cached_recovery(self._hub.rooms, room, user_id, since, history_size)
        return None if found is None else SubscribeRead(found[0], True, found[1])

    def claim(self, room: str) -> asyncio.Event | None:
        """Take ``room``'s gate before reading it; None if another read holds it already."""
        if room in self._gates:
            return None
        gate = self._gates[room] = asyncio.Event()
        return gate

    def release(self, room: Room, gate: asyncio.Event) -> None:
        """The read that took ``gate`` is done (admitted, refused or failed): open it, after
        the members of ``room``'s workspace are read if they have not been yet."""
        if self._gates.get(room.name) is gate:
            del self._gates[room.name]
        reading = self._members_read(room)
        if reading is None:
            gate.set()
        else:
            reading.add_done_callback(lambda _: gate.set())

    def _members_read(self, room: Room) -> asyncio.Task[None] | None:
        """The read of the members of ``room``'s workspace, started if it is needed now."""
        if room.workspace_id is None:
            return None  # refused before its workspace was known: nothing to read
        name = WORKSPACE_ROOM_PREFIX + room.workspace_id
        running = self._members.get(name)
        if running is not None:
            return running
        workspace = self._hub.rooms.get(name)
        if workspace is None or workspace.sequencer is None or workspace.members_read:
            return None
        task = self._tasks.spawn(self._read_members(room.workspace_id), name=f"members {name}")
        self._members[name] = task
        task.add_done_callback(lambda _: self._members.pop(name, None))
        return task

    async def _read_members(self, workspace_id: str) -> None:
        try:
            async with self._db.read_one() as conn:
                found = await read_members(conn, workspace_id, admit_cache.MAX_MEMBERS)
        except Exception:
            log.warning("reading the members of workspace %s failed", workspace_id, exc_info=True)
            return
        if found is not None:
            admit_cache.remember_members(self._hub.rooms, workspace_id, found.head, found.user_ids)
