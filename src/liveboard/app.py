"""Builds the server: REST and WebSocket on one aiohttp application, and its start/stop order.

Start: open the database and apply migrations → (``--dev``) seed the demo → serve.
Stop (``cli.serve`` on SIGTERM): stop accepting → close sockets → close the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from liveboard import dev, rest
from liveboard.auth import TokenVerifier
from liveboard.config import Settings
from liveboard.events import EventPublisher, NullPublisher
from liveboard.openapi import build_document
from liveboard.rest import json_response
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks import api
from liveboard.tasks.service import TaskService

SETTINGS_KEY: Final = web.AppKey("settings", Settings)
DATABASE_KEY: Final = web.AppKey("database", Database)
WEB_DIR: Final = Path(__file__).parent / "web"


def build_app(settings: Settings, *, publisher: EventPublisher | None = None) -> web.Application:
    """The whole server for ``settings`` (which must have a JWT key; see ``with_dev_defaults``)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[rest.error_middleware, rest.auth_middleware],
    )
    app[SETTINGS_KEY] = settings
    app[rest.VERIFIER_KEY] = TokenVerifier(settings)
    app[rest.RATE_LIMITER_KEY] = rest.RateLimiter(rate=50.0, burst=200.0)
    app.cleanup_ctx.append(_storage(publisher or NullPublisher()))

    api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    if settings.dev:
        assert settings.jwt_secret is not None  # with_dev_defaults guarantees a secret
        app.router.add_get("/api/dev/token", dev.dev_token_handler(settings.jwt_secret))
    return app


def _storage(publisher: EventPublisher) -> Callable[[web.Application], AsyncIterator[None]]:
    async def storage(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        db = Database(settings.database_url)
        try:
            await migrate(db)
            service = TaskService(db, publisher)
            app[DATABASE_KEY] = db
            app[api.SERVICE_KEY] = service
            if settings.dev:
                await dev.seed_demo(service)
            yield
        finally:
            await db.aclose()
            await app[rest.VERIFIER_KEY].aclose()

    return storage


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ready", "broker": "memory", "degraded": False})


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(build_document(dev=request.app[SETTINGS_KEY].dev))
