"""Brokers carry committed events between instances. Chosen by ``config.broker_kind``,
imported lazily."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from liveboard.realtime.brokers.base import Broker, BrokerHandler
from liveboard.redis_address_map import AddressMapping

if TYPE_CHECKING:
    from liveboard.store.database import Database


def create_broker(
    redis_url: str | None,
    handler: BrokerHandler,
    *,
    instance_id: str,
    kind: str | None = None,
    db: Database | None = None,
    database_url: str | None = None,
    extra_channels: dict[str, Callable[[str], None]] | None = None,
    address_map: Sequence[AddressMapping] = (),
) -> Broker:
    """The broker of ``kind`` (``memory``, ``redis``, ``postgres``); without a kind, the Redis
    broker when ``redis_url`` is set, else the in-memory one. ``redis`` with a
    ``redis+cluster://`` URL is the Redis Cluster broker. ``postgres`` needs ``db`` (its
    log is the payload) and ``database_url``; ``extra_channels`` are more channels its listening
    connection takes (presence). ``address_map`` (``LIVEBOARD_REDIS_ADDRESS_MAP``): where the
    Redis Cluster broker reaches the cluster's nodes."""
    if kind is None:
        kind = "memory" if redis_url is None else "redis"
    if kind == "memory":
        from liveboard.realtime.brokers.memory import MemoryBroker

        return MemoryBroker(handler)
    if kind == "postgres":
        from liveboard.realtime.brokers.postgres import PostgresBroker
        from liveboard.store.open_log_sql import wakeup_channel

        if db is None or db.schema is None or database_url is None:
            raise ValueError("the postgres broker needs a PostgreSQL database")
        return PostgresBroker(
            database_url,
            handler,
            db=db,
            channel=wakeup_channel(db.schema),
            instance_id=instance_id,
            extra_channels=extra_channels,
        )
    if redis_url is None:
        raise ValueError("the redis broker needs a Redis URL")
    from liveboard.realtime.brokers.redis_pools import is_cluster_url

    if is_cluster_url(redis_url):
        from liveboard.realtime.brokers.redis_cluster import RedisClusterBroker

        return RedisClusterBroker(
            redis_url, handler, instance_id=instance_id, address_map=address_map
        )
    from liveboard.realtime.brokers.redis import RedisBroker

    return RedisBroker(redis_url, handler, instance_id=instance_id)


__all__ = ["Broker", "BrokerHandler", "create_broker"]
