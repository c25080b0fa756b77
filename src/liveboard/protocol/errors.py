"""The protocol's error: a client message the server will not act on (CONTRACT §4 ``error``).

``ProtocolError`` is the root of this package's exceptions and derives from ``Exception`` only:
the package imports nothing of liveboard, so it cannot sit under ``liveboard.errors``'s
``LiveboardError``. It carries the same data (``code``, ``message``), so a caller handles it the
same way.
"""

from __future__ import annotations

from typing import Final, TypeAlias

__all__ = ["ERROR_CODES", "MessageId", "ProtocolError"]

ERROR_CODES: Final[frozenset[str]] = frozenset(
    {
        "bad_json",
        "invalid_message",
        "unknown_type",
        "invalid_room",
        "forbidden",
        "not_subscribed",
        "too_many_subscriptions",
        "rate_limited",
        "unauthorized",
    }
)
"""The codes an ``error`` message may carry, the contract's closed list."""

MessageId: TypeAlias = str | int | None
"""A client's request id, echoed in the direct reply; ``None`` when the client gave none."""


class ProtocolError(Exception):
    """A client message the server will not act on; answered with ``error``, never fatal.

    ``code`` is one of ``ERROR_CODES``; ``message`` is for humans; ``id`` is the client's
    message id when one could be read, else ``None``. ``abusive`` is False for a request that
    found nothing to undo (an ``unsubscribe`` or a presence ``leave`` of a room the connection
    is not subscribed to): a client that cleans up everything it may hold, after a revocation or
    on a page change, is not misbehaving, and such errors do not count towards the 1008 close.
    """

    def __init__(
        self, code: str, message: str, id: MessageId = None, *, abusive: bool = True
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.abusive = abusive

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, id={self.id!r})"
