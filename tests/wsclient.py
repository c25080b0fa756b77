"""A small WebSocket test client and REST helpers for the real-time integration tests.

``WsClient`` wraps aiohttp's ``ws_connect``. Unless told otherwise it runs a reader task that
pumps every frame into a queue, so pings are answered (``autoping``) even while the test awaits
something else, and the close code is recorded as soon as the server sends it. ``next()`` pops
the next JSON message (optionally skipping until a type), ``expect_close()`` waits for the end.

``Board`` is a per-test harness bound to one server: unique user ids, REST helpers that create
workspaces, members, projects and tasks, WebSocket connections (closed at the end).

``start_server`` starts a real ``liveboard serve`` process for a module-scoped fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.servers import LiveboardProcess
from tests.support import auth, make_token, timeout

Json = dict[str, Any]

EVENT_TYPES = frozenset(
    {
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
        "project:created",
        "member:added",
        "member:removed",
    }
)


class SocketClosedError(AssertionError):
    """The socket closed while a message was expected."""


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: Mapping[str, str] | None = None
) -> LiveboardProcess:
    """A real server on a free port with its own SQLite file (for module-scoped fixtures)."""
    directory = tmp_path_factory.mktemp(name)
    return LiveboardProcess(
        database_url=f"sqlite:///{directory / 'liveboard.db'}",
        log_path=directory / "server.log",
        env=env,
    ).start()


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


class ApiError(AssertionError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


class Board:
    """Per-test helpers bound to one server: users, REST set-up, WebSocket connections."""

    def __init__(self, server: LiveboardProcess, *, local_addr: str | None = None) -> None:
        """``local_addr``: the loopback address its connections come from (``127.0.0.2``…),
        for tests where the server treats client addresses differently."""
        self.server = server
        self.url = server.url
        self.ws_url = server.ws_url
        self.local_addr = local_addr
        self.http = aiohttp.ClientSession(connector=self._connector())
        self.clients: list[WsClient] = []
        self.tag = secrets.token_hex(3)

    async def __aenter__(self) -> Board:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
        await self.http.close()

    def user(self, name: str) -> str:
        """A user id unique to this test (servers are shared between tests)."""
        return f"{name}-{self.tag}"

    # WebSocket

    async def connect(
        self,
        user: str | None = None,
        *,
        name: str | None = None,
        ttl: float = 3600.0,
        token: str | None = None,
        **kwargs: Any,
    ) -> WsClient:
        if token is None:
            assert user is not None
            token = make_token(user, name=name, ttl=ttl)
        if "connector" not in kwargs and "session" not in kwargs:
            kwargs["connector"] = self._connector()
        client = await WsClient.connect(self.ws_url, token, **kwargs)
        self.clients.append(client)
        return client

    def _connector(self) -> aiohttp.TCPConnector | None:
        if self.local_addr is None:
            return None
        return aiohttp.TCPConnector(local_addr=(self.local_addr, 0))

    # REST

    async def call(
        self,
        method: str,
        path: str,
        user: str,
        body: Json | None = None,
        *,
        expect: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        all_headers = {**auth(user), **(headers or {})}
        async with self.http.request(
            method, self.url + path, json=body, headers=all_headers
        ) as response:
            text = await response.text()
            if response.status != expect:
                raise ApiError(response.status, f"{method} {path}: {text}")
            return json.loads(text) if text else None

    async def workspace(self, owner: str, *members: str) -> str:
        ws = await self.call("POST", "/api/workspaces", owner, {"name": "Team"}, expect=201)
        for member in members:
            await self.add_member(owner, ws["id"], member)
        return str(ws["id"])

    async def add_member(self, owner: str, wid: str, user: str, role: str = "member") -> Json:
        body = {"userId": user, "role": role}
        result: Json = await self.call(
            "POST", f"/api/workspaces/{wid}/members", owner, body, expect=201
        )
        return result

    async def remove_member(self, owner: str, wid: str, user: str) -> None:
        await self.call("DELETE", f"/api/workspaces/{wid}/members/{user}", owner, expect=204)

    async def project(self, user: str, wid: str, name: str = "Board") -> Json:
        result: Json = await self.call(
            "POST", f"/api/workspaces/{wid}/projects", user, {"name": name}, expect=201
        )
        return result

    async def board(self, owner: str, *members: str) -> tuple[str, str]:
        """A new workspace (``owner`` plus ``members``) with one project: (wid, pid)."""
        wid = await self.workspace(owner, *members)
        project = await self.project(owner, wid)
        return wid, str(project["id"])

    async def task(
        self,
        user: str,
        pid: str,
        title: str = "Task",
        *,
        connection_id: str | None = None,
        **fields: Any,
    ) -> Json:
        headers = {"X-Connection-Id": connection_id} if connection_id else None
        result: Json = await self.call(
            "POST",
            f"/api/projects/{pid}/tasks",
            user,
            {"title": title, **fields},
            expect=201,
            headers=headers,
        )
        return result

    async def patch(
        self, user: str, tid: str, body: Json, *, connection_id: str | None = None
    ) -> Json:
        headers = {"X-Connection-Id": connection_id} if connection_id else None
        result: Json = await self.call("PATCH", f"/api/tasks/{tid}", user, body, headers=headers)
        return result

    async def move(self, user: str, tid: str, to_status: str, order: float | None = None) -> Json:
        body: Json = {"toStatus": to_status}
        if order is not None:
            body["order"] = order
        result: Json = await self.call("POST", f"/api/tasks/{tid}/move", user, body)
        return result

    async def delete(self, user: str, tid: str) -> None:
        await self.call("DELETE", f"/api/tasks/{tid}", user, expect=204)

    async def snapshot(self, user: str, pid: str) -> Json:
        result: Json = await self.call("GET", f"/api/projects/{pid}/tasks", user)
        return result

    async def metrics(self) -> MetricsText:
        async with self.http.get(self.url + "/metrics") as response:
            assert response.status == 200
            return parse_metrics(await response.text())

    async def metric_types(self) -> dict[str, str]:
        async with self.http.get(self.url + "/metrics") as response:
            text = await response.text()
        return {
            parts[2]: parts[3]
            for parts in (line.split() for line in text.splitlines())
            if len(parts) >= 4 and parts[0] == "#" and parts[1] == "TYPE"
        }


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)")


class MetricsText(dict[str, float]):
    """Samples ``{"name{labels}": value}``; ``invalid`` lists lines that are not valid samples."""

    invalid: list[str]


def parse_metrics(text: str) -> MetricsText:
    """Prometheus text → ``{"name{labels}": value}`` (invalid lines kept in ``.invalid``)."""
    samples = MetricsText()
    samples.invalid = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        try:
            if match is None:
                raise ValueError(line)
            samples[match.group(1)] = float(match.group(2))
        except ValueError:
            samples.invalid.append(line)
    return samples


def offsets(events: list[Json]) -> list[int]:
    return [int(e["offset"]) for e in events]


async def wait_until(
    predicate: Callable[[], Any], wait: float = 5.0, interval: float = 0.02
) -> None:
    """Poll an (async or sync) predicate until it is true."""
    deadline = time.monotonic() + timeout(wait)
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def project_room(pid: str) -> str:
    return f"project:{pid}"


def workspace_room(wid: str) -> str:
    return f"workspace:{wid}"


__all__ = [
    "Board",
    "Json",
    "LiveboardProcess",
    "MetricsText",
    "SocketClosedError",
    "WsClient",
    "offsets",
    "parse_metrics",
    "project_room",
    "small_receive_buffer",
    "start_server",
    "wait_until",
    "workspace_room",
]
