"""REST routes for other backends (CONTRACT §6.3-6.4): rooms and ids of their own, the room log.

* ``PUT /api/workspaces/{wid}`` and ``PUT /api/workspaces/{wid}/projects/{pid}`` (API key
  only): create with the caller's id, 201; an existing one is answered as it is, 200.
* ``POST /api/rooms/{room}/events`` (API key only): publish ``{type, data}``; 201
  ``{room, offset, epoch}`` with ``Liveboard-Offset``/``Liveboard-Epoch``.
* ``GET /api/rooms/{room}/events?after=&limit=``: a page of the room's history.

A malformed room name is answered like a room that does not exist (404): no room has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from liveboard import errors
from liveboard.protocol import (
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    MAX_OFFSET,
    Project,
    ProtocolError,
    Published,
    PublishEvent,
    RoomHistory,
    RoomName,
    Workspace,
    custom_event_type_problem,
    parse_room,
)
from liveboard.rest import actor, json_response, read_body, require_service
from liveboard.tasks import schemas
from liveboard.tasks.api import SERVICE_KEY, Route, answered, gated, receipt_for
from liveboard.tasks.receipts import Answer
from liveboard.tasks.room_log import RoomLog

__all__ = ["MAX_EVENT_DATA_KEY", "ROOM_LOG_KEY", "ROOM_ROUTES", "add_routes"]

ROOM_LOG_KEY: Final = web.AppKey("room_log", RoomLog)
#: ``settings.max_event_data_bytes``: the largest published ``data``, as JSON bytes.
MAX_EVENT_DATA_KEY: Final = web.AppKey("max_event_data_bytes", int)

#: An id a service may give a workspace or a project: it names a room too (``rooms``), and
#: fits the id columns.
_OWN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_encode = msgspec.json.Encoder().encode


def _own_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if _OWN_ID.fullmatch(value) is None:
        raise errors.validation_error(name, "must be 1 to 64 letters, digits, '_' or '-'")
    return value


def _room(request: web.Request) -> RoomName:
    try:
        return parse_room(request.match_info["room"])
    except ProtocolError:
        raise errors.not_found("room not found") from None


def _put_answer(result: tuple[Any, bool]) -> Answer:
    value, created = result
    return Answer(201 if created else 200, _encode(value))


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise errors.validation_error(name, f"must be an integer from {low} to {high}")
    return int(raw)


async def put_workspace(request: web.Request) -> web.StreamResponse:
    require_service(request)
    body = await read_body(request, schemas.CreateWorkspace)
    receipt = receipt_for(request, _put_answer)
    await request.app[SERVICE_KEY].put_workspace(
        actor(request), _own_id(request, "wid"), body.name, receipt=receipt
    )
    return answered(receipt)


async def put_project(request: web.Request) -> web.StreamResponse:
    require_service(request)
    body = await read_body(request, schemas.CreateProject)
    if body.statuses is not None and len(set(body.statuses)) != len(body.statuses):
        raise errors.validation_error("statuses", "must not repeat a status")
    receipt = receipt_for(request, _put_answer)
    await request.app[SERVICE_KEY].put_project(
        actor(request),
        _own_id(request, "wid"),
        _own_id(request, "pid"),
        body.name,
        body.statuses,
        receipt=receipt,
    )
    return answered(receipt)


async def publish_event(request: web.Request) -> web.StreamResponse:
    require_service(request)
    room = _room(request)
    body = await read_body(request, PublishEvent)
    problem = custom_event_type_problem(body.type)
    if problem is not None:
        raise errors.validation_error("type", problem)
    limit = request.app[MAX_EVENT_DATA_KEY]
    data_json = _encode(body.data)
    if len(data_json) > limit:
        raise errors.ApiError(
            413, "payload_too_large", f"data must be at most {limit} bytes of JSON"
        )
    receipt = receipt_for(request, _json_answer(201))
    await request.app[ROOM_LOG_KEY].publish(
        actor(request), room, body.type, body.data, receipt=receipt, data_json=data_json
    )
    return answered(receipt)


def _json_answer(status: int) -> Callable[[Any], Answer]:
    return lambda value: Answer(status, _encode(value))


async def room_history(request: web.Request) -> web.StreamResponse:
    room = _room(request)
    after = _query_int(request, "after", 0, 0, MAX_OFFSET)
    limit = _query_int(request, "limit", HISTORY_DEFAULT_LIMIT, 1, HISTORY_MAX_LIMIT)
    page = await request.app[ROOM_LOG_KEY].history(actor(request), room, after=after, limit=limit)
    return json_response(page)


ROOM_ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "PUT",
        "/api/workspaces/{wid}",
        put_workspace,
        "Create a workspace with this id (API key only); 200 with the existing one",
        201,
        schemas.CreateWorkspace,
        Workspace,
        service_only=True,
        also=200,
    ),
    Route(
        "PUT",
        "/api/workspaces/{wid}/projects/{pid}",
        put_project,
        "Create a project with this id (API key only); 200 with the existing one",
        201,
        schemas.CreateProject,
        Project,
        service_only=True,
        also=200,
    ),
    Route(
        "POST",
        "/api/rooms/{room}/events",
        publish_event,
        "Publish an event into a room (API key only)",
        201,
        PublishEvent,
        Published,
        service_only=True,
    ),
    Route(
        "GET",
        "/api/rooms/{room}/events",
        room_history,
        "A page of the room's events after an offset, with the room's head",
        answer=RoomHistory,
        query=(
            ("after", "Events with an offset above this one (default 0: from the start)."),
            ("limit", f"At most this many events, 1 to {HISTORY_MAX_LIMIT} (default 100)."),
        ),
    ),
)


def add_routes(app: web.Application) -> None:
    for route in ROOM_ROUTES:
        handler = route.handler if route.method == "GET" else gated(route.handler)
        app.router.add_route(route.method, route.path, handler)
