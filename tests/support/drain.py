"""Many cheap connections: bare WebSockets that count frames without decoding them.

For hundreds of connections in one test process (the coalescing tests): a ``Drain`` keeps
reading so the server never sees it as a slow consumer; ``gather_limited`` opens them a few at
a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.support.contract import Json
from tests.support.timing import timeout
from tests.support.tokens import auth


class Drain:
    """A bare WebSocket that reads and counts what it gets without decoding JSON.

    Used for hundreds of connections in one test process; it keeps reading so the server never
    sees it as a slow consumer.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames = 0
        self.close_code: int | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, ws_url: str, user: str, room: str) -> Drain:
        ws = await session.ws_connect(
            ws_url,
            headers=auth(user),
            autoclose=False,
            max_msg_size=16 * 1024 * 1024,
        )
        connected = json.loads((await ws.receive(timeout(10))).data)
        assert connected["type"] == "connected", connected
        await ws.send_str(json.dumps({"type": "subscribe", "room": room, "id": 1}))
        reply = json.loads((await ws.receive(timeout(10))).data)
        assert reply["type"] == "subscribed", reply
        return cls(ws)

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames += 1
            elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:
                self.close_code = self.ws.close_code
                return

    async def send(self, message: Json) -> None:
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await self.ws.close()


async def gather_limited(
    count: int, make: Callable[[int], Awaitable[Any]], limit: int = 20
) -> list[Any]:
    """``make(0) … make(count - 1)``, at most ``limit`` at a time, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(index: int) -> Any:
        async with semaphore:
            return await make(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))
