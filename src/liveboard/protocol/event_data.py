"""The ``data`` of each event type (CONTRACT §4) as a typed struct, for documents and clients.

The server builds an event's ``data`` as a plain dict and encodes ``Event`` as it is (one
encode per event, nothing added to the fan-out); these structs describe what that dict holds,
field by field, so the AsyncAPI document and the TypeScript declarations generated from this
package type each event's payload. A client may also decode an event's data into one of them
(``msgspec.convert(event.data, EVENT_DATA[event.type])``). Unknown fields are ignored, as
everywhere in the protocol, so a later server may add some.

``EVENT_DATA`` maps every event type of ``EVENT_TYPES`` to its struct.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from liveboard.protocol.events import (
    MEMBER_ADDED,
    MEMBER_REMOVED,
    PROJECT_CREATED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_MOVED,
    TASK_UPDATED,
)
from liveboard.protocol.models import Project, Role, Task

__all__ = [
    "EVENT_DATA",
    "AssigneeChange",
    "MemberAddedData",
    "MemberRemovedData",
    "ProjectCreatedData",
    "TaskChanges",
    "TaskCreatedData",
    "TaskDeletedData",
    "TaskMovedData",
    "TaskUpdatedData",
    "TextChange",
]


class TextChange(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    """A text field's value before (``from``) and after (``to``) the change."""

    from_: str
    to: str


class AssigneeChange(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    """The assignee before (``from``) and after (``to``); ``null`` is no assignee."""

    from_: str | None
    to: str | None


class TaskChanges(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """The fields a ``task:updated`` changed, each with its value before and after; a field
    that did not change is absent (at least one is present)."""

    title: TextChange | UnsetType = UNSET
    description: TextChange | UnsetType = UNSET
    assignee_id: AssigneeChange | UnsetType = UNSET


class TaskCreatedData(msgspec.Struct, frozen=True, rename="camel"):
    """``task:created``: the new task, and the task it follows in its column (``afterId``;
    ``null``: the top). Its ``task.rank`` places it as well."""

    task: Task
    after_id: str | None


class TaskUpdatedData(msgspec.Struct, frozen=True):
    """``task:updated``: the task after the change, and what changed."""

    task: Task
    changes: TaskChanges


class TaskMovedData(msgspec.Struct, frozen=True, rename="camel"):
    """``task:moved``: the task's column before and after, its new ``order`` and ``rank`` in
    it, and the task it now follows (``afterId``; ``null``: the top). The task's ``version``
    grew by one and its ``updatedAt`` is the event's ``ts``. A column's rebalance (new ranks,
    same order) is a ``task:moved`` per task, with ``fromStatus`` = ``toStatus``."""

    task_id: str
    from_status: str
    to_status: str
    order: float
    rank: str
    after_id: str | None


class TaskDeletedData(msgspec.Struct, frozen=True, rename="camel"):
    """``task:deleted``: the id of the task that is gone."""

    task_id: str


class ProjectCreatedData(msgspec.Struct, frozen=True):
    """``project:created`` (workspace rooms): the new project."""

    project: Project


class MemberAddedData(msgspec.Struct, frozen=True, rename="camel"):
    """``member:added`` (workspace rooms): the new member and their role."""

    user_id: str
    role: Role


class MemberRemovedData(msgspec.Struct, frozen=True, rename="camel"):
    """``member:removed`` (workspace rooms): the user who is no longer a member; their
    subscriptions to the workspace's rooms have ended (``unsubscribed`` ``forbidden``)."""

    user_id: str


EVENT_DATA: Final[Mapping[str, type[msgspec.Struct]]] = MappingProxyType(
    {
        TASK_CREATED: TaskCreatedData,
        TASK_UPDATED: TaskUpdatedData,
        TASK_MOVED: TaskMovedData,
        TASK_DELETED: TaskDeletedData,
        PROJECT_CREATED: ProjectCreatedData,
        MEMBER_ADDED: MemberAddedData,
        MEMBER_REMOVED: MemberRemovedData,
    }
)
"""Each event type's ``data`` struct, in the order the contract lists them."""
