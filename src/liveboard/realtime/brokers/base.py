"""The broker interface: how committed events travel to every instance's hub.

A broker is a fast path, never the truth: the event log is. The delivery guarantee a broker
gives is deliberately weak — events of a room arrive at most once per publish, usually in
order, and may be lost while the broker is down — because the node restores order and fills
every gap from the log (``ordering.RoomSequencer``), and after an outage catches up each active
room (``BrokerHandler.on_broker_restored``).

Brokers never touch the hub; they call the ``BrokerHandler`` the node implements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from liveboard.protocol import BrokerEvent, SequencedEvent


class BrokerHandler(Protocol):
    """Implemented by the node; called by the broker on the event loop."""

    def on_events(self, events: Sequence[SequencedEvent]) -> None:
        """Events from the broker (one read's worth), possibly for several rooms."""
        ...

    def on_broker_restored(self) -> None:
        """The broker came back after an outage: anything may have been missed meanwhile."""
        ...

    def on_presence_signal(self, room: str) -> None:
        """Another instance changed the presence of ``room`` (re-read it)."""
        ...


class Broker(Protocol):
    """Publish events; receive those of the rooms this instance subscribes to."""

    name: str

    @property
    def up(self) -> bool:
        """Whether the broker is reachable now (``/readyz`` reports ``degraded`` when not)."""
        ...

    async def start(self) -> None: ...

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        """Hand events to every instance. Never raises for an outage: the log has them.

        The events reach this instance's handler before ``publish`` returns, whatever the
        broker's state (CONTRACT §5.4: local subscribers never wait for Redis).
        """
        ...

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        """Tell the other instances subscribed to each of ``rooms`` that its presence changed
        here (in one round trip, however many rooms).

        Best effort: a lost signal is repaired by the presence manager's periodic refresh.
        """
        ...

    async def subscribe(self, room: str) -> None:
        """Start receiving ``room``'s events (idempotent).

        Returns once the subscription is active, so an event published after it returns is
        received. If the broker is down it returns at once; ``on_broker_restored`` follows
        once the subscription is active again.
        """
        ...

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room``'s events (idempotent).

        A broker may let go of the room a little later (the Redis broker after its
        ``unsubscribe_delay``, so that a room wanted again soon costs nothing); its events
        and presence signals stop reaching the handler at once all the same.
        """
        ...

    async def aclose(self) -> None:
        """Flush pending publishes and stop. Idempotent."""
        ...
