"""TaskSet: background tasks are held until done, and a failure is logged once."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from liveboard.background import TaskSet

log = logging.getLogger("test.background")


async def test_a_spawned_task_is_held_until_it_ends() -> None:
    tasks = TaskSet(log)
    release = asyncio.Event()
    done: list[bool] = []

    async def work() -> None:
        await release.wait()
        done.append(True)

    tasks.spawn(work())
    gc.collect()  # nothing else references the task: the set must
    assert len(tasks) == 1
    release.set()
    await tasks.wait()
    assert done == [True]
    assert len(tasks) == 0


async def test_a_failure_is_logged_once_with_the_owners_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet(log)

    async def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="test.background"):
        task = tasks.spawn(fail(), name="failing-work")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callback runs on the next turn
    failures = [r for r in caplog.records if r.name == "test.background"]
    assert len(failures) == 1
    assert "failing-work" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is RuntimeError


async def test_cancellation_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(log)
    tasks.spawn(asyncio.sleep(3600))
    with caplog.at_level(logging.ERROR, logger="test.background"):
        tasks.cancel()
        await tasks.wait()
    assert len(tasks) == 0
    assert not [r for r in caplog.records if r.name == "test.background"]


async def test_wait_cancels_what_outlives_its_grace() -> None:
    tasks = TaskSet(log)
    slow = tasks.spawn(asyncio.sleep(3600))
    quick = tasks.spawn(asyncio.sleep(0))
    await tasks.wait(0.05)
    assert quick.done()
    assert not quick.cancelled()
    assert slow.cancelled()
