"""The task service: the rules of workspaces, members, projects and tasks.

Guarantees:

* Every mutation runs in one write transaction that also appends its event to the room's log
  (``store.eventlog``); the event exists if and only if the change committed (CONTRACT §5.1).
* Committed events are handed to the ``EventPublisher`` after the commit, each room's in commit
  (= offset) order among this instance's transactions: a transaction waits for those that
  appended to the room before it to publish or fail (``tasks.publish_order``).
* Anything in a workspace the caller is not a member of is reported as not found: existence is
  not leaked. A member lacking the role gets ``forbidden``.
* ``version`` starts at 1 and grows by exactly 1 on every change of a task; a stale expected
  version is a ``conflict`` and changes nothing, except for an edit whose fields nobody changed
  since that version: it is applied (``tasks.merge``). A change that changes nothing emits
  nothing.
* A mutation given a ``Receipt`` settles it last, in its transaction (``tasks.receipts``).

Permissions: any member may read, create projects and create, edit, move and delete tasks;
owners and admins manage members; the owner cannot be removed; a member may remove themself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard import errors
from liveboard.auth import Actor
from liveboard.events import EventPublisher
from liveboard.protocol import (
    DEFAULT_STATUSES,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    PROJECT_CREATED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_MOVED,
    TASK_UPDATED,
    Member,
    Project,
    Role,
    Task,
    TaskSnapshot,
    Workspace,
    project_room,
    to_builtins,
    workspace_room,
)
from liveboard.store import eventlog, records
from liveboard.store.columns import Ranked
from liveboard.store.database import Database
from liveboard.tasks import merge
from liveboard.tasks.changes import TaskChanges, bumped, diff, wire_changes
from liveboard.tasks.clock import Clock, new_id
from liveboard.tasks.placement import END, Slot, place
from liveboard.tasks.publish_order import Outbox, PublishOrder
from liveboard.tasks.receipts import Receipt, settle

MANAGER_ROLES: frozenset[Role] = frozenset({"owner", "admin"})


class TaskService:
    """The application's rules. One instance per process, shared by every request."""

    def __init__(
        self,
        db: Database,
        publisher: EventPublisher,
        *,
        clock: Callable[[], Clock] = Clock.now,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self._clock = clock
        self._order = PublishOrder()

    # Workspaces and members

    async def create_workspace(
        self, actor: Actor, name: str, *, receipt: Receipt | None = None
    ) -> Workspace:
        now = self._clock()
        ws = Workspace(id=new_id("ws"), name=name, created_at=now.iso)
        async with self._write() as (conn, outbox):
            await records.insert_workspace(conn, ws, actor.user_id)
            await records.insert_member(conn, ws.id, actor.user_id, "owner", now.iso)
            await eventlog.create_room(conn, workspace_room(ws.id))
            await settle(conn, outbox, receipt, ws)
        return ws

    async def list_workspaces(self, actor: Actor) -> list[Workspace]:
        async with self.db.read() as conn:
            return await records.workspaces_of(conn, actor.user_id)

    async def add_member(
        self,
        actor: Actor,
        workspace_id: str,
        user_id: str,
        role: Role,
        *,
        receipt: Receipt | None = None,
    ) -> Member:
        now = self._clock()
        async with self._write() as (conn, outbox):
            await self._require_role(conn, workspace_id, actor, MANAGER_ROLES)
            if await records.role_of(conn, workspace_id, user_id) is not None:
                raise errors.conflict(f"{user_id} is already a member of this workspace")
            await records.insert_member(conn, workspace_id, user_id, role, now.iso)
            member = Member(user_id=user_id, role=role)
            await self._append(
                conn,
                outbox,
                workspace_room(workspace_id),
                MEMBER_ADDED,
                actor,
                now,
                to_builtins(member),
            )
            await settle(conn, outbox, receipt, member)
        return member

    async def list_members(self, actor: Actor, workspace_id: str) -> list[Member]:
        async with self.db.read() as conn:
            await self._require_member(conn, workspace_id, actor)
            return await records.members_of(conn, workspace_id)

    async def remove_member(
        self, actor: Actor, workspace_id: str, user_id: str, *, receipt: Receipt | None = None
    ) -> None:
        now = self._clock()
        async with self._write() as (conn, outbox):
            actor_role = await self._require_member(conn, workspace_id, actor)
            if user_id != actor.user_id and actor_role not in MANAGER_ROLES:
                raise errors.forbidden("only the workspace owner or an admin can remove members")
            target_role = await records.role_of(conn, workspace_id, user_id)
            if target_role is None:
                raise errors.not_found(f"{user_id} is not a member of this workspace")
            if target_role == "owner":
                raise errors.conflict("the workspace owner cannot be removed")
            await records.delete_member(conn, workspace_id, user_id)
            await self._append(
                conn,
                outbox,
                workspace_room(workspace_id),
                MEMBER_REMOVED,
                actor,
                now,
                {"userId": user_id},
            )
            await settle(conn, outbox, receipt, None)

    # Projects

    async def create_project(
        self,
        actor: Actor,
        workspace_id: str,
        name: str,
        statuses: Sequence[str] | None,
        *,
        receipt: Receipt | None = None,
    ) -> Project:
        now = self._clock()
        project = Project(
            id=new_id("prj"),
            workspace_id=workspace_id,
            name=name,
            statuses=list(statuses if statuses is not None else DEFAULT_STATUSES),
            created_at=now.iso,
        )
        async with self._write() as (conn, outbox):
            await self._require_member(conn, workspace_id, actor)
            await records.insert_project(conn, project)
            await eventlog.create_room(conn, project_room(project.id))
            await self._append(
                conn,
                outbox,
                workspace_room(workspace_id),
                PROJECT_CREATED,
                actor,
                now,
                {"project": to_builtins(project)},
            )
            await settle(conn, outbox, receipt, project)
        return project

    async def list_projects(self, actor: Actor, workspace_id: str) -> list[Project]:
        async with self.db.read() as conn:
            await self._require_member(conn, workspace_id, actor)
            return await records.projects_of(conn, workspace_id)

    async def get_project(self, actor: Actor, project_id: str) -> Project:
        async with self.db.read() as conn:
            return await self._visible_project(conn, project_id, actor)

    async def snapshot(self, actor: Actor, project_id: str) -> TaskSnapshot:
        """All tasks of a project with the offset and epoch they reflect, read in one snapshot."""
        async with self.db.read() as conn:
            await self._visible_project(conn, project_id, actor)
            position = await eventlog.room_position(conn, project_room(project_id))
            if position is None:  # cannot happen: the room is created with the project
                raise errors.not_found("project not found")
            tasks = await records.tasks_of(conn, project_id)
        return TaskSnapshot(tasks=tasks, offset=position.offset, epoch=position.epoch)

    # Tasks

    async def create_task(
        self,
        actor: Actor,
        project_id: str,
        *,
        title: str,
        description: str = "",
        status: str | None = None,
        assignee_id: str | None = None,
        slot: Slot = END,
        receipt: Receipt | None = None,
    ) -> Task:
        """Create a task in column ``status`` (default: the first) at ``slot`` (``placement``)."""
        now = self._clock()
        async with self._write() as (conn, outbox):
            project = await self._visible_project(conn, project_id, actor)
            status = project.statuses[0] if status is None else status
            _check_status(project, status, "status")
            if assignee_id is not None:
                await self._check_assignee(conn, project.workspace_id, assignee_id)
            placed = await place(conn, project_id, status, slot, now=now.iso)
            for data in placed.rerank_events():  # a rebalance's, before the change that caused it
                room, ws = project_room(project_id), project.workspace_id
                await self._append(
                    conn, outbox, room, TASK_MOVED, actor, now, data, workspace_id=ws
                )
            task = Task(
                id=new_id("tsk"),
                project_id=project_id,
                title=title,
                description=description,
                status=status,
                order=placed.order,
                rank=placed.rank,
                assignee_id=assignee_id,
                created_by_id=actor.user_id,
                version=1,
                created_at=now.iso,
                updated_at=now.iso,
            )
            await records.insert_task(conn, task)
            await self._append(
                conn,
                outbox,
                project_room(project_id),
                TASK_CREATED,
                actor,
                now,
                {"task": to_builtins(task), "afterId": placed.after_id},
                workspace_id=project.workspace_id,
            )
            await settle(conn, outbox, receipt, task)
        return task

    async def get_task(self, actor: Actor, task_id: str) -> Task:
        async with self.db.read() as conn:
            task = await records.get_task(conn, task_id)
            if task is None:
                raise errors.not_found("task not found")
            try:
                await self._visible_project(conn, task.project_id, actor)
            except errors.ApiError:
                raise errors.not_found("task not found") from None
            return task

    async def update_task(
        self,
        actor: Actor,
        task_id: str,
        changes: TaskChanges,
        *,
        expected_version: int | None = None,
        receipt: Receipt | None = None,
    ) -> merge.Edited:
        """Apply ``changes`` to a task; an assignee given must be a member of its workspace.

        From a stale ``expected_version``, the changes apply if none of their fields changed
        since (``tasks.merge``: read from the locked row, so no concurrent edit can slip in
        between); ``Edited.merged`` then names them. Else a conflict naming the fields."""
        async with self._write() as (conn, outbox):
            task, project, fields = await self._lock_task(conn, task_id, actor)
            now = self._clock()  # after the task's row lock: see _lock_task
            found = diff(task, changes)
            verdict = merge.decide(task.version, expected_version, found, fields)
            if verdict.conflict is not None:
                raise verdict.conflict
            if isinstance(changes.assignee_id, str):  # given, and not None (unassign)
                await self._check_assignee(conn, project.workspace_id, changes.assignee_id)
            if not found:
                kept = merge.Edited(task)
                await settle(conn, outbox, receipt, kept)
                return kept
            updated = bumped(task, now.iso, **{field: new for field, (_, new) in found.items()})
            fields = merge.next_field_versions(fields, found, updated.version)
            await records.save_task(conn, updated, list(found), fields)
            await self._append(
                conn,
                outbox,
                project_room(task.project_id),
                TASK_UPDATED,
                actor,
                now,
                {"task": to_builtins(updated), "changes": wire_changes(found)},
                workspace_id=project.workspace_id,
            )
            edited = merge.Edited(updated, verdict.merged)
            await settle(conn, outbox, receipt, edited)
        return edited

    async def move_task(
        self,
        actor: Actor,
        task_id: str,
        to_status: str,
        *,
        slot: Slot = END,
        expected_version: int | None = None,
        receipt: Receipt | None = None,
    ) -> Task:
        """Move a task to column ``to_status`` at ``slot`` (``placement``; default: the end)."""
        async with self._write() as (conn, outbox):
            task, project, fields = await self._task_for_change(
                conn, task_id, actor, expected_version
            )
            now = self._clock()  # after the task's row lock: see _lock_task
            _check_status(project, to_status, "toStatus")
            here = Ranked(task.id, task.rank, task.order)
            placed = await place(conn, task.project_id, to_status, slot, here, task.status, now.iso)
            if placed.unchanged:
                await settle(conn, outbox, receipt, task)
                return task
            for data in placed.rerank_events():  # a rebalance's, before the change that caused it
                room, ws = project_room(project.id), project.workspace_id
                await self._append(
                    conn, outbox, room, TASK_MOVED, actor, now, data, workspace_id=ws
                )
            if any(r.task_id == task.id for r in placed.reranked):  # its version grew by one
                task = bumped(task, now.iso)
            moved = bumped(task, now.iso, status=to_status, order=placed.order, rank=placed.rank)
            await records.save_task(conn, moved, ["status", "order", "rank"], fields)
            await self._append(
                conn,
                outbox,
                project_room(task.project_id),
                TASK_MOVED,
                actor,
                now,
                placed.moved_data(task.id, task.status, to_status),
                workspace_id=project.workspace_id,
            )
            await settle(conn, outbox, receipt, moved)
        return moved

    async def delete_task(
        self,
        actor: Actor,
        task_id: str,
        *,
        expected_version: int | None = None,
        receipt: Receipt | None = None,
    ) -> None:
        async with self._write() as (conn, outbox):
            task, project, _ = await self._task_for_change(conn, task_id, actor, expected_version)
            now = self._clock()  # after the task's row lock: see _lock_task
            await records.delete_task(conn, task.id)
            await self._append(
                conn,
                outbox,
                project_room(task.project_id),
                TASK_DELETED,
                actor,
                now,
                {"taskId": task.id},
                workspace_id=project.workspace_id,
            )
            await settle(conn, outbox, receipt, None)

    # Membership, used by the real-time layer as well

    async def role(self, workspace_id: str, user_id: str) -> Role | None:
        async with self.db.read() as conn:
            return await records.role_of(conn, workspace_id, user_id)

    # Helpers

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[tuple[AsyncConnection, Outbox]]:
        """A write transaction and the outbox of its events, published after it commits."""
        outbox = Outbox(self._order)
        try:
            async with self.db.write() as conn:
                yield conn, outbox
            await outbox.publish(self.publisher)
        finally:
            outbox.abandon()  # rolled back, failed or cancelled: the room's line moves on

    async def _append(
        self,
        conn: AsyncConnection,
        outbox: Outbox,
        room: str,
        type_: str,
        actor: Actor,
        now: Clock,
        data: dict[str, Any],
        *,
        workspace_id: str | None = None,
    ) -> None:
        """Append an event, to be published after the commit; one of a project room names its
        workspace (``workspace_id``), so that no instance releases it before the membership
        changes committed before it."""
        event = await eventlog.append_event(
            conn,
            room=room,
            type=type_,
            user_id=actor.user_id,
            data=data,
            ts=now.ms,
            origin=actor.origin,
            depends_on=None if workspace_id is None else workspace_room(workspace_id),
        )
        outbox.add(event)  # still holding the room's row lock: its place in the room's line

    async def _require_member(self, conn: AsyncConnection, workspace_id: str, actor: Actor) -> Role:
        role = await records.role_of(conn, workspace_id, actor.user_id)
        if role is None:
            raise errors.not_found("workspace not found")
        return role

    async def _require_role(
        self, conn: AsyncConnection, workspace_id: str, actor: Actor, allowed: frozenset[Role]
    ) -> Role:
        role = await self._require_member(conn, workspace_id, actor)
        if role not in allowed:
            raise errors.forbidden("only the workspace owner or an admin can do this")
        return role

    async def _visible_project(
        self, conn: AsyncConnection, project_id: str, actor: Actor
    ) -> Project:
        project = await records.get_project(conn, project_id)
        if (
            project is None
            or await records.role_of(conn, project.workspace_id, actor.user_id) is None
        ):
            raise errors.not_found("project not found")
        return project

    async def _lock_task(
        self, conn: AsyncConnection, task_id: str, actor: Actor
    ) -> tuple[Task, Project, dict[str, int]]:
        """The task, locked for this transaction, its project (404 unless visible) and its
        fields' versions (``merge.known_field_versions``).

        Concurrent changes of one task queue on this row lock, so the caller reads the clock
        after it: the task's ``updatedAt`` and its event's ``ts`` are then close to the commit
        (CONTRACT: ``ts`` is the commit time), not the time the request began waiting.
        """
        found = await records.lock_task_for_change(conn, task_id, actor.user_id)
        if found is None or found.role is None:  # no such task, or not a member: the same 404
            raise errors.not_found("task not found")
        task = found.task
        fields = merge.known_field_versions(found.field_versions, found.fields_at, task.version)
        return task, found.project, fields

    async def _task_for_change(
        self, conn: AsyncConnection, task_id: str, actor: Actor, expected_version: int | None
    ) -> tuple[Task, Project, dict[str, int]]:
        """``_lock_task``, and a conflict unless the task is at ``expected_version``."""
        task, project, fields = await self._lock_task(conn, task_id, actor)
        if expected_version is not None and expected_version != task.version:
            raise merge.version_conflict(task.version, expected_version)
        return task, project, fields

    async def _check_assignee(self, conn: AsyncConnection, workspace_id: str, user_id: str) -> None:
        if await records.role_of(conn, workspace_id, user_id) is None:
            raise errors.validation_error("assigneeId", "must be a member of the workspace")


def _check_status(project: Project, status: str, field: str) -> None:
    if status not in project.statuses:
        allowed = ", ".join(project.statuses)
        raise errors.validation_error(field, f"must be one of the project's statuses ({allowed})")
