"""What one mutation request and the task service hand each other (CONTRACT §6.1).

In: how to turn the service's result into the request's answer (``render``), and the request's
idempotency key, if it carries one (a ``Claim``). Out: the answer, headers included, with the
position of the event the mutation emitted.

Guarantees of ``Receipt.settle``, which each mutation of ``TaskService`` calls once, last,
inside its write transaction:

* The answer is rendered there, so the answer stored for a key is byte for byte the one sent.
* The answer names the mutation's event: ``Liveboard-Offset`` and ``Liveboard-Epoch`` are its
  event's position when it emitted one, and absent when it emitted nothing. Every mutation
  emits at most one event today (a task's in its project room; a member's or a project's in
  its workspace room, the room a client watching that list subscribes to); one that emitted
  several would name the first it appended.
* With a claim, the answer is stored in the same transaction (one statement,
  ``store.idempotency.record``). If the user already holds the key, ``KeyTakenError`` is raised,
  which rolls the transaction back: nothing of this attempt commits or is published.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import Position
from liveboard.store import idempotency
from liveboard.store.idempotency import Claim
from liveboard.tasks.publish_order import Outbox

__all__ = ["EPOCH_HEADER", "OFFSET_HEADER", "Answer", "KeyTakenError", "Receipt", "settle"]

OFFSET_HEADER: Final = "Liveboard-Offset"
EPOCH_HEADER: Final = "Liveboard-Epoch"


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer as data: status, body bytes (JSON, or empty) and headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class KeyTakenError(Exception):
    """The user already holds this idempotency key: roll back, then answer from the key."""


class Receipt:
    """One mutation request's dealings with the service (see the module)."""

    __slots__ = ("_render", "answer", "claim")

    def __init__(self, render: Callable[[Any], Answer], claim: Claim | None = None) -> None:
        self._render = render
        self.claim = claim
        self.answer: Answer | None = None

    def render(self, result: Any, position: Position | None = None) -> Answer:
        """The answer to ``result``, naming the event at ``position`` (if any), not stored: for
        a write that stores it under its key itself (``tasks.single_write``, which names the
        position later with ``complete``) or answers it itself (``tasks.publish_batch``)."""
        return _positioned(self._render(result), position)

    def complete(self, answer: Answer, position: Position | None) -> None:
        """``answer`` naming the event at ``position`` (if any) is this receipt's answer."""
        self.answer = _positioned(answer, position)

    async def settle(self, conn: AsyncConnection, result: Any, position: Position | None) -> None:
        """Render the answer to ``result`` and, with a claim, store it (see the module)."""
        answer = self.render(result, position)
        if self.claim is not None:
            stored = await idempotency.record(
                conn,
                self.claim,
                status=answer.status,
                body=answer.body,
                headers=answer.headers,
                now_ms=time.time_ns() // 1_000_000,
            )
            if not stored:
                raise KeyTakenError
        self.answer = answer


def _positioned(answer: Answer, position: Position | None) -> Answer:
    """``answer`` with the headers naming the event at ``position`` (if any)."""
    if position is not None:
        answer.headers[OFFSET_HEADER] = str(position.offset)
        answer.headers[EPOCH_HEADER] = position.epoch
    return answer


async def settle(
    conn: AsyncConnection, outbox: Outbox, receipt: Receipt | None, result: Any
) -> None:
    """A mutation's last step in its transaction: settle its receipt, if it has one, naming the
    first event its outbox holds (the mutation's event; see the module)."""
    if receipt is not None:
        await receipt.settle(conn, result, outbox.first_position())
