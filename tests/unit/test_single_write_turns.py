"""``tasks.single_write.Turns``: writers of one task on one instance take turns, no I/O."""

from __future__ import annotations

import asyncio

import pytest

from liveboard.tasks.single_write import Turns


async def test_writers_of_one_task_take_turns_in_arrival_order_and_leave_no_entry() -> None:
    turns = Turns()
    inside: list[str] = []
    log: list[str] = []

    async def writer(key: str, name: str) -> None:
        async with turns.of(key):
            inside.append(name)
            assert sum(1 for n in inside if n.startswith(key)) == 1  # alone with its task
            log.append(name)
            await asyncio.sleep(0)
            inside.remove(name)

    await asyncio.gather(*(writer("t1", f"t1-{n}") for n in range(5)), writer("t2", "t2-0"))
    assert [n for n in log if n.startswith("t1")] == [f"t1-{n}" for n in range(5)]
    assert len(turns) == 0


async def test_a_writer_cancelled_while_waiting_leaves_the_turns_working() -> None:
    turns = Turns()
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.of("t1"):
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await first
    assert len(turns) == 0
    async with asyncio.timeout(1), turns.of("t1"):  # free again, at once
        pass
    assert len(turns) == 0
