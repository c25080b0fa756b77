"""liveboard's wire contract (CONTRACT §3-4), the one source of it: server, SDK and tests import it.

It imports msgspec and the standard library only, nothing else of liveboard, so a client can
use it without the server. Modules:

- ``client_messages``: client → server messages (``Subscribe``, ``Unsubscribe``, ``Presence``,
  ``Ping``, ``Refresh``), ``parse_client_message`` and ``encode_client_message``.
- ``server_messages``: server → client messages (``Connected``, ``Subscribed``, …,
  ``PresenceUpdate``, ``ResyncNotice``), their ``encode_*`` functions and
  ``decode_server_message``.
- ``events``: ``Event`` (a committed change, as subscribers receive it), the event types,
  ``BrokerEvent`` (the servers' envelope: an ``Event`` plus ``workspace_offset``) and their
  encoders and decoders.
- ``custom_events``: the rule for event types other backends publish (CONTRACT §6.3).
- ``event_data``: each event type's ``data`` as a typed struct (``TaskMovedData``, …;
  ``EVENT_DATA``), for the generated documents and for clients.
- ``errors``: ``ProtocolError`` (answered with ``error``) and ``ERROR_CODES``.
- ``close``: ``CloseCode`` and the reconnect policy (``close_action``, ``CloseAction``).
- ``position``: ``Position`` (offset, epoch). ``rooms``: room names parsed into ``RoomName``.
- ``ranks``: the rank keys that order a column's tasks (``key_between``, ``keys_between``).
- ``room_log``: the bodies of publishing and of reading a room's history over REST.
- ``models``: the resources clients see (``Task``, ``Project``, ``TaskSnapshot``, …).
"""

from liveboard.protocol.client_messages import (
    CLIENT_MESSAGE_TYPES,
    ClientMessage,
    Ping,
    Presence,
    Refresh,
    Subscribe,
    Unsubscribe,
    encode_client_message,
    parse_client_message,
)
from liveboard.protocol.close import CloseAction, CloseCode, close_action
from liveboard.protocol.custom_events import (
    CUSTOM_EVENT_TYPE_PATTERN,
    MAX_EVENT_TYPE_LENGTH,
    RESERVED_EVENT_TYPES,
    check_custom_event_type,
    custom_event_type_problem,
)
from liveboard.protocol.errors import ERROR_CODES, MessageId, ProtocolError
from liveboard.protocol.event_data import (
    EVENT_DATA,
    AssigneeChange,
    MemberAddedData,
    MemberRemovedData,
    ProjectCreatedData,
    TaskChanges,
    TaskCreatedData,
    TaskDeletedData,
    TaskMovedData,
    TaskUpdatedData,
    TextChange,
)
from liveboard.protocol.events import (
    EVENT_TYPES,
    INTERNAL_EVENT_FIELDS,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    PROJECT_CREATED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_MOVED,
    TASK_UPDATED,
    BrokerEvent,
    Event,
    decode_broker_event,
    decode_event,
    encode_broker_event,
    encode_event,
)
from liveboard.protocol.models import (
    DEFAULT_STATUSES,
    Member,
    Project,
    Role,
    Task,
    TaskSnapshot,
    Workspace,
    to_builtins,
)
from liveboard.protocol.position import MAX_OFFSET, Position
from liveboard.protocol.room_log import (
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    Published,
    PublishEvent,
    RoomHistory,
)
from liveboard.protocol.rooms import (
    ROOM_ID_MAX_LENGTH,
    RoomKind,
    RoomName,
    parse_room,
    project_room,
    workspace_room,
)
from liveboard.protocol.server_messages import (
    SERVER_MESSAGE_TYPES,
    Connected,
    ErrorReply,
    Pong,
    PresenceUpdate,
    PresenceUser,
    Refreshed,
    Reply,
    ResyncNotice,
    ServerMessage,
    Subscribed,
    Unsubscribed,
    decode_server_message,
    encode_connected,
    encode_error,
    encode_pong,
    encode_presence_update,
    encode_refreshed,
    encode_resync,
    encode_subscribed,
    encode_unsubscribed,
)

__all__ = [
    "CLIENT_MESSAGE_TYPES",
    "CUSTOM_EVENT_TYPE_PATTERN",
    "DEFAULT_STATUSES",
    "ERROR_CODES",
    "EVENT_DATA",
    "EVENT_TYPES",
    "HISTORY_DEFAULT_LIMIT",
    "HISTORY_MAX_LIMIT",
    "INTERNAL_EVENT_FIELDS",
    "MAX_EVENT_TYPE_LENGTH",
    "MAX_OFFSET",
    "MEMBER_ADDED",
    "MEMBER_REMOVED",
    "PROJECT_CREATED",
    "RESERVED_EVENT_TYPES",
    "ROOM_ID_MAX_LENGTH",
    "SERVER_MESSAGE_TYPES",
    "TASK_CREATED",
    "TASK_DELETED",
    "TASK_MOVED",
    "TASK_UPDATED",
    "AssigneeChange",
    "BrokerEvent",
    "ClientMessage",
    "CloseAction",
    "CloseCode",
    "Connected",
    "ErrorReply",
    "Event",
    "Member",
    "MemberAddedData",
    "MemberRemovedData",
    "MessageId",
    "Ping",
    "Pong",
    "Position",
    "Presence",
    "PresenceUpdate",
    "PresenceUser",
    "Project",
    "ProjectCreatedData",
    "ProtocolError",
    "PublishEvent",
    "Published",
    "Refresh",
    "Refreshed",
    "Reply",
    "ResyncNotice",
    "Role",
    "RoomHistory",
    "RoomKind",
    "RoomName",
    "ServerMessage",
    "Subscribe",
    "Subscribed",
    "Task",
    "TaskChanges",
    "TaskCreatedData",
    "TaskDeletedData",
    "TaskMovedData",
    "TaskSnapshot",
    "TaskUpdatedData",
    "TextChange",
    "Unsubscribe",
    "Unsubscribed",
    "Workspace",
    "check_custom_event_type",
    "close_action",
    "custom_event_type_problem",
    "decode_broker_event",
    "decode_event",
    "decode_server_message",
    "encode_broker_event",
    "encode_client_message",
    "encode_connected",
    "encode_error",
    "encode_event",
    "encode_pong",
    "encode_presence_update",
    "encode_refreshed",
    "encode_resync",
    "encode_subscribed",
    "encode_unsubscribed",
    "parse_client_message",
    "parse_room",
    "project_room",
    "to_builtins",
    "workspace_room",
]
