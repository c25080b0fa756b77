"""How presence is laid out in Redis, and how a room's hash is read back (pure: no I/O).

Layout in Redis:

* ``liveboard:presence:R`` for room ``R`` — a hash, one field per connection present in the
  room: ``{instance}:{connectionId}`` → ``{"userId", "name"}`` (JSON). On a Redis Cluster the
  room is a hash tag, ``liveboard:presence:{R}`` (``key_of``): the room's presence lives on the
  shard of its sharded channel, so one shard's failover touches both or neither.
* ``liveboard:instances`` — a sorted set of instance ids scored by their last heartbeat (unix
  seconds). An instance whose heartbeat is older than ``INSTANCE_TTL`` is dead: its entries are
  ignored and removed by whichever instance notices first.
* ``liveboard:instance:{id}`` — a marker with a TTL; when a heartbeat finds it gone, Redis lost its
  data (a restart), and the instance writes all its local entries again before it adds itself
  to the instances set, so that no other instance reads it alive with no users. On a cluster
  this set is one key on one shard, kept small: one member per live instance, those whose
  heartbeat is older than ``PRUNE_AFTER`` removed by each heartbeat; every instance reads it
  once per refresh (every 2 s), whatever the number of rooms.

``presence_redis.RedisPresence`` makes the round trips; this module names the keys and fields,
encodes the entries, and decides what one read of a room's hash means (``read_room``).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import msgspec

KEY_PREFIX: Final = "liveboard:presence:"
INSTANCES_KEY: Final = "liveboard:instances"
MARKER_PREFIX: Final = "liveboard:instance:"
#: Seconds since its last heartbeat after which an instance is dead.
INSTANCE_TTL: Final = 10.0
#: Seconds after which a dead instance's member leaves the instances set (its entries were
#: removed long before, by whichever instance read its rooms).
PRUNE_AFTER: Final = 3600.0


def key_of(room: str, *, cluster: bool = False) -> str:
    """The presence hash of ``room`` (hash-tagged by the room on a Redis Cluster)."""
    return f"{KEY_PREFIX}{{{room}}}" if cluster else KEY_PREFIX + room


class Entry(msgspec.Struct, frozen=True, rename="camel"):
    """One connection's entry: the user it shows present."""

    user_id: str
    name: str


encode_entry = msgspec.json.Encoder().encode
decode_entry = msgspec.json.Decoder(Entry).decode


def field_of(instance: str, connection_id: str) -> str:
    """The hash field of ``instance``'s connection ``connection_id``."""
    return f"{instance}:{connection_id}"


def instance_of(field: bytes | str) -> str:
    """The instance a hash field belongs to."""
    return text(field).split(":", 1)[0]


def text(value: bytes | str) -> str:
    """A key, field or member as Redis returned it, as text."""
    return value.decode() if isinstance(value, bytes) else value


class RoomRead(NamedTuple):
    """What one read of a room's hash means to instance ``me`` (see ``read_room``)."""

    #: instance → user id → name: the other instances' users to show.
    remote: dict[str, dict[str, str]]
    #: Fields to remove: dead instances' and entries that do not decode.
    dead: list[Any]
    #: ``me``'s own fields as Redis holds them (field → entry), to compare with what it holds.
    own: dict[str, bytes]


def read_room(
    me: str,
    fields: dict[Any, Any],
    *,
    alive: set[str],
    seen: dict[str, float],
    previous: dict[str, dict[str, str]],
    now: float,
) -> RoomRead:
    """Read a room's hash (``fields``, as ``HGETALL`` returned it) for instance ``me``.

    ``alive`` are the instances whose heartbeat is within ``INSTANCE_TTL``; ``seen`` each
    instance's last heartbeat known to ``me``; ``previous`` the remote users ``me`` showed
    before. An instance seen alive within ``INSTANCE_TTL`` but missing from ``alive`` keeps its
    previous users when Redis holds none of its entries (Redis restarted; it will rewrite them);
    a dead one shows none, and its fields are listed to remove."""
    read: dict[str, dict[str, str]] = {}
    dead: list[Any] = []
    own: dict[str, bytes] = {}
    for field, value in fields.items():
        instance = instance_of(field)
        if instance == me:
            own[text(field)] = value  # shown from the local entries; compared by the caller
            continue
        try:
            entry = decode_entry(value)
        except msgspec.DecodeError:
            dead.append(field)
            continue
        read.setdefault(instance, {})[entry.user_id] = entry.name
    remote: dict[str, dict[str, str]] = {}
    for instance in set(read) | set(previous):
        if instance in alive:
            users = read.get(instance, {})
        elif now - seen.get(instance, 0.0) < INSTANCE_TTL:
            # Alive a moment ago but gone from Redis: Redis restarted; it will rewrite.
            users = read.get(instance) or previous.get(instance, {})
        else:
            users = {}
            dead.extend(f for f in fields if instance_of(f) == instance)
        if users:
            remote[instance] = users
    return RoomRead(remote, dead, own)
