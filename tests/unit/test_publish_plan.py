"""``tasks.publish_plan``: the offsets of a publish batch, without a database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from liveboard.protocol import Position
from liveboard.tasks.publish_plan import Placement, plan_batch

HEADS = {
    "project:a": Position(offset=4, epoch="ea"),
    "project:b": Position(offset=0, epoch="eb"),
    "workspace:w": Position(offset=9, epoch="ew"),
}
WORKSPACES = {"project:a": 9, "project:b": 9}


def test_each_room_takes_its_next_offsets_in_the_order_given() -> None:
    plan = plan_batch(["project:a", "project:b", "project:a", "project:a"], HEADS, WORKSPACES)
    assert plan.placements == [
        Placement(5, "ea", 9),
        Placement(1, "eb", 9),
        Placement(6, "ea", 9),
        Placement(7, "ea", 9),
    ]
    assert plan.heads == {"project:a": 7, "project:b": 1}


def test_a_missing_room_or_project_is_placed_nowhere_and_takes_no_offset() -> None:
    rooms = ["project:a", "project:gone", "project:a", "workspace:gone", "project:b"]
    workspaces = {"project:a": 9}  # project b's row is gone: no workspace head
    plan = plan_batch(rooms, HEADS, workspaces)
    assert plan.placements == [Placement(5, "ea", 9), None, Placement(6, "ea", 9), None, None]
    assert plan.heads == {"project:a": 6}


def test_a_workspace_room_names_no_workspace_head() -> None:
    plan = plan_batch(["workspace:w", "workspace:w"], HEADS)
    assert plan.placements == [Placement(10, "ew", 0), Placement(11, "ew", 0)]
    assert plan.heads == {"workspace:w": 11}


@given(st.lists(st.sampled_from(["project:a", "project:b", "project:x", "workspace:w"])))
def test_offsets_are_gap_free_per_room_from_its_head(rooms: list[str]) -> None:
    plan = plan_batch(rooms, HEADS, WORKSPACES)
    for room in set(rooms):
        placed = [p for r, p in zip(rooms, plan.placements, strict=True) if r == room]
        if room not in HEADS:
            assert placed == [None] * len(placed)
            assert room not in plan.heads
            continue
        head = HEADS[room].offset
        assert [p.offset for p in placed if p is not None] == list(
            range(head + 1, head + 1 + len(placed))
        )
        assert plan.heads[room] == head + len(placed)
    assert set(plan.heads) == {r for r in rooms if r in HEADS}
