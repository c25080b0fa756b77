"""A WebSocket test client on aiohttp's ``ws_connect``, reading in the background.

``WsClient`` runs, unless told otherwise, a reader task that pumps every frame into a queue, so
pings are answered (``autoping``) even while the test awaits something else, and the close code
is recorded as soon as the server sends it. ``next()`` pops the next JSON message (optionally
skipping until a type), ``events()`` the next room events, ``barrier()`` everything before a
pong, ``request()`` the reply to one message, ``expect_close()`` waits for the end.
``small_receive_buffer`` makes sockets that read slowly (for slow-consumer tests).

For frames aiohttp refuses to send, see ``tests.support.rawws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.support.contract import EVENT_TYPES, Json
from tests.support.timing import timeout


class SocketClosedError(AssertionError):
    """The socket closed while a message was expected."""


def small_receive_buffer(size: int = 4096) -> Callable[[Any], socket.socket]:
    """A ``TCPConnector(socket_factory=...)`` whose sockets have a tiny receive buffer."""

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setblocking(False)
        return sock

    return factory


class WsClient:
    """One WebSocket connection to the server."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.queue: asyncio.Queue[Json | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.connected: Json = {}
        self._reader: asyncio.Task[None] | None = None
        self._own_session = False
        self._counter = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        query_token: bool = False,
        autoping: bool = True,
        read: bool = True,
        connector: aiohttp.BaseConnector | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> WsClient:
        """Open a connection and read ``connected``; raises ``WSServerHandshakeError`` on refusal.

        ``token`` goes in ``Authorization`` (or in ``?token=`` with ``query_token``).
        ``read=False``: no reader task, nothing is read after ``connected`` unless asked
        (``receive_raw``).
        """
        own = session is None
        if session is None:
            session = aiohttp.ClientSession(connector=connector)
        all_headers = dict(headers or {})
        params: dict[str, str] = {}
        if token is not None:
            if query_token:
                params["token"] = token
            else:
                all_headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await session.ws_connect(
                url,
                headers=all_headers,
                params=params,
                autoping=autoping,
                autoclose=False,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except BaseException:
            if own:
                await session.close()
            raise
        client = cls(session, ws)
        client._own_session = own
        first = await client.receive_raw(timeout(5))
        assert first is not None, "socket closed before `connected`"
        client.connected = first
        if read:
            client._reader = asyncio.create_task(client._read_loop())
        return client

    @property
    def connection_id(self) -> str:
        return str(self.connected["connectionId"])

    # Reading

    async def receive_raw(self, wait: float) -> Json | None:
        """Read one frame directly (only without a reader task); None once closed."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), wait)
            if msg.type is WSMsgType.TEXT:
                data: Json = json.loads(msg.data)
                return data
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            await self._on_end(msg)
            return None

    async def _on_end(self, msg: aiohttp.WSMessage) -> None:
        if msg.type is WSMsgType.CLOSE:
            self.close_code = int(msg.data)
            with contextlib.suppress(Exception):
                await self.ws.close()
        elif self.close_code is None:
            self.close_code = self.ws.close_code
        self.closed.set()

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    self.queue.put_nowait(json.loads(msg.data))
                elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                    continue  # answered by aiohttp when autoping; ignored otherwise
                elif msg.type is WSMsgType.BINARY:
                    self.queue.put_nowait({"type": "<binary>", "data": msg.data})
                else:
                    await self._on_end(msg)
                    return
        finally:
            self.closed.set()
            self.queue.put_nowait(None)

    async def next(self, type: str | None = None, wait: float = 5.0) -> Json:
        """The next message (of ``type``, skipping others); ``SocketClosedError`` at the end."""
        deadline = time.monotonic() + timeout(wait)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type or 'message'} within {wait}s")
            try:
                message = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                raise TimeoutError(f"no {type or 'message'} within {wait}s") from None
            if message is None:
                self.queue.put_nowait(None)  # stay closed for later callers
                raise SocketClosedError(
                    f"socket closed (code {self.close_code}) waiting for {type or 'a message'}"
                )
            if type is None or message.get("type") == type:
                return message

    async def events(self, count: int, wait: float = 10.0) -> list[Json]:
        """The next ``count`` room events (skipping presence updates and replies)."""
        found: list[Json] = []
        while len(found) < count:
            message = await self.next(wait=wait)
            if message.get("type") in EVENT_TYPES:
                found.append(message)
        return found

    async def barrier(self, wait: float = 5.0) -> list[Json]:
        """Send a ping and return every message received before its pong."""
        ping_id = self.new_id("barrier")
        await self.send({"type": "ping", "id": ping_id})
        before: list[Json] = []
        while True:
            message = await self.next(wait=wait)
            if message.get("type") == "pong" and message.get("id") == ping_id:
                return before
            before.append(message)

    async def expect_close(self, wait: float = 5.0) -> int | None:
        """Wait for the socket to end; return the close code (None/1006 for a dropped socket)."""
        await asyncio.wait_for(self.closed.wait(), timeout(wait))
        return self.close_code

    # Writing

    def new_id(self, prefix: str = "m") -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    async def send(self, message: Json) -> None:
        await self.ws.send_str(json.dumps(message))

    async def send_str(self, text: str) -> None:
        await self.ws.send_str(text)

    async def request(self, message: Json, wait: float = 5.0) -> Json:
        """Send ``message`` with a fresh id and return the reply that echoes it."""
        message_id = self.new_id(str(message.get("type", "m")))
        await self.send({**message, "id": message_id})
        while True:
            reply = await self.next(wait=wait)
            if reply.get("id") == message_id:
                return reply

    async def subscribe(self, room: str, since: Json | None = None, *, wait: float = 5.0) -> Json:
        message: Json = {"type": "subscribe", "room": room}
        if since is not None:
            message["since"] = since
        return await self.request(message, wait=wait)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._own_session:
            await self.session.close()
