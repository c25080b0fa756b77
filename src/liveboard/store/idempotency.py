"""Idempotency keys: the answer a user's keyed request got, kept for a while (CONTRACT §6.1).

Guarantees:

* ``record`` runs inside the request's own write transaction (the one that makes its change
  and appends its event) and costs that transaction one statement: an
  ``INSERT … ON CONFLICT DO NOTHING``. The key therefore exists if and only if the change
  committed. It returns False when the user already holds the key (committed): the caller then
  rolls its transaction back. On PostgreSQL, a key inserted by a transaction that has not
  ended yet makes the insert wait for that transaction (the primary key's uniqueness check),
  and then return False (it committed) or True (it rolled back).
* ``recall`` reads a stored answer in one statement, outside any transaction.
* ``prune`` deletes at most ``batch`` keys older than a cut-off per call, through the index on
  ``created_at``: a bounded statement, repeated by its caller until a batch comes back short.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Table, bindparam, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.store.schema import idempotency_keys, service_idempotency_keys

__all__ = ["Claim", "StoredAnswer", "prune", "recall", "record"]

_TABLES = (idempotency_keys, service_idempotency_keys)
_headers_encode = msgspec.json.Encoder().encode
_headers_decode = msgspec.json.Decoder(dict[str, str]).decode


class Claim(msgspec.Struct, frozen=True):
    """A caller's key and the fingerprint of the request that carries it.

    ``user_id`` is the caller: a user's id, or with ``service`` an API key's id; the two are
    kept in separate tables, so neither can hold the other's keys."""

    user_id: str
    key: str
    fingerprint: str
    service: bool = False


class StoredAnswer(msgspec.Struct, frozen=True):
    """What the request that first carried a key was answered, and that request's fingerprint."""

    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]


def _statements(table: Table) -> tuple[dict[str, Any], Any]:
    """The insert (per dialect) and the read of one table; its first column is the scope."""
    scope = table.c[0]
    row: dict[str, Any] = {
        scope.name: bindparam("user_id"),
        "key": bindparam("key"),
        "fingerprint": bindparam("fingerprint"),
        "status": bindparam("status"),
        "body": bindparam("body"),
        "headers": bindparam("headers"),
        "created_at": bindparam("created_at"),
    }
    # Both dialects spell ON CONFLICT DO NOTHING alike, through their own insert.
    record = {
        "postgresql": postgresql.insert(table)
        .values(row)
        .on_conflict_do_nothing(index_elements=[scope, table.c.key])
        .returning(table.c.created_at),
        "sqlite": sqlite.insert(table)
        .values(row)
        .on_conflict_do_nothing(index_elements=[scope, table.c.key])
        .returning(table.c.created_at),
    }
    recall = select(table.c.fingerprint, table.c.status, table.c.body, table.c.headers).where(
        scope == bindparam("user_id"), table.c.key == bindparam("key")
    )
    return record, recall


# Built once (a keyed mutation runs one): index 0 users', 1 services'.
_RECORD, _RECALL = zip(*(_statements(table) for table in _TABLES), strict=True)


async def record(
    conn: AsyncConnection,
    claim: Claim,
    *,
    status: int,
    body: bytes,
    headers: dict[str, str],
    now_ms: int,
) -> bool:
    """Store ``claim``'s answer in the caller's write transaction; False if the key is taken."""
    row = await conn.execute(
        _RECORD[claim.service][conn.dialect.name],
        {
            "user_id": claim.user_id,
            "key": claim.key,
            "fingerprint": claim.fingerprint,
            "status": status,
            "body": body,
            "headers": _headers_encode(headers).decode(),
            "created_at": now_ms,
        },
    )
    return row.first() is not None


async def recall(
    conn: AsyncConnection, user_id: str, key: str, *, service: bool = False
) -> StoredAnswer | None:
    """The answer stored for ``user_id``'s ``key`` (an API key id's, with ``service``), or None."""
    row = (await conn.execute(_RECALL[service], {"user_id": user_id, "key": key})).first()
    if row is None:
        return None
    return StoredAnswer(
        fingerprint=str(row.fingerprint),
        status=int(row.status),
        body=bytes(row.body),
        headers=_headers_decode(row.headers),
    )


async def prune(conn: AsyncConnection, *, older_than_ms: int, batch: int) -> int:
    """Delete up to ``batch`` keys created before ``older_than_ms`` from each table (users',
    then services'); return how many in all."""
    deleted = 0
    for table in _TABLES:
        scope = table.c[0]
        oldest = (
            select(scope, table.c.key)
            .where(table.c.created_at < older_than_ms)
            .order_by(table.c.created_at)
            .limit(batch)
        )
        result = await conn.execute(delete(table).where(tuple_(scope, table.c.key).in_(oldest)))
        deleted += int(result.rowcount or 0)
    return deleted
