"""Who may see and change what in a workspace: the membership rules of the task service.

Guarantees:

* Anything in a workspace the caller is not a member of is reported as not found: existence is
  not leaked. A member lacking the role gets ``forbidden``.
* A service (an API key, CONTRACT §6.3) may do what an owner may do in every workspace: it is
  treated as the owner of any workspace that exists, without being a member of any.
* Tasks record the user who created them (``createdById``), which a service is not: a
  service's task changes are ``forbidden`` (``refuse_service``); it publishes ``task:*``
  events of its own task service instead.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard import errors
from liveboard.auth import Actor
from liveboard.protocol import Project, Role, Task
from liveboard.store import records
from liveboard.tasks import merge

__all__ = [
    "MANAGER_ROLES",
    "check_assignee",
    "lock_task",
    "refuse_service",
    "require_member",
    "require_role",
    "role_in",
    "task_for_change",
    "visible_project",
]

MANAGER_ROLES: frozenset[Role] = frozenset({"owner", "admin"})


async def role_in(conn: AsyncConnection, workspace_id: str, actor: Actor) -> Role | None:
    """The actor's role in the workspace: a user's membership, ``owner`` for a service when
    the workspace exists; None otherwise."""
    if actor.user_id is None:
        found = await records.get_workspace(conn, workspace_id)
        return None if found is None else "owner"
    return await records.role_of(conn, workspace_id, actor.user_id)


async def require_member(conn: AsyncConnection, workspace_id: str, actor: Actor) -> Role:
    role = await role_in(conn, workspace_id, actor)
    if role is None:
        raise errors.not_found("workspace not found")
    return role


async def require_role(
    conn: AsyncConnection, workspace_id: str, actor: Actor, allowed: frozenset[Role]
) -> Role:
    role = await require_member(conn, workspace_id, actor)
    if role not in allowed:
        raise errors.forbidden("only the workspace owner or an admin can do this")
    return role


async def visible_project(conn: AsyncConnection, project_id: str, actor: Actor) -> Project:
    """The project, or not found when it does not exist or the actor may not see it."""
    project = await records.get_project(conn, project_id)
    if project is None or await role_in(conn, project.workspace_id, actor) is None:
        raise errors.not_found("project not found")
    return project


def refuse_service(actor: Actor) -> str:
    """The user changing a task; ``forbidden`` for a service (see the module)."""
    if actor.user_id is None:
        raise errors.forbidden(
            "tasks are created and changed by users; a service publishes its own task events "
            "(POST /api/rooms/{room}/events)"
        )
    return actor.user_id


async def lock_task(
    conn: AsyncConnection, task_id: str, actor: Actor
) -> tuple[Task, Project, dict[str, int]]:
    """The task, locked for this transaction, its project (404 unless visible) and its
    fields' versions (``merge.known_field_versions``); ``forbidden`` for a service.

    Concurrent changes of one task queue on this row lock, so the caller reads the clock
    after it: the task's ``updatedAt`` and its event's ``ts`` are then close to the commit
    (CONTRACT: ``ts`` is the commit time), not the time the request began waiting.
    """
    found = await records.lock_task_for_change(conn, task_id, refuse_service(actor))
    if found is None or found.role is None:  # no such task, or not a member: the same 404
        raise errors.not_found("task not found")
    task = found.task
    fields = merge.known_field_versions(found.field_versions, found.fields_at, task.version)
    return task, found.project, fields


async def task_for_change(
    conn: AsyncConnection, task_id: str, actor: Actor, expected_version: int | None
) -> tuple[Task, Project, dict[str, int]]:
    """``lock_task``, and a conflict unless the task is at ``expected_version``."""
    task, project, fields = await lock_task(conn, task_id, actor)
    if expected_version is not None and expected_version != task.version:
        raise merge.version_conflict(task.version, expected_version)
    return task, project, fields


async def check_assignee(conn: AsyncConnection, workspace_id: str, user_id: str) -> None:
    """A task's assignee must be a member of its workspace (422 otherwise)."""
    if await records.role_of(conn, workspace_id, user_id) is None:
        raise errors.validation_error("assigneeId", "must be a member of the workspace")
