"""Brokers carry committed events between instances. Chosen from the URL, imported lazily."""

from __future__ import annotations

from liveboard.realtime.brokers.base import Broker, BrokerHandler


def create_broker(redis_url: str | None, handler: BrokerHandler, *, instance_id: str) -> Broker:
    """The in-memory broker when ``redis_url`` is None, the Redis Cluster broker for a
    ``redis+cluster://`` URL, else the Redis broker."""
    if redis_url is None:
        from liveboard.realtime.brokers.memory import MemoryBroker

        return MemoryBroker(handler)
    from liveboard.realtime.brokers.redis_pools import is_cluster_url

    if is_cluster_url(redis_url):
        from liveboard.realtime.brokers.redis_cluster import RedisClusterBroker

        return RedisClusterBroker(redis_url, handler, instance_id=instance_id)
    from liveboard.realtime.brokers.redis import RedisBroker

    return RedisBroker(redis_url, handler, instance_id=instance_id)


__all__ = ["Broker", "BrokerHandler", "create_broker"]
