"""The liveboard Python SDK: an asyncio client for the REST API and the real-time WebSocket.

::

    async with LiveboardClient("http://127.0.0.1:8000", token) as client:
        sub = await client.subscribe("project:prj_1")
        async for item in sub:
            ...  # Event, Resync, PresenceUpdate or Revoked

``Board`` keeps a project's tasks in sync (snapshot, then events). See docs/client.md for the
guarantees and the reconnect policy; ``liveboard.client.tail`` is the ``liveboard tail`` command.
"""

from liveboard.client.backoff import Backoff, CloseAction, close_action, full_jitter
from liveboard.client.board import Board
from liveboard.client.client import LiveboardClient
from liveboard.client.connection import ConnectionState
from liveboard.client.errors import (
    ApiError,
    ClientClosedError,
    ConnectionLostError,
    FatalConnectionError,
    LiveboardClientError,
)
from liveboard.client.messages import (
    PresenceUpdate,
    PresenceUser,
    Resync,
    Revoked,
    SubscriptionItem,
)
from liveboard.client.subscription import Subscription
from liveboard.client.tokens import TokenProvider, jwt_expiry
from liveboard.events import Event
from liveboard.realtime.protocol import StreamPosition
from liveboard.tasks.models import Project, Task, TaskSnapshot

__all__ = [
    "ApiError",
    "Backoff",
    "Board",
    "ClientClosedError",
    "CloseAction",
    "ConnectionLostError",
    "ConnectionState",
    "Event",
    "FatalConnectionError",
    "LiveboardClient",
    "LiveboardClientError",
    "PresenceUpdate",
    "PresenceUser",
    "Project",
    "Resync",
    "Revoked",
    "StreamPosition",
    "Subscription",
    "SubscriptionItem",
    "Task",
    "TaskSnapshot",
    "TokenProvider",
    "close_action",
    "full_jitter",
    "jwt_expiry",
]
