"""The per-user connection limit on aiohttp's upgrade route, while its handshake awaits.

Upgrades that reach aiohttp (after other requests on a keep-alive connection, or in a server
built with ``build_app`` alone, as here) are admitted, then await aiohttp's handshake, then get
a session. aiohttp's handshake awaits only when its write buffer is full, which a test cannot
arrange on loopback, so it is slowed here on purpose: every upgrade of one user then passes
admission before any has its session, and the limit must still hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.app import AppClientFactory, make_settings
from tests.support.tokens import make_token

LIMIT = 3


async def test_upgrades_admitted_together_respect_the_per_user_limit(
    tmp_path: Path, app_client_factory: AppClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    handshake = web.WebSocketResponse.prepare

    async def slow_handshake(self: web.WebSocketResponse, request: web.BaseRequest) -> Any:
        await asyncio.sleep(0.1)
        return await handshake(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", slow_handshake)
    settings = make_settings(
        f"sqlite:///{tmp_path / 'liveboard.db'}", max_connections_per_user=LIMIT
    )
    client = await app_client_factory(settings)
    token = make_token("many-tabs")

    async def upgrade() -> int | aiohttp.ClientWebSocketResponse:
        try:
            return await client.ws_connect(f"/ws?token={token}")
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    outcomes = await asyncio.gather(*(upgrade() for _ in range(LIMIT + 2)))
    opened = [o for o in outcomes if isinstance(o, aiohttp.ClientWebSocketResponse)]
    try:
        assert len(opened) == LIMIT
        assert [o for o in outcomes if isinstance(o, int)] == [429, 429]
    finally:
        for ws in opened:
            await ws.close()
