"""The broker contract, run against every broker; then what the Redis and postgres brokers promise.

Common contract (``MemoryBroker``, ``RedisBroker`` on a private ``redis-server``,
``RedisClusterBroker`` on a private Redis Cluster: ``tests/integration/test_redis_cluster.py``
has its multi-instance, outage and failover tests, and ``PostgresBroker`` on the module's
PostgreSQL database): every published event reaches the local handler, in publish order; ``up``
once started; ``unsubscribe`` and ``aclose`` are idempotent. Redis only: delivery between two
instances for subscribed rooms only, ``subscribe`` returning once active, outages (server
stopped and restarted, subscriber connection killed) survived with ``on_broker_restored``,
malformed payloads skipped. PostgreSQL only (the shared server is never stopped: its
connections are terminated instead): delivery between instances of the subscribed rooms only,
read from the log, in order, once, coalesced; ``liveboard_emit`` wakes them; the listening
connection terminated (restored, ``on_broker_restored``) and the notifying one (the
notification kept and sent again); malformed notifications skipped; a project room's events
name their workspace room's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
from redis.asyncio import Redis

from liveboard.protocol import BrokerEvent, SequencedEvent, encode_event
from liveboard.realtime.brokers import Broker, create_broker
from liveboard.realtime.brokers.postgres import PostgresBroker
from liveboard.realtime.brokers.redis import RedisBroker, channel_of
from liveboard.store import eventlog
from liveboard.store.database import Database
from liveboard.store.migrations import prepare_database
from liveboard.store.open_log_sql import wakeup_channel
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

ROOM = "project:p1"
OTHER = "project:p2"


def _whole(event: SequencedEvent) -> BrokerEvent:
    """The event with its ``data`` (a broker may hand over a ``WireEvent``, ``data`` unparsed)."""
    return event if isinstance(event, BrokerEvent) else event.full()


class Recorder:
    """A ``BrokerHandler`` that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[list[SequencedEvent]] = []
        self.restored = 0
        self.signals: list[str] = []

    def on_events(self, events: Sequence[SequencedEvent]) -> None:
        assert events, "on_events called with no event"
        self.batches.append(list(events))

    def on_broker_restored(self) -> None:
        self.restored += 1

    def on_presence_signal(self, room: str) -> None:
        self.signals.append(room)

    def events(self, room: str) -> list[SequencedEvent]:
        return [event for batch in self.batches for event in batch if event.room == room]

    def offsets(self, room: str) -> list[int]:
        return [event.offset for event in self.events(room)]

    def first_offsets(self, room: str) -> list[int]:
        """Offsets in order of first arrival (a Redis instance also gets its own echo)."""
        return list(dict.fromkeys(self.offsets(room)))


def event(offset: int, room: str = ROOM) -> BrokerEvent:
    return BrokerEvent(
        type="task:updated",
        room=room,
        offset=offset,
        epoch="e1",
        ts=1_764_120_000_000 + offset,
        user_id="alice",
        data={"taskId": "t1", "n": offset},
    )


async def eventually(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail after ``within`` seconds (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(within)
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within} s: {what}")
        await asyncio.sleep(0.01)


BrokerFactory = Callable[[Recorder], Awaitable[Broker]]
RedisFactory = Callable[[Recorder], Awaitable[RedisBroker]]


@pytest.fixture(params=["memory", "redis", "redis-cluster", "postgres"])
def broker_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The kind, and the URL of its server (a private Redis, a private Redis Cluster, the
    module's PostgreSQL)."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_server").url
    if request.param == "redis-cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        return "redis", nodes.seed_url
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("module_postgres_url")
    return "memory", None


@pytest.fixture
async def make_broker(broker_kind: tuple[str, str | None]) -> AsyncIterator[BrokerFactory]:
    """Started brokers of the parametrised kind, built like the app does; closed at the end."""
    brokers: list[Broker] = []
    kind, url = broker_kind
    redis_url = url if kind == "redis" else None
    database_url = url if kind == "postgres" else None
    db = None
    if database_url is not None:
        db = Database(database_url)
        await prepare_database(db, 10.0)

    async def make(handler: Recorder) -> Broker:
        broker = create_broker(
            redis_url,
            handler,
            instance_id=f"test{len(brokers)}",
            kind=kind,
            db=db,
            database_url=database_url,
        )
        brokers.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in brokers:
        await broker.aclose()
    if db is not None:
        await db.aclose()


@pytest.fixture
async def make_redis(redis_server: RedisServer) -> AsyncIterator[RedisFactory]:
    """Started Redis brokers ("instances") on the test's private server; closed at the end."""
    brokers: list[RedisBroker] = []

    async def make(handler: Recorder) -> RedisBroker:
        # No lingering: these tests see an unsubscribe take effect at once.
        broker = RedisBroker(
            redis_server.url, handler, instance_id=f"test{len(brokers)}", unsubscribe_delay=0.0
        )
        brokers.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in brokers:
        await broker.aclose()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client of the test's server, for raw commands."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


# The contract of every broker


async def test_up_once_started(make_broker: BrokerFactory) -> None:
    broker = await make_broker(Recorder())
    assert broker.up
    assert broker.name in {"memory", "redis", "postgres"}


async def test_events_arrive_in_publish_order(make_broker: BrokerFactory) -> None:
    handler = Recorder()
    broker = await make_broker(handler)
    await broker.subscribe(ROOM)
    for offset in range(1, 4):
        await broker.publish([event(offset)])
    await broker.publish([event(offset) for offset in range(4, 9)])

    await eventually(lambda: len(handler.first_offsets(ROOM)) == 8, what="8 events")
    assert handler.first_offsets(ROOM) == list(range(1, 9))


async def test_one_publish_of_many_events_keeps_their_order(make_broker: BrokerFactory) -> None:
    handler = Recorder()
    broker = await make_broker(handler)
    await broker.subscribe(ROOM)
    await broker.subscribe(OTHER)
    events = [event(n // 2 + 1, ROOM if n % 2 == 0 else OTHER) for n in range(100)]
    await broker.publish(events)

    def complete() -> bool:
        return len(handler.first_offsets(ROOM)) == len(handler.first_offsets(OTHER)) == 50

    await eventually(complete, what="50 events in each room")
    assert handler.first_offsets(ROOM) == list(range(1, 51))
    assert handler.first_offsets(OTHER) == list(range(1, 51))
    # However the broker splits them into batches, concatenated they are the publish order.
    assert [e for batch in handler.batches for e in batch][:100] == events


async def test_local_handler_gets_events_without_a_subscription(
    make_broker: BrokerFactory,
) -> None:
    handler = Recorder()
    broker = await make_broker(handler)
    await broker.publish([event(1)])
    assert handler.offsets(ROOM) == [1]  # at once, before publish returns


async def test_unsubscribe_is_idempotent(make_broker: BrokerFactory) -> None:
    broker = await make_broker(Recorder())
    await broker.unsubscribe(ROOM)  # never subscribed
    await broker.subscribe(ROOM)
    await broker.subscribe(ROOM)
    await broker.unsubscribe(ROOM)
    await broker.unsubscribe(ROOM)
    assert broker.up


async def test_aclose_is_idempotent_and_publish_after_it_is_harmless(
    make_broker: BrokerFactory,
) -> None:
    handler = Recorder()
    broker = await make_broker(handler)
    await broker.subscribe(ROOM)
    await broker.aclose()
    await broker.aclose()
    await broker.publish([event(1)])
    await broker.subscribe(OTHER)
    await broker.unsubscribe(ROOM)
    # Nothing raised, and a closed broker delivers nothing, not even to its own instance.
    assert handler.offsets(ROOM) == []
    assert handler.offsets(OTHER) == []


# Redis: several instances


async def test_other_instance_gets_events_of_the_rooms_it_subscribed_only(
    make_redis: RedisFactory,
) -> None:
    a, b = Recorder(), Recorder()
    broker_a = await make_redis(a)
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)

    await broker_a.publish([event(1, OTHER)])  # B did not subscribe to OTHER
    await broker_a.publish([event(1), event(2)])
    await broker_a.publish([event(3)])

    await eventually(lambda: len(b.offsets(ROOM)) == 3, what="B gets ROOM's events")
    assert b.offsets(ROOM) == [1, 2, 3]  # once each, in order
    # OTHER's event was published first on the same connection: it would have come first.
    assert b.events(OTHER) == []
    assert b.restored == 0
    # A delivered its own events locally at once, and gets no echo for rooms it did not want.
    assert a.offsets(ROOM) == [1, 2, 3]


async def test_presence_signals_of_several_rooms_reach_the_instances_subscribed_to_them(
    make_redis: RedisFactory,
) -> None:
    a, b = Recorder(), Recorder()
    broker_a = await make_redis(a)
    broker_b = await make_redis(b)
    for room in (ROOM, OTHER):
        await broker_a.subscribe(room)
        await broker_b.subscribe(room)
    await broker_a.publish_presence([ROOM, OTHER, "project:nobody-subscribed"])
    await broker_a.publish_presence([OTHER])
    await eventually(lambda: len(b.signals) == 3, what="B gets a signal per room")
    assert b.signals == [ROOM, OTHER, OTHER]
    await broker_b.publish_presence([ROOM])
    await eventually(lambda: a.signals == [ROOM], what="A gets B's signal")
    await broker_a.publish_presence([ROOM])  # behind B's own signal on B's connection
    await eventually(lambda: len(b.signals) == 4, what="B gets A's last signal")
    assert b.signals == [ROOM, OTHER, OTHER, ROOM]  # and not its own


async def test_own_events_come_back_through_redis(make_redis: RedisFactory) -> None:
    handler = Recorder()
    broker = await make_redis(handler)
    await broker.subscribe(ROOM)
    await broker.publish([event(1), event(2)])
    await eventually(lambda: len(handler.offsets(ROOM)) == 4, what="local delivery and echo")
    assert handler.offsets(ROOM) == [1, 2, 1, 2]


async def test_publish_right_after_subscribe_returns_is_received(
    make_redis: RedisFactory,
) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    rooms = [f"project:r{n}" for n in range(20)]
    for room in rooms:
        await broker_b.subscribe(room)
        await broker_a.publish([event(1, room)])
    await eventually(lambda: all(b.offsets(room) == [1] for room in rooms), what="every room")


async def test_unsubscribed_room_stops_arriving(make_redis: RedisFactory) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    await broker_b.subscribe(OTHER)
    await broker_a.publish([event(1)])
    await eventually(lambda: b.offsets(ROOM) == [1], what="first event")

    await broker_b.unsubscribe(ROOM)
    await broker_a.publish([event(2)])
    await broker_a.publish([event(1, OTHER)])  # a marker behind it, on a room still wanted
    await eventually(lambda: b.offsets(OTHER) == [1], what="marker")
    assert b.offsets(ROOM) == [1]


async def test_redis_stopped_then_restarted(
    make_redis: RedisFactory,
    redis_server: RedisServer,
) -> None:
    a, b = Recorder(), Recorder()
    broker_a = await make_redis(a)
    broker_b = await make_redis(b)
    await broker_a.subscribe(ROOM)
    await broker_b.subscribe(ROOM)
    await broker_a.publish([event(1)])
    await eventually(lambda: b.offsets(ROOM) == [1], what="before the outage")

    await asyncio.to_thread(redis_server.stop)
    await eventually(lambda: not broker_a.up and not broker_b.up, what="both down")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await broker_a.publish([event(2)])  # does not raise
    await broker_a.publish([event(3)])
    assert loop.time() - started < timeout(1.5) * 2
    assert a.first_offsets(ROOM) == [1, 2, 3]  # local subscribers still get everything
    assert broker_a.publish_failures == 2
    assert not broker_a.up

    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: broker_a.up and broker_b.up, what="both up again")
    assert b.restored >= 1
    assert a.restored >= 1
    assert broker_b.reconnects >= 1

    await broker_a.publish([event(4)])
    await eventually(lambda: 4 in b.offsets(ROOM), what="new events flow again")
    # The last event A could not publish is sent again, so B notices the hole (and reads the
    # log); the one before it (2) is for B's catch-up, not for Redis.
    await eventually(lambda: 3 in b.offsets(ROOM), what="re-sent dropped event")
    assert 2 not in b.offsets(ROOM)


async def test_publish_during_outage_returns_quickly(
    make_redis: RedisFactory,
    redis_server: RedisServer,
) -> None:
    handler = Recorder()
    broker = await make_redis(handler)
    await asyncio.to_thread(redis_server.stop)
    loop = asyncio.get_running_loop()
    for offset in range(1, 6):
        started = loop.time()
        await broker.publish([event(offset), event(offset + 100)])
        assert loop.time() - started < timeout(1.5)
    assert handler.offsets(ROOM) == [1, 101, 2, 102, 3, 103, 4, 104, 5, 105]
    assert not broker.up


async def test_subscribe_while_down_takes_effect_on_reconnection(
    make_redis: RedisFactory,
    redis_server: RedisServer,
) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await asyncio.to_thread(redis_server.stop)
    await eventually(lambda: not broker_b.up, what="B down")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await broker_b.subscribe(ROOM)
    assert loop.time() - started < timeout(0.5)

    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: broker_a.up and broker_b.up and b.restored == 1, what="restored")
    await broker_a.publish([event(1)])
    await eventually(lambda: b.offsets(ROOM) == [1], what="event after reconnection")


async def test_start_while_redis_is_down(
    make_redis: RedisFactory,
    redis_server: RedisServer,
) -> None:
    await asyncio.to_thread(redis_server.stop)
    handler = Recorder()
    loop = asyncio.get_running_loop()
    started = loop.time()
    broker = await make_redis(handler)
    assert loop.time() - started < timeout(2.0)
    assert not broker.up
    await broker.subscribe(ROOM)
    await broker.publish([event(1)])
    assert handler.offsets(ROOM) == [1]

    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: broker.up, what="up once Redis runs")
    await eventually(lambda: handler.restored == 1, what="rooms wanted meanwhile: catch-up")


async def test_killed_subscriber_connection_is_recovered(
    make_redis: RedisFactory,
    admin: Redis,
) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    await broker_a.publish([event(1)])
    await eventually(lambda: b.offsets(ROOM) == [1], what="before the kill")

    killed = await admin.client_kill_filter(_type="pubsub")
    assert killed >= 1
    await eventually(lambda: b.restored == 1 and broker_b.up, what="B restored")
    assert broker_b.reconnects == 1

    await broker_a.publish([event(2)])
    await eventually(lambda: b.offsets(ROOM) == [1, 2], what="events flow again")


async def test_malformed_payloads_are_skipped(make_redis: RedisFactory, admin: Redis) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    await admin.publish(channel_of(ROOM), b"not json")
    await admin.publish(channel_of(ROOM), b'{"type": 1}')
    await admin.publish(channel_of(ROOM), encode_event(event(1)))
    await broker_a.publish([event(2)])

    await eventually(lambda: b.offsets(ROOM) == [1, 2], what="valid events after bad ones")
    assert broker_b.malformed_messages == 2
    assert broker_b.up
    assert b.restored == 0


async def test_many_events_arrive_in_order_across_instances(make_redis: RedisFactory) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    for start in range(1, 1001, 10):
        await broker_a.publish([event(offset) for offset in range(start, start + 10)])
    await eventually(lambda: len(b.offsets(ROOM)) == 1000, what="1000 events")
    assert b.offsets(ROOM) == list(range(1, 1001))
    assert len(b.batches) <= 1000


@pytest.mark.slow
async def test_frozen_redis_is_detected_and_survived(
    make_redis: RedisFactory,
    redis_server: RedisServer,
) -> None:
    """A Redis that answers nothing (no connection reset) is noticed by timeouts and PINGs."""
    a, b = Recorder(), Recorder()
    broker_a = await make_redis(a)
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    await broker_a.publish([event(1)])
    await eventually(lambda: b.offsets(ROOM) == [1], what="before the freeze")

    await asyncio.to_thread(redis_server.pause)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await broker_a.publish([event(2)])
        assert loop.time() - started < timeout(1.5)
        assert a.offsets(ROOM) == [1, 2]
        await eventually(lambda: not broker_a.up and not broker_b.up, what="both down")
    finally:
        await asyncio.to_thread(redis_server.resume)

    await eventually(lambda: broker_a.up and broker_b.up and b.restored == 1, what="restored")
    await broker_a.publish([event(3)])
    await eventually(lambda: {2, 3} <= set(b.offsets(ROOM)), what="events flow again")


async def test_cancelled_subscribe_leaves_the_connection_alone(make_redis: RedisFactory) -> None:
    b = Recorder()
    broker_a = await make_redis(Recorder())
    broker_b = await make_redis(b)
    await broker_b.subscribe(ROOM)
    for n in range(20):
        task = asyncio.create_task(broker_b.subscribe(f"project:c{n}"))
        for _ in range(n % 5):  # cancelled at various points of the command
            await asyncio.sleep(0)
        task.cancel()
    await broker_b.subscribe(OTHER)
    await broker_a.publish([event(1), event(1, OTHER)])
    await eventually(lambda: b.offsets(ROOM) == b.offsets(OTHER) == [1], what="both rooms")
    assert broker_b.reconnects == 0
    assert b.restored == 0


# Lingering subscriptions (``unsubscribe_delay``)


async def _pubsub_commands(admin: Redis) -> tuple[int, int]:
    """How many SUBSCRIBE and UNSUBSCRIBE commands the server has run."""
    stats = await admin.info("commandstats")

    def calls(name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    return calls("subscribe"), calls("unsubscribe")


@contextlib.asynccontextmanager
async def _lingering_broker(
    url: str, handler: Recorder, delay: float
) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    """A broker that lets go of rooms ``delay`` s after unsubscribe, and a publisher."""
    broker = RedisBroker(url, handler, instance_id="linger", unsubscribe_delay=delay)
    publisher = RedisBroker(url, Recorder(), instance_id="pub", unsubscribe_delay=0.0)
    try:
        await broker.start()
        await publisher.start()
        await eventually(lambda: broker.up and publisher.up, what="both up")
        yield broker, publisher
    finally:
        await broker.aclose()
        await publisher.aclose()


async def _arrives(publisher: RedisBroker, handler: Recorder, offset: int) -> None:
    """An event of ROOM published now reaches ``handler`` (the room is subscribed)."""
    await publisher.publish([event(offset)])
    await eventually(lambda: handler.offsets(ROOM)[-1:] == [offset], what=f"event {offset}")


async def test_a_room_subscribed_again_within_the_delay_costs_no_command(
    redis_server: RedisServer,
    admin: Redis,
) -> None:
    handler = Recorder()
    async with _lingering_broker(redis_server.url, handler, 30.0) as (broker, publisher):
        await broker.subscribe(ROOM)
        before = await _pubsub_commands(admin)
        await broker.unsubscribe(ROOM)
        await broker.subscribe(ROOM)  # within the delay: still subscribed
        await broker.unsubscribe(ROOM)
        await broker.subscribe(ROOM)
        assert await _pubsub_commands(admin) == before
        await _arrives(publisher, handler, 1)


async def test_a_lingering_room_is_silent_then_let_go(
    redis_server: RedisServer,
    admin: Redis,
) -> None:
    handler = Recorder()
    async with _lingering_broker(redis_server.url, handler, timeout(1.0)) as (broker, publisher):
        await broker.subscribe(ROOM)
        await broker.subscribe(OTHER)
        await broker.unsubscribe(ROOM)
        await publisher.publish([event(1)])  # still subscribed in Redis, but not passed on
        await publisher.publish([event(1, OTHER)])  # a marker behind it, on a room still wanted
        await eventually(lambda: handler.offsets(OTHER) == [1], what="marker")
        assert handler.offsets(ROOM) == []

        async def let_go() -> bool:
            return int((await admin.pubsub_numsub(channel_of(ROOM)))[0][1]) == 0

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(5.0)
        while not await let_go():
            assert loop.time() < deadline, "never unsubscribed"
            await asyncio.sleep(0.05)
        await broker.subscribe(ROOM)  # and it can be subscribed again
        await _arrives(publisher, handler, 2)


async def test_subscribe_while_the_let_go_is_in_flight_waits_for_its_own_subscribe(
    redis_server: RedisServer,
    admin: Redis,
) -> None:
    handler = Recorder()
    async with _lingering_broker(redis_server.url, handler, 30.0) as (broker, publisher):
        channel = channel_of(ROOM)
        await admin.ping()  # its connection open: the check below is one round trip
        await broker.subscribe(ROOM)
        await broker.unsubscribe(ROOM)
        broker._lingering[channel].cancel()
        broker._let_go(channel)  # what the timer does: the UNSUBSCRIBE is now on its way
        queued = asyncio.ensure_future(broker.subscribe(ROOM))
        await asyncio.sleep(0)
        await broker.unsubscribe(ROOM)
        await broker.subscribe(ROOM)  # must not take the UNSUBSCRIBE's channel for subscribed
        assert (await admin.pubsub_numsub(channel))[0][1] == 1, "returned before it was active"
        await _arrives(publisher, handler, 1)
        await queued


async def test_a_lingering_room_survives_a_reconnection(
    redis_server: RedisServer,
    admin: Redis,
) -> None:
    handler = Recorder()
    async with _lingering_broker(redis_server.url, handler, 30.0) as (broker, publisher):
        await broker.subscribe(ROOM)
        await broker.unsubscribe(ROOM)
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await eventually(lambda: broker.reconnects == 1 and broker.up, what="reconnected")
        await broker.subscribe(ROOM)
        await _arrives(publisher, handler, 1)


# PostgreSQL: several instances (NOTIFY wakes them, the log is the payload)


@contextlib.asynccontextmanager
async def _pg_instances(url: str, count: int = 2) -> AsyncIterator[list[tuple[Any, Recorder]]]:
    """``count`` postgres brokers ("instances") on ``url``'s log, each with its recorder."""
    db = Database(url)
    await prepare_database(db, 10.0)
    made: list[tuple[Any, Recorder]] = []
    try:
        for n in range(count):
            handler = Recorder()
            broker = PostgresBroker(
                url, handler, db=db, channel=wakeup_channel("liveboard"), instance_id=f"pg{n}"
            )
            await broker.start()
            made.append((broker, handler))
        yield made
    finally:
        for broker, _ in made:
            await broker.aclose()
        await db.aclose()


async def _append(url: str, room: str, count: int) -> list[BrokerEvent]:
    """``count`` events appended to ``room``'s log (created if new), as the task service does."""
    db = Database(url)
    try:
        async with db.write() as conn:
            if await eventlog.room_position(conn, room) is None:
                await eventlog.create_room(conn, room)
            return [
                await eventlog.append_event(
                    conn, room=room, type="task:updated", user_id="alice", data={"n": n}, ts=n
                )
                for n in range(count)
            ]
    finally:
        await db.aclose()


async def _backend(url: str, application: str) -> int:
    """Terminate the connections named ``application``; how many there were."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                application,
            )
        )
    finally:
        await conn.close()


@pytest.fixture
def pg_url(module_postgres_url: str) -> str:
    return module_postgres_url


def _room() -> str:
    return f"project:pg{secrets.token_hex(4)}"


async def test_pg_other_instance_reads_the_rooms_it_subscribed_from_the_log(pg_url: str) -> None:
    room, other = _room(), _room()
    async with _pg_instances(pg_url) as [(a, rec_a), (b, rec_b)]:
        await b.subscribe(room)
        await a.publish(await _append(pg_url, other, 1))  # B did not subscribe to it
        events = await _append(pg_url, room, 3)
        await a.publish(events[:2])
        await a.publish(events[2:])
        await eventually(lambda: len(rec_b.offsets(room)) == 3, what="B reads ROOM's events")
        assert rec_b.offsets(room) == [1, 2, 3]  # once each, in order, from the log
        assert [_whole(e).data for e in rec_b.events(room)] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert rec_b.events(other) == []
        assert rec_a.offsets(room) == [1, 2, 3]  # local, and no read of its own events
        assert rec_b.restored == 0
        assert a.log_reads == 0


async def test_pg_many_events_arrive_in_order_across_instances(pg_url: str) -> None:
    room = _room()
    async with _pg_instances(pg_url) as [(a, _), (b, rec_b)]:
        await b.subscribe(room)
        for _ in range(20):
            await a.publish(await _append(pg_url, room, 10))
        await eventually(lambda: len(rec_b.offsets(room)) == 200, what="200 events")
        assert rec_b.offsets(room) == list(range(1, 201))
        assert b.log_reads <= 20  # coalesced: at most one read per notification


async def test_pg_liveboard_emit_wakes_the_subscribed_instances(pg_url: str) -> None:
    room = _room()
    await _append(pg_url, room, 1)
    async with _pg_instances(pg_url) as [(_, rec_a), (b, rec_b)]:
        await b.subscribe(room)
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("SELECT liveboard_emit($1, 'app:ping', '{\"x\": 1}'::jsonb)", room)
        finally:
            await conn.close()
        await eventually(lambda: rec_b.offsets(room) == [2], what="the emitted event")
        assert rec_b.events(room)[0].type == "app:ping"
        assert rec_a.events(room) == []


async def test_pg_listening_connection_terminated_is_restored(pg_url: str) -> None:
    room = _room()
    async with _pg_instances(pg_url) as [(a, _), (b, rec_b)]:
        await b.subscribe(room)
        await a.publish(await _append(pg_url, room, 1))
        await eventually(lambda: rec_b.offsets(room) == [1], what="before the kill")

        assert await _backend(pg_url, "liveboard listen") == 2
        await eventually(lambda: not b.up, within=1.0, what="B sees the loss")
        await eventually(lambda: b.up and rec_b.restored == 1, what="B listens again")
        assert b.reconnects == 1
        await a.publish(await _append(pg_url, room, 2))
        await eventually(lambda: rec_b.offsets(room) == [1, 2, 3], what="events flow again")


async def test_pg_notification_lost_to_a_killed_connection_is_sent_again(pg_url: str) -> None:
    room = _room()
    async with _pg_instances(pg_url) as [(a, _), (b, rec_b)]:
        await b.subscribe(room)
        await a.publish(await _append(pg_url, room, 1))
        await eventually(lambda: rec_b.offsets(room) == [1], what="before the kill")

        assert await _backend(pg_url, "liveboard notify") == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await a.publish(await _append(pg_url, room, 1))  # its connection is found dead
        assert loop.time() - started < timeout(1.5)
        await a.publish(await _append(pg_url, room, 1))
        await eventually(lambda: rec_b.offsets(room) == [1, 2, 3], what="both, from the log")
        assert a.publish_failures >= 1
        assert rec_b.restored == 0


async def test_pg_malformed_notifications_are_skipped(pg_url: str) -> None:
    room = _room()
    async with _pg_instances(pg_url) as [(a, _), (b, rec_b)]:
        await b.subscribe(room)
        conn = await asyncpg.connect(pg_url)
        try:
            for bad in ("garbage", f"{room} x", f"{room} 1 2 3"):
                await conn.execute("SELECT pg_notify($1, $2)", wakeup_channel("liveboard"), bad)
        finally:
            await conn.close()
        await a.publish(await _append(pg_url, room, 1))
        await eventually(lambda: rec_b.offsets(room) == [1], what="the valid one")
        assert b.malformed_messages == 3
        assert b.up


async def test_pg_project_events_name_their_workspace_head_read_with_them(pg_url: str) -> None:
    """A project room's events read after a notification name the head of its workspace room
    in the same snapshot: a removal committed before them is held ahead of them by the hub."""
    wid, pid = f"w{secrets.token_hex(4)}", f"p{secrets.token_hex(4)}"
    room = f"project:{pid}"
    async with _pg_instances(pg_url) as [(a, _), (b, rec_b)]:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(
                "INSERT INTO liveboard.workspaces (id, name, created_by, created_at)"
                " VALUES ($1, 'w', 'owner', 'now')",
                wid,
            )
            await conn.execute(
                "INSERT INTO liveboard.projects (id, workspace_id, name, statuses, created_at)"
                " VALUES ($1, $2, 'p', '[]', 'now')",
                pid,
                wid,
            )
        finally:
            await conn.close()
        await _append(pg_url, f"workspace:{wid}", 3)  # e.g. a member:removed at 3
        await b.subscribe(room)
        await a.publish(await _append(pg_url, room, 2))
        await eventually(lambda: rec_b.offsets(room) == [1, 2], what="the project's events")
        assert [e.workspace_offset for e in rec_b.events(room)] == [3, 3]
        other = _room()  # a project room with no project row: nothing to wait for
        await b.subscribe(other)
        await a.publish(await _append(pg_url, other, 1))
        await eventually(lambda: rec_b.offsets(other) == [1], what="the other room's event")
        assert rec_b.events(other)[0].workspace_offset == 0
