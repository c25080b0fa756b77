"""Placement by neighbours (CONTRACT §6.2; issue 17 item 3), against real ``liveboard serve``.

* ``afterId``/``beforeId`` on create and move, their errors, the numeric ``order`` of §3 beside
  them, and ``GET …/tasks`` in display order, on SQLite and PostgreSQL;
* ``INSERTS`` insertions between the same two cards (each directly after the first: the worst
  case for fractional keys, which makes the server rebalance the column): a strict order,
  ranks of at most 64 bytes, the same order on a live SDK ``Board`` as in the REST snapshot, and
  the key sizes reported;
* ``PAIRS`` pairs of simultaneous drops into one slot through two instances (PostgreSQL and
  Redis): distinct ranks, one order, identical on three live SDK boards and the REST snapshot.

``make test`` runs a few hundred of each; ``make soak-placement`` the issue's counts (10,000
insertions, 1,000 pairs) through ``LIVEBOARD_PLACEMENT_INSERTS`` / ``LIVEBOARD_PLACEMENT_PAIRS``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from liveboard.client import Board as LiveBoard
from liveboard.client import LiveboardClient
from liveboard.protocol import TaskSnapshot
from liveboard.protocol.ranks import MAX_RANK_LENGTH
from tests.support.board import ApiError, Board
from tests.support.cluster import Cluster
from tests.support.cluster_setup import shared_board
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import make_token

INSERTS = int(os.environ.get("LIVEBOARD_PLACEMENT_INSERTS", "400"))
PAIRS = int(os.environ.get("LIVEBOARD_PLACEMENT_PAIRS", "60"))
#: Writers share the work: each user has its own REST rate limit (50/s, bursts of 200).
USERS = 12

ServerFactory = Callable[..., LiveboardProcess]
Json = dict[str, Any]


def ids(tasks: list[Json]) -> list[str]:
    return [str(t["id"]) for t in tasks]


async def column(board: Board, user: str, pid: str, status: str) -> list[Json]:
    """The column as ``GET …/tasks`` lists it (display order)."""
    return [t for t in (await board.snapshot(user, pid))["tasks"] if t["status"] == status]


def assert_strict(tasks: list[Json]) -> None:
    """Listed in strictly ascending rank (byte order), ``order`` never descending."""
    ranks = [t["rank"].encode() for t in tasks]
    assert all(a < b for a, b in itertools.pairwise(ranks)), ranks
    orders = [t["order"] for t in tasks]
    assert all(a <= b for a, b in itertools.pairwise(orders)), orders


async def move(board: Board, user: str, tid: str, body: Json, expect: int = 200) -> Any:
    return await board.call("POST", f"/api/tasks/{tid}/move", user, body, expect=expect)


async def refused(board: Board, user: str, path: str, body: Json) -> str:
    """The field named by the 422 ``validation_error`` the call must get."""
    with pytest.raises(ApiError) as caught:
        await board.call("POST", path, user, body, expect=999)
    assert caught.value.status == 422, caught.value
    text = str(caught.value)
    assert '"validation_error"' in text, text
    return text


async def test_neighbours_place_cards_and_the_list_is_in_display_order(
    server_factory: ServerFactory, database_url: str
) -> None:
    async with Board(server_factory(database_url=database_url)) as board:
        user = board.user("alice")
        _, pid = await board.board(user)
        a = await board.task(user, pid, "a")  # no place: the end
        b = await board.task(user, pid, "b")
        top = await board.task(user, pid, "top", afterId=None)
        mid = await board.task(user, pid, "mid", afterId=a["id"])
        low = await board.task(user, pid, "low", beforeId=b["id"])
        end = await board.task(user, pid, "end", beforeId=None)
        both = await board.task(user, pid, "both", afterId=a["id"], beforeId=b["id"])
        listed = await column(board, user, pid, "todo")
        assert ids(listed) == ids([top, a, both, mid, low, b, end])
        assert_strict(listed)

        # Moves: into another column (its top, after a card), within one, to the end.
        await move(board, user, b["id"], {"toStatus": "done"})
        moved = await move(board, user, mid["id"], {"toStatus": "done", "afterId": None})
        assert (moved["status"], moved["version"]) == ("done", 2)
        await move(board, user, top["id"], {"toStatus": "done", "afterId": mid["id"]})
        await move(board, user, end["id"], {"toStatus": "todo", "beforeId": a["id"]})
        assert ids(await column(board, user, pid, "done")) == ids([mid, top, b])
        assert ids(await column(board, user, pid, "todo")) == ids([end, a, both, low])

        # Where it already is: nothing changes, no event.
        before = (await board.snapshot(user, pid))["offset"]
        same = await move(board, user, a["id"], {"toStatus": "todo", "afterId": end["id"]})
        assert same["version"] == 1
        assert (await board.snapshot(user, pid))["offset"] == before

        # The numeric order of CONTRACT §3 still places by value, between ranked cards.
        todo = await column(board, user, pid, "todo")
        value = (todo[1]["order"] + todo[2]["order"]) / 2
        if todo[1]["order"] < value < todo[2]["order"]:
            numeric = await board.task(user, pid, "numeric", order=value)
            assert ids(await column(board, user, pid, "todo"))[2] == numeric["id"]
        first = await board.task(user, pid, "first by order", order=todo[0]["order"] - 10)
        assert ids(await column(board, user, pid, "todo"))[0] == first["id"]
        assert_strict(await column(board, user, pid, "todo"))


async def test_bad_neighbours_are_refused_with_the_field_named(
    server_factory: ServerFactory, database_url: str
) -> None:
    async with Board(server_factory(database_url=database_url)) as board:
        user, other = board.user("alice"), board.user("mallory")
        _, pid = await board.board(user)
        _, elsewhere = await board.board(other)
        a = await board.task(user, pid, "a")
        b = await board.task(user, pid, "b")
        done = await board.task(user, pid, "done", status="done")
        foreign = await board.task(other, elsewhere, "theirs")
        create = f"/api/projects/{pid}/tasks"
        moving = f"/api/tasks/{a['id']}/move"
        cases: list[tuple[str, Json, str]] = [
            (create, {"title": "x", "afterId": "tsk_nope"}, "afterId"),
            (create, {"title": "x", "beforeId": done["id"]}, "beforeId"),  # another column
            (create, {"title": "x", "afterId": foreign["id"]}, "afterId"),  # another project
            (create, {"title": "x", "afterId": b["id"], "beforeId": a["id"]}, "beforeId"),
            (create, {"title": "x", "afterId": a["id"], "order": 3}, "order"),
            (create, {"title": "x", "afterId": 7}, "afterId"),
            (create, {"title": "x", "beforeId": ""}, "beforeId"),
            (moving, {"toStatus": "todo", "afterId": a["id"]}, "afterId"),  # itself
            (moving, {"toStatus": "done", "afterId": b["id"]}, "afterId"),  # not in "done"
            (moving, {"toStatus": "todo", "beforeId": "x" * 65}, "beforeId"),
        ]
        offset = (await board.snapshot(user, pid))["offset"]
        for path, body, field in cases:
            text = await refused(board, user, path, body)
            assert f'"field":"{field}"' in text.replace(" ", ""), (body, text)
        after = await board.snapshot(user, pid)
        assert after["offset"] == offset  # nothing was applied
        assert ids([t for t in after["tasks"] if t["status"] == "todo"]) == ids([a, b])


async def open_board(url: str, user: str, pid: str) -> tuple[LiveboardClient, LiveBoard]:
    client = LiveboardClient(url, make_token(user))
    await client.__aenter__()
    return client, await LiveBoard.open(client, pid)


async def converged(boards: list[LiveBoard], snapshot: TaskSnapshot) -> None:
    """Every board applied the stream up to the snapshot and shows its columns in its order."""
    for board in boards:
        await asyncio.wait_for(
            board.wait_for(lambda b: b.offset >= snapshot.offset), timeout(30 + INSERTS / 50)
        )
    by_status: dict[str, list[str]] = {}
    for task in snapshot.tasks:  # listed in display order
        by_status.setdefault(task.status, []).append(task.id)
    for board in boards:
        assert board.tasks == {t.id: t for t in snapshot.tasks}
        shown = {s: [t.id for t in ts] for s, ts in board.columns().items() if ts}
        assert shown == by_status


@pytest.mark.slow
@pytest.mark.timeout(120 + 0.5 * INSERTS)
async def test_insertions_between_the_same_two_cards_keep_a_strict_short_order(
    server_factory: ServerFactory, database_url: str
) -> None:
    server = server_factory(database_url=database_url)
    async with Board(server) as board:
        owner = board.user("owner")
        writers = [board.user(f"w{n}") for n in range(USERS)]
        _, pid = await board.board(owner, *writers)
        first = await board.task(owner, pid, "first")
        last = await board.task(owner, pid, "last")
        client, live = await open_board(server.url, owner, pid)
        try:
            longest, placed = 0, []
            started = time.monotonic()
            for n in range(INSERTS):
                body = {"title": f"#{n}", "afterId": first["id"], "beforeId": last["id"]}
                task = await board.task(writers[n % USERS], pid, **body)
                longest = max(longest, len(task["rank"]))
                placed.append(task)
            elapsed = time.monotonic() - started
            snapshot = await client.get_snapshot(pid)
            await converged([live], snapshot)
        finally:
            await live.aclose()
            await client.aclose()
        listed = await column(board, owner, pid, "todo")
        # Each went directly after "first": newest first, all between the two cards.
        assert ids(listed) == [first["id"], *reversed(ids(placed)), last["id"]]
        assert_strict(listed)
        sizes = sorted(len(t["rank"]) for t in listed)
        assert max(longest, sizes[-1]) <= MAX_RANK_LENGTH
        rebalanced = snapshot.offset - (INSERTS + 2)  # a task:moved per re-ranked task
        print(
            f"{INSERTS} insertions at one spot ({database_url.split(':')[0]}): "
            f"{elapsed:.1f}s; longest rank answered {longest} bytes; ranks now "
            f"{sizes[0]}-{sizes[-1]} bytes (median {sizes[len(sizes) // 2]}); "
            f"{rebalanced} task:moved from rebalances"
        )


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(120 + 0.3 * PAIRS)
async def test_simultaneous_drops_into_one_slot_give_one_order_everywhere(
    cluster: Cluster,
) -> None:
    first, second = await cluster.start(2)
    owner = cluster.user("owner")
    writers = [cluster.user(f"w{n}") for n in range(USERS)]
    _, pid = await shared_board(cluster, owner, *writers)
    anchor = await first.task(owner, pid, "anchor")
    await first.task(owner, pid, "below")
    # The cards to drop, made in the "in_progress" column, spread over both instances.
    semaphore = asyncio.Semaphore(8)

    async def card(n: int) -> str:
        async with semaphore:
            board = (first, second)[n % 2]
            task = await board.task(writers[n % USERS], pid, f"c{n}", status="in_progress")
            return str(task["id"])

    cards = await asyncio.gather(*(card(n) for n in range(2 * PAIRS)))
    opened = [await open_board(b.url, u, pid) for b, u in ((first, owner), (second, writers[0]))]
    opened.append(await open_board(second.url, writers[1], pid))
    try:
        slot = {"toStatus": "todo", "afterId": anchor["id"]}
        for n in range(PAIRS):
            p, q = cards[2 * n], cards[2 * n + 1]
            one, other = await asyncio.gather(
                move(first, writers[(2 * n) % USERS], p, slot),
                move(second, writers[(2 * n + 1) % USERS], q, slot),
            )
            assert one["rank"] != other["rank"]
        snapshot = await opened[0][0].get_snapshot(pid)
        await converged([board for _, board in opened], snapshot)
    finally:
        for client, board in opened:
            await board.aclose()
            await client.aclose()
    listed = await column(first, owner, pid, "todo")
    assert_strict(listed)
    assert len(listed) == 2 + 2 * PAIRS
    assert ids(listed)[0] == anchor["id"]
    assert set(ids(listed)[1:-1]) == set(cards)
    sizes = sorted(len(t["rank"]) for t in listed)
    print(f"{PAIRS} pairs of simultaneous drops: ranks now {sizes[0]}-{sizes[-1]} bytes")
