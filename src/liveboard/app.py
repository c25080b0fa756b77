"""Builds the server: REST and WebSocket on one aiohttp application, and its start/stop order.

Start: open the database and apply migrations → start the node (broker) → (``--dev``) seed the
demo → serve. Stop (``cli.serve`` on SIGTERM): the listening socket closes (new connections are
refused) → the node closes every WebSocket with 1012, spread over ``shutdown.SHUTDOWN_SPREAD``
seconds, and flushes the broker → the database closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web

from liveboard import dev, errors, log_context, rest
from liveboard.apikeys import ApiKeys
from liveboard.asyncapi import document_json as asyncapi_json
from liveboard.auth import TokenVerifier
from liveboard.config import Settings
from liveboard.events import EventPublisher
from liveboard.fdlimit import open_files, open_files_limit
from liveboard.openapi import build_document
from liveboard.protocol import BrokerEvent
from liveboard.realtime.brokers.wakeup import LogWakeup
from liveboard.realtime.endpoint import (
    NODE_KEY,
    WS_SETTINGS_KEY,
    WS_VERIFIER_KEY,
    UpgradeAcceptor,
    websocket_handler,
)
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.node import Node
from liveboard.realtime.transport.guard import GUARD_KEY, ConnectionGuard, track_requests
from liveboard.realtime.transport.http_errors import json_error_handlers
from liveboard.realtime.transport.router import ConnectionRouter
from liveboard.realtime.transport.sockets import tune_socket
from liveboard.request_metrics import timing_middleware
from liveboard.rest import json_response
from liveboard.store.availability import probe
from liveboard.store.database import Database
from liveboard.store.migrations import prepare_database
from liveboard.store.open_log_sql import wakeup_channel
from liveboard.tasks import api, rooms_api
from liveboard.tasks.idempotency import GATE_KEY, IdempotencyGate
from liveboard.tasks.retention import Retention
from liveboard.tasks.room_log import RoomLog
from liveboard.tasks.rooms_api import MAX_EVENT_DATA_KEY, ROOM_LOG_KEY
from liveboard.tasks.service import TaskService
from liveboard.tracing_settings import require_opentelemetry

if TYPE_CHECKING:
    from liveboard.tracing import Tracing

SETTINGS_KEY: Final = web.AppKey("settings", Settings)
DATABASE_KEY: Final = web.AppKey("database", Database)
METRICS_KEY: Final = web.AppKey("metrics", Metrics)
#: The wake-up listening for other backends' commits (PostgreSQL only).
WAKEUP_KEY: Final = web.AppKey("wakeup", LogWakeup)
STATIC_DIR: Final = Path(__file__).parent / "web" / "static"
#: The demo board's pages load scripts, styles and images from this server only and talk to it
#: only (``'self'`` covers its ``ws:``/``wss:`` URLs, CSP Level 3); no inline script or style
#: attribute, no plugin, no framing.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class _Tee:
    """Publishes to the node, then to an extra observer (tests and tools)."""

    def __init__(self, *publishers: EventPublisher) -> None:
        self._publishers = publishers

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        for publisher in self._publishers:
            await publisher.publish(events)


def build_app(
    settings: Settings,
    *,
    publisher: EventPublisher | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """The whole server for ``settings`` (which must have a JWT key; see ``with_dev_defaults``).

    ``publisher``, when given, also receives every committed event (after the node).
    ``tracing``: the spans' destination (tests); by default the one ``settings.tracing`` asks
    for, if any. Raises ``ConfigError`` when tracing is asked for without OpenTelemetry.
    """
    counters = Metrics()
    tracing = tracing or _start_tracing(settings)
    # track_requests first: the connection guard must see every request start and end. Then
    # the request's id and client address, which the span and every later line carry; then
    # the timing, outside the error middleware, so that it sees the status sent.
    middlewares = [
        track_requests,
        log_context.request_context(settings.trusted_proxies, rest.LONG_LIVED_PATHS),
        timing_middleware(counters.http_duration),
        rest.error_middleware,
        rest.auth_middleware,
    ]
    if tracing is not None:  # outside error_middleware: the span sees the answer's status
        middlewares.insert(2, tracing.middleware(rest.LONG_LIVED_PATHS))
    if settings.dev:  # next: nothing else runs for a request to another host
        middlewares.insert(1, dev.loopback_only)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    verifier = TokenVerifier(settings)
    guard = ConnectionGuard(
        counters,
        head_timeout=settings.head_timeout,
        body_timeout=settings.body_timeout,
        send_timeout=settings.send_timeout,
        max_per_address=settings.max_pending_per_address,
    )
    counters.gauge(
        "liveboard_unauthenticated_connections",
        "Open connections that have not authenticated yet (all paths).",
        lambda: guard.unauthenticated,
    )
    counters.gauge("liveboard_open_fds", "Open file descriptors (-1: unknown).", open_files)
    counters.gauge(
        "liveboard_max_fds", "The soft limit on open file descriptors.", open_files_limit
    )
    app[SETTINGS_KEY] = settings
    app[WS_SETTINGS_KEY] = settings
    app[rest.VERIFIER_KEY] = verifier
    app[rest.API_KEYS_KEY] = ApiKeys(settings.api_keys)
    app[MAX_EVENT_DATA_KEY] = settings.max_event_data_bytes
    app[WS_VERIFIER_KEY] = verifier
    app[rest.RATE_LIMITER_KEY] = rest.RateLimiter(rate=50.0, burst=200.0)
    app[METRICS_KEY] = counters
    app[GUARD_KEY] = guard
    app.cleanup_ctx.append(_components(publisher, tracing))
    app.on_shutdown.append(_close_sockets)

    api.add_routes(app)
    rooms_api.add_routes(app)
    # No HEAD: a WebSocket upgrade is a GET (RFC 6455 §4.1); HEAD is answered 405.
    app.router.add_get("/ws/connect", websocket_handler, allow_head=False)
    app.router.add_get("/ws", websocket_handler, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/asyncapi.json", asyncapi)
    app.router.add_get("/static/{name}", static_file)
    if settings.dev:
        assert settings.jwt_secret is not None  # with_dev_defaults guarantees a secret
        app.router.add_get("/api/dev/token", dev.dev_token_handler(settings.jwt_secret))
        app.router.add_get("/", demo_board)
    return app


class Listener:
    """The listening socket of ``serve`` and what it must close at shutdown.

    Each connection starts with a ``ConnectionRouter``: a WebSocket upgrade is served by
    ``UpgradeAcceptor`` without aiohttp, everything else by aiohttp's server (``runner.server``)
    behind ``guard.GuardedHttp``.
    """

    def __init__(
        self, server: asyncio.Server, acceptor: UpgradeAcceptor, routers: set[ConnectionRouter]
    ) -> None:
        self.server = server
        self._acceptor = acceptor
        self._routers = routers

    @property
    def port(self) -> int | None:
        for sock in self.server.sockets:
            address = sock.getsockname()
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return None

    async def shutdown(self, app: web.Application, grace: float) -> None:
        """Stop accepting, drop connections that sent no request yet, close every WebSocket
        with 1012 (``Node.shutdown``) and wait up to ``grace`` seconds for them to end.

        Then ``runner.cleanup()`` closes what aiohttp serves and the database; the node has
        closed presence and the broker already, which a session's last steps tolerate."""
        self.server.close()
        for router in list(self._routers):
            router.abort()
        node = app.get(NODE_KEY)
        if node is not None:
            await node.shutdown()
        await self._acceptor.wait_closed(grace)


#: Connections the kernel queues for ``accept`` (it caps the figure at ``net.core.somaxconn``,
#: 4,096 by default on Linux since 5.4). A restart's reconnect storm arrives all at once: with
#: 1,024, a 10,000-client storm overflowed the queue and the dropped handshakes came back 1, 3
#: and 7 s later (docs/benchmarks.md, scenario G).
LISTEN_BACKLOG = 4096


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    backlog: int = LISTEN_BACKLOG,
    *,
    reuse_port: bool = False,
) -> Listener:
    """Accept connections for ``runner``'s application (set up) on ``host``:``port``; with
    ``reuse_port``, beside the other workers of a supervisor (``liveboard.workers``)."""
    http = runner.server
    assert http is not None, "runner.setup() first"
    guard = runner.app[GUARD_KEY]
    acceptor = UpgradeAcceptor(runner.app)
    routers: set[ConnectionRouter] = set()
    loop = asyncio.get_running_loop()
    http_protocol = json_error_handlers(http)

    def guarded_http() -> asyncio.BaseProtocol:
        return guard.wrap(http_protocol())

    server = await loop.create_server(
        lambda: ConnectionRouter(guarded_http, acceptor, routers, guard),
        host,
        port,
        backlog=backlog,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    for sock in server.sockets:  # once here rather than per connection: accepted sockets inherit
        tune_socket(sock)
    return Listener(server, acceptor, routers)


def _start_tracing(settings: Settings) -> Tracing | None:
    if settings.tracing is None:
        return None
    require_opentelemetry()
    from liveboard.tracing import start_tracing

    return start_tracing(settings.tracing, settings.instance_id)


def _components(
    observer: EventPublisher | None, tracing: Tracing | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def components(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        db = (Database if tracing is None else tracing.database)(
            settings.database_url,
            schema=settings.db_schema,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pgbouncer=settings.db_pgbouncer,
        )
        app[METRICS_KEY].watch_database(db)
        node: Node | None = None
        wakeup: LogWakeup | None = None
        service: TaskService | None = None
        pruning: list[asyncio.Task[None]] = []
        try:
            await prepare_database(db, settings.db_wait)
            # Open the kept connections before listening: a restarted server's first second is
            # a reconnect storm, which should not wait on (or pay for) connects.
            await db.warm()
            node = (Node if tracing is None else tracing.node)(settings, db, app[METRICS_KEY])
            await node.start()
            # PostgreSQL: liveboard_emit's commits wake this instance (the postgres broker
            # listens on the same channel itself: it takes its place).
            if db.schema is not None and node.broker.name != "postgres":
                wakeup = LogWakeup(
                    settings.database_url,
                    wakeup_channel(db.schema),
                    on_wake=node.repair.wake,
                    on_listening=node.repair.catch_up_all,
                )
                wakeup.start()
                app[WAKEUP_KEY] = wakeup
            publisher: EventPublisher = node if observer is None else _Tee(node, observer)
            if tracing is not None:
                publisher = tracing.publisher(publisher)
            service = TaskService(db, publisher)
            app[DATABASE_KEY] = db
            app[NODE_KEY] = node
            app[api.SERVICE_KEY] = service
            app[ROOM_LOG_KEY] = RoomLog(service.writer)
            gate = app[GATE_KEY] = IdempotencyGate(db, settings.idempotency_ttl)
            retention = Retention(
                db,
                keep=max(settings.event_retention, settings.history_size),
                recovery_window=settings.history_size,
                max_age=settings.event_retention_age,
            )
            pruning = [
                asyncio.ensure_future(gate.prune_forever()),
                asyncio.ensure_future(retention.prune_forever()),
            ]
            if settings.dev:
                await dev.seed_demo(service)
            yield
        finally:
            for task in pruning:
                task.cancel()
            await asyncio.gather(*pruning, return_exceptions=True)
            if wakeup is not None:
                await wakeup.aclose()
            if ROOM_LOG_KEY in app:
                await app[ROOM_LOG_KEY].batcher.drain()  # publishes still queued commit first
            if service is not None:
                await service.writer.drain()  # committed events reach the broker before it closes
            if node is not None:
                await node.shutdown()
            await db.aclose()
            await app[rest.VERIFIER_KEY].aclose()
            if tracing is not None:
                await tracing.aclose()

    return components


async def _close_sockets(app: web.Application) -> None:
    node = app.get(NODE_KEY)
    if node is not None:
        await node.shutdown()


async def demo_board(request: web.Request) -> web.StreamResponse:
    """The demo board (``--dev`` only)."""
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return web.FileResponse(STATIC_DIR / "index.html", headers=headers)


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file of the web client (``liveboard.js``, the demo board's page, script and styles).

    Not aiohttp's static route: that answers a missing file with an empty 404 and the directory
    with a 403, where every error here has the contract's body (404 ``not_found``)."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    # One flat directory: a name is a file in it, never a path out of it.
    if "/" in name or name.startswith(".") or not path.is_file():
        raise errors.not_found("no such file")
    return web.FileResponse(path, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


#: How long ``/readyz`` waits for the database's ``SELECT 1``.
READY_PROBE_TIMEOUT: Final = 1.5


async def readyz(request: web.Request) -> web.StreamResponse:
    """200 when the database answers (and Redis is up, with ``LIVEBOARD_REDIS_REQUIRED=1``);
    503 ``unavailable`` naming the dependency that failed otherwise."""
    broker = request.app[NODE_KEY].broker
    failed: list[str] = []
    try:
        await asyncio.wait_for(probe(request.app[DATABASE_KEY]), READY_PROBE_TIMEOUT)
    except Exception:  # any failure: the database cannot serve requests now
        failed.append("database")
    if request.app[SETTINGS_KEY].redis_required and not broker.up:
        failed.append("redis")
    if failed:
        return json_response(
            errors.error_body(
                "unavailable",
                f"not ready: {' and '.join(failed)} unreachable",
                {"failed": failed},
            ),
            status=503,
        )
    body: dict[str, object] = {"status": "ready", "broker": broker.name, "degraded": not broker.up}
    if getattr(broker, "redis_mode", None) == "cluster":
        # "broker" keeps naming the kind (CONTRACT §3: memory|redis); the topology is a detail.
        body["redisMode"] = "cluster"
    return json_response(body)


async def serve_metrics_alone(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app``'s ``/metrics``, and nothing else, on ``host``:``port`` (the metrics port:
    kept off the public port, and one per worker under ``--workers``). Returns the runner to
    clean up at shutdown; raises ``OSError`` if the port cannot be had."""

    async def metrics_of_app(request: web.Request) -> web.StreamResponse:
        return _metrics_response(app[METRICS_KEY], request)

    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics_of_app)
    runner = web.AppRunner(metrics_app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def metrics(request: web.Request) -> web.StreamResponse:
    """The instance's metrics (Prometheus text, or OpenMetrics when the scraper asks)."""
    return _metrics_response(request.app[METRICS_KEY], request)


def _metrics_response(metrics: Metrics, request: web.Request) -> web.StreamResponse:
    body, content_type = metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(build_document(dev=request.app[SETTINGS_KEY].dev))


async def asyncapi(request: web.Request) -> web.StreamResponse:
    """The WebSocket API's AsyncAPI 3.0 document (docs/asyncapi.json is a copy of it)."""
    return web.Response(body=asyncapi_json(), content_type="application/json")
