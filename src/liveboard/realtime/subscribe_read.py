"""What a subscribe reads from the database before it is registered: membership, where its
stream starts and, with ``since``, the missed events (``Node._admit`` does the rest).

Guarantees: the read is one snapshot, so no event committed after it can be missed and none
before it is sent twice (the node registers the subscriber in the hub before reading). With
``since``, ``recovered`` is the contract's (§5.3): the epoch matches, ``since`` is not ahead
of the room, the log still holds ``since.offset + 1``, and the room is at most
``history_size`` events past it; the history is then every event after ``since`` up to the
head (at most ``repair.READ_BATCH``; the node reads the rest).

How, per database:

* PostgreSQL, with ``since`` (a reconnect): one statement (``store.admission.recover``) on the
  asyncpg connection, outside a transaction, prepared once per pooled connection. At most the
  pool's kept connections read at once: in a reconnect storm the reads queue here rather than
  open (and close again) overflow connections, whose connects cost more than the reads.
* PostgreSQL without ``since``: the admission alone, one statement in autocommit.
* SQLite: a snapshot transaction (no round trips to save).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from liveboard.protocol import BrokerEvent, Position, SequencedEvent
from liveboard.realtime import hub, repair
from liveboard.realtime.ordering import is_recovered
from liveboard.store import eventlog
from liveboard.store.admission import (
    Admission,
    admit_project,
    admit_workspace,
    recover,
    recovery_statements,
)
from liveboard.store.database import Database


@dataclass(frozen=True, slots=True)
class SubscribeRead:
    """A subscription the database allows: its admission, ``recovered`` (None without
    ``since``) and the history to send (empty unless recovered)."""

    admission: Admission
    recovered: bool | None
    history: Sequence[SequencedEvent]
    #: Events up to the room's head, without a hole, of its epoch (possibly none): what the
    #: hub keeps as the room's recent events if this read starts its sequence.
    recent: Sequence[BrokerEvent] = ()


def may_recover(since: Position, position: Position, oldest: int | None, history_size: int) -> bool:
    """The contract's ``recovered`` for ``since`` against the room's head and the oldest
    offset its log holds (None: none), within ``history_size`` events."""
    return (
        is_recovered(
            since,
            position.epoch,
            position.offset,
            position.offset + 1 if oldest is None else oldest,
        )
        and position.offset - since.offset <= history_size
    )


class SubscribeReader:
    """Reads subscribes for one node (see the module's guarantees)."""

    def __init__(self, db: Database, history_size: int) -> None:
        self.db = db
        self.history_size = history_size
        self._statements = None if db.is_sqlite else recovery_statements(db.table)
        self._slots = asyncio.Semaphore(max(1, db.pool_size))

    async def read(
        self, kind: str, rid: str, room: str, user_id: str, since: Position | None
    ) -> SubscribeRead | None:
        """None when ``user_id`` may not subscribe to ``room`` (of kind ``kind``, id ``rid``)."""
        if since is not None and self._statements is not None:
            statement = self._statements[0] if kind == "project" else self._statements[1]
            async with self._slots, self.db.driver() as driver:
                found = await recover(
                    driver,
                    statement,
                    rid=rid,
                    room=room,
                    user_id=user_id,
                    since=since,
                    history_size=self.history_size,
                    limit=repair.READ_BATCH,
                    recent=hub.RECENT,
                )
            if found is None:
                return None
            admission, oldest, history = found.admission, found.oldest, found.history
            recent = _tail(found.read, admission.position)
        else:
            # Without ``since`` the admission is the only statement: no transaction needed.
            reading = self.db.read() if since is not None else self.db.read_one()
            async with reading as conn:
                admit = admit_project if kind == "project" else admit_workspace
                found_one = await admit(conn, rid, room, user_id)
                if found_one is None:
                    return None
                admission, oldest, history, recent = found_one, None, [], []
                if since is not None:
                    oldest = await eventlog.oldest_offset(conn, room)
                    head = admission.position
                    if may_recover(since, head, oldest, self.history_size):
                        history = await eventlog.read_events(
                            conn,
                            room,
                            after=since.offset,
                            up_to=head.offset,
                            limit=repair.READ_BATCH,
                        )
        if since is None:
            return SubscribeRead(admission, None, [])
        recovered = may_recover(since, admission.position, oldest, self.history_size)
        return SubscribeRead(admission, recovered, history if recovered else [], recent)


def _tail(events: list[BrokerEvent], head: Position) -> list[BrokerEvent]:
    """The last events of ``events`` that end at ``head`` without a hole, in its epoch."""
    tail: list[BrokerEvent] = []
    expected = head.offset
    for event in reversed(events[-hub.RECENT :]):
        if event.offset != expected or event.epoch != head.epoch:
            break
        tail.append(event)
        expected -= 1
    tail.reverse()
    return tail
