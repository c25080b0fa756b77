"""An edit of a task's content, as the task service takes it: typed, in the code's own names.

``TaskChanges`` tells "not given" (``UNSET``: keep the field) from "given as null" (``None``,
only for ``assignee_id``: unassign). ``diff`` compares it with a task: only the fields given
whose value differs are changes, in the order title, description, assignee. ``wire_changes``
writes those as ``task.updated``'s ``changes`` (CONTRACT §4: camelCase field names, each with
``from`` and ``to``). ``bumped`` is a task after any change: its version + 1, its new time.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from liveboard.protocol import Task

#: A task field an edit may change (status and order change by a move).
EditableField = Literal["title", "description", "assignee_id"]

#: Each editable field's name on the wire.
WIRE_NAMES: Final[dict[EditableField, str]] = {
    "title": "title",
    "description": "description",
    "assignee_id": "assigneeId",
}


class TaskChanges(msgspec.Struct, frozen=True, kw_only=True):
    """The fields an edit sets; a field left ``UNSET`` keeps its value."""

    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    #: ``None`` unassigns the task.
    assignee_id: str | UnsetType | None = UNSET


#: A field's change: its value before, and after.
Change = tuple[Any, Any]


def diff(task: Task, changes: TaskChanges) -> dict[EditableField, Change]:
    """The fields of ``changes`` given with a value other than ``task``'s, each with both
    values, in the order of ``WIRE_NAMES``; empty if the edit changes nothing."""
    found: dict[EditableField, Change] = {}
    for field in WIRE_NAMES:
        value = getattr(changes, field)
        if value is not UNSET and getattr(task, field) != value:
            found[field] = (getattr(task, field), value)
    return found


def wire_changes(found: dict[EditableField, Change]) -> dict[str, dict[str, Any]]:
    """``found`` as ``task.updated``'s ``changes``: ``{"assigneeId": {"from": …, "to": …}}``."""
    return {WIRE_NAMES[field]: {"from": old, "to": new} for field, (old, new) in found.items()}


def bumped(task: Task, updated_at: str, **fields: Any) -> Task:
    """``task`` with the given fields changed, its version bumped and ``updatedAt`` set."""
    return msgspec.structs.replace(task, **fields, version=task.version + 1, updated_at=updated_at)
