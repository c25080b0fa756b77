"""``Board``: a project's tasks kept in sync by snapshot-then-stream.

``await Board.open(client, project_id)`` fetches ``GET /api/projects/{pid}/tasks`` (a consistent
snapshot at ``offset`` in ``epoch``), subscribes to ``project:{pid}`` with ``since`` = that
position, and applies each event to ``tasks``. Guarantees:

* ``tasks`` always equals the server's snapshot at ``offset``: every event is applied once, in
  order (the subscription guarantees it; the board also skips anything at or below the offset
  of its last snapshot).
* On ``Resync`` (``recovered: false``, a server ``resync``, a gap), and whenever an event cannot
  be applied (another epoch, a move of an unknown task), the snapshot is fetched again and
  replaces the model; events already reflected in it are skipped. Failing fetches are retried.
* ``task:moved`` carries no task: the board sets ``status``, ``order`` and ``rank``, bumps
  ``version`` by one and sets ``updated_at`` from the event's commit time, as the server does.

Optimistic changes (``create_task``, ``move``, ``rename``, ``delete``): each is shown by
``columns()`` at once and ``is_pending`` until the board has applied the event its answer named
(``Liveboard-Offset``), never longer, never shorter (``liveboard.client.pending``). Writes are
sent one at a time, in the order they were made, each with its own ``Idempotency-Key``; when the
server cannot be reached they wait (in memory: a Python board's queue does not survive the
process) and are sent, with the same keys, once it can. A refusal (409, 422, 403, 404) undoes the
change: the returned future raises the ``ApiError`` and ``on_rollback`` callbacks get a
``Rollback`` with a human message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET

from liveboard.client.backoff import Backoff
from liveboard.client.connection import ConnectionState
from liveboard.client.errors import ApiError, ClientClosedError, LiveboardClientError
from liveboard.client.messages import Resync, Revoked, SubscriptionItem
from liveboard.client.pending import (
    AfterId,
    PendingWrites,
    Write,
    is_transient,
    refusal_message,
)
from liveboard.client.subscription import Subscription
from liveboard.protocol import (
    TASK_CREATED,
    TASK_DELETED,
    TASK_MOVED,
    TASK_UPDATED,
    Event,
    Position,
    PresenceUser,
    Project,
    Task,
    TaskSnapshot,
    project_room,
)

if TYPE_CHECKING:
    from liveboard.client.client import LiveboardClient

log = logging.getLogger("liveboard.client.board")

#: Delay between attempts to refetch a snapshot that failed (network, server restarting).
RELOAD_RETRY = 0.5
#: After this many consecutive reloads caused by unusable events, give up with an error log.
MAX_RELOADS_IN_A_ROW = 5


@dataclass(frozen=True)
class Rollback:
    """A change the server refused, undone: the write, the error, a sentence for the user."""

    write: Write
    error: ApiError
    message: str


def iso_from_ms(ms: int) -> str:
    """Unix milliseconds → the server's timestamp format (``2025-01-02T03:04:05.678Z``)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Board:
    """A live local model of one project's tasks (see the module docstring)."""

    def __init__(self, client: LiveboardClient, project_id: str) -> None:
        self.client = client
        self.project_id = project_id
        self.room = project_room(project_id)
        self.project: Project | None = None
        self.tasks: dict[str, Task] = {}
        #: Position of the model: every event up to ``offset`` in ``epoch`` is reflected.
        self.offset = 0
        self.epoch = ""
        #: Snapshots loaded (1 after ``open``, one more per resync).
        self.snapshots = 0
        self.revoked: Revoked | None = None
        self._sub: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[Board, SubscriptionItem | None], object]] = []
        self._changed = asyncio.Event()
        #: Local changes not yet reflected by the stream (what ``columns()`` shows on top).
        self.pending = PendingWrites()
        self._rollback_callbacks: list[Callable[[Rollback], object]] = []
        self._waiters: dict[str, asyncio.Future[Task | None]] = {}
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, client: LiveboardClient, project_id: str, *, join_presence: bool = False
    ) -> Board:
        """Fetch the snapshot, subscribe after it, and start applying events."""
        board = cls(client, project_id)
        board.project = await client.get_project(project_id)
        board._load(await client.get_snapshot(project_id))
        board._sub = await client.subscribe(
            board.room, since=Position(offset=board.offset, epoch=board.epoch)
        )
        board._consumer = asyncio.ensure_future(board._consume(board._sub))
        board._sender = asyncio.ensure_future(board._send_writes())
        client.on_state_change(board._on_state)
        if join_presence:
            await board._sub.join_presence()
        return board

    @property
    def subscription(self) -> Subscription:
        assert self._sub is not None, "use Board.open()"
        return self._sub

    @property
    def presence(self) -> list[PresenceUser]:
        return [] if self._sub is None else list(self._sub.presence)

    def columns(self) -> dict[str, list[Task]]:
        """What to show: tasks by status (the project's statuses first, in order), each column
        in display order, with the local changes not yet confirmed applied on top."""
        statuses = self.project.statuses if self.project else []
        return self.pending.columns(self.tasks.values(), list(statuses))

    def is_pending(self, task_id: str) -> bool:
        """True while a local change of ``task_id`` is shown but not confirmed by the stream."""
        return self.pending.is_pending(task_id)

    @property
    def waiting(self) -> int:
        """Local changes the server has not accepted yet (offline, or on their way)."""
        return len(self.pending.unsent())

    def on_rollback(self, callback: Callable[[Rollback], object]) -> None:
        """Call ``callback(rollback)`` when the server refuses a change (which is undone)."""
        self._rollback_callbacks.append(callback)

    # ------------------------------------------------------------------ changes (optimistic)

    def create_task(
        self, title: str, *, status: str | None = None, index: int | None = None
    ) -> asyncio.Future[Task | None]:
        """Add a card at ``index`` of its column (default: the end), shown at once with the id
        ``local:<key>`` until the server's answer names it. The future gives the created task."""
        key = uuid.uuid4().hex
        column = status or (self.project.statuses[0] if self.project else "")
        after = self._after(column, index, "")
        return self._write(Write(key, "create", f"local:{key}", title, column, after))

    def move(
        self, task_id: str, to_status: str, index: int | None = None
    ) -> asyncio.Future[Task | None]:
        """Move a card to ``index`` among the other cards of ``to_status`` (default: the end)."""
        after = self._after(to_status, index, task_id)
        return self._write(Write(uuid.uuid4().hex, "move", task_id, None, to_status, after))

    def rename(self, task_id: str, title: str) -> asyncio.Future[Task | None]:
        """Change a card's title (``PATCH`` with the version the user saw, when it was confirmed:
        if someone else changed the title since, the server refuses it and it is undone)."""
        current = None if self.is_pending(task_id) else self.tasks.get(task_id)
        version = None if current is None else current.version
        return self._write(Write(uuid.uuid4().hex, "rename", task_id, title, version=version))

    def delete(self, task_id: str) -> asyncio.Future[Task | None]:
        """Delete a card (the future gives None)."""
        return self._write(Write(uuid.uuid4().hex, "delete", task_id))

    def on_change(self, callback: Callable[[Board, SubscriptionItem | None], object]) -> None:
        """Call ``callback(board, item)`` after each change of the model (``item`` is the
        applied ``Event``, the ``Resync`` that caused a reload, a presence update, ``Revoked``,
        or None for a reload of another cause)."""
        self._callbacks.append(callback)

    async def wait_for(self, predicate: Callable[[Board], bool]) -> None:
        """Wait until ``predicate(board)`` is true (checked after every change)."""
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()

    async def reload(self) -> None:
        """Fetch the snapshot now and replace the model with it."""
        self._load(await self.client.get_snapshot(self.project_id))
        self._notify(None)

    async def aclose(self) -> None:
        """Stop following the project (unsubscribes); unsent changes are dropped."""
        if self._sub is not None:
            await self._sub.unsubscribe()
        for task in (self._consumer, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # ------------------------------------------------------------------ internals

    def _load(self, snapshot: TaskSnapshot) -> None:
        self.tasks = {task.id: task for task in snapshot.tasks}
        self.offset = snapshot.offset
        self.epoch = snapshot.epoch
        self.snapshots += 1
        self.pending.settle(Position(offset=self.offset, epoch=self.epoch), snapshot=True)

    async def _consume(self, sub: Subscription) -> None:
        reloads_in_a_row = 0
        async for item in sub:
            if isinstance(item, Event):
                if self._apply(item):
                    reloads_in_a_row = 0
                else:
                    reloads_in_a_row += 1
                    if reloads_in_a_row > MAX_RELOADS_IN_A_ROW:
                        log.error("%s: events keep disagreeing with snapshots", self.room)
                    await self._reload_until_done()
            elif isinstance(item, Resync):
                await self._reload_until_done()
            elif isinstance(item, Revoked):
                self.revoked = item
            self._notify(item)

    async def _reload_until_done(self) -> None:
        while True:
            try:
                self._load(await self.client.get_snapshot(self.project_id))
                return
            except (LiveboardClientError, OSError, TimeoutError) as exc:
                if isinstance(exc, LiveboardClientError) and exc.code in {"not_found", "closed"}:
                    log.warning("%s: cannot reload the snapshot: %s", self.room, exc)
                    return
                await asyncio.sleep(RELOAD_RETRY)
            except Exception as exc:  # aiohttp.ClientError and friends
                log.info("%s: snapshot fetch failed (%r); retrying", self.room, exc)
                await asyncio.sleep(RELOAD_RETRY)

    def _apply(self, event: Event) -> bool:
        """Apply one event; False when it cannot be (the snapshot must be fetched again)."""
        if event.epoch != self.epoch:
            return False
        if event.offset <= self.offset:
            return True  # already in the snapshot
        if event.offset != self.offset + 1:
            return False
        data: dict[str, Any] = event.data
        if event.type in (TASK_CREATED, TASK_UPDATED):
            task = msgspec.convert(data["task"], Task)
            self.tasks[task.id] = task
            if (
                event.type == TASK_CREATED
                and event.origin
                and event.origin == self.client.connection_id
            ):
                # The echo of this board's create can come before the create's answer: bind it to
                # the create in flight, or the card would show twice until the answer arrives.
                self.pending.echoed(Position(offset=event.offset, epoch=event.epoch), task)
        elif event.type == TASK_MOVED:
            current = self.tasks.get(str(data["taskId"]))
            if current is None:
                return False
            self.tasks[current.id] = msgspec.structs.replace(
                current,
                status=str(data["toStatus"]),
                order=float(data["order"]),
                rank=str(data.get("rank", current.rank)),
                version=current.version + 1,
                updated_at=iso_from_ms(event.ts),
            )
        elif event.type == TASK_DELETED:
            self.tasks.pop(str(data["taskId"]), None)
        self.offset = event.offset
        self.pending.settle(Position(offset=self.offset, epoch=self.epoch))
        return True

    def _notify(self, item: SubscriptionItem | None) -> None:
        self._changed.set()
        for callback in list(self._callbacks):
            try:
                callback(self, item)
            except Exception:
                log.exception("board callback %r failed", callback)

    # ------------------------------------------------------------------ sending writes

    def _column(self, status: str, except_id: str) -> list[Task]:
        return [t for t in self.columns().get(status, []) if t.id != except_id]

    def _after(self, status: str, index: int | None, except_id: str) -> AfterId:
        """``after_id`` for ``index`` of ``status`` (None: the top; unset: the end)."""
        column = self._column(status, except_id)
        if index is None or index >= len(column):
            return UNSET
        return None if index <= 0 else column[index - 1].id

    def _order_after(self, status: str, after: AfterId, except_id: str) -> float | None:
        """A numeric ``order`` for the same place, for servers without CONTRACT §6.2."""
        column = self._column(status, except_id)
        if after is UNSET or not column:
            return None
        ids = [t.id for t in column]
        at = 0 if after is None else (ids.index(after) + 1 if after in ids else len(column))
        before = column[at - 1].order if at > 0 else None
        following = column[at].order if at < len(column) else None
        if before is not None and following is not None:
            return (before + following) / 2
        return before + 1 if before is not None else (following or 0.0) - 1

    def _write(self, write: Write) -> asyncio.Future[Task | None]:
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        self._waiters[write.key] = future
        self.pending.add(write)
        self._wake.set()
        self._notify(None)
        return future

    def _request(self, write: Write) -> tuple[str, str, dict[str, Any] | None, int]:
        path = f"/api/tasks/{write.task_id}"
        place: dict[str, Any] = {}
        if write.after_id is not UNSET and self._column(write.status or "", write.task_id):
            # CONTRACT §6.2: the server places it by its neighbour. A server without §6.2 (its
            # tasks have no ``rank``) ignores afterId and gets the numeric ``order`` too, which a
            # §6.2 server would refuse next to afterId (422). An empty column needs neither.
            place["afterId"] = write.after_id
            ranked = any(getattr(t, "rank", None) is not None for t in self.tasks.values())
            order = self._order_after(write.status or "", write.after_id, write.task_id)
            if order is not None and not ranked:
                place["order"] = order
        if write.kind == "create":
            body = {"title": write.title, "status": write.status, **place}
            return "POST", f"/api/projects/{self.project_id}/tasks", body, 201
        if write.kind == "move":
            return "POST", f"{path}/move", {"toStatus": write.status, **place}, 200
        if write.kind == "rename":
            body = {"title": write.title}
            if write.version is not None:
                body["version"] = write.version
            return "PATCH", path, body, 200
        return "DELETE", path, None, 204

    async def _send_writes(self) -> None:
        """Send the writes one at a time, in order; wait and retry (same key) while the server
        cannot be reached; undo the refused ones."""
        backoff = Backoff(0.2, 5.0)
        while True:
            write = self.pending.next()
            if write is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            method, path, body, expect = self._request(write)
            headers = {"Idempotency-Key": write.key}
            try:
                raw = await self.client._api(method, path, body, expect=expect, headers=headers)
            except ClientClosedError:
                return
            except ApiError as exc:
                if is_transient(exc.status, exc.reason):
                    await self._pause(backoff)
                else:
                    self._refuse(write, exc)
                continue
            except Exception as exc:  # the network: aiohttp.ClientError, OSError, timeouts
                log.info("%s: cannot send a change yet (%r); it waits", self.room, exc)
                await self._pause(backoff)
                continue
            backoff.reset()
            task = msgspec.json.decode(raw, type=Task) if raw and write.kind != "delete" else None
            self.pending.answered(write.key, self.client.last_position(), task)
            self.pending.settle(Position(offset=self.offset, epoch=self.epoch))
            waiter = self._waiters.pop(write.key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(task)
            self._notify(None)

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            self._wake.set()  # the server is likely reachable again: send now

    async def _pause(self, backoff: Backoff) -> None:
        """Until the next attempt: a backoff delay, cut short when the client connects again."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff.next_delay()):
                await self._wake.wait()

    def _refuse(self, write: Write, error: ApiError) -> None:
        for gone in self.pending.refused(write.key):
            waiter = self._waiters.pop(gone.key, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        rollback = Rollback(write, error, refusal_message(write, error.status, error.message))
        log.info("%s: %s", self.room, rollback.message)
        self._notify(None)
        for callback in list(self._rollback_callbacks):
            try:
                callback(rollback)
            except Exception:
                log.exception("rollback callback %r failed", callback)
