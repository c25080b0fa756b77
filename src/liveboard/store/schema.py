"""The relational schema, one definition for SQLite and PostgreSQL.

Timestamps are stored as ISO 8601 UTC text with millisecond precision
(``2026-11-26T03:09:08.123Z``): they sort correctly as text and read back the same on both
databases. Event times (``ts``) are unix milliseconds, as sent on the wire.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

#: A rank (``liveboard.protocol.ranks``): ASCII, compared byte by byte on both databases.
RANK_TYPE = String(64).with_variant(String(64, collation="C"), "postgresql")

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", String(32), nullable=False),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", String(32), nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", String(32), nullable=False),
    PrimaryKeyConstraint("workspace_id", "user_id"),
    Index("ix_members_user", "user_id"),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("statuses", Text, nullable=False),  # JSON array of strings
    Column("created_at", String(32), nullable=False),
    Index("ix_projects_workspace", "workspace_id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(64), nullable=False),
    Column("sort_order", Float, nullable=False),
    Column("assignee_id", String(255), nullable=True),
    Column("created_by_id", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    # Migration 2, what lets an edit from a stale version be merged (tasks/merge.py): the
    # task's version when each editable field got its current value, and the version whose
    # write recorded them (fields_at). fields_at other than version: the task's last change was
    # made by a release that records none of this (NULL: a row older than these columns).
    Column("title_version", Integer, nullable=True),
    Column("description_version", Integer, nullable=True),
    Column("assignee_version", Integer, nullable=True),
    Column("fields_at", Integer, nullable=True),
    # Migration 7: the task's rank in its column (liveboard.protocol.ranks), the display order.
    # Compared byte by byte: PostgreSQL's "C" collation, SQLite's default (BINARY).
    Column("sort_rank", RANK_TYPE, nullable=False),
    Index("ix_tasks_project_status_order", "project_id", "status", "sort_order"),
    Index("ix_tasks_project_status_rank", "project_id", "status", "sort_rank"),
)

#: The column of ``tasks`` recording when each editable field (``Task``'s name) was last set.
FIELD_VERSION_COLUMNS: dict[str, str] = {
    "title": "title_version",
    "description": "description_version",
    "assignee_id": "assignee_version",
}
#: The columns migration 2 adds to ``tasks``.
MERGE_COLUMNS: tuple[str, ...] = (*FIELD_VERSION_COLUMNS.values(), "fields_at")

# One row per room: the head of its event log. Incrementing last_offset in the same transaction
# as the change is what makes offsets gap-free: the row lock serialises writers of one room.
rooms = Table(
    "rooms",
    metadata,
    Column("room", String(160), primary_key=True),
    Column("epoch", String(32), nullable=False),
    Column("last_offset", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("room", String(160), nullable=False),
    Column("offset", BigInteger, nullable=False, autoincrement=False),
    Column("epoch", String(32), nullable=False),
    # Up to 64 characters since migration 5 (custom event types, CONTRACT §6.3).
    Column("type", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    # '' for an event no user caused (a service's: ``userId: null``): NOT NULL stays, so that
    # no SQLite table has to be rebuilt; ``eventlog`` reads '' and NULL alike as null.
    Column("user_id", String(255), nullable=False),
    Column("origin", String(128), nullable=True),
    Column("data", Text, nullable=False),  # JSON object, the envelope's `data`
    PrimaryKeyConstraint("room", "offset"),
)


# One row per Idempotency-Key of a user: the answer its request got (CONTRACT §6.1). Written by
# the request's own write transaction, so a key exists if and only if its change committed.
# ``created_at`` (unix ms) is what pruning reads, in batches, through its index.
def _idempotency_table(name: str, scope: str) -> Table:
    """A table of idempotency keys whose owner (the key's scope) is the column ``scope``."""
    return Table(
        name,
        metadata,
        Column(scope, String(255), nullable=False),
        Column("key", String(255), nullable=False),
        Column("fingerprint", String(64), nullable=False),  # sha256 of the request, hex
        Column("status", Integer, nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),  # JSON object: the answer's headers
        Column("created_at", BigInteger, nullable=False),
        PrimaryKeyConstraint(scope, "key"),
        Index(f"ix_{name}_created_at", "created_at"),
    )


idempotency_keys = _idempotency_table("idempotency_keys", "user_id")
# The same for services (CONTRACT §6.3): keyed by the API key's id (``apikeys.key_id``). A
# table of its own, not a prefix in ``user_id``: any text may be a user id (a token's ``sub``),
# so no value there could be kept for services without a user being able to hold it too.
service_idempotency_keys = _idempotency_table("service_idempotency_keys", "api_key_id")
