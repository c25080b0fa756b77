"""``Board``: per-test helpers bound to one ``liveboard serve`` process.

Unique user ids (servers are shared between the tests of a module), REST calls that create
workspaces, members, projects and tasks and raise ``ApiError`` on an unexpected status,
WebSocket connections (``WsClient``, all closed at the end), and the server's ``/metrics``.

(Not to be confused with ``tests.support.rest.Board``, bound to the in-process app.)
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import aiohttp

from tests.support.contract import Json
from tests.support.probes import MetricsText, parse_metrics
from tests.support.servers import LiveboardProcess
from tests.support.tokens import auth, make_token
from tests.support.wsclient import WsClient


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
