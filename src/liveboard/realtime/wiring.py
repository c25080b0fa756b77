"""Which broker and which presence manager a node runs, from its settings.

* ``memory``: the in-memory broker and presence (one instance).
* ``redis``: the Redis broker, and presence in Redis signalled through the broker.
* ``postgres``: the postgres broker, and presence carried by notifications on the presence
  channel, which the broker's listening connection also listens to (``presence_postgres``).

Kept out of the node so that it only knows the ``Broker`` and ``PresenceManager`` contracts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from liveboard.config import Settings, broker_kind
from liveboard.realtime.brokers import Broker, create_broker
from liveboard.realtime.presence import MemoryPresence, PresenceManager
from liveboard.store.database import Database

if TYPE_CHECKING:
    from liveboard.realtime.node import Node


def make_broker(node: Node, settings: Settings, db: Database) -> Broker:
    """The broker ``settings`` choose (``config.broker_kind``), handing events to ``node``."""
    kind = broker_kind(settings)
    extra: dict[str, Callable[[str], None]] = {}
    if kind == "postgres" and db.schema is not None:
        from liveboard.realtime.presence_postgres import presence_channel

        # Presence messages come on the broker's listening connection (late-bound: the
        # presence manager is made after the broker).
        extra[presence_channel(db.schema)] = lambda payload: _presence_message(node, payload)
    return create_broker(
        settings.redis_url,
        node,
        instance_id=settings.instance_id,
        kind=kind,
        db=db,
        database_url=settings.database_url,
        extra_channels=extra,
        address_map=settings.redis_address_map,
    )


def _presence_message(node: Node, payload: str) -> None:
    from liveboard.realtime.presence_postgres import PostgresPresence

    if isinstance(node.presence, PostgresPresence):
        node.presence.on_message(payload)


def make_presence(node: Node, settings: Settings) -> PresenceManager:
    """The presence manager that goes with ``node.broker``."""
    broker = node.broker
    if broker.name == "postgres":
        from liveboard.realtime.brokers.postgres import PostgresBroker
        from liveboard.realtime.presence_postgres import PostgresPresence, presence_channel

        assert isinstance(broker, PostgresBroker)
        assert node.db.schema is not None
        channel = presence_channel(node.db.schema)
        pg_broker = broker
        presence = PostgresPresence(
            node,
            instance_id=settings.instance_id,
            active_rooms=lambda: node.hub.rooms.keys(),
            send=lambda payloads: pg_broker.notify(channel, payloads),
            available=lambda: pg_broker.up,
        )
        pg_broker.listening_hooks.append(presence.on_listening)
        return presence
    if settings.redis_url is None or broker.name != "redis":
        return MemoryPresence(node)
    from liveboard.realtime.presence_redis import RedisPresence

    return RedisPresence(
        settings.redis_url,
        node,
        instance_id=settings.instance_id,
        active_rooms=lambda: node.hub.rooms.keys(),
        signal=broker.publish_presence,
        available=lambda: broker.up,
        address_map=settings.redis_address_map,
    )
