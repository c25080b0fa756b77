"""Where committed events go: the ``EventPublisher`` seam between the task service and the
real-time layer. The events are the wire contract's, as servers hold them
(``liveboard.protocol.BrokerEvent``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from liveboard.protocol import BrokerEvent


class EventPublisher(Protocol):
    """Where the task service hands committed events, in commit order, after each commit.

    Commit order, per room, among one service's transactions: ``publish`` for an earlier commit
    is called, and runs to its first suspension, before ``publish`` for a later one is called
    (``tasks.publish_order``); what it does before its first ``await`` (the node: deliver to its
    own hub) sees each room's events in offset order. Called once per committed transaction
    with that transaction's events. Implementations must not raise for a broker outage: the
    event log already holds the events, and recovery reads them from there. The real-time node
    implements this; tests may use ``RecordingPublisher``.
    """

    async def publish(self, events: Sequence[BrokerEvent]) -> None: ...


class RecordingPublisher:
    """An in-process publisher that keeps every event it is given, for tests and tools."""

    def __init__(self) -> None:
        self.events: list[BrokerEvent] = []

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        self.events.extend(events)


class NullPublisher:
    """Discards events: for a service used without a real-time layer (e.g. tools, migrations)."""

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        return None
