"""Request bodies of the REST API, validated by msgspec (which also produces their JSON Schema).

Unknown fields are ignored, so clients may send more than a call needs; a field of the wrong type
or out of range is a 422 ``validation_error`` that names the field. Every string is held to
``liveboard.text``'s rule (no U+0000; msgspec itself refuses unpaired surrogates), so SQLite and
PostgreSQL accept exactly the same bodies.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from liveboard.text import MAX_ID_LENGTH, MAX_USER_ID_LENGTH, NO_NUL_PATTERN

Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]
Title = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]
Description = Annotated[str, Meta(max_length=20_000, pattern=NO_NUL_PATTERN)]
UserId = Annotated[str, Meta(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=NO_NUL_PATTERN)]
Status = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]
#: A task's id naming a neighbour (CONTRACT §6.2); ``null`` is the top (``afterId``) or the end
#: (``beforeId``) of the column, absent is "not given".
TaskId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL_PATTERN)]
Order = Annotated[float, Meta(ge=-1e15, le=1e15)]  # finite, and precise enough to insert between
#: A task's version; the bound is a signed 64-bit integer's, like ``If-Match``'s.
MAX_VERSION = 2**63 - 1
Version = Annotated[int, Meta(ge=1, le=MAX_VERSION)]


class CreateWorkspace(msgspec.Struct, frozen=True):
    name: Name


class AddMember(msgspec.Struct, frozen=True, rename="camel"):
    user_id: UserId
    role: Literal["member", "admin"] = "member"


class CreateProject(msgspec.Struct, frozen=True):
    name: Name
    statuses: Annotated[list[Status], Meta(min_length=1, max_length=50)] | None = None


class CreateTask(msgspec.Struct, frozen=True, rename="camel"):
    title: Title
    description: Description = ""
    status: Status | None = None
    assignee_id: UserId | None = None
    #: CONTRACT §3; not with afterId/beforeId (422).
    order: Order | None = None
    after_id: TaskId | UnsetType | None = UNSET
    before_id: TaskId | UnsetType | None = UNSET


class UpdateTask(msgspec.Struct, frozen=True, rename="camel"):
    title: Title | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    assignee_id: UserId | UnsetType | None = UNSET
    version: Version | UnsetType = UNSET
    # Present only to be refused with a clear message: status and order change through move.
    status: Any = UNSET
    order: Any = UNSET


class MoveTask(msgspec.Struct, frozen=True, rename="camel"):
    to_status: Status
    #: CONTRACT §3; not with afterId/beforeId (422).
    order: Order | None = None
    after_id: TaskId | UnsetType | None = UNSET
    before_id: TaskId | UnsetType | None = UNSET
    version: Version | None = None


class DevToken(msgspec.Struct, frozen=True):
    token: str


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorBody
