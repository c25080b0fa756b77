"""A task's edit or deletion as one autocommitted statement on PostgreSQL.

For ``tasks.single_write``. Statements sent as text to a pooled asyncpg connection outside any
transaction (``Database.driver``): asyncpg prepares each once per connection and keeps it
(unnamed each time under PgBouncer), and SQLAlchemy's compile and result layers, which cost
more CPU than the statements, are not on the path. ``{…}`` are table names (``Database.table``).

* ``read``: the task, its project, the caller's role and (when an assignee is given) the
  assignee's role in the project's workspace, its fields' versions: one snapshot, no lock.
* ``edit`` / ``delete``: compare-and-set on the version ``read`` saw. The task's UPDATE (or
  DELETE) ``WHERE id = … AND version = …``; the room's head moves only if it changed a row, and
  the event is appended at that head (gap-free, as ``eventlog.append_event``), naming the
  workspace room's head read with ``FOR SHARE`` (see ``eventlog``); with a key, the answer is
  stored under it, its headers completed with the event's position. All in one statement, so
  the task's and the room's row locks are taken and let go of within it: no writer of the task
  or the room ever waits on a round trip to this process. No row back: the task changed (or
  went) since ``read``, nothing was written. A key the caller already holds (committed, or
  committed meanwhile by a transaction the insert waited for) fails the statement with a
  unique violation (``KeyHeldError``), which undoes all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import msgspec

from liveboard.protocol import Position, Project, Role, Task
from liveboard.store.schema import FIELD_VERSION_COLUMNS, idempotency_keys

__all__ = ["Appended", "KeyHeldError", "Read", "Statements", "StoredAnswer"]

_decode_statuses = msgspec.json.Decoder(list[str]).decode
_encode = msgspec.json.Encoder().encode

_READ = """
SELECT t.id, t.project_id, t.title, t.description, t.status, t.sort_order, t.sort_rank,
  t.assignee_id, t.created_by_id, t.version, t.created_at, t.updated_at,
  t.title_version, t.description_version, t.assignee_version, t.fields_at,
  p.workspace_id, p.name AS project_name, p.statuses, p.created_at AS project_created_at,
  m.role,
  (SELECT a.role FROM {members} a WHERE a.workspace_id = p.workspace_id AND a.user_id = $3::text)
    AS assignee_role
FROM {tasks} t
JOIN {projects} p ON p.id = t.project_id
LEFT JOIN {members} m ON m.workspace_id = p.workspace_id AND m.user_id = $2::text
WHERE t.id = $1::text
"""

# $1 room, $2 depended room, $3 task id, $4 version read; $5-$9 the event's type, ts, user,
# origin, data; then the change's own, then the key's.
_APPEND = """
head AS (
  UPDATE {rooms} SET last_offset = last_offset + 1
  WHERE room = $1::text AND EXISTS (SELECT 1 FROM change)
  RETURNING last_offset, epoch
), appended AS (
  INSERT INTO {events} (room, "offset", epoch, type, ts, user_id, origin, data)
  SELECT $1::text, head.last_offset, head.epoch, $5::text, $6::bigint, $7::text, $8::text,
    $9::text
  FROM head
  RETURNING "offset", epoch,
    (SELECT d.last_offset FROM {rooms} d WHERE d.room = $2::text FOR SHARE) AS depended
)"""
_EDIT = (
    """
WITH change AS (
  UPDATE {tasks} SET title = $10::text, description = $11::text, assignee_id = $12::text,
    title_version = $13::int, description_version = $14::int, assignee_version = $15::int,
    fields_at = $16::int, version = $16::int, updated_at = $17::text
  WHERE id = $3::text AND version = $4::int
  RETURNING id
), """
    + _APPEND
)
_DELETE = (
    """
WITH change AS (
  DELETE FROM {tasks} WHERE id = $3::text AND version = $4::int RETURNING id
), """
    + _APPEND
)
_RETURN = """
SELECT "offset", epoch, depended FROM appended"""
# The answer under the caller's key: its headers are the JSON object ``$n+3`` without its
# closing brace (and a comma when it has members), then the event's position.
_KEEP = """, kept AS (
  INSERT INTO {idempotency_keys} (user_id, key, fingerprint, status, body, headers, created_at)
  SELECT ${k}::text, ${k1}::text, ${k2}::text, ${k3}::int, ${k4}::bytea,
    ${k5}::text || '"Liveboard-Offset":' || to_json("offset"::text)::text
      || ',"Liveboard-Epoch":' || to_json(epoch)::text || '}}}}',
    ${k6}::bigint
  FROM appended
)"""
_EDIT_PARAMS = 8  # $10-$17
_DELETE_PARAMS = 0


def _with_key(statement: str, first: int) -> str:
    """``statement`` storing the answer under a key, its parameters from ``$first``."""
    names = {"k": first, **{f"k{i}": first + i for i in range(1, 7)}}
    return statement + _KEEP.format(idempotency_keys="{idempotency_keys}", **names) + _RETURN


class StoredAnswer(NamedTuple):
    """What to store under a key: the caller, the key, the request's fingerprint, and the
    answer (its headers still without the event's position)."""

    user_id: str
    key: str
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    now_ms: int

    def params(self) -> tuple[Any, ...]:
        encoded = _encode(self.headers)
        prefix = encoded[:-1] + (b"," if self.headers else b"")
        fixed = (self.user_id, self.key, self.fingerprint, self.status, self.body)
        return (*fixed, prefix.decode(), self.now_ms)


class KeyHeldError(Exception):
    """The caller already holds the key: nothing was written."""


class Read(NamedTuple):
    """A task as ``read`` found it, with what the rules need around it (see
    ``records.LockedTask``; here not locked)."""

    task: Task
    project: Project
    #: The caller's role in the project's workspace; None: not a member.
    role: Role | None
    #: The assignee's role there (None: not a member, or no assignee asked about).
    assignee_role: Role | None
    field_versions: dict[str, int | None]
    fields_at: int | None


class Appended(NamedTuple):
    """Where the event landed, and the head of the room it depends on."""

    position: Position
    depended: int


class Statements:
    """The statements with one database's table names."""

    def __init__(self, table: Callable[[str], str]) -> None:
        names = {t: table(t) for t in ("tasks", "projects", "members", "rooms", "events")} | {
            "idempotency_keys": table(idempotency_keys.name)
        }
        self._read = _READ.format(**names)
        self._edit = (_EDIT + _RETURN).format(**names)
        self._delete = (_DELETE + _RETURN).format(**names)
        self._edit_keyed = _with_key(_EDIT, 10 + _EDIT_PARAMS).format(**names)
        self._delete_keyed = _with_key(_DELETE, 10 + _DELETE_PARAMS).format(**names)

    async def read(
        self, driver: Any, task_id: str, user_id: str, assignee_id: str | None
    ) -> Read | None:
        """The task (see the module); None if there is no such task."""
        row = await driver.fetchrow(self._read, task_id, user_id, assignee_id)
        if row is None:
            return None
        task = Task(
            id=row[0],
            project_id=row[1],
            title=row[2],
            description=row[3],
            status=row[4],
            order=float(row[5]),
            rank=row[6],
            assignee_id=row[7],
            created_by_id=row[8],
            version=int(row[9]),
            created_at=row[10],
            updated_at=row[11],
        )
        project = Project(
            id=row[1],
            workspace_id=row[16],
            name=row[17],
            statuses=_decode_statuses(row[18]),
            created_at=row[19],
        )
        field_versions = dict(zip(FIELD_VERSION_COLUMNS, (row[12], row[13], row[14]), strict=True))
        return Read(
            task,
            project,
            cast("Role | None", row[20]),
            cast("Role | None", row[21]),
            field_versions,
            row[15],
        )

    async def edit(
        self,
        driver: Any,
        event: tuple[Any, ...],
        task: Task,
        field_versions: dict[str, int],
        key: StoredAnswer | None,
    ) -> Appended | None:
        """Write ``task`` (the edited task, at its new version) over the version before it,
        appending ``event`` (``event_params``); None if the task is no longer at that version.
        ``field_versions``: each editable field's version (``merge.next_field_versions``)."""
        change = (
            task.title,
            task.description,
            task.assignee_id,
            *(field_versions[f] for f in FIELD_VERSION_COLUMNS),
            task.version,
            task.updated_at,
        )
        statement = self._edit if key is None else self._edit_keyed
        return await _run(driver, statement, (*event, *change), key)

    async def delete(
        self, driver: Any, event: tuple[Any, ...], key: StoredAnswer | None
    ) -> Appended | None:
        """Delete the task if still at the version read, appending ``event``; None if not."""
        statement = self._delete if key is None else self._delete_keyed
        return await _run(driver, statement, event, key)


def event_params(
    *,
    room: str,
    depends_on: str,
    task_id: str,
    version: int,
    type_: str,
    ts: int,
    user_id: str,
    origin: str | None,
    data: str,
) -> tuple[Any, ...]:
    """``$1``-``$9`` of ``edit``/``delete``: the event's, and the task's id and version."""
    return (room, depends_on, task_id, version, type_, ts, user_id, origin, data)


async def _run(
    driver: Any, statement: str, params: tuple[Any, ...], key: StoredAnswer | None
) -> Appended | None:
    if key is not None:
        params = (*params, *key.params())
    try:
        row = await driver.fetchrow(statement, *params)
    except asyncpg.UniqueViolationError as error:
        if getattr(error, "table_name", None) == idempotency_keys.name:
            raise KeyHeldError from error
        raise
    if row is None:
        return None
    return Appended(Position(offset=int(row[0]), epoch=str(row[1])), int(row[2] or 0))
