"""Connection ids bound to their user: minted by the server, checked by REST.

Events name the connection a change came from (``origin``), so every member of a room learns
the ids of the others' connections. REST refuses an ``X-Connection-Id`` of this form whose
digest is not the caller's (``issued_to_another``): a member cannot make another's tab take a
change for its own echo. The digest is not secret; the user id travels with the same events
(``userId``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["issued_to_another", "new_connection_id"]


def new_connection_id(user_id: str) -> str:
    """A connection id bound to its user: ``c_<16 random characters>.<digest of the user id>``."""
    return f"c_{secrets.token_urlsafe(12)}.{_user_digest(user_id)}"


def issued_to_another(connection_id: str, user_id: str) -> bool:
    """True when ``connection_id`` has the form of ``new_connection_id`` and was not issued to
    ``user_id``. Any other string names no connection of this server (a label a client chose,
    or an id from a version before ids were bound), and is not judged here."""
    prefix, dot, digest = connection_id.rpartition(".")
    if not dot or not prefix.startswith("c_"):
        return False
    return not hmac.compare_digest(digest, _user_digest(user_id))


def _user_digest(user_id: str) -> str:
    # 72 bits: finding another user id with the same digest is a second preimage of SHA-256.
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).digest()[:9]
    return base64.urlsafe_b64encode(digest).decode("ascii")
