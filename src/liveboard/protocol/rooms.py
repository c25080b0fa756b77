"""Room names (CONTRACT §4): ``project:{id}`` and ``workspace:{id}``, parsed once into a value.

A room name is a string on the wire and as a key of the server's tables (the hot path looks
rooms up by it); its kind and id are read from it here and nowhere else:

- ``parse_room(name)`` validates a name a client sent and raises ``ProtocolError``
  (``invalid_room``) when it is not one; O(1) for any input length.
- ``RoomName.of(name)`` splits a name the server already trusts (a validated subscription, a
  hub key, an event's room) without validating it again.
- ``project_room(id)`` / ``workspace_room(id)`` build names; ``str(RoomName)`` is the name.
"""

# No ``from __future__ import annotations`` here: NamedTuple builds ``__new__`` outside this
# module, so a string annotation ``RoomKind`` could not be resolved by doc tools (pdoc).
import re
from typing import Final, Literal, NamedTuple, TypeAlias

from liveboard.protocol.errors import ProtocolError

__all__ = [
    "PROJECT_ROOM_PREFIX",
    "ROOM_ID_MAX_LENGTH",
    "WORKSPACE_ROOM_PREFIX",
    "RoomKind",
    "RoomName",
    "parse_room",
    "project_room",
    "workspace_room",
]

RoomKind: TypeAlias = Literal["project", "workspace"]

ROOM_ID_MAX_LENGTH: Final = 128
#: A project's room is this prefix followed by its id.
PROJECT_ROOM_PREFIX: Final = "project:"
#: A workspace's room is this prefix followed by its id (also used to build names in SQL).
WORKSPACE_ROOM_PREFIX: Final = "workspace:"

#: The longest room name the syntax allows; anything longer is rejected before the regex runs.
ROOM_NAME_MAX_LENGTH: Final = len(WORKSPACE_ROOM_PREFIX) + ROOM_ID_MAX_LENGTH
ROOM_PATTERN: Final = re.compile(rf"(project|workspace):([A-Za-z0-9_-]{{1,{ROOM_ID_MAX_LENGTH}}})")
ROOM_HELP: Final = (
    "room must be project:{id} or workspace:{id}, the id being 1 to "
    f"{ROOM_ID_MAX_LENGTH} letters, digits, '_' or '-'"
)


class RoomName(NamedTuple):
    """A room's kind and id; ``str()`` gives its name (``"project:p1"``)."""

    kind: RoomKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_workspace(self) -> bool:
        return self.kind == "workspace"

    @classmethod
    def of(cls, name: str) -> "RoomName":
        """Split a name the server already holds as valid; ``ValueError`` if it has no kind."""
        kind, _, rid = name.partition(":")
        if kind == "project":
            return cls("project", rid)
        if kind == "workspace":
            return cls("workspace", rid)
        raise ValueError(f"not a room name: {name[:ROOM_NAME_MAX_LENGTH]!r}")


def parse_room(name: str) -> RoomName:
    """The kind and id of a client's room name, or raise ``ProtocolError("invalid_room")``."""
    match = ROOM_PATTERN.fullmatch(name) if len(name) <= ROOM_NAME_MAX_LENGTH else None
    if match is None:
        raise ProtocolError("invalid_room", ROOM_HELP)
    return RoomName("project" if name[0] == "p" else "workspace", match.group(2))


def project_room(project_id: str) -> str:
    """The name of project ``project_id``'s room."""
    return PROJECT_ROOM_PREFIX + project_id


def workspace_room(workspace_id: str) -> str:
    """The name of workspace ``workspace_id``'s room."""
    return WORKSPACE_ROOM_PREFIX + workspace_id
