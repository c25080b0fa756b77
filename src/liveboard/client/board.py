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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from liveboard.client.errors import LiveboardClientError
from liveboard.client.messages import Resync, Revoked, SubscriptionItem
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
        """Tasks by status (the project's statuses first, in order), each in display order: by
        ``order``, then ``rank``. The server never lets ``order`` descend along ranks, so this
        is its strict rank order (CONTRACT §6.2), and a local change that sets only ``order``
        still sorts where it goes."""
        columns: dict[str, list[Task]] = {
            status: [] for status in (self.project.statuses if self.project else [])
        }
        for task in self.tasks.values():
            columns.setdefault(task.status, []).append(task)
        for tasks in columns.values():
            tasks.sort(key=lambda t: (t.order, t.rank))
        return columns

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
        """Stop following the project (unsubscribes)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(BaseException):
                await self._consumer

    # ------------------------------------------------------------------ internals

    def _load(self, snapshot: TaskSnapshot) -> None:
        self.tasks = {task.id: task for task in snapshot.tasks}
        self.offset = snapshot.offset
        self.epoch = snapshot.epoch
        self.snapshots += 1

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
        return True

    def _notify(self, item: SubscriptionItem | None) -> None:
        self._changed.set()
        for callback in list(self._callbacks):
            try:
                callback(self, item)
            except Exception:
                log.exception("board callback %r failed", callback)
