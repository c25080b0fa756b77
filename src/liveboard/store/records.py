"""Queries for workspaces, members, projects and tasks. No rules here: the service decides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import msgspec
from sqlalchemy import Row, and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import Member, Project, Role, Task, Workspace
from liveboard.store import eventlog
from liveboard.store.schema import (
    FIELD_VERSION_COLUMNS,
    MERGE_COLUMNS,
    members,
    projects,
    tasks,
    workspaces,
)

_encode_statuses = msgspec.json.Encoder().encode
_decode_statuses = msgspec.json.Decoder(list[str]).decode


def _workspace(row: Row[Any]) -> Workspace:
    return Workspace(id=row.id, name=row.name, created_at=row.created_at)


def _project(row: Row[Any]) -> Project:
    return Project(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        statuses=_decode_statuses(row.statuses),
        created_at=row.created_at,
    )


def _task(row: Row[Any]) -> Task:
    return Task(
        id=row.id,
        project_id=row.project_id,
        title=row.title,
        description=row.description,
        status=row.status,
        order=float(row.sort_order),
        rank=row.sort_rank,
        assignee_id=row.assignee_id,
        created_by_id=row.created_by_id,
        version=int(row.version),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# Workspaces and members


async def insert_workspace(conn: AsyncConnection, ws: Workspace, created_by: str) -> None:
    await conn.execute(
        insert(workspaces).values(
            id=ws.id, name=ws.name, created_by=created_by, created_at=ws.created_at
        )
    )


async def workspaces_of(conn: AsyncConnection, user_id: str) -> list[Workspace]:
    rows = await conn.execute(
        select(workspaces)
        .join(members, members.c.workspace_id == workspaces.c.id)
        .where(members.c.user_id == user_id)
        .order_by(workspaces.c.created_at, workspaces.c.id)
    )
    return [_workspace(r) for r in rows]


async def get_workspace(conn: AsyncConnection, workspace_id: str) -> Workspace | None:
    row = (await conn.execute(select(workspaces).where(workspaces.c.id == workspace_id))).first()
    return None if row is None else _workspace(row)


async def all_workspaces(conn: AsyncConnection) -> list[Workspace]:
    """Every workspace (what a service's API key sees), oldest first."""
    rows = await conn.execute(select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id))
    return [_workspace(r) for r in rows]


async def role_of(conn: AsyncConnection, workspace_id: str, user_id: str) -> Role | None:
    role = await conn.scalar(
        select(members.c.role).where(
            members.c.workspace_id == workspace_id, members.c.user_id == user_id
        )
    )
    return cast("Role | None", role)


async def insert_member(
    conn: AsyncConnection, workspace_id: str, user_id: str, role: Role, created_at: str
) -> None:
    await conn.execute(
        insert(members).values(
            workspace_id=workspace_id, user_id=user_id, role=role, created_at=created_at
        )
    )


async def delete_member(conn: AsyncConnection, workspace_id: str, user_id: str) -> bool:
    result = await conn.execute(
        delete(members).where(members.c.workspace_id == workspace_id, members.c.user_id == user_id)
    )
    return bool(result.rowcount)


async def members_of(conn: AsyncConnection, workspace_id: str) -> list[Member]:
    rows = await conn.execute(
        select(members.c.user_id, members.c.role)
        .where(members.c.workspace_id == workspace_id)
        .order_by(members.c.created_at, members.c.user_id)
    )
    return [Member(user_id=r.user_id, role=r.role) for r in rows]


# Projects


async def insert_project(conn: AsyncConnection, project: Project) -> None:
    await conn.execute(
        insert(projects).values(
            id=project.id,
            workspace_id=project.workspace_id,
            name=project.name,
            statuses=_encode_statuses(project.statuses).decode(),
            created_at=project.created_at,
        )
    )


async def get_project(conn: AsyncConnection, project_id: str) -> Project | None:
    row = (await conn.execute(select(projects).where(projects.c.id == project_id))).first()
    return None if row is None else _project(row)


async def projects_of(conn: AsyncConnection, workspace_id: str) -> list[Project]:
    rows = await conn.execute(
        select(projects)
        .where(projects.c.workspace_id == workspace_id)
        .order_by(projects.c.created_at, projects.c.id)
    )
    return [_project(r) for r in rows]


# Tasks


async def insert_task(conn: AsyncConnection, task: Task) -> None:
    await conn.execute(
        insert(tasks).values(
            id=task.id,
            project_id=task.project_id,
            title=task.title,
            description=task.description,
            status=task.status,
            sort_order=task.order,
            sort_rank=task.rank,
            assignee_id=task.assignee_id,
            created_by_id=task.created_by_id,
            version=task.version,
            created_at=task.created_at,
            updated_at=task.updated_at,
            **dict.fromkeys(MERGE_COLUMNS, task.version),
        )
    )


async def get_task(conn: AsyncConnection, task_id: str) -> Task | None:
    row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
    return None if row is None else _task(row)


# Built once: these run on every change of a task, and building a statement (and its cache
# key) per call cost more CPU than executing it.
_LOCK_TASK_FOR_CHANGE = (
    select(
        tasks,
        projects.c.workspace_id.label("project_workspace_id"),
        projects.c.name.label("project_name"),
        projects.c.statuses.label("project_statuses"),
        projects.c.created_at.label("project_created_at"),
        members.c.role.label("member_role"),
    )
    .select_from(
        tasks.join(projects, projects.c.id == tasks.c.project_id).outerjoin(
            members,
            and_(
                members.c.workspace_id == projects.c.workspace_id,
                members.c.user_id == bindparam("user_id"),
            ),
        )
    )
    .where(tasks.c.id == bindparam("task_id"))
    .with_for_update(of=tasks)  # only the task: not the project's or the membership's row
)
# No .values(): the SET clause is made of the columns named by the parameters passed, so
# save_task passes only the mapped task columns (plus version and updated_at).
_SAVE_TASK = update(tasks).where(tasks.c.id == bindparam("task_id"))


class LockedTask(NamedTuple):
    """A task as ``lock_task_for_change`` read it, with what the rules need around it."""

    task: Task
    project: Project
    #: The caller's role in the project's workspace; None: not a member.
    role: Role | None
    #: The task's version when each editable field (``Task``'s name) got its current value, as
    #: recorded at version ``fields_at`` (``save_task``); None: never recorded.
    field_versions: dict[str, int | None]
    fields_at: int | None


async def lock_task_for_change(
    conn: AsyncConnection, task_id: str, user_id: str
) -> LockedTask | None:
    """The task (its row locked for the transaction), its project, ``user_id``'s role in the
    project's workspace and its fields' versions, in one round trip; None if no such task.

    One query because concurrent changes of a task queue on this lock: every round trip made
    while it is held is waited for by the next writer.
    """
    row = (
        await conn.execute(_LOCK_TASK_FOR_CHANGE, {"task_id": task_id, "user_id": user_id})
    ).first()
    if row is None:
        return None
    project = Project(
        id=row.project_id,
        workspace_id=row.project_workspace_id,
        name=row.project_name,
        statuses=_decode_statuses(row.project_statuses),
        created_at=row.project_created_at,
    )
    field_versions = {
        field: None if (v := getattr(row, column)) is None else int(v)
        for field, column in FIELD_VERSION_COLUMNS.items()
    }
    return LockedTask(
        _task(row),
        project,
        cast("Role | None", row.member_role),
        field_versions,
        None if row.fields_at is None else int(row.fields_at),
    )


async def tasks_of(conn: AsyncConnection, project_id: str) -> list[Task]:
    rows = await conn.execute(
        select(tasks)
        .where(tasks.c.project_id == project_id)
        .order_by(tasks.c.status, tasks.c.sort_rank, tasks.c.id)
    )
    return [_task(r) for r in rows]


#: The column of each task field ``save_task`` may write.
_TASK_COLUMNS: dict[str, str] = {
    "title": "title",
    "description": "description",
    "assignee_id": "assignee_id",
    "status": "status",
    "order": "sort_order",
    "rank": "sort_rank",
}


def _task_values(
    task: Task, changed: Sequence[str], field_versions: Mapping[str, int]
) -> dict[str, Any]:
    """The columns ``save_task`` writes (see it), by column name."""
    values: dict[str, Any] = {_TASK_COLUMNS[f]: getattr(task, f) for f in changed}
    values.update({FIELD_VERSION_COLUMNS[f]: v for f, v in field_versions.items()})
    values.update(fields_at=task.version, version=task.version, updated_at=task.updated_at)
    return values


async def save_task(
    conn: AsyncConnection, task: Task, changed: Sequence[str], field_versions: Mapping[str, int]
) -> None:
    """Write the named fields (``Task``'s attribute names) of ``task``, its version and
    ``updated_at``, and ``field_versions`` (editable field → the version it was set at) as
    recorded at ``task.version``."""
    await conn.execute(
        _SAVE_TASK, {**_task_values(task, changed, field_versions), "task_id": task.id}
    )


#: ``task_change``'s statements by the columns they set (a handful of combinations).
_SAVE_TASK_SETTING: dict[tuple[str, ...], Any] = {}


def task_change(
    task: Task, changed: Sequence[str], field_versions: Mapping[str, int]
) -> eventlog.Change:
    """``save_task`` as a change for ``eventlog.append_event`` to make in the statement that
    appends the task's event (same columns, same values)."""
    values = _task_values(task, changed, field_versions)
    columns = tuple(sorted(values))
    statement = _SAVE_TASK_SETTING.get(columns)
    if statement is None:
        setting: dict[str, Any] = {c: bindparam(f"set_{c}") for c in columns}
        statement = _SAVE_TASK_SETTING[columns] = _SAVE_TASK.values(setting)
    params = {f"set_{column}": value for column, value in values.items()}
    return eventlog.Change(("task", *columns), statement, {**params, "task_id": task.id})


_DELETE_TASK = delete(tasks).where(tasks.c.id == bindparam("task_id"))


def task_deletion(task_id: str) -> eventlog.Change:
    """Deleting the task, as a change for ``eventlog.append_event`` (see ``task_change``)."""
    return eventlog.Change(("task-deletion",), _DELETE_TASK, {"task_id": task_id})
