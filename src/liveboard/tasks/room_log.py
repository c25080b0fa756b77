"""The room log for other backends (CONTRACT §6.3-6.4): publish an event, read a room's history.

Guarantees:

* ``publish`` appends the event in a batch of the publishes that arrive together
  (``tasks.publish_batch``: group commit), in the order of the instance's ``EventWriter``, the
  one the task service writes with: it takes the room's next offset under the room's row lock,
  commits with its idempotency record (if any) and is handed to the publisher in offset order
  with every other event of the room. An event of a project room names its workspace room's
  head, as a task change does, so a member removed before it never receives it. Its
  ``userId`` is null.
* ``history`` reads the room's head, the oldest event kept and up to ``limit`` events after
  ``after`` in one snapshot: the page reflects the log at one instant, its events are
  consecutive offsets, and ``truncated`` is true exactly when some event after ``after`` and
  before the page is no longer kept. A cursor (the last offset of a page as the next
  ``after``) therefore returns every kept event once, in order, whatever pruning removes
  meanwhile (pruning only removes a room's oldest events; see ``tasks.retention``).
* A user reads a room as a subscribe would admit them (membership of its workspace), and gets
  the same not found for a room that does not exist and one they may not see; a service reads
  any room.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard import errors
from liveboard.auth import Actor
from liveboard.protocol import Position, Published, RoomHistory, RoomName
from liveboard.store import admission, eventlog
from liveboard.tasks.publish_batch import PublishBatcher
from liveboard.tasks.receipts import Receipt
from liveboard.tasks.writer import EventWriter

_encode = msgspec.json.Encoder().encode

__all__ = ["RoomLog"]


class RoomLog:
    """Publishing into rooms and reading their history (see the module)."""

    def __init__(self, writer: EventWriter) -> None:
        self._batcher = PublishBatcher(writer)
        self._db = writer.db

    @property
    def batcher(self) -> PublishBatcher:
        """Where publishes are grouped into transactions."""
        return self._batcher

    async def publish(
        self,
        actor: Actor,
        room: RoomName,
        type_: str,
        data: dict[str, Any],
        *,
        receipt: Receipt | None = None,
        data_json: bytes | None = None,
    ) -> Published:
        """Append ``type_``/``data`` to ``room`` (which must exist: not found otherwise).
        ``data_json``: ``data`` already encoded, if the caller has it. Only a service
        publishes (``actor.user_id`` None): its event has no user."""
        if actor.user_id is not None:
            raise errors.forbidden("this call needs an API key (Authorization: apikey <key>)")
        encoded = _encode(data) if data_json is None else data_json
        return await self._batcher.publish(room, type_, data, encoded.decode(), receipt)

    async def history(self, actor: Actor, room: RoomName, *, after: int, limit: int) -> RoomHistory:
        """Up to ``limit`` events of ``room`` with offset > ``after`` (see the module)."""
        name = str(room)
        async with self._db.read() as conn:
            head = await self._readable_head(conn, actor, room)
            oldest = await eventlog.oldest_offset(conn, name)
            events = await eventlog.read_events(
                conn, name, after=after, limit=limit, up_to=head.offset
            )
        missing_from = after + 1  # the first offset the caller asked for
        truncated = missing_from <= head.offset and (oldest is None or oldest > missing_from)
        return RoomHistory(
            events=list(events), offset=head.offset, epoch=head.epoch, truncated=truncated
        )

    async def _readable_head(self, conn: AsyncConnection, actor: Actor, room: RoomName) -> Position:
        """The room's head if the actor may read it; not found otherwise (see the module)."""
        name = str(room)
        if actor.user_id is None:
            position = await eventlog.room_position(conn, name)
        elif room.is_workspace:
            admitted = await admission.admit_workspace(conn, room.id, name, actor.user_id)
            position = None if admitted is None else admitted.position
        else:
            admitted = await admission.admit_project(conn, room.id, name, actor.user_id)
            position = None if admitted is None else admitted.position
        if position is None:
            raise errors.not_found("room not found")
        return position
