"""What the single-Redis and the Redis Cluster brokers share: publishing, the wanted channels
and their lingering unsubscribes, reading a channel's messages, the outage log, closing.

``RedisBrokerBase`` gives, for both (``brokers.redis.RedisBroker``: pub/sub on one Redis;
``brokers.redis_cluster.RedisClusterBroker``: sharded pub/sub, one connection per master):

* ``publish`` hands the events to the local handler first, whatever the state of Redis, then
  sends them through ``brokers.redis_publisher`` (never raises for an outage);
* ``subscribe`` returns at once for a channel still subscribed (lingering, see ``unsubscribe``)
  and otherwise once the subclass's ``_command`` returns (confirmed, or Redis unreachable);
* ``unsubscribe`` lets go of a channel ``unsubscribe_delay`` seconds later unless subscribed
  again meanwhile; a lingering channel's messages are dropped unread;
* a message is an event of the channel's own room, received as a ``WireEvent``
  (``decode_wire_event``: only the fields sequencing uses are parsed, and the hub writes the
  message's client JSON to the sockets as it came; see ``protocol.events`` for the layout), or
  a presence signal (another instance's only: this instance's own are ignored); anything else
  is counted in ``malformed_messages``, logged and skipped;
* ``up`` changes are logged once each (one warning per outage); ``aclose`` flushes publishes in
  progress for at most ``CLOSE_TIMEOUT`` s and cancels every task of the broker.

A subclass names its channels (``_channel_of``, ``_cluster``), its subscription commands, and
implements ``_command``, ``_is_confirmed``, ``_forget``, ``_supervise``,
``_subscribers_up``, ``_tasks`` and ``_close_connections``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar, Final

import msgspec

from liveboard.background import TaskSet
from liveboard.protocol import BrokerEvent, SequencedEvent, decode_wire_event
from liveboard.realtime.brokers.base import BrokerHandler
from liveboard.realtime.brokers.redis_publisher import PRESENCE_SIGNAL, RedisPublisher, room_of
from liveboard.redis_address_map import AddressMapping

log = logging.getLogger("liveboard.broker.redis")

#: ``start`` waits this long for the first connection (it never fails: Redis may come later).
START_TIMEOUT: Final = 1.0
#: How long a channel stays subscribed after ``unsubscribe`` (see the module docstring).
UNSUBSCRIBE_DELAY: Final = 5.0
#: ``aclose`` waits this long for publishes in progress.
CLOSE_TIMEOUT: Final = 2.0


class RedisBrokerBase(abc.ABC):
    """The shared half of both Redis brokers; see the module docstring."""

    name = "redis"
    #: The subscription commands (lower case, as Redis names them in its confirmations).
    SUBSCRIBE: ClassVar[bytes]
    UNSUBSCRIBE: ClassVar[bytes]
    #: Whether channels are a cluster's (``redis_publisher.cluster_channel_of``).
    CLUSTER: ClassVar[bool]

    def __init__(
        self,
        redis_url: str,
        handler: BrokerHandler,
        *,
        instance_id: str,
        unsubscribe_delay: float = UNSUBSCRIBE_DELAY,
        address_map: Sequence[AddressMapping] = (),
    ) -> None:
        """``address_map``: where to reach a Redis Cluster's nodes (``redis_address_map``)."""
        self._handler = handler
        self._unsubscribe_delay = unsubscribe_delay
        self._publisher = RedisPublisher(
            redis_url, instance_id=instance_id, on_change=self._report, address_map=address_map
        )
        self._presence_payload = self._publisher.presence_payload
        #: Times a subscriber connection was re-established after being up.
        self.reconnects = 0
        #: Messages on a room channel that were not a valid event.
        self.malformed_messages = 0
        self._closed = False
        self._closing = False
        self._wanted: set[bytes] = set()
        # Channels unsubscribed but not let go yet: their unsubscribe is due at the timer.
        self._lingering: dict[bytes, asyncio.TimerHandle] = {}
        self._unsubscribing = TaskSet(log)
        self._started = asyncio.Event()
        self._reported_up: bool | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # What each broker does its own way

    @abc.abstractmethod
    def _channel_of(self, room: str) -> bytes: ...

    @abc.abstractmethod
    def _is_confirmed(self, channel: bytes) -> bool:
        """Whether the live connection that carries ``channel`` has confirmed it."""

    @abc.abstractmethod
    def _forget(self, channel: bytes) -> None:
        """``channel`` is neither wanted nor to be trusted as subscribed from now on."""

    @abc.abstractmethod
    async def _command(self, kind: bytes, channel: bytes) -> None:
        """Send ``kind`` (``SUBSCRIBE`` or ``UNSUBSCRIBE``) for ``channel`` and wait for its
        confirmation; return at once when the connection that would carry it is down."""

    @abc.abstractmethod
    async def _supervise(self) -> None:
        """Keep the subscriber connections up, forever."""

    @abc.abstractmethod
    def _subscribers_up(self) -> bool: ...

    @abc.abstractmethod
    def _tasks(self) -> list[asyncio.Task[None] | None]:
        """Every task to cancel at ``aclose``, besides the supervisor and the watcher."""

    @abc.abstractmethod
    def _up_message(self) -> str:
        """The line logged when the broker becomes ``up``."""

    @abc.abstractmethod
    async def _close_connections(self) -> None:
        """Close what the cancelled tasks left open (after ``aclose`` cancelled them)."""

    # Shared

    @property
    def up(self) -> bool:
        """True when the subscriber connections are up and the last publish (or PING)
        succeeded."""
        return self._subscribers_up() and not self._publisher.down and not self._closed

    async def start(self) -> None:
        """Start the subscriber and health tasks; wait up to ``START_TIMEOUT`` to be ``up``."""
        if self._supervisor is not None or self._closed:
            return
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-broker-supervisor")
        self._watcher = asyncio.create_task(self._publisher.watch(), name="redis-broker-watcher")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT):
                await self._started.wait()

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        """Deliver locally at once, then publish; never raises for an outage."""
        if self._closed or not events:
            return
        self._deliver(events)
        await self._publisher.send(events)

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        """Signal a presence change of each of ``rooms`` to the other instances (best effort)."""
        if self._closed or not rooms:
            return
        await self._publisher.publish_presence(rooms)

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109 (bounded by design)
        """Wait (at most ``timeout`` s) for publishes in progress and re-send dropped events."""
        await self._publisher.flush(timeout)

    @property
    def publish_failures(self) -> int:
        """``publish`` calls (and re-sends) whose publish failed."""
        return self._publisher.failures

    async def subscribe(self, room: str) -> None:
        """Returns once Redis confirmed the subscription, or at once while the connection that
        would carry it is down (or when the channel is still subscribed: see ``unsubscribe``)."""
        if self._closed:
            return
        channel = self._channel_of(room)
        lingering = self._lingering.pop(channel, None)
        if lingering is not None:
            lingering.cancel()
        if channel in self._wanted and self._is_confirmed(channel):
            return  # subscribed on the live connection already
        self._wanted.add(channel)
        # Shielded: a caller cancelled mid-command must not break the shared connection.
        await asyncio.shield(self._command(self.SUBSCRIBE, channel))

    async def unsubscribe(self, room: str) -> None:
        """Let go of ``room``'s channel ``unsubscribe_delay`` seconds from now, unless it is
        subscribed again meanwhile; with no delay, returns once Redis confirmed the
        unsubscription, or at once while disconnected."""
        if self._closed:
            return
        channel = self._channel_of(room)
        if channel not in self._wanted or channel in self._lingering:
            return
        if self._unsubscribe_delay <= 0:
            self._forget(channel)
            await asyncio.shield(self._command(self.UNSUBSCRIBE, channel))
            return
        loop = asyncio.get_running_loop()
        self._lingering[channel] = loop.call_later(self._unsubscribe_delay, self._let_go, channel)

    def _let_go(self, channel: bytes) -> None:
        del self._lingering[channel]
        # Neither wanted nor to be trusted as subscribed from this moment, though the answer is
        # still to come: a subscribe() made meanwhile sends its own command, queued behind this
        # one (or makes it moot: see the subclasses' ``_command``), and waits for it.
        self._forget(channel)
        self._unsubscribing.spawn(self._command(self.UNSUBSCRIBE, channel))

    def _message(self, channel: bytes, payload: object, events: list[SequencedEvent]) -> None:
        """A message pushed on ``channel``: an event is appended to ``events``, a presence
        signal handed on at once; dropped when the channel is not wanted or lingering."""
        if channel not in self._wanted or channel in self._lingering:
            return  # arrived before our unsubscription took effect, or lingering
        if isinstance(payload, bytes) and payload.startswith(PRESENCE_SIGNAL):
            if payload != self._presence_payload:
                try:
                    self._handler.on_presence_signal(room_of(channel, cluster=self.CLUSTER))
                except Exception:
                    log.exception("on_presence_signal failed")
            return
        try:
            event = decode_wire_event(payload)  # type: ignore[arg-type]
            if self._channel_of(event.room) != channel:
                raise ValueError(f"an event of room {event.room!r}")
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            self.malformed_messages += 1
            log.warning("ignored a malformed message on %r: %s", channel, exc)
        else:
            events.append(event)

    def _deliver(self, events: Sequence[SequencedEvent]) -> None:
        try:
            self._handler.on_events(events)
        except Exception:
            log.exception("the broker handler failed on %d events", len(events))

    def _restored(self) -> None:
        try:
            self._handler.on_broker_restored()
        except Exception:
            log.exception("on_broker_restored failed")

    def _report(self, reason: str = "") -> None:
        """Log each change of ``up`` once: one warning per outage, one line when it ends."""
        up = self.up
        if self._closed or up == self._reported_up:
            return
        if up:
            log.info("%s", self._up_message())
        else:
            log.warning("Redis unreachable (%s); events are delivered locally only", reason)
        self._reported_up = up

    async def aclose(self) -> None:
        """Flush publishes in progress (at most ``CLOSE_TIMEOUT`` s), stop, close. Idempotent."""
        if self._closing:
            return
        self._closing = True
        await self.flush(CLOSE_TIMEOUT)
        self._closed = True
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()
        self._unsubscribing.cancel()  # the connections close below anyway
        await self._unsubscribing.wait()
        candidates = [self._supervisor, self._watcher, *self._tasks()]
        tasks = {t for t in candidates if t is not None}
        pending = {t for t in tasks if not t.done()}
        while pending:
            # Repeated: a cancellation can be swallowed by a library call that completes at the
            # same moment (``asyncio.wait_for`` on Python 3.11 does that).
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the supervisor may not have done it
        await self._publisher.aclose()
        await self._close_connections()
