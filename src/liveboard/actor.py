"""Who makes a request: a user, or a service holding an API key (CONTRACT §6.3).

``auth`` re-exports ``Actor``; it lives here so that its rule (a service has no user id, its
events carry ``userId: null``) sits apart from token verification.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a request: a user, or a service holding an API key (``user_id`` None, its
    key's id in ``api_key_id``), and the WebSocket connection it came from, if known.

    The REST layer builds it from a ``Principal`` (or an API key) and ``X-Connection-Id``; the
    task service takes it, so the service needs nothing of HTTP and the HTTP layer nothing of
    the service. The events a service causes carry ``userId: null``."""

    user_id: str | None
    origin: str | None = None
    api_key_id: str | None = None

    @classmethod
    def service(cls, api_key_id: str) -> Actor:
        """A service, acting with the API key whose id is ``api_key_id`` (CONTRACT §6.3)."""
        return cls(user_id=None, api_key_id=api_key_id)

    @property
    def is_service(self) -> bool:
        return self.user_id is None
