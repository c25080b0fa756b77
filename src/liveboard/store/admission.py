"""What admitting a subscription needs from the database, read in one query.

A subscribe is checked against membership and starts from the room's head; a project room also
needs its workspace room's head (the node watches it for ``member:removed``). Asked one by one
that is four queries, each a round trip through the driver; joined it is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import Position
from liveboard.protocol.rooms import WORKSPACE_ROOM_PREFIX
from liveboard.store.schema import members, projects, rooms


@dataclass(frozen=True, slots=True)
class Admission:
    """A subscription the database allows, and where its streams start."""

    workspace_id: str
    position: Position  # the room's head
    workspace_head: Position  # its workspace room's head (the same for a workspace room)


# Built once: a subscribe runs one of these, and building the statement (and its cache key)
# per call cost more CPU than running it.
_workspace_rooms = rooms.alias("workspace_rooms")
_ADMIT_PROJECT = (
    select(
        projects.c.workspace_id,
        rooms.c.last_offset,
        rooms.c.epoch,
        _workspace_rooms.c.last_offset,
        _workspace_rooms.c.epoch,
    )
    .select_from(
        projects.join(
            members,
            and_(
                members.c.workspace_id == projects.c.workspace_id,
                members.c.user_id == bindparam("user_id"),
            ),
        )
        .join(rooms, rooms.c.room == bindparam("room_name"))
        .join(
            _workspace_rooms,
            _workspace_rooms.c.room == literal(WORKSPACE_ROOM_PREFIX) + projects.c.workspace_id,
        )
    )
    .where(projects.c.id == bindparam("project_id"))
)
_ADMIT_WORKSPACE = (
    select(rooms.c.last_offset, rooms.c.epoch)
    .select_from(members.join(rooms, rooms.c.room == bindparam("room_name")))
    .where(
        members.c.workspace_id == bindparam("workspace_id"),
        members.c.user_id == bindparam("user_id"),
    )
)


async def admit_project(
    conn: AsyncConnection, project_id: str, room: str, user_id: str
) -> Admission | None:
    """None unless project ``project_id`` exists, ``user_id`` is a member of its workspace, and
    both ``room`` and the workspace's room exist."""
    params = {"project_id": project_id, "room_name": room, "user_id": user_id}
    row = (await conn.execute(_ADMIT_PROJECT, params)).first()
    if row is None:
        return None
    return Admission(
        workspace_id=str(row[0]),
        position=Position(offset=int(row[1]), epoch=str(row[2])),
        workspace_head=Position(offset=int(row[3]), epoch=str(row[4])),
    )


async def admit_workspace(
    conn: AsyncConnection, workspace_id: str, room: str, user_id: str
) -> Admission | None:
    """None unless ``user_id`` is a member of ``workspace_id`` and ``room`` exists."""
    params = {"workspace_id": workspace_id, "room_name": room, "user_id": user_id}
    row = (await conn.execute(_ADMIT_WORKSPACE, params)).first()
    if row is None:
        return None
    position = Position(offset=int(row[0]), epoch=str(row[1]))
    return Admission(workspace_id=workspace_id, position=position, workspace_head=position)
