"""A reconnect admitted from what this instance already knows, without reading the database.

A reconnect storm is thousands of ``subscribe``s with ``since`` to rooms this instance holds
already (its first subscriber read the database and started the room's sequence). For those,
everything the read returns is in memory:

* **position**: the room's sequence, ``Room.released`` in the sequencer's epoch — the events
  after it reach the new subscriber live, as they reach every other (it is registered in the
  hub before this is asked, so nothing released from now on is missed);
* **history**: ``Room.recent``, the last ``hub.RECENT`` events the room released, in order,
  without a hole (and the events read with the position by its first subscriber);
* **membership**: ``Room.members`` of the workspace room, the users a database read found to be
  members while this instance sequenced that workspace room.

Why a remembered member is still one (the revocation guarantee, CONTRACT §3): a user enters
``members`` only after a database read that found them a member as of the workspace room's
offset W, and only if the workspace room here had released nothing after W. Every
``member:removed`` committed after W is then released here later, in order (the hub fills
holes from the log; a lost publish is found by the gap fill or the audit), and releasing it
both ends the user's subscriptions and removes the user from ``members`` (``Node._revoke``),
in one synchronous step. So at any moment a member in ``members`` was a member as of the
workspace room's released offset R, and the subscription admitted from it is recorded before
anything after R is released: a removal after R ends it as it ends any other. On every
instance alike: each learns removals from the same workspace room's stream, whoever made them.

A workspace's members may also be read all at once (``remember_members``: one statement gives
the workspace room's head W and the members as of W), under the same condition, so each of them
is a member as of W exactly as above. ``cold_reads.ColdReads`` does it once per workspace room,
after the first reconnect of one of its rooms that memory could not answer.

What forgets: the ``member:removed`` of the user (above); a resync of the workspace room
(``Hub.forget_recent``: continuity lost, a removal may be in what was skipped); the workspace
room dropped from the hub (nobody here subscribed to it or its projects any more: it is no
longer sequenced, so its removals would not be seen; the next subscribe reads the database).
Bounds: ``MAX_MEMBERS`` users per workspace room, ``hub.RECENT`` events per room. Membership
changed behind liveboard's back (a row deleted from ``members`` without a ``member:removed``)
is not seen, exactly as it does not end live subscriptions (docs/own-backend.md).

A project's workspace never changes (``Room.workspace_id``, set at its first admission).
Pure: no I/O, no await; the node calls it between ``Hub.join`` and registering.
"""

from __future__ import annotations

from liveboard.protocol import Position, SequencedEvent
from liveboard.protocol.rooms import WORKSPACE_ROOM_PREFIX
from liveboard.realtime.hub import Room
from liveboard.store.admission import Admission

#: Users remembered per workspace room; past it new ones are read from the database each time.
MAX_MEMBERS = 10_000


def cached_recovery(
    rooms: dict[str, Room],
    room: Room,
    user_id: str,
    since: Position,
    history_size: int,
) -> tuple[Admission, list[SequencedEvent]] | None:
    """The admission and the history after ``since`` of a reconnect to ``room``, answered from
    memory with ``recovered: true``; None when the database must be read (the room or its
    workspace room not sequenced here, the user not known as a member, ``since`` of another
    epoch, ahead of what this instance released, or older than ``room.recent`` holds)."""
    sequencer = room.sequencer
    recent = room.recent
    if sequencer is None or recent is None:
        return None
    workspace = room if room.is_workspace else _workspace_of(rooms, room)
    if workspace is None or workspace.sequencer is None or workspace.members is None:
        return None
    if user_id not in workspace.members:
        return None
    epoch = sequencer.epoch
    head = room.released
    if since.epoch != epoch or since.offset > head or head - since.offset > history_size:
        return None
    history: list[SequencedEvent] = []
    if since.offset < head:
        if not recent or recent[0].offset > since.offset + 1 or recent[-1].offset != head:
            return None
        history = [e for e in recent if e.offset > since.offset]
        if any(e.epoch != epoch for e in history):
            return None
    workspace_id = room.workspace_id if not room.is_workspace else _id_of(workspace)
    if workspace_id is None:
        return None
    admission = Admission(
        workspace_id=workspace_id,
        position=Position(offset=head, epoch=epoch),
        workspace_head=Position(offset=workspace.released, epoch=workspace.sequencer.epoch),
    )
    return admission, history


def remember_member(rooms: dict[str, Room], user_id: str, admission: Admission) -> None:
    """After a database read admitted ``user_id`` (and the subscription is registered):
    remember the member if the workspace room here is sequenced in the same epoch and has
    released nothing after the read's workspace offset (see the module's guarantee)."""
    workspace = rooms.get(WORKSPACE_ROOM_PREFIX + admission.workspace_id)
    if workspace is None or workspace.sequencer is None:
        return
    head = admission.workspace_head
    if workspace.sequencer.epoch != head.epoch or workspace.released > head.offset:
        return
    if workspace.members is None:
        workspace.members = set()
    if len(workspace.members) < MAX_MEMBERS:
        workspace.members.add(user_id)


def remember_members(
    rooms: dict[str, Room], workspace_id: str, head: Position, user_ids: list[str]
) -> bool:
    """After a read of the workspace's members as of its room's ``head`` (one snapshot):
    remember them all, under the same condition as ``remember_member`` (the workspace room
    sequenced in that epoch, nothing released after ``head``), and mark the workspace read.
    False when the condition failed and nothing was remembered."""
    workspace = rooms.get(WORKSPACE_ROOM_PREFIX + workspace_id)
    if workspace is None or workspace.sequencer is None:
        return False
    if workspace.sequencer.epoch != head.epoch or workspace.released > head.offset:
        return False
    if workspace.members is None:
        workspace.members = set()
    room_for = MAX_MEMBERS - len(workspace.members)
    workspace.members.update(user_ids[: max(0, room_for)])
    workspace.members_read = True
    return True


def forget_member(workspace: Room | None, user_id: str) -> None:
    """``user_id`` was removed from the workspace (its ``member:removed`` was released)."""
    if workspace is not None and workspace.members is not None:
        workspace.members.discard(user_id)


def _workspace_of(rooms: dict[str, Room], room: Room) -> Room | None:
    if room.workspace_id is None:
        return None
    return rooms.get(WORKSPACE_ROOM_PREFIX + room.workspace_id)


def _id_of(workspace: Room) -> str:
    return workspace.name[len(WORKSPACE_ROOM_PREFIX) :]
