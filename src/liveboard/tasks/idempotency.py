"""``Idempotency-Key`` on every REST mutation (CONTRACT §6.1): the gate around their handlers.

A request with a key is answered in one of four ways:

* First time: it runs; its handler's service call stores the answer with the key in the
  change's own write transaction (``tasks.receipts``), so the key exists if and only if the
  change committed.
* Again, same request: the stored answer, byte for byte (status, body, ``ETag``,
  ``Liveboard-Offset``/``Liveboard-Epoch``); nothing runs, nothing is emitted.
* Again, different request: 422 ``validation_error``.
* Again while the first is still running on this instance: 409 ``conflict`` (details
  ``{"reason": "idempotency_key_in_flight"}``), at once.

How a repeat is recognised costs a mutation no statement before its work: the repeat runs, and
the key's ``INSERT … ON CONFLICT DO NOTHING`` at the end of its transaction finds the key taken
(``KeyTakenError``), which rolls the whole attempt back; or the repeat fails earlier (the first
deleted the task: 404; added the member: 409), which rolled it back as well. Either way the gate
then reads the key (one statement, on that path only) and answers from it; with no key stored
the failure stands. On PostgreSQL a repeat arriving at another instance while the first runs
waits for the first's row locks (the task's, the room's, the key's own unique index entry),
then answers from the key the first committed (or runs, if the first rolled back): the client
gets the first's answer instead of a 409.

"Same request" is the same method, path (as sent, query included), ``If-Match`` and body bytes:
the fingerprint is SHA-256 over them. Bytes, not a canonical JSON: a retry re-sends the bytes
it sent (every SDK does), hashing them is exact and cheap, and no canonical form has to decide
whether ``1`` and ``1.0`` or a repeated member are the same. ``X-Connection-Id`` is left out:
a retry after a reconnect comes from a new connection and is still the same change.

Failures are not stored: a 4xx or 5xx rolled its transaction back and changed nothing, so a
retry runs again and is answered from the state it finds (the IETF draft leaves which answers
to keep to the server; Stripe, its model, does not keep requests that failed validation or
conflicted). Keys are pruned ``settings.idempotency_ttl`` after they were stored, by
``prune_forever``: at most ``PRUNE_BATCH`` rows per statement, every ``PRUNE_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from liveboard import errors
from liveboard.rest import idempotency_scope, read_raw
from liveboard.store import idempotency
from liveboard.store.database import Database
from liveboard.store.idempotency import Claim, StoredAnswer
from liveboard.tasks.receipts import Answer, KeyTakenError

__all__ = ["GATE_KEY", "HEADER", "IdempotencyGate", "answer_response"]

log = logging.getLogger("liveboard.idempotency")

HEADER: Final = "Idempotency-Key"
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
PRUNE_INTERVAL: Final = 60.0
PRUNE_BATCH: Final = 1000
#: Batches per round at most: a backlog is worked off over several rounds, never in one burst.
PRUNE_ROUNDS: Final = 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLAIM_KEY: Final = web.RequestKey("idempotency_claim", Claim)


def answer_response(answer: Answer | StoredAnswer) -> web.Response:
    """The HTTP response of an answer, first sent or replayed alike."""
    return web.Response(
        status=answer.status,
        body=answer.body or None,
        headers=answer.headers,
        content_type="application/json" if answer.body else None,
    )


def fingerprint(request: web.Request, body: bytes) -> str:
    """SHA-256 of what makes two requests the same (see the module)."""
    digest = hashlib.sha256()
    for part in (request.method, request.raw_path, request.headers.get("If-Match", "")):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyGate:
    """This instance's keyed requests in flight, and the way back to stored answers."""

    def __init__(self, db: Database, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._in_flight: set[tuple[str, str, bool]] = set()

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Serve a mutation: as is without a key, else as the module says."""
        values = request.headers.getall(HEADER, ())
        if not values:
            return await handler(request)
        if len(values) > 1 or _KEY.fullmatch(values[0]) is None:
            raise errors.bad_request(
                f"{HEADER} must be one value of 1 to 255 printable ASCII characters"
            )
        caller, service = idempotency_scope(request)
        claim = Claim(caller, values[0], fingerprint(request, await read_raw(request)), service)
        slot = (caller, claim.key, service)
        if slot in self._in_flight:
            raise errors.conflict(
                f"a request with this {HEADER} is still in progress; retry once it has ended",
                details={"reason": "idempotency_key_in_flight"},
            )
        self._in_flight.add(slot)
        try:
            request[CLAIM_KEY] = claim
            try:
                return await handler(request)
            except Exception as failure:  # KeyTakenError, ApiError, a database error: rolled back
                stored = await self._recall(claim)
                if stored is None:
                    if isinstance(failure, KeyTakenError):  # pruned in between: cannot say
                        raise errors.conflict(f"retry this {HEADER}") from None
                    raise
                if stored.fingerprint != claim.fingerprint:
                    raise errors.validation_error(
                        HEADER, "this key was used for a different request"
                    ) from None
                return answer_response(stored)
        finally:
            self._in_flight.discard(slot)

    async def _recall(self, claim: Claim) -> StoredAnswer | None:
        async with self._db.read_one() as conn:
            return await idempotency.recall(conn, claim.user_id, claim.key, service=claim.service)

    async def prune(self) -> int:
        """Delete the keys older than the TTL, a batch at a time; return how many."""
        cutoff = int((self._clock() - self._ttl) * 1000)
        total = 0
        for _ in range(PRUNE_ROUNDS):
            async with self._db.write() as conn:
                deleted = await idempotency.prune(conn, older_than_ms=cutoff, batch=PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        return total

    async def prune_forever(self) -> None:
        """``prune`` every ``PRUNE_INTERVAL``; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                await self.prune()
            except Exception:
                log.warning("pruning idempotency keys failed", exc_info=True)


GATE_KEY: Final = web.AppKey("idempotency_gate", IdempotencyGate)
