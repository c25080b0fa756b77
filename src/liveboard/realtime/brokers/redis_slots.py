"""A Redis Cluster's layout as the cluster broker sees it: which master serves a channel's slot
(``SlotMap``, from ``CLUSTER SLOTS``; pure), the SSUBSCRIBE commands for a set of channels,
and the state of one master's subscriber connection (``Shard``). ``brokers.redis_cluster``
keeps one ``Shard`` per master of the current map and compares maps to notice a failover or a
resharding."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection

__all__ = ["Address", "Shard", "SlotMap", "ssubscribe_commands"]

Address = tuple[str, int]


class SlotMap:
    """Which master serves each slot, from a ``CLUSTER SLOTS`` answer (pure)."""

    def __init__(self, ranges: Sequence[tuple[int, int, Address]]) -> None:
        self.ranges = sorted(ranges)
        self._starts = [start for start, _, _ in self.ranges]
        self.masters: frozenset[Address] = frozenset(addr for _, _, addr in self.ranges)

    @classmethod
    def parse(cls, reply: Any) -> SlotMap:
        """From ``CLUSTER SLOTS``: [[start, end, [host, port, id, …], replicas…], …]."""
        ranges: list[tuple[int, int, Address]] = []
        for start, end, master, *_ in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            ranges.append((int(start), int(end), (host, int(master[1]))))
        return cls(ranges)

    def address_of(self, channel: bytes) -> Address | None:
        """The master serving ``channel``'s slot, None if no node serves it."""
        slot = key_slot(channel)
        i = bisect.bisect_right(self._starts, slot) - 1
        if i >= 0:
            start, end, address = self.ranges[i]
            if start <= slot <= end:
                return address
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(tuple(self.ranges))


def ssubscribe_commands(channels: Sequence[bytes]) -> list[list[bytes | str]]:
    """One SSUBSCRIBE per slot: Redis refuses channels of several slots in one command."""
    by_slot: dict[int, list[bytes]] = {}
    for channel in channels:
        by_slot.setdefault(key_slot(channel), []).append(channel)
    return [["SSUBSCRIBE", *group] for group in by_slot.values()]


class Shard:
    """One master's subscriber connection and what it has confirmed."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.conn: SubscriberConnection | None = None
        self.confirmed: set[bytes] = set()
        self.lock = asyncio.Lock()  # one SSUBSCRIBE/SUNSUBSCRIBE in flight at a time
        self.waiter: tuple[bytes, bytes, asyncio.Future[None]] | None = None
        self.up = False
        self.ever_up = False
        self.task: asyncio.Task[None] | None = None
