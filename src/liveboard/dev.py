"""``--dev`` conveniences: demo data and tokens for the demo users.

The demo is seeded once: a workspace "Demo workspace" owned by alice, with bob and carol as
members, and a project "Website launch" with a dozen tasks spread over its columns. A database
that already has alice's demo workspace is left as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from liveboard import errors
from liveboard.auth import issue_token
from liveboard.rest import json_response
from liveboard.tasks.service import Actor, TaskService
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
