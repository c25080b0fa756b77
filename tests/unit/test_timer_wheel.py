"""``timer_wheel``: one loop timer for every connection's heartbeat and expiry.

``Wheel`` is pure (times are plain numbers); ``LoopWheel`` runs on a real loop with a short tick.
"""

from __future__ import annotations

import asyncio

import pytest

from liveboard.realtime import timer_wheel
from liveboard.realtime.timer_wheel import MAX_TICK, MIN_TICK, SLACK, Wheel, tick_for, wheel_for


class Entry:
    __slots__ = ("calls", "name", "on_due", "wheel_bucket")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.wheel_bucket: int | None = None
        self.calls: list[float] = []
        self.on_due: object = None

    def _due(self) -> None:
        self.calls.append(asyncio.get_running_loop().time())
        if callable(self.on_due):
            self.on_due()


def test_nothing_is_due_before_its_time_and_everything_within_a_tick() -> None:
    wheel = Wheel(0.25)
    early, late = Entry("early"), Entry("late")
    wheel.schedule(early, 10.1)
    wheel.schedule(late, 10.6)
    assert wheel.due(10.0) == []
    assert wheel.due(10.1 - 2 * SLACK) == []  # before it, beyond the clock's granularity
    assert wheel.due(10.25) == [early]  # the end of its tick
    assert wheel.due(10.5) == []
    assert wheel.due(10.75) == [late]
    assert wheel.empty
    assert early.wheel_bucket is None
    assert late.wheel_bucket is None


def test_scheduling_again_moves_the_entry_and_cancel_removes_it() -> None:
    wheel = Wheel(1.0)
    moved, cancelled = Entry("moved"), Entry("cancelled")
    wheel.schedule(moved, 5.0)
    wheel.schedule(cancelled, 5.0)
    wheel.schedule(moved, 9.0)  # one deadline per entry: the later plan replaces the earlier
    wheel.cancel(cancelled)
    wheel.cancel(cancelled)  # idempotent
    assert len(wheel) == 1
    assert wheel.due(5.0) == []
    assert wheel.due(9.0) == [moved]


def test_entries_of_one_tick_come_in_the_order_they_were_scheduled() -> None:
    wheel = Wheel(1.0)
    entries = [Entry(str(i)) for i in range(5)]
    for entry in entries:
        wheel.schedule(entry, 3.5)
    assert wheel.due(4.0) == entries


def test_a_deadline_already_past_goes_to_the_next_tick_and_a_stall_hands_out_everything() -> None:
    wheel = Wheel(1.0)
    wheel.due(100.0)  # ticks up to 100 have run
    past = Entry("past")
    wheel.schedule(past, 50.0)
    assert wheel.due(101.0) == [past]
    spread = [Entry(str(i)) for i in range(3)]
    for i, entry in enumerate(spread):
        wheel.schedule(entry, 200.0 + 1000.0 * i)
    # A loop stalled for an hour: the due buckets in deadline order, not one step per tick.
    assert wheel.due(3600.0) == spread


def test_tick_follows_the_heartbeat_within_bounds() -> None:
    assert tick_for(25.0, 10.0) == MAX_TICK  # 4001 within 1 s after exp, with room to spare
    assert tick_for(0.3, 0.3) == pytest.approx(0.075)
    assert tick_for(0.01, 0.01) == MIN_TICK
    with pytest.raises(ValueError, match="positive"):
        Wheel(0.0)


async def test_one_loop_timer_calls_each_entry_on_time_then_the_wheel_lets_go() -> None:
    loop = asyncio.get_running_loop()
    tick = 0.02
    wheel = wheel_for(loop, tick)
    assert wheel_for(loop, tick) is wheel  # shared by everyone on this loop
    start = loop.time()
    entries = [Entry(str(i)) for i in range(50)]
    for i, entry in enumerate(entries):
        wheel.schedule(entry, start + 0.01 * (i % 5))
    again = Entry("again")
    again.on_due = lambda: wheel_for(loop, tick).schedule(again, loop.time() + 0.05)
    wheel.schedule(again, start)
    dropped = Entry("dropped")
    wheel.schedule(dropped, start + 0.05)
    timer_wheel.cancel(loop, tick, dropped)
    await asyncio.sleep(0.3)
    for i, entry in enumerate(entries):
        assert len(entry.calls) == 1
        assert entry.calls[0] >= start + 0.01 * (i % 5) - SLACK
    assert len(again.calls) >= 3  # it rescheduled itself from its own callback
    assert dropped.calls == []
    timer_wheel.cancel(loop, tick, again)
    await asyncio.sleep(3 * tick)
    assert (loop, tick) not in timer_wheel._WHEELS  # empty: no timer, no reference


async def test_a_failing_entry_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    tick = 0.01
    wheel = wheel_for(loop, tick)
    bad, good = Entry("bad"), Entry("good")

    def fail() -> None:
        raise RuntimeError("boom")

    bad.on_due = fail
    wheel.schedule(bad, loop.time())
    wheel.schedule(good, loop.time())
    await asyncio.sleep(0.1)
    assert len(bad.calls) == 1
    assert len(good.calls) == 1
    assert "timer of" in caplog.text
