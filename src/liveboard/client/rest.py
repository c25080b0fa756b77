"""REST for the client: authenticated calls (``RestApi``) and typed task helpers (``RestHelpers``).

Guarantees of ``RestApi.call``:

* Each call carries the client's token: the current one while it is more than
  ``refresh_margin`` seconds from ``exp``, else a fresh one from the provider; on 401 a
  provider is asked again and the call is made once more (a static token is not retried).
* While the WebSocket is connected, each call carries ``X-Connection-Id``, so the resulting
  event's ``origin`` names this client.
* Any status other than the expected one raises ``ApiError(status, code, message)``, with
  ``code``/``message`` from the body's ``{"error": ...}`` envelope when there is one.
* Each mutation (any method but GET) carries an ``Idempotency-Key``: a fresh random one unless
  the caller's ``headers`` name one. Every attempt of the call re-sends that key and the same
  body bytes: the retry after a 401, and up to ``MUTATION_RETRIES`` more when the answer is
  lost (the connection fails before a status arrives) or the server says the key's first
  attempt is still in progress (409 ``idempotency_key_in_flight``), after ``RETRY_DELAYS``.
  The server applies the mutation once and answers every attempt alike (CONTRACT §6.1).
* ``last_position()``, right after a mutation awaited in the same asyncio task, is the
  position its answer named (``Liveboard-Offset``/``Liveboard-Epoch``): where its event is in
  the room's stream; None when it emitted nothing. A ``Subscription`` that has delivered that
  offset in that epoch has applied the change.

``RestHelpers`` is the typed surface over the endpoints a user may call (CONTRACT §3, §6.4):
workspaces, their members and projects, tasks and room history. It is mixed into
``LiveboardClient`` and ``ServiceClient``, which provide ``_api`` by delegating to a ``RestApi``.
Path segments (ids, room names) are percent-encoded, so any id reaches the server as given.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec
from msgspec import UNSET, UnsetType

from liveboard.client.errors import ApiError
from liveboard.client.link import HttpSession
from liveboard.client.tokens import TokenSource
from liveboard.protocol import (
    HISTORY_DEFAULT_LIMIT,
    Member,
    Position,
    Project,
    Role,
    RoomHistory,
    Task,
    TaskSnapshot,
    Workspace,
)

_task = msgspec.json.Decoder(Task)
_project = msgspec.json.Decoder(Project)
_projects = msgspec.json.Decoder(list[Project])
_workspace = msgspec.json.Decoder(Workspace)
_workspaces = msgspec.json.Decoder(list[Workspace])
_member = msgspec.json.Decoder(Member)
_members = msgspec.json.Decoder(list[Member])
_snapshot = msgspec.json.Decoder(TaskSnapshot)
_history = msgspec.json.Decoder(RoomHistory)


IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: Attempts of a mutation after its answer was lost or its key was still in flight, and the
#: pause before each.
MUTATION_RETRIES: Final = 3
RETRY_DELAYS: Final = (0.05, 0.25, 1.0)
_IN_FLIGHT = "idempotency_key_in_flight"


def answered_position(headers: Any) -> Position | None:
    """The position an answer's ``Liveboard-Offset``/``Liveboard-Epoch`` headers name, if any."""
    offset, epoch = headers.get("Liveboard-Offset"), headers.get("Liveboard-Epoch")
    if offset is None or epoch is None or not offset.isdigit():
        return None
    return Position(offset=int(offset), epoch=epoch)


class RestApi:
    """Authenticated REST calls against ``base_url`` (see the module's guarantees)."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        http: HttpSession,
        connection_id: Callable[[], str | None],
        refresh_margin: float,
    ) -> None:
        self._base_url = base_url
        self._tokens = tokens
        self._http = http
        self._connection_id = connection_id
        self._refresh_margin = refresh_margin
        self._position: ContextVar[Position | None] = ContextVar("position", default=None)

    def last_position(self) -> Position | None:
        """The position named by the answer to this task's last mutation (module docstring)."""
        return self._position.get()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int | tuple[int, ...] = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """``method path`` with ``body`` as JSON; the raw response body if the status is
        ``expect`` (or one of them)."""
        expected = (expect,) if isinstance(expect, int) else expect
        data = None if body is None else msgspec.json.encode(body)
        extra = dict(headers or {})
        mutation = method != "GET"
        if mutation:
            extra.setdefault(IDEMPOTENCY_HEADER, uuid.uuid4().hex)
            self._position.set(None)
        refreshed = False
        retries = 0
        while True:
            token = (
                await self._tokens.fresh()
                if refreshed
                else await self._tokens.valid(self._refresh_margin)
            )
            all_headers = {"Authorization": f"{self._tokens.scheme} {token}", **extra}
            if data is not None:
                all_headers["Content-Type"] = "application/json"
            connection_id = self._connection_id()
            if connection_id is not None:
                all_headers["X-Connection-Id"] = connection_id
            try:
                async with self._http.get().request(
                    method, self._base_url + path, data=data, headers=all_headers
                ) as response:
                    raw = await response.read()
                    status = response.status
                    position = answered_position(response.headers)
            except aiohttp.ClientConnectionError:
                if not mutation or retries >= MUTATION_RETRIES:
                    raise
                await asyncio.sleep(RETRY_DELAYS[min(retries, len(RETRY_DELAYS) - 1)])
                retries += 1
                continue
            if status == 401 and not refreshed and not self._tokens.static:
                refreshed = True
                continue
            if status not in expected:
                error = _api_error(status, raw)
                if mutation and error.reason == _IN_FLIGHT and retries < MUTATION_RETRIES:
                    await asyncio.sleep(RETRY_DELAYS[min(retries, len(RETRY_DELAYS) - 1)])
                    retries += 1
                    continue
                raise error
            if mutation:
                self._position.set(position)
            return raw


class _ErrorDetails(msgspec.Struct):
    reason: str | None = None


class _ErrorBody(msgspec.Struct):
    code: str = "http_error"
    message: str = ""
    details: _ErrorDetails | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        body = msgspec.json.decode(raw, type=_ErrorEnvelope).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = raw[:200].decode(errors="replace")
        return ApiError(status, "http_error", text or f"HTTP {status}")
    reason = None if body.details is None else body.details.reason
    return ApiError(status, body.code, body.message or f"HTTP {status}", reason)


class RestHelpers(ABC):
    """Task-board REST calls; the client provides ``_api`` (``RestApi.call``)."""

    @abstractmethod
    async def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int | tuple[int, ...] = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes: ...

    @abstractmethod
    def last_position(self) -> Position | None:
        """Where the event of this asyncio task's last mutation is: the ``Position`` its answer
        named (``Liveboard-Offset``/``Liveboard-Epoch``), None if it emitted nothing. Read it
        right after awaiting the mutation, in the same task::

            task = await client.move_task(task_id, "done")
            position = client.last_position()  # Position(offset=42, epoch="…")
        """

    # ------------------------------------------------------------------ workspaces and members

    async def create_workspace(self, name: str) -> Workspace:
        """``POST /api/workspaces``: a new workspace; the caller is its ``owner``."""
        raw = await self._api("POST", "/api/workspaces", {"name": name}, expect=201)
        return _workspace.decode(raw)

    async def list_workspaces(self) -> list[Workspace]:
        """``GET /api/workspaces``: the workspaces the caller belongs to."""
        return _workspaces.decode(await self._api("GET", "/api/workspaces"))

    async def add_member(self, workspace_id: str, user_id: str, role: Role = "member") -> Member:
        """Add ``user_id`` as ``member`` or ``admin`` (owner/admin only: else ``ApiError`` 403;
        409 if already a member). Emits ``member:added``."""
        body = {"userId": user_id, "role": role}
        raw = await self._api("POST", f"{_workspace_path(workspace_id)}/members", body, expect=201)
        return _member.decode(raw)

    async def list_members(self, workspace_id: str) -> list[Member]:
        """``GET /api/workspaces/{wid}/members``: every member and their role."""
        return _members.decode(await self._api("GET", f"{_workspace_path(workspace_id)}/members"))

    async def remove_member(self, workspace_id: str, user_id: str) -> None:
        """Remove ``user_id``: their subscriptions to the workspace's rooms end at once (their
        SDK delivers ``Revoked``). Emits ``member:removed``."""
        path = f"{_workspace_path(workspace_id)}/members/{quote(user_id, safe='')}"
        await self._api("DELETE", path, expect=204)

    # ------------------------------------------------------------------ projects

    async def create_project(
        self, workspace_id: str, name: str, *, statuses: list[str] | None = None
    ) -> Project:
        """A new project in ``workspace_id``; ``statuses`` (its columns, in order) default to
        ``todo, in_progress, done``. Emits ``project:created``."""
        body: dict[str, Any] = {"name": name}
        if statuses is not None:
            body["statuses"] = statuses
        path = f"{_workspace_path(workspace_id)}/projects"
        return _project.decode(await self._api("POST", path, body, expect=201))

    async def list_projects(self, workspace_id: str) -> list[Project]:
        """``GET /api/workspaces/{wid}/projects``."""
        return _projects.decode(await self._api("GET", f"{_workspace_path(workspace_id)}/projects"))

    # ------------------------------------------------------------------ tasks

    async def get_snapshot(self, project_id: str) -> TaskSnapshot:
        """``GET /api/projects/{pid}/tasks``: every task, as of ``offset`` in ``epoch``."""
        return _snapshot.decode(await self._api("GET", f"/api/projects/{project_id}/tasks"))

    async def get_project(self, project_id: str) -> Project:
        return _project.decode(await self._api("GET", f"/api/projects/{project_id}"))

    async def get_task(self, task_id: str) -> Task:
        return _task.decode(await self._api("GET", f"/api/tasks/{task_id}"))

    async def create_task(
        self,
        project_id: str,
        title: str,
        *,
        description: str | None = None,
        status: str | None = None,
        assignee_id: str | None = None,
        order: float | None = None,
        after_id: str | UnsetType | None = UNSET,
        before_id: str | UnsetType | None = UNSET,
    ) -> Task:
        """Create a task in ``status`` (default: the project's first), placed by its neighbours:
        after ``after_id`` (``None``: the top) and/or before ``before_id`` (``None``: the end);
        neither: the end. ``order`` (CONTRACT §3) instead of neighbours still works."""
        body: dict[str, Any] = {"title": title}
        optional = {
            "description": description,
            "status": status,
            "assigneeId": assignee_id,
            "order": order,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(_neighbours(after_id, before_id))
        raw = await self._api("POST", f"/api/projects/{project_id}/tasks", body, expect=201)
        return _task.decode(raw)

    async def update_task(
        self,
        task_id: str,
        *,
        title: str | UnsetType = UNSET,
        description: str | UnsetType = UNSET,
        assignee_id: str | UnsetType | None = UNSET,
        version: int | None = None,
    ) -> Task:
        """``PATCH``: only the fields given change (``assignee_id=None`` unassigns)."""
        fields = {"title": title, "description": description, "assigneeId": assignee_id}
        body: dict[str, Any] = {k: v for k, v in fields.items() if v is not UNSET}
        if version is not None:
            body["version"] = version
        return _task.decode(await self._api("PATCH", f"/api/tasks/{task_id}", body))

    async def move_task(
        self,
        task_id: str,
        to_status: str,
        *,
        order: float | None = None,
        after_id: str | UnsetType | None = UNSET,
        before_id: str | UnsetType | None = UNSET,
        version: int | None = None,
    ) -> Task:
        """Move to column ``to_status``, after ``after_id`` (``None``: the top) and/or before
        ``before_id`` (``None``: the end); neither: the end. The server picks the rank, so two
        moves into one slot at once end in one order for everyone. ``order`` (CONTRACT §3)
        instead of neighbours still works."""
        body: dict[str, Any] = {"toStatus": to_status}
        if order is not None:
            body["order"] = order
        body.update(_neighbours(after_id, before_id))
        if version is not None:
            body["version"] = version
        return _task.decode(await self._api("POST", f"/api/tasks/{task_id}/move", body))

    async def delete_task(self, task_id: str, *, version: int | None = None) -> None:
        headers = None if version is None else {"If-Match": f'"{version}"'}
        await self._api("DELETE", f"/api/tasks/{task_id}", expect=204, headers=headers)

    async def history(
        self, room: str, after: int = 0, limit: int = HISTORY_DEFAULT_LIMIT
    ) -> RoomHistory:
        """``GET /api/rooms/{room}/events``: up to ``limit`` (1-1000) events of ``room`` with an
        offset above ``after``, ascending, each an ``Event`` as a subscription delivers it
        (liveboard's own types and those other backends publish alike), and the room's head
        (``offset``, ``epoch``). ``truncated``: events after ``after`` are no longer kept.
        Page on with the last event's offset as the next ``after``; an empty page is the head.
        A room the user may not read is ``ApiError`` 404."""
        path = f"/api/rooms/{quote(room, safe='')}/events?after={after}&limit={limit}"
        return _history.decode(await self._api("GET", path))


def _workspace_path(workspace_id: str) -> str:
    return f"/api/workspaces/{quote(workspace_id, safe='')}"


def _neighbours(
    after_id: str | UnsetType | None, before_id: str | UnsetType | None
) -> dict[str, str | None]:
    """The ``afterId``/``beforeId`` of a body: each given one, ``null`` included."""
    given = {"afterId": after_id, "beforeId": before_id}
    return {name: value for name, value in given.items() if not isinstance(value, UnsetType)}
