"""The in-memory broker: one instance, events go straight to the local node."""

from __future__ import annotations

from collections.abc import Sequence

from liveboard.protocol import BrokerEvent
from liveboard.realtime.brokers.base import BrokerHandler


class MemoryBroker:
    """Delivers every published event to the handler at once, in publish order."""

    name = "memory"

    def __init__(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._closed = False

    @property
    def up(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        if not self._closed and events:
            self._handler.on_events(events)

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        return None  # one instance: there is nobody else to tell

    async def subscribe(self, room: str) -> None:
        return None  # every event reaches the node anyway

    async def unsubscribe(self, room: str) -> None:
        return None

    async def aclose(self) -> None:
        self._closed = True
