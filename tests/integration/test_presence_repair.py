"""An instance keeps its presence entries in Redis exact, whoever or whatever changed them.

Issue 16, high item 1, as a class: an instance's entries can go from Redis without the instance
doing anything, and without Redis restarting — another instance takes it for dead after a stall
and removes them (``test_presence_outages`` covers that end to end), memory pressure evicts a
room's hash, a failover loses the latest writes, an operator deletes keys — and one it removed
can come back (a write that timed out is delivered late). Here two ``RedisPresence`` managers
(two instances, in this process) share a private ``redis-server``; the test changes Redis behind
their backs in each of those ways, and each time both views must end exact again, with no
user shown leaving for good. Then the converse: under steady churn of joins and leaves, nothing
is taken for a loss (no entry is written again for nothing), writes of one room are applied in
order, an instance is live before it can hold an entry, and a repair under way when the
instance shuts down writes nothing back.

The presence timings are shortened (heartbeat and refresh 0.3 s) so that each case takes about
a second; the logic is the same at the shipped 2 s.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from liveboard.realtime import presence_redis
from liveboard.realtime.presence import PresenceDiff, User
from liveboard.realtime.presence_redis import KEY_PREFIX, RedisPresence
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

ROOM = "project:p1"
KEY = KEY_PREFIX + ROOM
HEAL_WITHIN = 3.0  # a few shortened refresh periods


class Views:
    """The listener of one manager: the last list of each room it was told of."""

    def __init__(self) -> None:
        self.users: dict[str, list[User]] = {}

    def presence_changed(self, diff: PresenceDiff) -> None:
        self.users[diff.room] = diff.users


class Instance:
    def __init__(self, url: str, name: str, peers: list[Instance]) -> None:
        self.name = name
        self.views = Views()
        self.peers = peers

        async def signal(rooms: Sequence[str]) -> None:  # what the broker does, minus Redis
            for peer in self.peers:
                if peer is not self:
                    for room in rooms:
                        peer.presence.on_signal(room)

        self.presence = RedisPresence(
            url, self.views, instance_id=name, active_rooms=lambda: [ROOM], signal=signal
        )

    def shown(self) -> list[str]:
        return [user for user, _ in self.views.users.get(ROOM, [])]


@pytest.fixture
async def instances(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[list[Instance]]:
    monkeypatch.setattr(presence_redis, "HEARTBEAT_INTERVAL", 0.3)
    monkeypatch.setattr(presence_redis, "REFRESH_INTERVAL", 0.3)
    peers: list[Instance] = []
    peers.extend(Instance(redis_server.url, name, peers) for name in ("one", "two"))
    for instance in peers:
        await instance.presence.start()
    try:
        yield peers
    finally:
        for instance in peers:
            await instance.presence.aclose()


async def until(predicate: Callable[[], bool], what: str, wait: float = HEAL_WITHIN) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(wait)
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"not within {wait}s: {what}"
        await asyncio.sleep(0.02)


async def everyone_sees(instances: list[Instance], users: list[str], what: str) -> None:
    for instance in instances:
        await until(shows(instance, sorted(users)), f"{instance.name} shows {users}: {what}")


def shows(instance: Instance, users: list[str]) -> Callable[[], bool]:
    return lambda: instance.shown() == users


async def test_entries_changed_behind_an_instance_are_made_exact_again(
    instances: list[Instance],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="liveboard.presence")
    one, two = instances
    await one.presence.join(ROOM, "c1", "u1", "U1")
    await one.presence.join(ROOM, "c2", "u2", "U2")
    await two.presence.join(ROOM, "c3", "u3", "U3")
    everyone = ["u1", "u2", "u3"]
    await everyone_sees(instances, everyone, "at start")
    redis = Redis.from_url(redis_server.url)
    try:
        # Another hand removes two of instance one's entries (as a reaper would).
        await redis.hdel(KEY, "one:c1", "one:c2")
        await until_stored(redis, {"one:c1": U1, "one:c2": U2, "two:c3": U3})
        await everyone_sees(instances, everyone, "after one's entries were removed")

        # The room's hash goes as a whole (eviction, a deleted key).
        await redis.delete(KEY)
        await until_stored(redis, {"one:c1": U1, "one:c2": U2, "two:c3": U3})
        await everyone_sees(instances, everyone, "after the room's hash was deleted")

        # A leave whose removal is undone (a write that timed out, delivered late).
        await one.presence.leave(ROOM, "c2")
        await everyone_sees(instances, ["u1", "u3"], "after u2 left")
        await redis.hset(KEY, "one:c2", U2)
        await until_stored(redis, {"one:c1": U1, "two:c3": U3})
        await everyone_sees(instances, ["u1", "u3"], "after a ghost entry came back")

        # An entry rewritten with other content: written again as the instance holds it.
        await redis.hset(KEY, "one:c1", b'{"userId":"u1","name":"someone else"}')
        await until_stored(redis, {"one:c1": U1, "two:c3": U3})
    finally:
        await redis.aclose()
    repairs = [r for r in caplog.records if "missing or stale" in r.getMessage()]
    assert len(repairs) >= 4, "each repair is logged"


U1 = b'{"userId":"u1","name":"U1"}'
U2 = b'{"userId":"u2","name":"U2"}'
U3 = b'{"userId":"u3","name":"U3"}'


async def until_stored(redis: Redis, expected: dict[str, bytes]) -> None:
    """Wait until the room's hash is exactly ``expected``."""
    want = {field.encode(): value for field, value in expected.items()}
    deadline = asyncio.get_running_loop().time() + timeout(HEAL_WITHIN)
    while (got := await redis.hgetall(KEY)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"Redis holds {got}, not {want}"
        await asyncio.sleep(0.02)


async def test_an_instance_is_live_when_start_returns(
    instances: list[Instance],
    redis_server: RedisServer,
) -> None:
    """``start`` returns once the instance is in the live set, so that no join can come before:
    the others would take its entry for a dead instance's and remove it (its users shown
    leaving, then coming back)."""
    three = Instance(redis_server.url, "three", instances)
    redis = Redis.from_url(redis_server.url)
    try:
        await three.presence.start()
        assert await redis.zscore(presence_redis.INSTANCES_KEY, "three") is not None
    finally:
        await three.presence.aclose()
        await redis.aclose()


async def test_a_repair_under_way_at_shutdown_writes_nothing_back(
    instances: list[Instance],
    redis_server: RedisServer,
) -> None:
    """A read that finds the entries missing while ``aclose`` removes them on purpose must not
    write them back: the instance would linger in presence after it left."""
    one, two = instances
    await one.presence.join(ROOM, "c1", "u1", "U1")
    await two.presence.join(ROOM, "c2", "u2", "U2")
    await everyone_sees(instances, ["u1", "u2"], "at start")
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.hdel(KEY, "one:c1")
        reading = asyncio.ensure_future(one.presence._refresh([ROOM]))
        await asyncio.sleep(0)  # the read is sent
        await one.presence.aclose()
        await reading
        await asyncio.sleep(0.5)
        assert sorted(await redis.hkeys(KEY)) == [b"two:c2"]
    finally:
        await redis.aclose()


async def test_a_leave_is_applied_after_the_join_it_follows(
    instances: list[Instance],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A join's write is slow to leave (a busy connection); the leave that follows goes out
    after it, never before: applied first, it would leave a ghost entry of a user gone."""
    caplog.set_level(logging.INFO, logger="liveboard.presence")
    one, _ = instances
    execute = Pipeline.execute
    delayed: list[float] = []

    async def first_write_late(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        if not delayed and any(args[0] == "HSET" for args, _ in self.command_stack):
            delayed.append(0.2)
            await asyncio.sleep(0.2)
        return await execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", first_write_late)
    await one.presence.join(ROOM, "c1", "u1", "U1")
    await asyncio.sleep(0.05)  # the join's pipeline is on its way, held back
    await one.presence.leave(ROOM, "c1")
    redis = Redis.from_url(redis_server.url)
    try:
        await asyncio.sleep(1.0)  # both applied, and three refreshes of 0.3 s
        assert delayed, "the join's write was not held back"
        assert await redis.hkeys(KEY) == []
    finally:
        await redis.aclose()
    repairs = [r.getMessage() for r in caplog.records if "missing or stale" in r.getMessage()]
    assert repairs == [], "Redis held a ghost entry until the instance repaired it"


async def test_churn_is_never_taken_for_a_loss(
    instances: list[Instance], caplog: pytest.LogCaptureFixture
) -> None:
    """Joins and leaves on both instances for 3 s, while each re-reads the room every 0.3 s:
    a write on its way is never mistaken for an entry lost (no repair is logged), and both
    views end exact."""
    caplog.set_level(logging.INFO, logger="liveboard.presence")
    rng = random.Random(16)
    present: dict[str, tuple[Instance, str]] = {}  # connection → (instance, user)
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    n = 0
    while loop.time() < end:
        n += 1
        if present and rng.random() < 0.45:
            connection = rng.choice(sorted(present))
            instance, _ = present.pop(connection)
            await instance.presence.leave(ROOM, connection)
        else:
            instance = rng.choice(instances)
            connection, user = f"c{n}", f"u{rng.randrange(40)}"
            present[connection] = (instance, user)
            await instance.presence.join(ROOM, connection, user, user.upper())
        await asyncio.sleep(rng.choice((0, 0, 0.001, 0.005, 0.02)))
    await everyone_sees(instances, sorted({u for _, u in present.values()}), "after the churn")
    repairs = [r.getMessage() for r in caplog.records if "missing or stale" in r.getMessage()]
    assert repairs == [], f"{n} changes: writes in progress taken for losses"


pytestmark = pytest.mark.timeout(60)
