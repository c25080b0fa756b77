"""A burst of mutations: concurrent PATCH loops against one instance, every answer recorded."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp

from tests.support.board import Board
from tests.support.tokens import auth


@dataclass
class Ack:
    at: float  # time.monotonic() when the answer arrived
    task_id: str
    version: int


class Writers:
    """One PATCH loop per (user, task) against one instance, all concurrent, until ``stop``.

    Every answer is recorded: 2xx in ``acked`` (task id and new version, to find its event),
    anything else in ``failures``. A connection error (the instance died) ends that loop and is
    kept in ``errors``.
    """

    def __init__(self, board: Board, writers: list[tuple[str, str]], pace: float = 0.02) -> None:
        self.board = board
        self.writers = writers
        self.pace = pace  # keeps each user well under the REST rate limit (50/s)
        self.acked: list[Ack] = []
        self.failures: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Writers:
        self._tasks = [
            asyncio.create_task(self._loop(user, task_id)) for user, task_id in self.writers
        ]
        return self

    async def _loop(self, user: str, task_id: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                async with self.board.http.patch(
                    f"{self.board.url}/api/tasks/{task_id}",
                    json={"title": f"{user} #{n}"},
                    headers=auth(user),
                ) as response:
                    text = await response.text()
                    if response.status == 200:
                        body = json.loads(text)
                        self.acked.append(Ack(time.monotonic(), task_id, int(body["version"])))
                    else:
                        self.failures.append(f"{response.status} {text}")
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.errors.append(exc)
                return
            await asyncio.sleep(self.pace)

    async def stop(self) -> None:
        """Stop and wait for the requests in flight (each bounded by the client's timeout)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def acked_since(self, since: float) -> list[Ack]:
        return [a for a in self.acked if a.at >= since]
