"""The OpenAPI 3.1 document, generated from the route table and the msgspec models."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

import msgspec

from liveboard import __version__
from liveboard.tasks.api import ROUTES as TASK_ROUTES
from liveboard.tasks.rooms_api import ROOM_ROUTES
from liveboard.tasks.schemas import DevToken, ErrorResponse

ROUTES = (*TASK_ROUTES, *ROOM_ROUTES)

_REF = "#/components/schemas/{name}"
#: Every mutation's optional key (CONTRACT §6.1).
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the mutation safe to retry: a repeat of the same request with the same key, "
        "by the same user, within the keys' lifetime (at least 24 h) is answered with the "
        "first answer (status, body, headers) and changes and emits nothing. The same key "
        "with a different request (method, path, If-Match or body bytes): 422. While the "
        "first is still in progress: 409 with details.reason idempotency_key_in_flight."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
#: What a mutation's success answer names: its event's position (absent: nothing emitted).
_POSITION_HEADERS = {
    "Liveboard-Offset": {
        "description": "The offset of the event this mutation emitted, in the room it names "
        "(a task's project room; a member's or project's workspace room)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Liveboard-Epoch": {
        "description": "The epoch of that room's log, with Liveboard-Offset",
        "schema": {"type": "string"},
    },
}
_ERRORS = {
    "400": "bad_request",
    "401": "unauthorized",
    "403": "forbidden",
    "404": "not_found",
    "409": "conflict",
    "413": "payload_too_large",
    "422": "validation_error",
    "429": "rate_limited",
}


def build_document(*, dev: bool = False) -> dict[str, Any]:
    """The API's OpenAPI document; ``dev`` adds ``/api/dev/token``."""
    models: list[Any] = [ErrorResponse, DevToken]
    for route in ROUTES:
        models += [m for m in (route.body, route.answer) if m is not None]
    schemas, components = msgspec.json.schema_components(models, ref_template=_REF)
    refs = dict(zip(map(_key, models), schemas, strict=True))
    error_ref = refs[_key(ErrorResponse)]
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            # A service's API key may call every route; some only it.
            "security": [{"apikey": []}]
            if route.service_only
            else [{"bearer": []}, {"apikey": []}],
            "responses": {},
        }
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"\{(\w+)\}", route.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "integer", "minimum": 0},
            }
            for name, text in route.query
        ]
        mutation = route.method != "GET"
        if mutation:
            params.append(_IDEMPOTENCY_KEY)
        if params:
            operation["parameters"] = params
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[_key(route.body)]}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if route.answer is not None:
            ok["content"] = {"application/json": {"schema": refs[_key(route.answer)]}}
        headers: dict[str, Any] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in route.headers
        }
        if mutation:
            headers.update(_POSITION_HEADERS)
        if headers:
            ok["headers"] = headers
        operation["responses"][str(route.status)] = ok
        if route.also is not None:
            operation["responses"][str(route.also)] = {**ok, "description": "already there"}
        for status, code in _ERRORS.items():
            operation["responses"][status] = {
                "description": code,
                "content": {"application/json": {"schema": error_ref}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    if dev:
        paths["/api/dev/token"] = {
            "get": {
                "summary": "A token for a demo user (--dev only)",
                "operationId": "dev_token",
                "parameters": [
                    {"name": "user", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "success",
                        "content": {"application/json": {"schema": refs[_key(DevToken)]}},
                    },
                    "422": {
                        "description": "validation_error",
                        "content": {"application/json": {"schema": error_ref}},
                    },
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "liveboard", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apikey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "A service key of LIVEBOARD_API_KEYS: `apikey <key>`.",
                },
            },
        },
    }


def _key(model: Any) -> str:
    origin = get_origin(model)
    if origin is list:
        return f"list[{_key(get_args(model)[0])}]"
    return str(getattr(model, "__qualname__", model))
