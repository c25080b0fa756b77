"""Presence: who is viewing a room, keyed by user, with one entry per connection.

Semantics (CONTRACT §4 ``presence:update``):

* A user is present in a room while at least one of their connections has joined it. Two tabs of
  one user are one user; the user leaves when the last of their connections leaves,
  unsubscribes or disconnects.
* Every change of a room's set of users produces one update: the full list sorted by user id,
  and the diff (``joined``, ``left``). A connection that joins gets the full list even when the
  set did not change (``PresenceManager.join`` returns it).
* Presence is ephemeral: never written to the event log. Across instances it is eventually
  consistent (``brokers``/Redis manager); here, on one instance, it is exact and immediate.

``RoomPresence`` is the pure model; ``MemoryPresence`` is the single-instance manager;
``SharedViews`` is what the managers shared between instances (``presence_redis``,
``presence_postgres``) have in common: this instance's entries, the view each room last showed,
and the update sent when that view changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

User = tuple[str, str]  # (userId, name)


@dataclass(frozen=True, slots=True)
class PresenceDiff:
    """A change of a room's present users."""

    room: str
    users: list[User]  # sorted by user id, each once
    joined: list[str]
    left: list[str]


def diff_users(room: str, before: dict[str, str], after: dict[str, str]) -> PresenceDiff | None:
    """The update that takes ``before`` to ``after`` (user id → name), or None if equal."""
    joined = sorted(u for u in after if u not in before)
    left = sorted(u for u in before if u not in after)
    if not joined and not left:
        return None
    return PresenceDiff(room, sorted(after.items()), joined, left)


class RoomPresence:
    """Connections present in one room, grouped by user. Pure; O(1) joins and leaves."""

    __slots__ = ("_by_connection", "_by_user", "_names")

    def __init__(self) -> None:
        self._by_user: dict[str, set[str]] = {}
        self._by_connection: dict[str, str] = {}
        self._names: dict[str, str] = {}

    def users(self) -> dict[str, str]:
        """Present users: user id → display name."""
        return {user: self._names[user] for user in self._by_user}

    def join(self, connection_id: str, user_id: str, name: str) -> bool:
        """Add a connection; True when its user was not present before."""
        if connection_id in self._by_connection:
            return False
        self._by_connection[connection_id] = user_id
        connections = self._by_user.setdefault(user_id, set())
        self._names[user_id] = name
        connections.add(connection_id)
        return len(connections) == 1

    def leave(self, connection_id: str) -> str | None:
        """Remove a connection; return its user id when that user is no longer present."""
        user_id = self._by_connection.pop(connection_id, None)
        if user_id is None:
            return None
        connections = self._by_user[user_id]
        connections.discard(connection_id)
        if connections:
            return None
        del self._by_user[user_id]
        del self._names[user_id]
        return user_id

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._by_connection

    def __len__(self) -> int:
        return len(self._by_user)


class PresenceListener(Protocol):
    """Receives every presence change, to send ``presence:update`` to the room's subscribers."""

    def presence_changed(self, diff: PresenceDiff) -> None: ...


class PresenceManager(Protocol):
    """Keeps presence for the node; implementations: ``MemoryPresence``, the Redis manager."""

    async def join(
        self, room: str, connection_id: str, user_id: str, name: str
    ) -> tuple[list[User], bool]:
        """Add a connection; return the room's full list (sorted) after the join, and whether
        the set of users changed (then the listener has been told, and will tell the room)."""
        ...

    async def leave(self, room: str, connection_id: str) -> None: ...

    async def start(self) -> None: ...

    def on_signal(self, room: str) -> None:
        """Another instance changed ``room``'s presence."""
        ...

    async def leave_rooms(self, rooms: Iterable[str], connection_id: str) -> None:
        """Remove a connection from several rooms (on disconnect)."""
        ...

    def users(self, room: str) -> list[User]: ...

    def room_count(self) -> int: ...

    def user_count(self) -> int:
        """Present users summed over rooms (a user in two rooms counts twice)."""
        ...

    async def aclose(self) -> None: ...


class MemoryPresence:
    """Presence of one instance. Changes reach the listener synchronously."""

    def __init__(self, listener: PresenceListener) -> None:
        self._listener = listener
        self._rooms: dict[str, RoomPresence] = {}

    async def join(
        self, room: str, connection_id: str, user_id: str, name: str
    ) -> tuple[list[User], bool]:
        presence = self._rooms.setdefault(room, RoomPresence())
        before = presence.users()
        change = None
        if presence.join(connection_id, user_id, name):
            change = diff_users(room, before, presence.users())
            if change is not None:
                self._listener.presence_changed(change)
        return sorted(presence.users().items()), change is not None

    async def leave(self, room: str, connection_id: str) -> None:
        presence = self._rooms.get(room)
        if presence is None or connection_id not in presence:
            return
        before = presence.users()
        gone = presence.leave(connection_id)
        if not presence:
            del self._rooms[room]
        if gone is not None:
            change = diff_users(room, before, presence.users())
            if change is not None:
                self._listener.presence_changed(change)

    async def leave_rooms(self, rooms: Iterable[str], connection_id: str) -> None:
        for room in list(rooms):
            await self.leave(room, connection_id)

    async def start(self) -> None:
        return None

    def on_signal(self, room: str) -> None:
        return None  # one instance: nobody else changes presence

    def users(self, room: str) -> list[User]:
        presence = self._rooms.get(room)
        return [] if presence is None else sorted(presence.users().items())

    def room_count(self) -> int:
        return len(self._rooms)

    def user_count(self) -> int:
        return sum(len(presence) for presence in self._rooms.values())

    async def aclose(self) -> None:
        self._rooms.clear()


class SharedViews:
    """This instance's own entries and the merged view of each room (all instances' users), for
    the managers whose rooms span instances.

    ``_show_view(room, remote)`` merges the other instances' users of ``room`` with this
    instance's (this instance's names win for a user present on both), records the result as
    the room's view, and sends the listener one update when the set of users or a name changed:
    the only place a view changes, so subscribers see every change once and no non-change.
    """

    def __init__(self, listener: PresenceListener) -> None:
        self._listener = listener
        # room → connection id → (user id, name): this instance's entries, the authority for them
        self._local: dict[str, dict[str, tuple[str, str]]] = {}
        # room → user id → name: the merged view this instance last showed its subscribers
        self._views: dict[str, dict[str, str]] = {}

    def _show_view(self, room: str, remote: Iterable[Mapping[str, str]]) -> bool:
        """Recompute ``room``'s view from ``remote`` (each other instance's users) and the local
        entries; tell local subscribers if it changed; True if it did."""
        merged: dict[str, str] = {}
        for users in remote:
            merged.update(users)
        for user_id, name in self._local.get(room, {}).values():
            merged[user_id] = name
        before = self._views.get(room, {})
        if merged:
            self._views[room] = merged
        else:
            self._views.pop(room, None)
        change = diff_users(room, before, merged)
        if change is not None:
            self._listener.presence_changed(change)
        return change is not None

    async def leave(self, room: str, connection_id: str) -> None: ...

    async def leave_rooms(self, rooms: Iterable[str], connection_id: str) -> None:
        """Remove a connection from several rooms (on disconnect)."""
        for room in list(rooms):
            await self.leave(room, connection_id)

    def users(self, room: str) -> list[User]:
        return sorted(self._views.get(room, {}).items())

    def room_count(self) -> int:
        return len(self._views)

    def user_count(self) -> int:
        """Present users summed over rooms (a user in two rooms counts twice)."""
        return sum(len(view) for view in self._views.values())
