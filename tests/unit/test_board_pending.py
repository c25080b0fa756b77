"""``liveboard.client.pending``: the Python Board's local writes, what it shows and when a write
ends (pure, no I/O). The same rules as liveboard.js's ``PendingWrites``
(clients/js/test/board/pending-writes.test.js)."""

from __future__ import annotations

from typing import Any

from liveboard.client.pending import PendingWrites, Write, is_transient, refusal_message
from liveboard.protocol import Position, Task

STATUSES = ["todo", "done"]


def task(tid: str, status: str, order: float, **extra: Any) -> Task:
    fields: dict[str, Any] = {
        "id": tid,
        "project_id": "p",
        "title": tid,
        "description": "",
        "status": status,
        "order": order,
        "rank": f"a{int(order)}",
        "assignee_id": None,
        "created_by_id": "u",
        "version": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "",
    }
    fields.update(extra)
    return Task(**fields)


TASKS = [task("a", "todo", 1), task("b", "todo", 2), task("c", "todo", 3), task("d", "done", 1)]


def ids(writes: PendingWrites, tasks: list[Task] = TASKS) -> list[str]:
    columns = writes.columns(tasks, STATUSES)
    return [f"{s}:{','.join(t.id for t in column)}" for s, column in columns.items()]


def at(offset: int) -> Position:
    return Position(offset=offset, epoch="e1")


def test_confirmed_tasks_show_in_a_strict_order() -> None:
    tied = [task("y", "todo", 1), task("x", "todo", 1), task("w", "todo", 0.5)]
    assert ids(PendingWrites(), tied) == ["todo:w,x,y", "done:"]


def test_each_kind_of_write_shows_at_once_in_the_order_made() -> None:
    writes = PendingWrites()
    writes.add(Write("k1", "move", "c", status="todo", after_id=None))
    assert ids(writes) == ["todo:c,a,b", "done:d"]
    writes.add(Write("k2", "move", "a", status="done"))
    writes.add(Write("k3", "create", "local:k3", "New", "done", after_id="d"))
    writes.add(Write("k4", "rename", "b", "B!"))
    writes.add(Write("k5", "delete", "c"))
    assert ids(writes) == ["todo:b", "done:d,local:k3,a"]
    columns = writes.columns(TASKS, STATUSES)
    assert columns["todo"][0].title == "B!"
    assert columns["done"][1].title == "New"
    assert writes.is_pending("a")
    assert not writes.is_pending("d")


def test_a_write_ends_exactly_when_its_events_offset_is_applied() -> None:
    writes = PendingWrites()
    writes.add(Write("k1", "move", "a", status="done"))
    assert writes.settle(at(10)) == 0  # not answered: kept whatever the stream says
    writes.answered("k1", at(12))
    assert writes.settle(at(11)) == 0
    assert writes.settle(Position(offset=50, epoch="other")) == 0  # another epoch says nothing
    assert writes.is_pending("a")
    assert writes.settle(at(12)) == 1
    assert not writes.is_pending("a")


def test_no_event_ends_a_write_at_its_answer_and_a_new_epochs_snapshot_ends_all() -> None:
    writes = PendingWrites()
    writes.add(Write("k1", "rename", "a", "a"))
    writes.answered("k1", None)
    assert writes.writes == []
    writes.add(Write("k2", "move", "a", status="done"))
    writes.answered("k2", at(7))
    assert writes.settle(Position(offset=3, epoch="e2"), snapshot=True) == 1


def test_a_creates_answer_names_its_card_in_every_later_write() -> None:
    writes = PendingWrites()
    writes.add(Write("k1", "create", "local:k1", "N", "todo"))
    writes.add(Write("k2", "move", "local:k1", status="done", after_id=None))
    writes.add(Write("k3", "move", "a", status="done", after_id="local:k1"))
    assert writes.next() is writes.get("k1")
    writes.answered("k1", at(5), task("t9", "todo", 4, title="N"))
    nxt = writes.next()
    assert nxt is not None
    assert (nxt.key, nxt.task_id) == ("k2", "t9")
    k3 = writes.get("k3")
    assert k3 is not None
    assert k3.after_id == "t9"
    assert ids(writes) == ["todo:b,c", "done:t9,a,d"]
    writes.settle(at(5))
    assert ids(writes, [*TASKS, task("t9", "todo", 4, title="N")]) == ["todo:b,c", "done:t9,a,d"]


def test_a_refusal_undoes_the_write_and_those_that_need_it() -> None:
    writes = PendingWrites()
    writes.add(Write("k1", "create", "local:k1", "N", "todo"))
    writes.add(Write("k2", "rename", "local:k1", "N2"))
    writes.add(Write("k3", "move", "b", status="done", after_id=None))
    assert [w.key for w in writes.refused("k1")] == ["k1", "k2"]
    assert ids(writes) == ["todo:a,c", "done:b,d"]
    assert [w.key for w in writes.refused("k3")] == ["k3"]
    assert ids(writes) == ["todo:a,b,c", "done:d"]


def test_refusals_read_as_sentences_and_only_passing_failures_are_retried() -> None:
    move = Write("k", "move", "a")
    assert refusal_message(move, 409, "") == (
        "Someone else changed this card — your move was undone."
    )
    rename = Write("k", "rename", "a")
    assert "deleted by someone else — your edit" in refusal_message(rename, 404, "")
    assert "(bad title)" in refusal_message(rename, 422, "bad title")
    gone = "afterId: must be a task in the column 'done'"
    assert refusal_message(move, 422, gone) == (
        "The cards around where you put it moved meanwhile — your move was undone."
    )
    assert [s for s in (401, 403, 404, 408, 409, 422, 429, 500, 503) if is_transient(s, None)] == [
        401,
        408,
        429,
        500,
        503,
    ]
    assert is_transient(409, "idempotency_key_in_flight")


def test_the_echo_of_a_create_before_its_answer_binds_the_two() -> None:
    pending = PendingWrites()
    create = Write("k1", "create", "local:k1", title="New", status="todo")
    pending.add(create)
    pending.echoed(Position(offset=7, epoch="e1"), _task("t9", title="New"))
    assert create.answered
    assert create.task_id == "t9"
    assert pending.settle(Position(offset=7, epoch="e1")) == 1  # in the board: shown once


def test_the_late_echo_of_an_answered_create_does_not_bind_the_next_create() -> None:
    # Creates queued offline go out one at a time. Create 1's HTTP answer comes first, then
    # its echo, while create 2 is next: the echo is create 1's, not create 2's.
    pending = PendingWrites()
    for n in (1, 2):
        pending.add(Write(f"k{n}", "create", f"local:k{n}", title="Idea", status="todo"))
    first = _task("t1", title="Idea")
    pending.answered("k1", Position(offset=7, epoch="e1"), first)
    pending.echoed(Position(offset=7, epoch="e1"), first)
    second = pending.get("k2")
    assert second is not None
    assert not second.answered
    assert second.task_id == "local:k2"


def test_an_echo_binds_only_the_create_that_made_its_card() -> None:
    # A create made on this connection outside the Board (another title or column) is not it.
    pending = PendingWrites()
    pending.add(Write("k1", "create", "local:k1", title="Mine", status="todo"))
    pending.echoed(Position(offset=3, epoch="e1"), _task("t5", title="Other"))
    pending.echoed(Position(offset=4, epoch="e1"), _task("t6", title="Mine", status="done"))
    write = pending.get("k1")
    assert write is not None
    assert not write.answered
    assert write.task_id == "local:k1"


def _task(task_id: str, *, title: str, status: str = "todo") -> Task:
    return Task(
        id=task_id,
        project_id="p",
        title=title,
        description="",
        status=status,
        order=1.0,
        rank="a0",
        assignee_id=None,
        created_by_id="u",
        version=1,
        created_at="",
        updated_at="",
    )
