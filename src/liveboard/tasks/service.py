"""The task service: the rules of workspaces, members, projects and tasks.

Guarantees:

* Every mutation runs in one write transaction that also appends its event to the room's log
  (``store.eventlog``); the event exists if and only if the change committed (CONTRACT §5.1).
* Committed events are handed to the ``EventPublisher`` after the commit, each room's in commit
  (= offset) order among this instance's transactions: a transaction waits for those that
  appended to the room before it to publish or fail (``tasks.publish_order``).
* Anything in a workspace the caller is not a member of is reported as not found: existence is
  not leaked. A member lacking the role gets ``forbidden``. A service (API key) is the owner of
  every workspace and changes no task (``tasks.access``).
* ``version`` starts at 1 and grows by exactly 1 on every change of a task; a stale expected
  version is a ``conflict`` and changes nothing, except for an edit whose fields nobody changed
  since that version: it is applied (``tasks.merge``). A change that changes nothing emits
  nothing.
* A mutation given a ``Receipt`` settles it last, in its transaction (``tasks.receipts``).

Permissions: any member may read, create projects and create, edit, move and delete tasks;
owners and admins manage members; the owner cannot be removed; a member may remove themself.
A service may also create workspaces and projects with ids of its own (``put_workspace``,
``put_project``: created when absent, the existing one as it is otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
from liveboard.tasks import access, merge
from liveboard.tasks.access import MANAGER_ROLES
from liveboard.tasks.changes import TaskChanges, bumped, diff, wire_changes
from liveboard.tasks.clock import Clock, new_id
from liveboard.tasks.placement import END, Slot, place
from liveboard.tasks.receipts import Receipt, settle
from liveboard.tasks.single_write import ATTEMPTS, SingleWrites
from liveboard.tasks.writer import EventWriter


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
        #: Shared with every other writer of the event log on this instance (``rooms.api``).
        self.writer = EventWriter(db, publisher)
        self._write = self.writer.transaction
        #: PostgreSQL: edits and deletions as one statement first (``tasks.single_write``),
        #: tried ``ATTEMPTS`` times; SQLite: none, the transaction at once.
        self._single = None if db.is_sqlite else SingleWrites(self.writer, lambda: self._clock())
        self._singles = () if self._single is None else (self._single,) * ATTEMPTS

    # Workspaces and members

    async def create_workspace(
        self, actor: Actor, name: str, *, receipt: Receipt | None = None
    ) -> Workspace:
        ws = Workspace(id=new_id("ws"), name=name, created_at=self._clock().iso)
        async with self._write() as (conn, outbox):
            await self._insert_workspace(conn, actor, ws)
            await settle(conn, outbox, receipt, ws)
        return ws

    async def put_workspace(
        self, actor: Actor, workspace_id: str, name: str, *, receipt: Receipt | None = None
    ) -> tuple[Workspace, bool]:
        """Workspace ``workspace_id``, created (True) unless it exists (False: as it is)."""
        ws = Workspace(id=workspace_id, name=name, created_at=self._clock().iso)
        async with self._write() as (conn, outbox):
            found = await records.get_workspace(conn, workspace_id)
            if found is None:
                await self._insert_workspace(conn, actor, ws)
            result = (ws, True) if found is None else (found, False)
            await settle(conn, outbox, receipt, result)
        return result

    async def _insert_workspace(self, conn: AsyncConnection, actor: Actor, ws: Workspace) -> None:
        """A new workspace and its room; a user who creates one is its owner (a service is the
        owner of every workspace without being a member)."""
        creator = actor.user_id if actor.user_id is not None else f"apikey:{actor.api_key_id}"
        await records.insert_workspace(conn, ws, creator)
        if actor.user_id is not None:
            await records.insert_member(conn, ws.id, actor.user_id, "owner", ws.created_at)
        await eventlog.create_room(conn, workspace_room(ws.id))

    async def list_workspaces(self, actor: Actor) -> list[Workspace]:
        async with self.db.read() as conn:
            if actor.user_id is None:
                return await records.all_workspaces(conn)
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
            await self.writer.append(
                conn,
                outbox,
                workspace_room(workspace_id),
                MEMBER_ADDED,
                actor,
                now.ms,
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
            await self.writer.append(
                conn,
                outbox,
                workspace_room(workspace_id),
                MEMBER_REMOVED,
                actor,
                now.ms,
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
        project_id: str | None = None,
    ) -> Project:
        """A new project; with ``project_id`` (``put_project``) that id, else a new one."""
        project, _ = await self._add_project(
            actor, workspace_id, name, statuses, project_id, receipt=receipt, reuse=False
        )
        return project

    async def put_project(
        self,
        actor: Actor,
        workspace_id: str,
        project_id: str,
        name: str,
        statuses: Sequence[str] | None,
        *,
        receipt: Receipt | None = None,
    ) -> tuple[Project, bool]:
        """Project ``project_id`` of the workspace, created (True) unless it exists (False: as
        it is, no event). An id taken in another workspace is a conflict."""
        return await self._add_project(
            actor, workspace_id, name, statuses, project_id, receipt=receipt, reuse=True
        )

    async def _add_project(
        self,
        actor: Actor,
        workspace_id: str,
        name: str,
        statuses: Sequence[str] | None,
        project_id: str | None,
        *,
        receipt: Receipt | None,
        reuse: bool,
    ) -> tuple[Project, bool]:
        now = self._clock()
        project = Project(
            id=project_id or new_id("prj"),
            workspace_id=workspace_id,
            name=name,
            statuses=list(statuses if statuses is not None else DEFAULT_STATUSES),
            created_at=now.iso,
        )
        async with self._write() as (conn, outbox):
            await access.require_member(conn, workspace_id, actor)
            found = await records.get_project(conn, project.id) if reuse else None
            if found is not None:
                if found.workspace_id != workspace_id:
                    raise errors.conflict(f"project {project.id} belongs to another workspace")
                await settle(conn, outbox, receipt, (found, False))
                return found, False
            await records.insert_project(conn, project)
            await eventlog.create_room(conn, project_room(project.id))
            await self.writer.append(
                conn,
                outbox,
                workspace_room(workspace_id),
                PROJECT_CREATED,
                actor,
                now.ms,
                {"project": to_builtins(project)},
            )
            await settle(conn, outbox, receipt, (project, True) if reuse else project)
        return project, True

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
            creator = access.refuse_service(actor)
            status = project.statuses[0] if status is None else status
            _check_status(project, status, "status")
            if assignee_id is not None:
                await self._check_assignee(conn, project.workspace_id, assignee_id)
            placed = await place(conn, project_id, status, slot, now=now.iso)
            for data in placed.rerank_events():  # a rebalance's, before the change that caused it
                room, ws = project_room(project_id), project.workspace_id
                await self.writer.append(
                    conn, outbox, room, TASK_MOVED, actor, now.ms, data, workspace_id=ws
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
                created_by_id=creator,
                version=1,
                created_at=now.iso,
                updated_at=now.iso,
            )
            await records.insert_task(conn, task)
            await self.writer.append(
                conn,
                outbox,
                project_room(project_id),
                TASK_CREATED,
                actor,
                now.ms,
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
        between); ``Edited.merged`` then names them. Else a conflict naming the fields.
        On PostgreSQL one statement, without a lock held across a round trip, unless the task
        changed between its read and its write ``ATTEMPTS`` times (``tasks.single_write``)."""
        for single in self._singles:
            edited = await single.update_task(actor, task_id, changes, expected_version, receipt)
            if edited is not None:
                return edited
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
            await (
                self.writer.append(  # the task's change made by the same statement (one round trip)
                    conn,
                    outbox,
                    project_room(task.project_id),
                    TASK_UPDATED,
                    actor,
                    now.ms,
                    {"task": to_builtins(updated), "changes": wire_changes(found)},
                    workspace_id=project.workspace_id,
                    change=records.task_change(updated, list(found), fields),
                )
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
                await self.writer.append(
                    conn, outbox, room, TASK_MOVED, actor, now.ms, data, workspace_id=ws
                )
            if any(r.task_id == task.id for r in placed.reranked):  # its version grew by one
                task = bumped(task, now.iso)
            moved = bumped(task, now.iso, status=to_status, order=placed.order, rank=placed.rank)
            await records.save_task(conn, moved, ["status", "order", "rank"], fields)
            await self.writer.append(
                conn,
                outbox,
                project_room(task.project_id),
                TASK_MOVED,
                actor,
                now.ms,
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
        """Delete a task (one statement on PostgreSQL, as ``update_task``)."""
        for single in self._singles:
            if await single.delete_task(actor, task_id, expected_version, receipt):
                return
        async with self._write() as (conn, outbox):
            task, project, _ = await self._task_for_change(conn, task_id, actor, expected_version)
            now = self._clock()  # after the task's row lock: see _lock_task
            await self.writer.append(  # the task's deletion made by the same statement
                conn,
                outbox,
                project_room(task.project_id),
                TASK_DELETED,
                actor,
                now.ms,
                {"taskId": task.id},
                workspace_id=project.workspace_id,
                change=records.task_deletion(task.id),
            )
            await settle(conn, outbox, receipt, None)

    # Membership, used by the real-time layer as well

    async def role(self, workspace_id: str, user_id: str) -> Role | None:
        async with self.db.read() as conn:
            return await records.role_of(conn, workspace_id, user_id)

    # Helpers

    _require_member = staticmethod(access.require_member)
    _require_role = staticmethod(access.require_role)
    _visible_project = staticmethod(access.visible_project)

    _lock_task = staticmethod(access.lock_task)
    _task_for_change = staticmethod(access.task_for_change)
    _check_assignee = staticmethod(access.check_assignee)


def _check_status(project: Project, status: str, field: str) -> None:
    if status not in project.statuses:
        allowed = ", ".join(project.statuses)
        raise errors.validation_error(field, f"must be one of the project's statuses ({allowed})")
