"""Presence model and the single-instance manager."""

from __future__ import annotations

from liveboard.realtime.presence import MemoryPresence, PresenceDiff, RoomPresence, diff_users


class Listener:
    def __init__(self) -> None:
        self.diffs: list[PresenceDiff] = []

    def presence_changed(self, diff: PresenceDiff) -> None:
        self.diffs.append(diff)


def test_two_tabs_are_one_user() -> None:
    room = RoomPresence()
    assert room.join("c1", "alice", "Alice") is True
    assert room.join("c2", "alice", "Alice") is False
    assert room.users() == {"alice": "Alice"}
    assert room.leave("c1") is None
    assert room.leave("c2") == "alice"
    assert len(room) == 0


def test_unknown_connection_leave_is_harmless() -> None:
    assert RoomPresence().leave("nope") is None


def test_diff_users() -> None:
    change = diff_users("r", {"a": "A", "b": "B"}, {"b": "B", "c": "C"})
    assert change == PresenceDiff("r", [("b", "B"), ("c", "C")], ["c"], ["a"])
    assert diff_users("r", {"a": "A"}, {"a": "A"}) is None


async def test_memory_presence_diffs_and_full_list() -> None:
    listener = Listener()
    presence = MemoryPresence(listener)
    users, changed = await presence.join("r", "c1", "bob", "Bob")
    assert (users, changed) == ([("bob", "Bob")], True)
    users, changed = await presence.join("r", "c2", "alice", "Alice")
    assert users == [("alice", "Alice"), ("bob", "Bob")]
    users, changed = await presence.join("r", "c3", "alice", "Alice")
    assert changed is False  # a second tab changes nothing for the room
    assert [d.joined for d in listener.diffs] == [["bob"], ["alice"]]
    await presence.leave("r", "c2")
    assert len(listener.diffs) == 2  # alice still has c3
    await presence.leave_rooms(["r"], "c3")
    assert listener.diffs[-1].left == ["alice"]
    assert listener.diffs[-1].users == [("bob", "Bob")]
    await presence.leave("r", "c1")
    assert presence.users("r") == []
    assert presence.room_count() == 0
