"""Presence (CONTRACT §4 ``presence`` / ``presence:update``, heartbeat).

``presence:update`` goes to a room's subscribers whenever its set of present users changes,
``users`` sorted by ``userId``, each user once however many tabs; a connection that joins always
gets one with the full list. A user leaves when their last connection in the room leaves,
unsubscribes or disconnects; a peer that stops answering pings is dropped and leaves with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.board import Board
from tests.support.contract import project_room, workspace_room
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.wsclient import WsClient


def update(
    room: str,
    users: list[tuple[str, str]],
    joined: list[str] | None = None,
    left: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "type": "presence:update",
        "room": room,
        "users": [{"userId": u, "name": n} for u, n in users],
        "joined": joined or [],
        "left": left or [],
    }


async def join(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "join", "room": room})


async def leave(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "leave", "room": room})


async def subscribed(board: Board, user: str, room: str, name: str | None = None) -> WsClient:
    client = await board.connect(user, name=name)
    reply = await client.subscribe(room)
    assert reply["type"] == "subscribed"
    return client


async def test_presence_needs_a_subscription(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    for action in ("join", "leave"):
        reply = await client.request(
            {"type": "presence", "action": action, "room": project_room(pid)}
        )
        assert reply["type"] == "error"
        assert reply["code"] == "not_subscribed"
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    # after subscribing it works
    await client.subscribe(project_room(pid))
    await join(client, project_room(pid))
    assert await client.next() == update(project_room(pid), [(owner, owner)], joined=[owner])


async def test_join_sends_full_sorted_list_to_everyone(board: Board) -> None:
    zed, amy, viewer = board.user("zed"), board.user("amy"), board.user("viewer")
    _, pid = await board.board(zed, amy, viewer)
    room = project_room(pid)
    z = await subscribed(board, zed, room, name="Zed Z")
    a = await subscribed(board, amy, room)  # no name claim: the name is the user id
    v = await subscribed(board, viewer, room)  # subscribed, never joins

    await join(z, room)
    first = update(room, [(zed, "Zed Z")], joined=[zed])
    for client in (z, a, v):
        assert await client.next() == first

    await join(a, room)
    second = update(room, [(amy, amy), (zed, "Zed Z")], joined=[amy])
    for client in (z, a, v):
        assert await client.next() == second


async def test_two_tabs_are_one_user(board: Board) -> None:
    alice, bob = board.user("alice"), board.user("bob")
    _, pid = await board.board(alice, bob)
    room = project_room(pid)
    observer = await subscribed(board, bob, room)
    tab1 = await subscribed(board, alice, room, name="Alice")
    tab2 = await subscribed(board, alice, room, name="Alice")

    await join(tab1, room)
    assert await observer.next() == update(room, [(alice, "Alice")], joined=[alice])
    assert (await tab1.next())["joined"] == [alice]
    assert (await tab2.next())["joined"] == [alice]  # a subscriber, though not present

    await join(tab2, room)
    own = await tab2.next("presence:update")
    assert own["users"] == [{"userId": alice, "name": "Alice"}]
    assert own["left"] == []
    assert own["joined"] in ([], [alice])
    # the set of users did not change: nobody else hears about it
    assert await observer.barrier() == []
    assert await tab1.barrier() == []

    # one tab leaves: alice is still present
    await leave(tab1, room)
    assert await tab1.barrier() == []
    assert await observer.barrier() == []
    # the last tab goes away: alice leaves
    await tab2.close()
    assert await observer.next() == update(room, [], left=[alice])


async def test_joining_again_gets_the_list_again(board: Board) -> None:
    alice, bob = board.user("alice"), board.user("bob")
    _, pid = await board.board(alice, bob)
    room = project_room(pid)
    a = await subscribed(board, alice, room)
    b = await subscribed(board, bob, room)
    await join(a, room)
    await b.next("presence:update")
    await a.next("presence:update")
    await join(a, room)
    again = await a.next("presence:update")
    assert again["users"] == [{"userId": alice, "name": alice}]
    assert again["left"] == []
    assert await b.barrier() == []


@pytest.mark.parametrize("how", ["leave", "unsubscribe", "close"])
async def test_user_leaves(board: Board, how: str) -> None:
    alice, bob = board.user("alice"), board.user("bob")
    _, pid = await board.board(alice, bob)
    room = project_room(pid)
    observer = await subscribed(board, bob, room)
    await join(observer, room)
    await observer.next("presence:update")
    a = await subscribed(board, alice, room, name="Alice")
    await join(a, room)
    assert await observer.next() == update(
        room, sorted([(alice, "Alice"), (bob, bob)]), joined=[alice]
    )
    full = await a.next("presence:update")
    assert full["users"] == update(room, sorted([(alice, "Alice"), (bob, bob)]))["users"]

    if how == "leave":
        await leave(a, room)
    elif how == "unsubscribe":
        reply = await a.request({"type": "unsubscribe", "room": room})
        assert reply["type"] == "unsubscribed"
    else:
        await a.close()
    assert await observer.next() == update(room, [(bob, bob)], left=[alice])
    if how == "leave":
        # still subscribed: alice hears the change too, and can come back
        assert await a.next() == update(room, [(bob, bob)], left=[alice])
        await join(a, room)
        back = await observer.next()
        assert back["joined"] == [alice]


async def test_presence_in_a_workspace_room(board: Board) -> None:
    alice, bob = board.user("alice"), board.user("bob")
    wid = await board.workspace(alice, bob)
    room = workspace_room(wid)
    a = await subscribed(board, alice, room)
    b = await subscribed(board, bob, room)
    await join(a, room)
    assert await b.next() == update(room, [(alice, alice)], joined=[alice])
    await a.next()


async def test_rooms_are_separate(board: Board) -> None:
    alice = board.user("alice")
    wid, pid = await board.board(alice)
    other = await board.project(alice, wid, "Other")
    a = await subscribed(board, alice, project_room(pid))
    b = await subscribed(board, alice, project_room(str(other["id"])))
    await join(a, project_room(pid))
    assert (await a.next())["room"] == project_room(pid)
    assert await b.barrier() == []


async def test_dead_peer_is_dropped_and_leaves(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(
        env={"LIVEBOARD_HEARTBEAT_INTERVAL": "0.3", "LIVEBOARD_HEARTBEAT_TIMEOUT": "0.3"}
    )
    async with Board(server) as board:
        alive, dead = board.user("alive"), board.user("dead")
        _, pid = await board.board(alive, dead)
        room = project_room(pid)
        observer = await subscribed(board, alive, room)  # answers pings (autoping)
        await join(observer, room)
        await observer.next("presence:update")
        zombie = await board.connect(dead, autoping=False)  # never answers a ping
        await zombie.subscribe(room)
        await join(zombie, room)
        joined_at = time.monotonic()
        assert (await observer.next())["joined"] == [dead]

        await zombie.expect_close(wait=3)
        assert await observer.next(wait=3) == update(room, [(alive, alive)], left=[dead])
        # dropped after at most interval + timeout (plus slack), not at once
        assert time.monotonic() - joined_at <= timeout(0.6 + 1.0)
        # a silent peer that answers pings survives several heartbeat rounds
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(observer.closed.wait(), 1.5)
        assert (await observer.request({"type": "ping"}))["type"] == "pong"
