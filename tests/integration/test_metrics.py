"""``/metrics`` of a real server, read with prometheus-client's own parser during a run.

Checked: every family of the table in docs/operations.md is exported with the type and the
labels the table gives (and nothing named ``liveboard_*`` that the table lacks), the process and
platform collectors and ``liveboard_build_info`` are there, and values move with what clients do:
each kind of refused upgrade bumps its own ``reason``, a REST call lands in the histogram of its
route template and status, an event delivered grows the frames and bytes sent and the latency
histogram, a closed connection is counted under how it ended, statements and audits are timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import exc, text

import liveboard
from liveboard.protocol import project_room
from liveboard.realtime.metrics import Metrics
from liveboard.store.database import Database
from tests.support.board import Board
from tests.support.postgres import fresh_postgres_database
from tests.support.servers import LiveboardProcess, start_server
from tests.support.timing import wait_until
from tests.support.tokens import make_token
from tests.support.wsclient import WsClient

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ALLOWED_ORIGIN = "http://allowed.example"
PER_USER = 2
#: Families of prometheus-client's default collectors that must be there (Linux).
DEFAULT_FAMILIES = (
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "python_info",
    "python_gc_collections",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveboardProcess]:
    env = {
        "LIVEBOARD_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "LIVEBOARD_MAX_CONNECTIONS_PER_USER": str(PER_USER),
    }
    process = start_server(tmp_path_factory, "metrics", env=env)
    yield process
    process.kill()


@pytest.fixture
async def board(server: LiveboardProcess) -> AsyncIterator[Board]:
    async with Board(server) as b:
        yield b


class Scrape:
    """One scrape, parsed by ``prometheus_client.parser``."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        found = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert found, f"no sample {name}{labels or ''}"
        return sum(found)


async def scrape(board: Board) -> Scrape:
    async with board.http.get(board.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Scrape(await response.text())


def documented_families() -> dict[str, tuple[str, set[str]]]:
    """docs/operations.md's metrics table: family name → (type, label names)."""
    text = DOCS.read_text()
    table = text[text.index("## Metrics\n") : text.index("### Dashboard and alert rules")]
    row = re.compile(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.M)
    families: dict[str, tuple[str, set[str]]] = {}
    for name, kind, labels in row.findall(table):
        family = name.removesuffix("_total") if kind == "counter" else name
        families[family] = (kind, set(re.findall(r"`([a-z_]+)`", labels)))
    assert len(families) >= 30, "the metrics table was not found"
    return families


async def _traffic(board: Board) -> tuple[str, str]:
    """A REST call, a subscription and an event delivered, a connection closed; the project id
    and the owner."""
    owner = board.user("owner")
    _, pid = await board.board(owner)
    watcher = await board.connect(owner)
    await watcher.subscribe(project_room(pid))
    await board.task(owner, pid, "one")
    await watcher.events(1)
    closing = await board.connect(owner)
    await closing.close()
    return pid, owner


async def test_every_documented_family_is_exported_with_its_labels(board: Board) -> None:
    await _traffic(board)
    documented = documented_families()
    now = await scrape(board)
    exported = {
        name: family for name, family in now.families.items() if name.startswith("liveboard_")
    }
    assert sorted(set(exported) - set(documented)) == [], "exported but not documented"
    assert sorted(set(documented) - set(exported)) == [], "documented but not exported"
    for name, (kind, labels) in documented.items():
        family = exported[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no sample"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    for name in DEFAULT_FAMILIES:
        assert name in now.families, f"no {name} (prometheus-client's default collectors)"
    assert now.value("process_resident_memory_bytes") > 0
    assert now.value("liveboard_build_info", version=liveboard.__version__) == 1
    assert now.value("liveboard_broker_up", broker="memory") == 1
    assert {s.labels["reason"] for s in now.families["liveboard_connections_rejected"].samples} == {
        "origin",
        "host",
        "missing_token",
        "invalid_token",
        "user_limit",
        "busy",
    }


async def _refused(board: Board, token: str | None, **kwargs: object) -> int:
    try:
        client = await WsClient.connect(board.ws_url, token, **kwargs)  # type: ignore[arg-type]
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await client.close()
    raise AssertionError("the upgrade was accepted")


async def test_each_refused_upgrade_counts_under_its_reason(board: Board) -> None:
    user = board.user("crowded")
    rejected = "liveboard_connections_rejected_total"
    before = await scrape(board)

    async def moved(reason: str) -> float:
        now = await scrape(board)
        return now.value(rejected, reason=reason) - before.value(rejected, reason=reason)

    assert await _refused(board, None) == 401
    assert await moved("missing_token") == 1
    assert await _refused(board, "not-a-token") == 401
    assert await moved("invalid_token") == 1
    assert await _refused(board, make_token(user), headers={"Origin": "http://evil.example"}) == 403
    assert await moved("origin") == 1
    for _ in range(PER_USER):
        await board.connect(user, headers={"Origin": ALLOWED_ORIGIN})
    assert await _refused(board, make_token(user)) == 429
    assert await moved("user_limit") == 1
    assert await moved("host") == 0
    after = await scrape(board)
    opened = "liveboard_connections_opened_total"
    assert after.value(opened) - before.value(opened) == PER_USER


async def test_a_rest_call_lands_in_its_route_template_and_status(board: Board) -> None:
    owner = board.user("caller")
    _, pid = await board.board(owner)
    route = "/api/projects/{pid}/tasks"
    count = "liveboard_http_request_duration_seconds_count"
    before = await scrape(board)
    ok = {"method": "GET", "route": route, "status": "200"}
    earlier = before.value(count, **ok) if _has(before, count, **ok) else 0.0
    await board.call("GET", f"/api/projects/{pid}/tasks", owner)
    await board.call("GET", "/api/no-such-thing", owner, expect=404)
    await board.call("GET", "/api/projects/nope/tasks", owner, expect=404)
    async with board.http.request("PROPFIND", board.url + "/healthz") as response:
        odd_status = str(response.status)  # a method no route has: 405
    now = await scrape(board)
    assert now.value(count, method="other", route="unmatched", status=odd_status) >= 1
    assert now.value(count, **ok) == earlier + 1
    assert now.value(count, route="unmatched", status="404") >= 1
    assert now.value(count, method="GET", route=route, status="404") >= 1
    assert now.value("liveboard_http_request_duration_seconds_sum", **ok) > 0
    # every route label is a template of the application, never a path with an id in it
    routes = {
        s.labels["route"] for s in now.families["liveboard_http_request_duration_seconds"].samples
    }
    assert pid not in " ".join(routes)
    assert all(r == "unmatched" or r.startswith("/") for r in routes), routes
    statements = "liveboard_db_statement_duration_seconds_count"
    assert now.value(statements) > before.value(statements)
    assert now.value("liveboard_db_pool_in_use") >= 0
    assert now.value("liveboard_db_pool_waiting") == 0


def _has(scrape: Scrape, name: str, **labels: str) -> bool:
    return any(
        s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        for s in scrape.samples
    )


async def test_deliveries_grow_frames_bytes_latency_and_closes_are_counted(board: Board) -> None:
    owner = board.user("sender")
    _, pid = await board.board(owner)
    first = await board.connect(owner)
    second = await board.connect(owner)
    for client in (first, second):
        await client.subscribe(project_room(pid))
    before = await scrape(board)
    for i in range(3):
        await board.task(owner, pid, f"t{i}")
    await first.events(3)
    await second.events(3)
    now = await scrape(board)

    def grew(name: str) -> float:
        return now.value(name) - before.value(name)

    assert grew("liveboard_messages_sent_total") >= 6
    assert grew("liveboard_bytes_sent_total") >= 6 * 50  # an event frame is well over 50 bytes
    assert grew("liveboard_delivery_latency_seconds_count") >= 3
    assert grew("liveboard_events_published_total") >= 3
    assert now.value("liveboard_subscriptions", kind="project") >= 2
    assert now.value("liveboard_rooms", kind="project") >= 1

    # the 1 s audit runs while a room is followed, and is timed
    audits = "liveboard_audit_duration_seconds_count"
    start = now.value(audits)

    async def audited() -> bool:
        return (await scrape(board)).value(audits) > start

    await wait_until(audited)

    closed = "liveboard_connections_closed_total"

    async def closes(code: str) -> float:
        later = await scrape(board)
        return later.value(closed, code=code) if _has(later, closed, code=code) else 0.0

    by_peer = await closes("peer")
    await first.close()

    async def counted_peer() -> bool:
        return await closes("peer") == by_peer + 1

    await wait_until(counted_peer)

    # a close this side starts is counted under its code: a binary frame gets 1003
    unsupported = await closes("1003")
    await second.ws.send_bytes(b"binary")

    async def counted_1003() -> bool:
        return await closes("1003") == unsupported + 1

    await wait_until(counted_1003)


async def test_openmetrics_is_served_when_asked(board: Board) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with board.http.get(board.url + "/metrics", headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert text.endswith("# EOF\n")
    assert "liveboard_connections_opened_total" in text


async def test_a_scrape_during_traffic_parses(board: Board) -> None:
    """Scrapes while events fan out parse whole (no half-written family)."""
    owner = board.user("busy")
    _, pid = await board.board(owner)
    watcher = await board.connect(owner)
    await watcher.subscribe(project_room(pid))

    async def mutate() -> None:
        for i in range(10):
            await board.task(owner, pid, f"b{i}")

    scrapes = await asyncio.gather(mutate(), *(scrape(board) for _ in range(5)))
    for result in scrapes[1:]:
        assert isinstance(result, Scrape)
        assert "liveboard_messages_sent" in result.families
    await watcher.events(10)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.mark.postgres
async def test_the_pool_gauges_count_held_and_waiting_connections(postgres_url: str) -> None:
    """On PostgreSQL: every connection held shows in ``in_use``; once the pool is exhausted, the
    next caller shows in ``waiting`` until one is given back. Statements are timed, failed ones
    too."""
    db = Database(postgres_url)
    metrics = Metrics()
    metrics.watch_database(db)

    def gauge(name: str) -> float | None:
        return metrics.sample(f"liveboard_db_pool_{name}")

    try:
        async with contextlib.AsyncExitStack() as held:
            blocked: asyncio.Task[None] | None = None
            release = asyncio.Event()

            async def hold_one() -> None:
                async with db.read_one():
                    await release.wait()

            for count in range(1, 101):  # the pool's capacity is far below 100
                conn = await held.enter_async_context(db.read_one())
                assert gauge("in_use") == count
                blocked = asyncio.ensure_future(hold_one())
                await asyncio.sleep(0.3)
                if not blocked.done() and gauge("in_use") == count:
                    break  # the pool is exhausted: the task waits
                release.set()
                await blocked
                release.clear()
                blocked = None
            assert blocked is not None, "the pool never ran out"
            assert gauge("waiting") == 1
            before = metrics.sample("liveboard_db_statement_duration_seconds_count") or 0.0
            await conn.execute(text("SELECT 1"))
            with contextlib.suppress(exc.DBAPIError):
                await conn.execute(text("SELECT 1 / 0"))
            after = metrics.sample("liveboard_db_statement_duration_seconds_count")
            assert after == before + 2
        # everything given back: the waiter got its connection
        await wait_until(lambda: gauge("waiting") == 0 and gauge("in_use") == 1)
        release.set()
        await blocked
        assert gauge("in_use") == 0
    finally:
        await db.aclose()
