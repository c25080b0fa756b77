"""Thin, typed REST helpers for the task endpoints (CONTRACT §3), mixed into the client.

Each call carries the client's token (a provider is asked again once on 401) and, while the
WebSocket is connected, ``X-Connection-Id`` so the resulting event's ``origin`` names this
client. Errors raise ``ApiError(status, code, message)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from liveboard.protocol import Project, Task, TaskSnapshot

_task = msgspec.json.Decoder(Task)
_project = msgspec.json.Decoder(Project)
_snapshot = msgspec.json.Decoder(TaskSnapshot)


class RestHelpers(ABC):
    """Task-board REST calls; the client provides ``_api`` (auth, connection id, errors)."""

    @abstractmethod
    async def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes: ...

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
    ) -> Task:
        body: dict[str, Any] = {"title": title}
        optional = {
            "description": description,
            "status": status,
            "assigneeId": assignee_id,
            "order": order,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
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
        version: int | None = None,
    ) -> Task:
        """Move to ``to_status`` at ``order`` (omitted: the end of that column)."""
        body: dict[str, Any] = {"toStatus": to_status}
        if order is not None:
            body["order"] = order
        if version is not None:
            body["version"] = version
        return _task.decode(await self._api("POST", f"/api/tasks/{task_id}/move", body))

    async def delete_task(self, task_id: str, *, version: int | None = None) -> None:
        headers = None if version is None else {"If-Match": f'"{version}"'}
        await self._api("DELETE", f"/api/tasks/{task_id}", expect=204, headers=headers)
