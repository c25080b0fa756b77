"""``tasks.merge``: when an edit from a stale version applies, and what its 409 names."""

from __future__ import annotations

from typing import Any

from liveboard.errors import ApiError
from liveboard.protocol import Task
from liveboard.tasks.changes import TaskChanges, diff
from liveboard.tasks.merge import APPLY, decide, known_field_versions, next_field_versions

#: At version 5: title set at 4, description at creation, assignee at 3.
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
    version=5,
    created_at="2026-01-01T00:00:00.000Z",
    updated_at="2026-01-01T00:00:00.000Z",
)
FIELD_VERSIONS: dict[str, int] = {"title": 4, "description": 1, "assignee_id": 3}


def verdict(
    expected: int | None,
    changes: TaskChanges,
    field_versions: dict[str, int] = FIELD_VERSIONS,
) -> Any:
    return decide(TASK.version, expected, diff(TASK, changes), field_versions)


def conflict_details(error: ApiError | None) -> dict[str, Any]:
    assert error is not None
    assert (error.status, error.code) == (409, "conflict")
    assert error.details is not None
    return error.details


def test_no_version_or_the_current_one_applies_without_merging() -> None:
    for expected in (None, 5):
        assert verdict(expected, TaskChanges(title="New", assignee_id=None)) == APPLY


def test_a_field_nobody_changed_since_the_version_is_merged() -> None:
    # The description was set at 1: edits from 1, 2, 3 and 4 do not collide with anything.
    for expected in (1, 2, 3, 4):
        result = verdict(expected, TaskChanges(description="more"))
        assert (result.conflict, result.merged) == (None, ("description",))


def test_a_field_changed_since_the_version_collides_and_is_named() -> None:
    result = verdict(3, TaskChanges(title="Mine"))
    assert result.merged == ()
    details = conflict_details(result.conflict)
    assert details == {"currentVersion": 5, "fields": ["title"]}
    assert "title changed since version 3" in result.conflict.message


def test_a_field_set_at_exactly_the_version_does_not_collide() -> None:
    # The editor read version 4, which already had this title: nothing of it is unseen.
    assert verdict(4, TaskChanges(title="Mine")).merged == ("title",)
    assert verdict(3, TaskChanges(assignee_id="carol")).merged == ("assignee_id",)


def test_one_colliding_field_refuses_the_whole_edit_naming_only_it() -> None:
    result = verdict(2, TaskChanges(title="Mine", description="more"))
    assert conflict_details(result.conflict)["fields"] == ["title"]
    assert result.merged == ()


def test_every_colliding_field_is_named_on_the_wire_in_field_order() -> None:
    result = verdict(2, TaskChanges(assignee_id=None, description="d", title="T"))
    assert conflict_details(result.conflict)["fields"] == ["title", "assigneeId"]


def test_a_field_given_its_current_value_changes_nothing_so_cannot_collide() -> None:
    # The title changed at 4 to "Title"; an edit from 2 asking for "Title" overwrites nothing.
    result = verdict(2, TaskChanges(title="Title", description="more"))
    assert (result.conflict, result.merged) == (None, ("description",))
    assert verdict(2, TaskChanges(title="Title")) == APPLY  # nothing to apply, no 409 either


def test_moves_since_the_version_collide_with_no_edit() -> None:
    # A task moved from 1 to 3 (versions 2 and 3) with no edit: every field set at 1.
    moved = {"title": 1, "description": 1, "assignee_id": 1}
    result = verdict(1, TaskChanges(title="A", description="B", assignee_id="carol"), moved)
    assert result.merged == ("title", "description", "assignee_id")


def test_field_versions_are_trusted_only_when_the_last_change_recorded_them() -> None:
    recorded: dict[str, int | None] = {"title": 4, "description": 1, "assignee_id": 3}
    assert known_field_versions(recorded, 5, 5) == recorded
    # Written at 4, the task now at 5: a change the field versions do not know of (an older
    # release's), which may have set any field.
    everything_at_5 = {"title": 5, "description": 5, "assignee_id": 5}
    assert known_field_versions(recorded, 4, 5) == everything_at_5
    # Never recorded (a row from before the columns).
    unknown: dict[str, int | None] = dict.fromkeys(recorded)
    assert known_field_versions(unknown, None, 5) == everything_at_5


def test_an_unknown_history_makes_every_stale_edit_collide_and_no_current_one() -> None:
    unknown = known_field_versions(dict.fromkeys(FIELD_VERSIONS), None, TASK.version)
    result = verdict(4, TaskChanges(description="more"), unknown)
    assert conflict_details(result.conflict)["fields"] == ["description"]
    assert verdict(5, TaskChanges(description="more"), unknown) == APPLY


def test_a_change_records_the_new_version_for_the_fields_it_set_only() -> None:
    assert next_field_versions(FIELD_VERSIONS, ["description"], 6) == {
        "title": 4,
        "description": 6,
        "assignee_id": 3,
    }
    assert next_field_versions(FIELD_VERSIONS, [], 6) == FIELD_VERSIONS  # a move


def test_a_version_ahead_of_the_task_is_a_conflict_naming_no_field() -> None:
    result = verdict(6, TaskChanges(description="more"))
    assert conflict_details(result.conflict) == {"currentVersion": 5}
    assert result.conflict is not None
    assert result.conflict.message == "task is at version 5, not 6"
