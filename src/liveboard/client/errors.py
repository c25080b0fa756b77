"""Errors the client SDK raises. Every one is a ``LiveboardClientError(code, message)``.

::

    LiveboardClientError        an ``error`` reply to a request (``code`` from CONTRACT §4)
    ├── ApiError                a REST error: ``status`` plus the body's ``code`` and ``message``
    ├── ConnectionLostError     the link dropped before a reply came; the SDK reconnects
    ├── ClientClosedError       the client was closed (``aclose``) or has failed for good
    └── FatalConnectionError    the SDK will not reconnect: 401 or 4001 with a static token, or
                                a close code that means a client bug (1003, 1008, 1009);
                                ``close_code``
"""

from __future__ import annotations


class LiveboardClientError(Exception):
    """A failure with a machine-readable ``code`` and a human ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class ApiError(LiveboardClientError):
    """A REST call answered with an error status (CONTRACT §3); ``reason`` is the body's
    ``details.reason`` when it has one (e.g. ``idempotency_key_in_flight`` on a 409)."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(code, message)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


class ConnectionLostError(LiveboardClientError):
    """The WebSocket went away (or was not there) before the request was answered.

    Nothing is lost for subscriptions: the SDK reconnects and resubscribes by itself.
    """

    def __init__(self, message: str = "not connected") -> None:
        super().__init__("connection_lost", message)


class ClientClosedError(LiveboardClientError):
    """The client is closed: it was ``aclose``-d, or it stopped after a fatal error."""

    def __init__(self, message: str = "the client is closed") -> None:
        super().__init__("closed", message)


class FatalConnectionError(LiveboardClientError):
    """A condition reconnecting cannot fix; the client stops (state ``closed``, ``error`` set).

    ``close_code`` is the WebSocket close code when the server closed the socket (4001 with
    ``code == "unauthorized"``: a static token expired), else None (``"unauthorized"``: the
    upgrade was refused with 401 and the token is static).
    """

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(code, message)
        self.close_code = close_code
