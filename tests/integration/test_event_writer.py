"""``EventWriter``: a change answers once its events are handed over, not once the broker has
them, and ``drain`` waits for the hand-overs still running (a real SQLite database; the broker
is a publisher whose round trip lasts until the test ends it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from liveboard.actor import Actor
from liveboard.protocol import BrokerEvent
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks.service import TaskService
from tests.support.timing import timeout


class StalledBroker:
    """Takes events at once, as a node delivers to its own hub, then stalls (a Redis outage)."""

    def __init__(self) -> None:
        self.taken: list[BrokerEvent] = []
        self.finished: list[BrokerEvent] = []
        self.answer = asyncio.Event()

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        self.taken.extend(events)
        await self.answer.wait()
        self.finished.extend(events)


async def test_a_change_answers_while_the_broker_stalls_and_drain_waits_for_it(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    await migrate(db)
    broker = StalledBroker()
    service = TaskService(db, broker)
    alice = Actor(user_id="alice")
    try:
        ws = await asyncio.wait_for(service.create_workspace(alice, "W"), 2)
        project = await asyncio.wait_for(service.create_project(alice, ws.id, "P", None), 2)
        tasks = [
            await asyncio.wait_for(service.create_task(alice, project.id, title=f"t{n}"), 2)
            for n in range(3)
        ]
        await asyncio.sleep(0)
        assert [e.type for e in broker.taken][-3:] == ["task:created"] * 3
        assert [e.data["task"]["id"] for e in broker.taken[-3:]] == [t.id for t in tasks]
        assert broker.finished == []  # every answer came while the broker stalled
        assert service.writer.handing == len(broker.taken)
        draining = asyncio.create_task(service.writer.drain())
        await asyncio.sleep(0.05)
        assert not draining.done()
        broker.answer.set()
        await asyncio.wait_for(draining, timeout(2))
        assert broker.finished == broker.taken
        assert service.writer.handing == 0
    finally:
        broker.answer.set()
        await db.aclose()
