"""REST routes of the task service (CONTRACT §3), declared once for the router and OpenAPI.

Each route is a ``Route``: method, path, handler and the models of its body and answer, from which
``openapi.build_document`` writes the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from aiohttp import web
from msgspec import UNSET

from liveboard import errors
from liveboard.protocol import Member, Project, Task, TaskSnapshot, Workspace
from liveboard.rest import actor, json_response, read_body
from liveboard.tasks import merge, schemas
from liveboard.tasks.changes import TaskChanges
from liveboard.tasks.idempotency import CLAIM_KEY, GATE_KEY, answer_response
from liveboard.tasks.placement import Slot
from liveboard.tasks.receipts import Answer, Receipt
from liveboard.tasks.service import TaskService
from liveboard.text import MAX_ID_LENGTH, MAX_USER_ID_LENGTH, storable

SERVICE_KEY: Final = web.AppKey("task_service", TaskService)
#: On a PATCH answer: the fields applied on top of a stale version (``tasks.merge``).
MERGED_HEADER: Final = "Liveboard-Merged"
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: RouteHandler
    summary: str
    status: int = 200
    body: type[Any] | None = None
    answer: Any = None  # a model type, list[model], or None for an empty answer
    #: Headers the success answer may carry: (name, description) pairs, for OpenAPI.
    headers: tuple[tuple[str, str], ...] = ()
    #: Integer query parameters: (name, description) pairs, for OpenAPI.
    query: tuple[tuple[str, str], ...] = ()
    #: Only a service's API key may call it (a user's token: 403).
    service_only: bool = False
    #: Another success status, e.g. 200 for a ``PUT`` that found the resource (OpenAPI).
    also: int | None = None


def _service(request: web.Request) -> TaskService:
    return request.app[SERVICE_KEY]


_VERSION_TAG = re.compile(r"[0-9]{1,19}")


def _expected_version(request: web.Request, body_version: int | None) -> int | None:
    """``version`` from the body, else from ``If-Match`` (``3``, ``"3"`` or ``W/"3"``).

    A tag that is not 1 to 19 ASCII digits, or above ``schemas.MAX_VERSION``, is a 400: no task
    can be at that version (and ``int()`` never sees 5,000 digits or ``²``)."""
    if body_version is not None:
        return body_version
    header = request.headers.get("If-Match")
    if header is None:
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    if _VERSION_TAG.fullmatch(tag) is None or not 1 <= int(tag) <= schemas.MAX_VERSION:
        raise errors.bad_request('If-Match must carry the task\'s version, e.g. If-Match: "3"')
    return int(tag)


#: What a path parameter names, for its 404, and the longest such value that can exist.
_PATH_PARAMS: Final = {
    "wid": ("workspace not found", MAX_ID_LENGTH),
    "pid": ("project not found", MAX_ID_LENGTH),
    "tid": ("task not found", MAX_ID_LENGTH),
    "uid": ("no such member of this workspace", MAX_USER_ID_LENGTH),
}


def _path(request: web.Request, name: str) -> str:
    """The path parameter ``name``; 404 if it is not text the store can hold (``liveboard.text``):
    no row has that id, and on PostgreSQL the query itself would fail."""
    value = request.match_info[name]
    missing, longest = _PATH_PARAMS[name]
    if len(value) > longest or not storable(value):
        raise errors.not_found(missing)
    return value


def _task_response(task: Task, status: int = 200) -> web.Response:
    return json_response(task, status=status, headers={"ETag": f'"{task.version}"'})


_encode = msgspec.json.Encoder().encode


def receipt_for(request: web.Request, render: Callable[[Any], Answer]) -> Receipt:
    """The receipt a mutation hands the service: how to answer, and the request's key if any."""
    return Receipt(render, request.get(CLAIM_KEY))


def answered(receipt: Receipt) -> web.Response:
    if receipt.answer is None:  # every mutation of the service settles its receipt
        raise RuntimeError("the mutation did not settle its receipt")
    return answer_response(receipt.answer)


def _task_answer(status: int) -> Callable[[Task], Answer]:
    return lambda task: Answer(status, _encode(task), {"ETag": f'"{task.version}"'})


def _json_answer(status: int) -> Callable[[Any], Answer]:
    return lambda value: Answer(status, _encode(value))


def _edited_answer(edited: merge.Edited) -> Answer:
    answer = _task_answer(200)(edited.task)
    if edited.merged:  # applied on top of a stale version: say which fields
        answer.headers[MERGED_HEADER] = ", ".join(merge.wire_fields(edited.merged))
    return answer


def _no_content(_: None) -> Answer:
    return Answer(204)


# Workspaces and members


async def create_workspace(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.CreateWorkspace)
    receipt = receipt_for(request, _json_answer(201))
    await _service(request).create_workspace(actor(request), body.name, receipt=receipt)
    return answered(receipt)


async def list_workspaces(request: web.Request) -> web.StreamResponse:
    return json_response(await _service(request).list_workspaces(actor(request)))


async def add_member(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.AddMember)
    receipt = receipt_for(request, _json_answer(201))
    await _service(request).add_member(
        actor(request), _path(request, "wid"), body.user_id, body.role, receipt=receipt
    )
    return answered(receipt)


async def list_members(request: web.Request) -> web.StreamResponse:
    members = await _service(request).list_members(actor(request), _path(request, "wid"))
    return json_response(members)


async def remove_member(request: web.Request) -> web.StreamResponse:
    receipt = receipt_for(request, _no_content)
    await _service(request).remove_member(
        actor(request), _path(request, "wid"), _path(request, "uid"), receipt=receipt
    )
    return answered(receipt)


# Projects


async def create_project(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.CreateProject)
    if body.statuses is not None and len(set(body.statuses)) != len(body.statuses):
        raise errors.validation_error("statuses", "must not repeat a status")
    receipt = receipt_for(request, _json_answer(201))
    await _service(request).create_project(
        actor(request), _path(request, "wid"), body.name, body.statuses, receipt=receipt
    )
    return answered(receipt)


async def list_projects(request: web.Request) -> web.StreamResponse:
    projects = await _service(request).list_projects(actor(request), _path(request, "wid"))
    return json_response(projects)


async def get_project(request: web.Request) -> web.StreamResponse:
    project = await _service(request).get_project(actor(request), _path(request, "pid"))
    return json_response(project)


async def list_tasks(request: web.Request) -> web.StreamResponse:
    snapshot = await _service(request).snapshot(actor(request), _path(request, "pid"))
    return json_response(snapshot)


# Tasks


async def create_task(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.CreateTask)
    receipt = receipt_for(request, _task_answer(201))
    await _service(request).create_task(
        actor(request),
        _path(request, "pid"),
        title=body.title,
        description=body.description,
        status=body.status,
        assignee_id=body.assignee_id,
        slot=Slot(body.after_id, body.before_id, body.order),
        receipt=receipt,
    )
    return answered(receipt)


async def get_task(request: web.Request) -> web.StreamResponse:
    task = await _service(request).get_task(actor(request), _path(request, "tid"))
    return _task_response(task)


async def update_task(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.UpdateTask)
    for field in ("status", "order"):
        if getattr(body, field) is not UNSET:
            raise errors.validation_error(
                field, f"{field} cannot be changed here; use POST /api/tasks/{{tid}}/move"
            )
    # Absent fields stay UNSET (kept); "assigneeId": null is None (unassign).
    changes = TaskChanges(
        title=body.title, description=body.description, assignee_id=body.assignee_id
    )
    version = _expected_version(request, None if body.version is UNSET else body.version)
    receipt = receipt_for(request, _edited_answer)
    await _service(request).update_task(
        actor(request), _path(request, "tid"), changes, expected_version=version, receipt=receipt
    )
    return answered(receipt)


async def move_task(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, schemas.MoveTask)
    receipt = receipt_for(request, _task_answer(200))
    await _service(request).move_task(
        actor(request),
        _path(request, "tid"),
        body.to_status,
        slot=Slot(body.after_id, body.before_id, body.order),
        expected_version=_expected_version(request, body.version),
        receipt=receipt,
    )
    return answered(receipt)


async def delete_task(request: web.Request) -> web.StreamResponse:
    receipt = receipt_for(request, _no_content)
    await _service(request).delete_task(
        actor(request),
        _path(request, "tid"),
        expected_version=_expected_version(request, None),
        receipt=receipt,
    )
    return answered(receipt)


ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "POST",
        "/api/workspaces",
        create_workspace,
        "Create a workspace; the caller becomes its owner",
        201,
        schemas.CreateWorkspace,
        Workspace,
    ),
    Route(
        "GET",
        "/api/workspaces",
        list_workspaces,
        "Workspaces the caller belongs to",
        answer=list[Workspace],
    ),
    Route(
        "POST",
        "/api/workspaces/{wid}/members",
        add_member,
        "Add a member (owner or admin only)",
        201,
        schemas.AddMember,
        Member,
    ),
    Route(
        "GET",
        "/api/workspaces/{wid}/members",
        list_members,
        "Members of a workspace",
        answer=list[Member],
    ),
    Route(
        "DELETE",
        "/api/workspaces/{wid}/members/{uid}",
        remove_member,
        "Remove a member; their live subscriptions end at once",
        204,
    ),
    Route(
        "POST",
        "/api/workspaces/{wid}/projects",
        create_project,
        "Create a project",
        201,
        schemas.CreateProject,
        Project,
    ),
    Route(
        "GET",
        "/api/workspaces/{wid}/projects",
        list_projects,
        "Projects of a workspace",
        answer=list[Project],
    ),
    Route("GET", "/api/projects/{pid}", get_project, "A project", answer=Project),
    Route(
        "GET",
        "/api/projects/{pid}/tasks",
        list_tasks,
        "Snapshot of the tasks with the offset and epoch it reflects",
        answer=TaskSnapshot,
    ),
    Route(
        "POST",
        "/api/projects/{pid}/tasks",
        create_task,
        "Create a task",
        201,
        schemas.CreateTask,
        Task,
    ),
    Route("GET", "/api/tasks/{tid}", get_task, "A task", answer=Task),
    Route(
        "PATCH",
        "/api/tasks/{tid}",
        update_task,
        "Edit a task's title, description or assignee",
        body=schemas.UpdateTask,
        answer=Task,
        headers=(
            (
                MERGED_HEADER,
                "Present when the edit's version (body `version` or `If-Match`) was stale and "
                "none of the fields it changes had changed since: the edit was applied on top "
                "of the newer task. Its value lists those fields, e.g. `title, assigneeId`. "
                "A stale version whose fields did change since is a 409 naming them in "
                "`error.details.fields`.",
            ),
        ),
    ),
    Route(
        "POST",
        "/api/tasks/{tid}/move",
        move_task,
        "Move a task to a column, after/before a neighbour (afterId, beforeId) or at the end",
        body=schemas.MoveTask,
        answer=Task,
    ),
    Route("DELETE", "/api/tasks/{tid}", delete_task, "Delete a task", 204),
)


def gated(handler: RouteHandler) -> RouteHandler:
    """``handler`` behind the app's ``IdempotencyGate`` (every mutation: CONTRACT §6.1)."""

    async def gated(request: web.Request) -> web.StreamResponse:
        return await request.app[GATE_KEY].run(request, handler)

    return gated


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        handler = route.handler if route.method == "GET" else gated(route.handler)
        app.router.add_route(route.method, route.path, handler)
