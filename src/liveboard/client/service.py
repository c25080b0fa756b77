"""``ServiceClient``: REST for another backend holding a service key (CONTRACT §6.3).

A key is sent as ``Authorization: apikey <key>``. It may do what an owner may do in every
workspace, so every ``RestHelpers`` call works with it, plus what only a key may do: create
workspaces and projects with ids of its own (``put_workspace``, ``put_project``: 201 new, 200
existing, so a backend can mirror its own records idempotently) and publish events of its own
types into a room (``publish``). A key opens no WebSocket: subscribe with ``LiveboardClient``
and a user's token.

Guarantees are ``RestApi.call``'s (``liveboard.client.rest``): every mutation carries an
``Idempotency-Key`` (the caller's, when given) and is retried with it when the answer is lost,
so it is applied once; ``last_position()`` names where its event went.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from liveboard.client.link import HttpSession
from liveboard.client.rest import IDEMPOTENCY_HEADER, RestApi, RestHelpers
from liveboard.client.tokens import ApiKey
from liveboard.protocol import Position, Project, Published, Workspace

_workspace = msgspec.json.Decoder(Workspace)
_project = msgspec.json.Decoder(Project)
_published = msgspec.json.Decoder(Published)


class ServiceClient(RestHelpers):
    """REST calls with a service key: ``async with ServiceClient(url, key) as service: ...``.

    ``session``: an ``aiohttp.ClientSession`` to use (not closed by ``aclose``); by default
    the client makes its own and closes it in ``aclose()`` (idempotent).
    """

    def __init__(
        self, base_url: str, api_key: str, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = HttpSession(session)
        self._rest = RestApi(self.base_url, ApiKey(api_key), self._http, lambda: None, 0.0)

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session this client made; idempotent."""
        await self._http.close()

    def last_position(self) -> Position | None:
        return self._rest.last_position()

    async def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int | tuple[int, ...] = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        return await self._rest.call(method, path, body, expect=expect, headers=headers)

    async def put_workspace(self, workspace_id: str, name: str) -> Workspace:
        """``PUT /api/workspaces/{wid}``: the workspace with this id, created if it did not
        exist (the key's, not a user's: it has no owner until one is added)."""
        path = f"/api/workspaces/{quote(workspace_id, safe='')}"
        return _workspace.decode(await self._put(path, {"name": name}))

    async def put_project(
        self,
        workspace_id: str,
        project_id: str,
        name: str,
        *,
        statuses: list[str] | None = None,
    ) -> Project:
        """``PUT /api/workspaces/{wid}/projects/{pid}``: the project with this id, created in
        ``workspace_id`` if it did not exist (emitting ``project:created``)."""
        body: dict[str, Any] = {"name": name}
        if statuses is not None:
            body["statuses"] = statuses
        wid, pid = quote(workspace_id, safe=""), quote(project_id, safe="")
        return _project.decode(await self._put(f"/api/workspaces/{wid}/projects/{pid}", body))

    async def publish(
        self,
        room: str,
        type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publish ``{type, data}`` into ``room``: subscribers get it as an ``Event`` in the
        room's order with every other event (``user_id`` None), and history keeps it.

        ``type`` is ``namespace:name`` in lower case, and not a message type of the server's
        (``liveboard.protocol.custom_event_type_problem`` says why one is refused: ``ApiError``
        422); ``data`` a JSON object. The answer is
        the event's room, offset and epoch. With ``idempotency_key`` (e.g. your record's id) a
        repeat of the same call publishes nothing new and answers the first answer again.
        """
        headers = None if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}
        path = f"/api/rooms/{quote(room, safe='')}/events"
        body = {"type": type, "data": data}
        raw = await self._api("POST", path, body, expect=201, headers=headers)
        return _published.decode(raw)

    async def _put(self, path: str, body: dict[str, Any]) -> bytes:
        """A ``PUT``: 201 (created) and 200 (it existed) are both success."""
        return await self._api("PUT", path, body, expect=(201, 200))
