"""``tasks.changes``: an edit given, null, or absent, and its wire form (CONTRACT §4)."""

from __future__ import annotations

from liveboard.protocol import Task
from liveboard.tasks.changes import TaskChanges, diff, wire_changes

TASK = Task(
    id="tsk_1",
    project_id="prj_1",
    title="Title",
    description="",
    status="todo",
    order=1.0,
    rank="a0",
    assignee_id="bob",
    created_by_id="alice",
    version=3,
    created_at="2026-01-01T00:00:00.000Z",
    updated_at="2026-01-01T00:00:00.000Z",
)


def test_absent_fields_are_not_changes() -> None:
    assert diff(TASK, TaskChanges()) == {}


def test_a_field_given_its_current_value_is_not_a_change() -> None:
    assert diff(TASK, TaskChanges(title="Title", description="", assignee_id="bob")) == {}


def test_null_assignee_unassigns_and_absent_assignee_keeps() -> None:
    assert diff(TASK, TaskChanges(assignee_id=None)) == {"assignee_id": ("bob", None)}
    assert diff(TASK, TaskChanges(title="New")) == {"title": ("Title", "New")}


def test_the_wire_form_has_camel_case_names_in_field_order() -> None:
    found = diff(TASK, TaskChanges(assignee_id="carol", description="d", title="T"))
    assert list(wire_changes(found).items()) == [
        ("title", {"from": "Title", "to": "T"}),
        ("description", {"from": "", "to": "d"}),
        ("assigneeId", {"from": "bob", "to": "carol"}),
    ]
