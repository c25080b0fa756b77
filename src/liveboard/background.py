"""Background tasks that are neither lost nor silent: one helper for every component.

asyncio keeps only weak references to tasks, so a task nobody holds can be collected while it
runs; and an exception in a task nobody awaits is reported only when the task is collected, if
ever. ``TaskSet`` holds each task until it ends and logs, once, any exception other than
cancellation, with the owner's logger: the single error policy of liveboard's background work
(a failure is a bug or an outage worth a line, never a reason to stop the component).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet"]

T = TypeVar("T")


class TaskSet:
    """The running background tasks of one component.

    Guarantees: every task ``spawn`` returns is referenced until it is done; a task that ends
    with an exception (not a cancellation) is logged at ERROR on ``logger``; ``cancel`` and
    ``wait`` act on the tasks running at the time of the call.
    """

    __slots__ = ("_log", "_tasks")

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``work`` in a task of its own, held until it ends."""
        task = asyncio.ensure_future(work)
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error("background task %s failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    def cancel(self) -> None:
        """Cancel every running task (they end at their next await)."""
        for task in set(self._tasks):
            task.cancel()

    async def wait(self, grace: float | None = None) -> None:
        """Wait for the running tasks to end; after ``grace`` seconds, cancel those left and
        give them a second to unwind."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
