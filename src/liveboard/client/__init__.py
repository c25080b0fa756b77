"""The liveboard Python SDK: an asyncio client for the REST API and the real-time WebSocket.

::

    async with LiveboardClient("http://127.0.0.1:8000", token) as client:
        sub = await client.subscribe("project:prj_1")
        async for item in sub:
            ...  # Event, Resync, PresenceUpdate or Revoked

``Board`` keeps a project's tasks in sync (snapshot, then events). ``ServiceClient`` is the
REST side for another backend holding a service key (its own ids, ``publish``). See
docs/client.md for the guarantees and the reconnect policy; ``liveboard.client.tail`` is the
``liveboard tail`` command. The wire's types re-exported here (``Event``, ``Position``,
``Task``, ``CloseCode``, …) are ``liveboard.protocol``'s, the one package the SDK shares with
the server.

Installed without the server, this is the ``liveboard-client`` distribution (with
``liveboard-protocol``): it needs aiohttp and msgspec only, and importing it imports neither
SQLAlchemy, asyncpg nor redis (docs/client.md, "Installing the client alone").
"""

from liveboard.client.backoff import Backoff, full_jitter
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
from liveboard.client.messages import Resync, Revoked, SubscriptionItem
from liveboard.client.service import ServiceClient
from liveboard.client.subscription import Subscription
from liveboard.client.tokens import TokenProvider, jwt_expiry
from liveboard.protocol import (
    CloseAction,
    CloseCode,
    Event,
    Member,
    Position,
    PresenceUpdate,
    PresenceUser,
    Project,
    Published,
    RoomHistory,
    Task,
    TaskSnapshot,
    Workspace,
    close_action,
)

__all__ = [
    "ApiError",
    "Backoff",
    "Board",
    "ClientClosedError",
    "CloseAction",
    "CloseCode",
    "ConnectionLostError",
    "ConnectionState",
    "Event",
    "FatalConnectionError",
    "LiveboardClient",
    "LiveboardClientError",
    "Member",
    "Position",
    "PresenceUpdate",
    "PresenceUser",
    "Project",
    "Published",
    "Resync",
    "Revoked",
    "RoomHistory",
    "ServiceClient",
    "Subscription",
    "SubscriptionItem",
    "Task",
    "TaskSnapshot",
    "TokenProvider",
    "Workspace",
    "close_action",
    "full_jitter",
    "jwt_expiry",
]
