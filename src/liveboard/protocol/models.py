"""Resources as the REST API returns them and as events carry them (CONTRACT §3).

Field names are snake_case in Python and camelCase on the wire (``rename="camel"``).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

__all__ = [
    "DEFAULT_STATUSES",
    "Member",
    "Project",
    "Role",
    "Task",
    "TaskSnapshot",
    "Workspace",
    "to_builtins",
]

Role: TypeAlias = Literal["owner", "admin", "member"]
DEFAULT_STATUSES: tuple[str, ...] = ("todo", "in_progress", "done")


class Workspace(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    created_at: str


class Member(msgspec.Struct, frozen=True, rename="camel"):
    user_id: str
    role: Role


class Project(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    workspace_id: str
    name: str
    statuses: list[str]
    created_at: str


class Task(msgspec.Struct, frozen=True, rename="camel"):
    """A task. Its column's display order is by ``rank`` (CONTRACT §6.2: strict, the same for
    every reader; ranks compare as byte strings, ``liveboard.protocol.ranks``). ``order`` is the
    number of CONTRACT §3, ascending (never descending) along the ranks; tasks placed by
    neighbours may share one."""

    id: str
    project_id: str
    title: str
    description: str
    status: str
    order: float
    rank: str
    assignee_id: str | None
    created_by_id: str
    version: int
    created_at: str
    updated_at: str


class TaskSnapshot(msgspec.Struct, frozen=True):
    """Every task of a project as of ``offset``: events ≤ offset are reflected, none after."""

    tasks: list[Task]
    offset: int
    epoch: str


def to_builtins(value: msgspec.Struct) -> dict[str, object]:
    """A resource as a JSON-ready dict with wire (camelCase) keys, e.g. for an event's data."""
    result = msgspec.to_builtins(value)
    assert isinstance(result, dict)  # a Struct always converts to a dict
    return result
