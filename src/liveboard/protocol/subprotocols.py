"""The WebSocket subprotocols liveboard speaks (CONTRACT §6.5), as pure functions.

A browser cannot set ``Authorization`` on a WebSocket, and a token in the URL ends up in proxy
logs and browser history. So an upgrade may carry its token as a subprotocol instead:
``Sec-WebSocket-Protocol: liveboard.v1, liveboard.token.<jwt>`` (the approach of Kubernetes and
Phoenix). The server selects ``liveboard.v1`` whenever it is offered and never echoes the token;
a browser fails a handshake whose answer names no subprotocol it offered, so a browser must offer
``liveboard.v1`` beside the token. A JWT is base64url segments joined by dots, all of them token
characters (RFC 9110 §5.6.2), so it is a valid subprotocol name as it stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: The protocol version a client offers and the server selects.
SUBPROTOCOL: Final = "liveboard.v1"
#: The prefix of the subprotocol entry that carries a token.
TOKEN_PREFIX: Final = "liveboard.token."


class AmbiguousTokenError(ValueError):
    """More than one ``liveboard.token.`` entry was offered: which one is meant is not knowable."""


def token_subprotocol(token: str) -> str:
    """The subprotocol entry that carries ``token``."""
    return TOKEN_PREFIX + token


def subprotocol_token(offered: Sequence[str]) -> str | None:
    """The token carried by ``offered``, or None if none is (an empty token counts as none).
    Raises ``AmbiguousTokenError`` when more than one entry carries one."""
    tokens = [entry[len(TOKEN_PREFIX) :] for entry in offered if entry.startswith(TOKEN_PREFIX)]
    if len(tokens) > 1:
        raise AmbiguousTokenError("more than one liveboard.token subprotocol offered")
    return tokens[0] or None if tokens else None


def selected_subprotocol(offered: Sequence[str]) -> str | None:
    """What the server answers in ``Sec-WebSocket-Protocol``: ``liveboard.v1`` if offered, else
    nothing (never a token entry)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None
