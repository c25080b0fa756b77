"""``--dev`` conveniences: demo data and tokens for the demo users, for a developer's machine.

The demo is seeded once: a workspace "Demo workspace" owned by alice, with bob and carol as
members, and a project "Website launch" with a dozen tasks spread over its columns. A database
that already has alice's demo workspace is left as it is.

A ``--dev`` server answers only requests addressed to a loopback host (``Host`` of
``localhost``, a name under ``.localhost``, 127.0.0.0/8 or ``[::1]``; ``loopback_only`` for
HTTP, ``admission.admit`` for upgrades): it mints tokens for anyone who asks and, unless a key is
configured, signs them with a secret that is public. A page on another site that rebinds its
own name to 127.0.0.1 (DNS rebinding) reaches the server with its own name in ``Host``, and is
refused 403 ``forbidden``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from liveboard import errors
from liveboard.auth import Actor, issue_token
from liveboard.rest import Handler, error_response, json_response
from liveboard.tasks.service import TaskService
from liveboard.text import user_id_problem

DEMO_USERS: dict[str, str] = {"alice": "Alice Martin", "bob": "Bob Okafor", "carol": "Carol Chen"}
DEMO_WORKSPACE = "Demo workspace"
DEV_TOKEN_TTL = 12 * 3600.0

_DEMO_TASKS: list[tuple[str, str, str | None]] = [
    ("Write the launch announcement", "todo", "alice"),
    ("Pick the hero image", "todo", "carol"),
    ("Set up the status page", "todo", None),
    ("Review pricing copy", "todo", "bob"),
    ("Plan the launch-day rota", "todo", None),
    ("Build the signup form", "in_progress", "bob"),
    ("Load-test the API", "in_progress", "alice"),
    ("Translate the landing page", "in_progress", "carol"),
    ("Choose the domain name", "done", "alice"),
    ("Draft the privacy policy", "done", "carol"),
    ("Set up analytics", "done", "bob"),
    ("Create the press kit", "done", None),
]


async def seed_demo(service: TaskService) -> bool:
    """Create the demo data unless it exists; return True when it was created now."""
    alice = Actor(user_id="alice")
    existing = await service.list_workspaces(alice)
    if any(ws.name == DEMO_WORKSPACE for ws in existing):
        return False
    ws = await service.create_workspace(alice, DEMO_WORKSPACE)
    await service.add_member(alice, ws.id, "bob", "admin")
    await service.add_member(alice, ws.id, "carol", "member")
    project = await service.create_project(alice, ws.id, "Website launch", None)
    for title, status, assignee in _DEMO_TASKS:
        await service.create_task(
            Actor(user_id=assignee or "alice"),
            project.id,
            title=title,
            status=status,
            assignee_id=assignee,
        )
    return True


def dev_token_handler(secret: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``GET /api/dev/token?user=ID`` → ``{"token": "…"}`` signed with the configured secret."""

    async def dev_token(request: web.Request) -> web.StreamResponse:
        user = request.query.get("user", "")
        if not user:
            raise errors.validation_error("user", "the query parameter user=ID is required")
        problem = user_id_problem(user)
        if problem is not None:  # a token the server itself would refuse
            raise errors.validation_error("user", problem)
        token = issue_token(secret, user, name=DEMO_USERS.get(user, user), ttl=DEV_TOKEN_TTL)
        return json_response({"token": token})

    return dev_token


NOT_LOOPBACK_MESSAGE = (
    "--dev answers only requests to a loopback host (localhost, 127.0.0.1, [::1]); "
    "run without --dev, with a JWT key, to serve other hosts"
)


def is_loopback_host(host: str | None) -> bool:
    """True when a ``Host`` header names this machine's loopback interface (any port)."""
    if not host:
        return False
    if host.startswith("["):  # an IPv6 literal, with or without a port
        name, bracket, _ = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    # RFC 6761 §6.3: names under .localhost resolve to loopback, never through DNS.
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``--dev`` only: refuse a request whose ``Host`` is not a loopback host (403)."""
    if not is_loopback_host(request.headers.get("Host")):
        return error_response(403, "forbidden", NOT_LOOPBACK_MESSAGE)
    return await handler(request)
