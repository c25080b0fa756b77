"""Log repair's decisions without I/O: when a hole is read again, when the audit reads a room on,
what a workspace room's resync takes along.

The reads themselves (gap fill, catch-up, the audit, workspace first) run against a real log in
``tests/integration/test_node_revocation.py`` and the cluster tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from liveboard.background import TaskSet
from liveboard.realtime import repair as repair_module
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.ordering import RoomSequencer
from liveboard.realtime.repair import (
    GAP_ATTEMPTS,
    GAP_WAIT,
    GapAttempts,
    LogRepair,
    needs_catch_up,
    projects_of,
)
from tests.support.fakes import Recorder, ev


def sequenced(name: str, released: int, workspace_id: str | None = None) -> Room:
    room = Room(name)
    room.sequencer = RoomSequencer("e1", released + 1)
    room.workspace_id = workspace_id
    return room


# GapAttempts


def test_a_new_hole_is_read_after_gap_wait_and_each_read_left_open_waits_longer() -> None:
    attempts = GapAttempts()
    assert attempts.delay("project:p1") == GAP_WAIT
    assert attempts.left_open("project:p1") is False
    assert attempts.delay("project:p1") == 2 * GAP_WAIT
    assert attempts.left_open("project:p1") is False
    assert attempts.delay("project:p1") == 3 * GAP_WAIT
    assert attempts.delay("project:p2") == GAP_WAIT, "another room's hole counts on its own"


def test_the_room_is_resynced_at_the_last_attempt_and_its_next_hole_starts_over() -> None:
    attempts = GapAttempts()
    verdicts = [attempts.left_open("project:p1") for _ in range(GAP_ATTEMPTS)]
    assert verdicts == [False] * (GAP_ATTEMPTS - 1) + [True]
    assert attempts.delay("project:p1") == GAP_WAIT


def test_a_closed_hole_starts_the_count_over() -> None:
    attempts = GapAttempts()
    attempts.left_open("project:p1")
    attempts.left_open("project:p1")
    attempts.closed("project:p1")
    assert attempts.delay("project:p1") == GAP_WAIT
    attempts.closed("project:never")  # a room with no count: nothing to forget


def test_the_attempts_follow_the_module_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repair_module, "GAP_WAIT", 0.5)
    monkeypatch.setattr(repair_module, "GAP_ATTEMPTS", 2)
    attempts = GapAttempts()
    assert attempts.delay("project:p1") == 0.5
    assert attempts.left_open("project:p1") is False
    assert attempts.delay("project:p1") == 1.0
    assert attempts.left_open("project:p1") is True


# needs_catch_up


def test_the_audit_reads_on_a_room_behind_the_log_head() -> None:
    room = sequenced("project:p1", released=4)
    assert needs_catch_up(room, 5, filling=False)


@pytest.mark.parametrize(
    ("head", "filling"),
    [(None, False), (4, False), (3, False), (5, True)],
    ids=["not in the log", "at the head", "ahead of the head", "a gap fill is pending"],
)
def test_the_audit_leaves_a_room_alone(head: int | None, filling: bool) -> None:
    room = sequenced("project:p1", released=4)
    assert not needs_catch_up(room, head, filling)


# projects_of and resync_room


def test_the_projects_of_a_workspace_room_are_those_admitted_under_it() -> None:
    workspace = sequenced("workspace:w1", released=0)
    mine = sequenced("project:p1", released=0, workspace_id="w1")
    other = sequenced("project:p2", released=0, workspace_id="w2")
    unknown = sequenced("project:p3", released=0)  # no subscriber admitted yet
    rooms = [workspace, mine, other, unknown, sequenced("workspace:w2", released=0)]
    assert projects_of(workspace, rooms) == [mine]


def repair_of(hub: Hub, resynced: list[str]) -> LogRepair:
    db: Any = None  # never read: a resync does no I/O
    return LogRepair(
        hub, db, Metrics(), TaskSet(repair_module.log), resync=lambda r: resynced.append(r.name)
    )


def hub_with_rooms() -> tuple[Hub, Room]:
    recorder = Recorder()
    hub = Hub(
        Metrics(),
        on_slow_consumer=recorder.slow_consumer,
        on_gap=recorder.gap,
        on_resync=recorder.resync,
    )
    workspace = hub.watch("workspace:w1")
    hub.start_sequence(workspace, "e1", 0)
    for name, workspace_id in (("project:p1", "w1"), ("project:p2", "w2")):
        room = hub.watch(name)
        room.workspace_id = workspace_id
        hub.start_sequence(room, "e1", 0)
    workspace.waiting.append((hub.rooms["project:p1"], ev(1)))
    return hub, workspace


def test_a_workspace_resync_takes_its_project_rooms_and_drops_what_waits_for_it() -> None:
    hub, workspace = hub_with_rooms()
    resynced: list[str] = []
    repair_of(hub, resynced).resync_room(workspace)
    assert resynced == ["workspace:w1", "project:p1"]
    assert workspace.waiting == []


def test_a_project_resync_is_its_own() -> None:
    hub, workspace = hub_with_rooms()
    resynced: list[str] = []
    repair_of(hub, resynced).resync_room(hub.rooms["project:p1"])
    assert resynced == ["project:p1"]
    assert len(workspace.waiting) == 1
