"""The SDK against real ``liveboard serve`` processes: order, recovery across restarts and
dropped links (no event lost or repeated), backoff spacing, token refresh, resync, presence,
the ``Board`` helper and ``liveboard tail``.

Servers are restarted on the same port and database (``server_factory(port=...)``). A token
provider that the test can hold shut (``Gate``) decides when the client may reconnect, so that
mutations are made for certain while it is away. ``Proxy`` sits between client and server to
black-hole a live connection (a dead link that TCP does not notice) and to record connection
attempts while the server is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest

from liveboard.client import (
    ApiError,
    Board,
    ConnectionState,
    Event,
    FatalConnectionError,
    LiveboardClient,
    LiveboardClientError,
    Member,
    Position,
    PresenceUpdate,
    Resync,
    Revoked,
    ServiceClient,
    Subscription,
    SubscriptionItem,
    TaskSnapshot,
)
from liveboard.client.backoff import backoff_ceiling
from liveboard.client.tail import add_arguments, run
from tests.support.servers import ROOT, LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import auth, make_token

ServerFactory = Callable[..., LiveboardProcess]

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------- helpers


async def setup_board(url: str, owner: str, *members: str) -> tuple[str, str]:
    """A workspace (``owner`` plus ``members``) with one project: ``(wid, pid)``."""
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(url + path, json=body, headers=auth(owner)) as response:
                assert response.status == 201, await response.text()
                result: dict[str, Any] = await response.json()
                return result

        wid = (await post("/api/workspaces", {"name": "Team"}))["id"]
        for member in members:
            await post(f"/api/workspaces/{wid}/members", {"userId": member})
        pid = (await post(f"/api/workspaces/{wid}/projects", {"name": "Board"}))["id"]
    return str(wid), str(pid)


class Gate:
    """A token provider the test can hold shut: connection attempts wait while it is closed."""

    def __init__(self, user: str, *, name: str | None = None, ttl: float = 3600.0) -> None:
        self.user = user
        self.name = name
        self.ttl = ttl
        self.calls = 0
        self.opened = asyncio.Event()
        self.opened.set()

    async def __call__(self) -> str:
        self.calls += 1
        await self.opened.wait()
        return make_token(self.user, name=self.name, ttl=self.ttl)


def sdk(url: str, token: Any, **kwargs: Any) -> LiveboardClient:
    """A client with test-friendly timings (reconnects within a fraction of a second)."""
    options: dict[str, Any] = {
        "backoff_base": 0.05,
        "backoff_cap": 0.5,
        "restart_delay": 0.3,
        "heartbeat": 5.0,
    }
    options.update(kwargs)
    return LiveboardClient(url, token, **options)


async def collect(sub: Subscription, count: int, wait: float = 10.0) -> list[Event]:
    """The next ``count`` events (asserting no ``Resync`` or ``Revoked`` comes instead)."""
    events: list[Event] = []
    async with asyncio.timeout(timeout(wait)):
        while len(events) < count:
            item = await sub.get()
            assert not isinstance(item, Resync | Revoked), f"unexpected {item}"
            if isinstance(item, Event):
                events.append(item)
    return events


async def nothing_more(sub: Subscription, wait: float = 0.5) -> None:
    """No further event arrives (e.g. no duplicate replayed late)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while True:
                item = await sub.get()
                assert not isinstance(item, Event | Resync), f"unexpected {item}"


async def drain(sub: Subscription, wait: float = 8.0) -> list[SubscriptionItem]:
    """Every item until the stream ends (raising what ends it, if anything)."""
    async with asyncio.timeout(timeout(wait)):
        return [item async for item in sub]


async def eventually(predicate: Callable[[], bool], wait: float = 5.0) -> None:
    """Poll ``predicate`` until it holds."""
    async with asyncio.timeout(timeout(wait)):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


def offsets(events: list[Event]) -> list[int]:
    return [e.offset for e in events]


async def restart(server_factory: ServerFactory, server: LiveboardProcess) -> LiveboardProcess:
    """Start a new server on the same port and database (off the event loop)."""
    return await asyncio.to_thread(server_factory, port=server.port)


@dataclass(eq=False)
class _Pipe:
    frozen: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Proxy:
    """A TCP proxy to ``upstream_port``; records accepts; ``freeze`` black-holes live pipes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.accepts: list[float] = []
        self.pipes: list[_Pipe] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for pipe in self.pipes:
            for writer in pipe.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze(self) -> None:
        """Existing connections stop carrying anything, in both directions, without closing."""
        for pipe in self.pipes:
            pipe.frozen = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        pipe = _Pipe(writers=[writer, up_writer])
        self.pipes.append(pipe)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(src, dst, pipe))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        try:
            while data := await src.read(65536):
                if not pipe.frozen:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not pipe.frozen:
                dst.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---------------------------------------------------------------------------- ordering


async def test_events_arrive_in_order_once(server_factory: ServerFactory) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    async with (
        sdk(server.url, make_token("alice")) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        sub = await alice.subscribe(f"project:{pid}")
        created = await asyncio.gather(*(bob.create_task(pid, f"T{n}") for n in range(30)))
        events = await collect(sub, 30)
        assert offsets(events) == list(range(1, 31))
        assert {e.data["task"]["id"] for e in events} == {t.id for t in created}
        assert all(e.type == "task:created" and e.user_id == "bob" for e in events)
        await nothing_more(sub)
        assert sub.position == Position(offset=30, epoch=events[0].epoch)


async def test_rest_helpers_send_the_connection_id_and_raise_typed_errors(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice")
    async with sdk(server.url, make_token("alice")) as alice:
        sub = await alice.subscribe(f"project:{pid}")
        task = await alice.create_task(pid, "Mine", description="d", status="in_progress")
        task = await alice.update_task(task.id, title="Renamed", assignee_id="alice")
        task = await alice.move_task(task.id, "done", version=task.version)
        await alice.delete_task(task.id, version=task.version)
        events = await collect(sub, 4)
        assert [e.type for e in events] == [
            "task:created",
            "task:updated",
            "task:moved",
            "task:deleted",
        ]
        assert {e.origin for e in events} == {alice.connection_id}
        with pytest.raises(ApiError) as raised:
            await alice.get_task(task.id)
        assert (raised.value.status, raised.value.code) == (404, "not_found")
        with pytest.raises(ApiError) as raised:
            await alice.create_task(pid, "x", status="nope")
        assert (raised.value.status, raised.value.code) == (422, "validation_error")
        with pytest.raises(LiveboardClientError) as forbidden:
            await alice.subscribe("project:does-not-exist")
        assert forbidden.value.code == "forbidden"
        assert await alice.ping() < 1.0


async def test_workspace_member_and_project_helpers_raise_typed_errors(
    server_factory: ServerFactory,
) -> None:
    """The happy paths run from the installed wheel (test_python_client_wheel.py); here, the
    refusals each helper turns into ``ApiError``."""
    server = server_factory(env={"LIVEBOARD_API_KEYS": "live-test-service-key-0123"})
    async with (
        sdk(server.url, make_token("alice")) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        workspace = await alice.create_workspace("Refusals")
        assert await alice.add_member(workspace.id, "bob") == Member(user_id="bob", role="member")
        refusals = [
            (bob.add_member(workspace.id, "carol"), 403, "forbidden"),
            (alice.add_member(workspace.id, "bob"), 409, "conflict"),
            (bob.create_workspace(""), 422, "validation_error"),
            (alice.remove_member(workspace.id, "carol"), 404, "not_found"),
            (alice.list_projects("ws_nobody_has"), 404, "not_found"),
            (alice.create_project(workspace.id, "P", statuses=[]), 422, "validation_error"),
        ]
        for call, status, code in refusals:
            with pytest.raises(ApiError) as raised:
                await call
            assert (raised.value.status, raised.value.code) == (status, code)
    async with ServiceClient(server.url, "not-the-service-key-0123") as stranger:
        with pytest.raises(ApiError) as raised:
            await stranger.list_workspaces()
        assert raised.value.status == 401
    async with ServiceClient(server.url, "live-test-service-key-0123") as service:
        with pytest.raises(ApiError) as raised:
            await service.publish(f"workspace:{workspace.id}", "presence:update", {})
        assert (raised.value.status, raised.value.code) == (422, "validation_error")
        assert service.last_position() is None
        published = await service.publish(f"workspace:{workspace.id}", "app:ping", {"n": 1})
        assert service.last_position() == Position(offset=published.offset, epoch=published.epoch)


# ---------------------------------------------------------------------------- recovery


async def test_recovers_every_event_across_a_server_restart(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    gate = Gate("alice")
    bob = sdk(server.url, make_token("bob"))
    try:
        async with sdk(server.url, gate) as alice:
            sub = await alice.subscribe(f"project:{pid}")
            for n in range(3):
                await bob.create_task(pid, f"before {n}")
            assert offsets(await collect(sub, 3)) == [1, 2, 3]

            await asyncio.wait_for(sub.ready(), timeout(1))  # live since subscribe returned

            gate.opened.clear()  # alice may not come back until we say so
            assert await asyncio.to_thread(server.terminate) == 0
            await alice.wait_for_state(ConnectionState.RECONNECTING)
            ready = asyncio.ensure_future(sub.ready())  # not live again until resubscribed
            server = await restart(server_factory, server)
            for n in range(4):  # made while alice is away: she must recover them
                await bob.create_task(pid, f"while away {n}")
            assert alice.connections == 1
            assert not ready.done()
            gate.opened.set()
            await asyncio.wait_for(ready, timeout(10))
            assert alice.state is ConnectionState.CONNECTED
            assert alice.connections == 2
            for n in range(3):
                await bob.create_task(pid, f"after {n}")

            events = await collect(sub, 7)
            assert offsets(events) == list(range(4, 11))
            assert [e.data["task"]["title"] for e in events[:4]] == [
                f"while away {n}" for n in range(4)
            ]
            await nothing_more(sub)
            assert alice.connections == 2
            assert alice.last_close_code == 1012
    finally:
        await bob.aclose()


async def test_recovers_after_the_server_is_killed_and_the_board_converges(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    gate = Gate("alice")
    bob = sdk(server.url, make_token("bob"))
    try:
        async with sdk(server.url, gate) as alice:
            board = await Board.open(alice, pid)
            sub = await alice.subscribe(f"workspace:{(await alice.get_project(pid)).workspace_id}")
            first = await bob.create_task(pid, "first")
            await asyncio.wait_for(board.wait_for(lambda b: b.offset == 1), timeout(5))

            gate.opened.clear()
            server.kill()  # SIGKILL: no close frame, no goodbye
            await alice.wait_for_state(ConnectionState.RECONNECTING)
            server = await restart(server_factory, server)
            second = await bob.create_task(pid, "second")
            await bob.move_task(first.id, "done")
            await bob.update_task(second.id, title="second, renamed")
            gate.opened.set()
            await alice.wait_for_state(ConnectionState.CONNECTED)
            await bob.delete_task(first.id)

            snapshot = await bob.get_snapshot(pid)
            assert snapshot.offset == 5
            await asyncio.wait_for(board.wait_for(lambda b: b.offset == 5), timeout(10))
            assert board.tasks == {t.id: t for t in snapshot.tasks}
            assert board.snapshots == 1  # recovered through replay, not a refetch
            assert alice.last_close_code is None  # the link dropped without a close frame
            await nothing_more(sub, 0.2)
    finally:
        await bob.aclose()


async def test_a_dead_link_is_noticed_by_the_heartbeat_and_nothing_is_lost(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    async with (
        Proxy(server.port) as proxy,
        sdk(proxy.url, make_token("alice"), heartbeat=0.3, ping_timeout=0.5) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        sub = await alice.subscribe(f"project:{pid}")
        await bob.create_task(pid, "one")
        assert offsets(await collect(sub, 1)) == [1]

        proxy.freeze()  # the link is silently dead: TCP will not tell for a long time
        frozen_at = time.monotonic()
        for n in range(3):
            await bob.create_task(pid, f"lost in the void {n}")
        events = await collect(sub, 3, wait=10)
        noticed = time.monotonic() - frozen_at
        assert offsets(events) == [2, 3, 4]
        assert noticed < timeout(4.0), f"took {noticed:.1f}s (server heartbeat: 35s)"
        assert alice.connections == 2
        assert alice.last_close_code is None
        await bob.create_task(pid, "live again")
        assert offsets(await collect(sub, 1)) == [5]
        await nothing_more(sub)


async def test_reconnect_attempts_are_spaced_by_capped_full_jitter_backoff(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    base, cap = 0.05, 0.4
    async with (
        Proxy(server.port) as proxy,
        sdk(
            proxy.url,
            make_token("alice"),
            backoff_base=base,
            backoff_cap=cap,
            stable_after=0.0,  # the dropped connection counts as stable: attempts start at 0
        ) as alice,
    ):
        sub = await alice.subscribe(f"project:{pid}")
        server.kill()
        await alice.wait_for_state(ConnectionState.RECONNECTING)
        dropped_at = time.monotonic()
        del proxy.accepts[:]
        await asyncio.sleep(4.0)
        attempts = list(proxy.accepts)
        server = await restart(server_factory, server)
        async with asyncio.timeout(timeout(5)):
            await alice.wait_for_state(ConnectionState.CONNECTED)

        slack = timeout(0.15)  # connect + refuse + scheduling per attempt
        gaps = [b - a for a, b in zip([dropped_at, *attempts], attempts, strict=False)]
        assert len(attempts) >= 5
        assert len(attempts) <= 4.0 / 0.05, "attempts are not a hot loop"
        for n, gap in enumerate(gaps):
            assert gap <= backoff_ceiling(n, base, cap) + slack, (n, gaps)
        late = gaps[4:]
        assert max(late) <= cap + slack
        assert sum(late) / len(late) > 0.05, "later attempts wait ~cap/2 on average"
        async with sdk(server.url, make_token("bob")) as bob:
            await bob.create_task(pid, "after the outage")
        assert offsets(await collect(sub, 1)) == [1]


# ---------------------------------------------------------------------------- tokens


async def test_token_is_refreshed_before_expiry_without_a_4001(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    calls: list[float] = []

    async def provider() -> str:
        calls.append(time.monotonic())
        return make_token("alice", ttl=4)

    async with (
        sdk(server.url, provider, refresh_margin=2.0) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        sub = await alice.subscribe(f"project:{pid}")
        await asyncio.sleep(7.0)  # well past the first token's expiry
        await bob.create_task(pid, "still here")
        assert offsets(await collect(sub, 1)) == [1]
        assert alice.connections == 1, "the socket was never closed"
        assert alice.last_close_code is None
        assert alice.token_refreshes >= 3
        assert len(calls) >= 4
        assert alice.state is ConnectionState.CONNECTED


async def test_after_4001_the_provider_is_asked_and_the_stream_resumes(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    short = make_token("alice", ttl=2)
    short_until = time.time() + 2.5

    def provider() -> str:  # a plain function works too
        # The short token (even for refreshes) until after it expired, then long ones.
        return short if time.time() < short_until else make_token("alice")

    async with (
        sdk(server.url, provider, refresh_margin=1.0) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        sub = await alice.subscribe(f"project:{pid}")
        await bob.create_task(pid, "before")
        assert offsets(await collect(sub, 1)) == [1]
        await eventually(lambda: alice.connections == 2, wait=8.0)
        await bob.create_task(pid, "after")
        assert offsets(await collect(sub, 1)) == [2]
        assert alice.last_close_code == 4001


async def test_a_static_token_that_expires_stops_the_client_with_an_error(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice")
    with pytest.raises(FatalConnectionError) as refused:
        async with sdk(server.url, make_token("alice", ttl=-10)):
            pass
    assert refused.value.code == "unauthorized"

    async with sdk(server.url, make_token("alice", ttl=2)) as alice:
        sub = await alice.subscribe(f"project:{pid}")
        with pytest.raises(FatalConnectionError) as ended:
            await drain(sub)
        assert ended.value.code == "unauthorized"
        assert alice.last_close_code == 4001
        assert alice.state is ConnectionState.CLOSED
        assert alice.error is ended.value


async def test_a_provider_is_asked_again_after_401(server_factory: ServerFactory) -> None:
    server = server_factory()
    tokens = [make_token("alice", ttl=-10), make_token("alice")]
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return tokens[min(calls, 2) - 1]

    async with sdk(server.url, provider) as alice:
        assert alice.user_id == "alice"
        assert calls == 2


# ---------------------------------------------------------------------------- resync


async def test_a_stale_since_surfaces_one_resync_then_the_live_stream(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice")
    room = f"project:{pid}"
    async with sdk(server.url, make_token("alice")) as alice:
        for n in range(2):
            await alice.create_task(pid, f"T{n}")
        snapshot = await alice.get_snapshot(pid)
        sub = await alice.subscribe(room, since=Position(offset=0, epoch="not-the-epoch"))
        assert await sub.get() == Resync(room, "not_recovered", 2, snapshot.epoch)
        await alice.create_task(pid, "T2")
        assert offsets(await collect(sub, 1)) == [3]
        await sub.unsubscribe()
        ahead = await alice.subscribe(room, since=Position(offset=99, epoch=snapshot.epoch))
        assert await ahead.get() == Resync(room, "not_recovered", 3, snapshot.epoch)
        await alice.unsubscribe(room)
        good = await alice.subscribe(room, since=Position(offset=1, epoch=snapshot.epoch))
        assert offsets(await collect(good, 2)) == [2, 3]  # recovered: replayed, no Resync


async def test_the_board_refetches_its_snapshot_on_recovered_false(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    async with (
        sdk(server.url, make_token("alice")) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        await bob.create_task(pid, "existing")
        real = alice.get_snapshot
        fetched: list[TaskSnapshot] = []

        async def stale_first(project_id: str) -> TaskSnapshot:
            snapshot = await real(project_id)
            if not fetched:  # the first snapshot claims another epoch: recovery must fail
                snapshot = msgspec.structs.replace(snapshot, epoch="gone", tasks=[])
            fetched.append(snapshot)
            return snapshot

        monkeypatch.setattr(alice, "get_snapshot", stale_first)
        board = await Board.open(alice, pid)
        await asyncio.wait_for(board.wait_for(lambda b: b.snapshots == 2), timeout(5))
        assert len(fetched) == 2
        assert len(board.tasks) == 1
        await bob.create_task(pid, "new")
        await asyncio.wait_for(board.wait_for(lambda b: b.offset == 2), timeout(5))
        assert board.tasks == {t.id: t for t in (await real(pid)).tasks}
        assert board.snapshots == 2


# ---------------------------------------------------------------------------- board


async def test_the_board_converges_to_the_servers_snapshot(server_factory: ServerFactory) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    async with (
        sdk(server.url, make_token("alice")) as alice,
        sdk(server.url, make_token("bob")) as bob,
    ):
        board = await Board.open(alice, pid, join_presence=True)
        assert [u.user_id for u in board.presence] == ["alice"]
        tasks = [
            await bob.create_task(pid, f"T{n}", status=("todo", "in_progress", "done")[n % 3])
            for n in range(9)
        ]
        await asyncio.gather(
            bob.move_task(tasks[0].id, "done"),
            bob.move_task(tasks[1].id, "todo", order=-1.0),
            bob.update_task(tasks[2].id, title="renamed", assignee_id="alice"),
            bob.delete_task(tasks[3].id),
        )
        await bob.move_task(tasks[4].id, "in_progress", order=0.5)
        await bob.update_task(tasks[2].id, assignee_id=None, description="more")
        await bob.delete_task(tasks[5].id)
        await alice.move_task(tasks[6].id, "todo")  # her own change comes back once as well
        snapshot = await bob.get_snapshot(pid)
        await asyncio.wait_for(board.wait_for(lambda b: b.offset == snapshot.offset), timeout(10))
        assert board.tasks == {t.id: t for t in snapshot.tasks}
        columns = board.columns()
        assert list(columns) == ["todo", "in_progress", "done"]
        for status, column in columns.items():
            expected = sorted(
                (t for t in snapshot.tasks if t.status == status), key=lambda t: t.order
            )
            assert [t.id for t in column] == [t.id for t in expected]
        assert columns["todo"][0].id == tasks[1].id  # order -1: first
        assert board.snapshots == 1
        await board.aclose()
        assert board.subscription.closed


# ---------------------------------------------------------------------------- presence


async def test_presence_two_clients_see_each_other_and_rejoin_after_a_restart(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    room = f"project:{pid}"
    async with (
        sdk(server.url, Gate("alice", name="Alice")) as alice,
        sdk(server.url, Gate("bob", name="Bob")) as bob,
    ):
        alice_sub = await alice.subscribe(room)
        bob_sub = await bob.subscribe(room)
        await alice_sub.join_presence()
        seen = [(u.user_id, u.name) for u in await bob_sub.join_presence()]
        assert seen == [("alice", "Alice"), ("bob", "Bob")]

        def both(sub: Subscription) -> bool:
            return [u.user_id for u in sub.presence] == ["alice", "bob"]

        async with asyncio.timeout(timeout(5)):
            while not both(alice_sub):
                await alice_sub.get()

        updates: list[tuple[int, list[str]]] = []

        def record(update: PresenceUpdate) -> None:
            updates.append((alice.connections, [u.user_id for u in update.users]))

        alice_sub.on_presence(record)
        assert await asyncio.to_thread(server.terminate) == 0
        server = await restart(server_factory, server)
        await eventually(
            lambda: any(n == 2 and users == ["alice", "bob"] for n, users in updates), wait=10.0
        )
        assert bob.connections == 2
        assert both(bob_sub)

        await bob_sub.leave_presence()
        await eventually(lambda: [u.user_id for u in alice_sub.presence] == ["alice"])


async def test_a_revoked_membership_ends_the_subscription(server_factory: ServerFactory) -> None:
    server = server_factory()
    wid, pid = await setup_board(server.url, "alice", "bob")
    async with sdk(server.url, make_token("bob")) as bob, aiohttp.ClientSession() as http:
        sub = await bob.subscribe(f"project:{pid}")
        url = f"{server.url}/api/workspaces/{wid}/members/bob"
        async with http.delete(url, headers=auth("alice")) as response:
            assert response.status == 204
        items = await drain(sub)
        assert items[-1] == Revoked(f"project:{pid}", "forbidden")
        assert sub.revoked == items[-1]
        assert f"project:{pid}" not in bob.subscriptions
        assert bob.state is ConnectionState.CONNECTED


# ---------------------------------------------------------------------------- tail


async def _start_tail(*args: str, token: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "LIVEBOARD_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "liveboard.client.tail",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _lines(process: asyncio.subprocess.Process, count: int) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout(15)):
        while len(lines) < count:
            line = await process.stdout.readline()
            assert line, "tail exited early"
            lines.append(line.decode().rstrip("\n"))
    return lines


async def _stderr_until(process: asyncio.subprocess.Process, text: str) -> None:
    assert process.stderr is not None
    async with asyncio.timeout(timeout(15)):
        while text not in (await process.stderr.readline()).decode():
            pass


async def test_tail_prints_events_and_exits_0_on_sigterm(server_factory: ServerFactory) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    async with sdk(server.url, make_token("bob")) as bob:
        process = await _start_tail(
            "--room", f"project:{pid}", "--url", server.url, token=make_token("alice")
        )
        try:
            await _stderr_until(process, f"subscribed to project:{pid} at #0")
            task = await bob.create_task(pid, "Write the docs")
            await bob.move_task(task.id, "done")
            created, moved = await _lines(process, 2)
            assert "  #1  task:created  bob  'Write the docs' in todo" in created
            assert f"  #2  task:moved  bob  {task.id} todo → done" in moved
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout(10)) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_tail_json_replays_since_an_offset_and_exits_0_on_ctrl_c(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice")
    async with sdk(server.url, make_token("alice")) as alice:
        for n in range(3):
            await alice.create_task(pid, f"T{n}")
        epoch = (await alice.get_snapshot(pid)).epoch
        process = await _start_tail(
            "--room",
            f"project:{pid}",
            "--url",
            server.url,
            "--since",
            "1",
            "--epoch",
            epoch,
            "--json",
            token=make_token("alice"),
        )
        try:
            lines = await _lines(process, 2)
            events = [json.loads(line) for line in lines]
            assert [e["offset"] for e in events] == [2, 3]
            assert [e["data"]["task"]["title"] for e in events] == ["T1", "T2"]
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), timeout(10)) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_tail_in_process_reports_usage_and_auth_errors(
    server_factory: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    server = server_factory()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.delenv("LIVEBOARD_TOKEN", raising=False)
    assert await run(parser.parse_args(["--room", "project:x", "--url", server.url])) == 2
    assert "no token" in capsys.readouterr().err
    args = ["--room", "project:x", "--url", server.url, "--since", "3"]
    assert await run(parser.parse_args([*args, "--token", "t"])) == 2
    expired = make_token("alice", ttl=-10)
    bad = ["--room", "project:x", "--url", server.url, "--token", expired]
    assert await run(parser.parse_args(bad)) == 1
    assert "unauthorized" in capsys.readouterr().err
