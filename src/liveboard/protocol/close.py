"""WebSocket close codes (CONTRACT §4) and what a client does after each: the reconnect policy.

``CloseCode`` names every code liveboard sends or reacts to. ``close_action(code)`` is the
policy every client follows, pure (no I/O, no clock): which closes to retry with backoff, which
after an extra random delay, which after a new token, and which never.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["CloseAction", "CloseCode", "close_action"]


class CloseCode(enum.IntEnum):
    """The close codes of CONTRACT §4, plus the RFC 6455 ones the policy reacts to."""

    NORMAL = 1000
    """The connection did its job (a client closing, a server shutting a socket down cleanly)."""
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    """A frame broke RFC 6455 (e.g. an unmasked client frame)."""
    UNSUPPORTED_DATA = 1003
    """A binary frame: the protocol is text only."""
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    """Persistent abuse: too many messages, or too many invalid ones."""
    MESSAGE_TOO_BIG = 1009
    """A message larger than ``LIVEBOARD_MAX_MESSAGE_BYTES``."""
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    RESTARTING = 1012
    """The server is restarting: reconnect after a random delay."""
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4001
    """The token's ``exp`` passed without a ``refresh``."""
    SLOW_CONSUMER = 4008
    """The connection's unsent data passed the server's bound."""


class CloseAction(enum.Enum):
    """What to do after the server closed the socket (or the link dropped)."""

    RECONNECT = "reconnect"
    """Reconnect with backoff (dropped link, 1000/1001, 1011, 4008, anything unknown)."""
    RECONNECT_LATER = "reconnect_later"
    """The server is restarting (1012) or overloaded (1013): backoff plus a random delay."""
    NEW_TOKEN = "new_token"
    """The token expired (4001): get a new one from the provider and reconnect; a fixed token
    cannot be renewed, so the client stops."""
    FATAL = "fatal"
    """A client bug the server will refuse again (1002, 1003, 1007, 1008, 1009, 1010): stop."""


_FATAL: Final = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_PAYLOAD,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.MANDATORY_EXTENSION,
    }
)
_LATER: Final = frozenset({CloseCode.RESTARTING, CloseCode.TRY_AGAIN_LATER})


def close_action(code: int | None) -> CloseAction:
    """The client's reaction to close ``code`` (None: the link dropped without a close frame)."""
    if code in _FATAL:
        return CloseAction.FATAL
    if code in _LATER:
        return CloseAction.RECONNECT_LATER
    if code == CloseCode.TOKEN_EXPIRED:
        return CloseAction.NEW_TOKEN
    return CloseAction.RECONNECT
