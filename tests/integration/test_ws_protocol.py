"""The client → server messages of CONTRACT §4: subscribe/unsubscribe, ping, errors, limits.

Every error is answered with ``{type: "error", code, message, id?}`` and the connection stays
open (proved by a ``ping`` afterwards); direct replies echo the message's ``id``, string or
integer. Close codes: binary frame 1003, frame over ``LIVEBOARD_MAX_MESSAGE_BYTES`` 1009,
persistent flooding 1008 after ``rate_limited`` errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.board import Board
from tests.support.contract import project_room, workspace_room
from tests.support.servers import LiveboardProcess, start_server
from tests.support.wsclient import WsClient

MAX_SUBSCRIPTIONS = 3
MAX_MESSAGE_BYTES = 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveboardProcess]:
    process = start_server(
        tmp_path_factory,
        "ws-protocol",
        env={
            "LIVEBOARD_MAX_SUBSCRIPTIONS": str(MAX_SUBSCRIPTIONS),
            "LIVEBOARD_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        },
    )
    yield process
    process.kill()


def assert_error(message: dict[str, Any], code: str, message_id: Any = None) -> None:
    assert message["type"] == "error", message
    assert message["code"] == code, message
    assert isinstance(message["message"], str)
    assert message["message"]
    if message_id is not None:
        assert message["id"] == message_id
    else:
        assert "id" not in message or message["id"] is None


async def assert_open(client: WsClient) -> None:
    """The connection still works: a ping gets its pong."""
    await client.send({"type": "ping", "id": "alive"})
    assert await client.next() == {"type": "pong", "id": "alive"}


# ping


async def test_ping_pong_echoes_ids(board: Board) -> None:
    client = await board.connect(board.user("alice"))
    await client.send({"type": "ping", "id": "abc"})
    assert await client.next() == {"type": "pong", "id": "abc"}
    await client.send({"type": "ping", "id": 17})
    assert await client.next() == {"type": "pong", "id": 17}
    await client.send({"type": "ping"})
    pong = await client.next()
    assert pong["type"] == "pong"
    assert pong.get("id") is None


# subscribe / unsubscribe


async def test_subscribe_project_room(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    await board.task(owner, pid, "one")
    await board.task(owner, pid, "two")
    snapshot = await board.snapshot(owner, pid)
    client = await board.connect(owner)
    await client.send({"type": "subscribe", "room": project_room(pid), "id": "s1"})
    reply = await client.next()
    assert reply["type"] == "subscribed"
    assert reply["room"] == project_room(pid)
    assert reply["id"] == "s1"
    assert reply["offset"] == snapshot["offset"] == 2
    assert reply["epoch"] == snapshot["epoch"]
    assert isinstance(reply["epoch"], str)
    assert reply["epoch"]
    # live events follow, starting right after the reply's offset
    await board.task(owner, pid, "three")
    event = await client.next("task:created")
    assert event["offset"] == 3
    assert event["epoch"] == reply["epoch"]


async def test_subscribe_workspace_room(board: Board) -> None:
    owner = board.user("owner")
    wid = await board.workspace(owner)
    client = await board.connect(owner)
    await client.send({"type": "subscribe", "room": workspace_room(wid), "id": 5})
    reply = await client.next()
    assert reply["type"] == "subscribed"
    assert reply["room"] == workspace_room(wid)
    assert reply["id"] == 5
    assert isinstance(reply["offset"], int)
    assert reply["offset"] >= 0
    assert isinstance(reply["epoch"], str)
    await board.add_member(owner, wid, board.user("bob"))
    event = await client.next("member:added")
    assert event["offset"] == reply["offset"] + 1
    assert event["epoch"] == reply["epoch"]


async def test_member_can_subscribe(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    wid, pid = await board.board(owner, member)
    client = await board.connect(member)
    assert (await client.subscribe(project_room(pid)))["type"] == "subscribed"
    assert (await client.subscribe(workspace_room(wid)))["type"] == "subscribed"


async def test_resubscribe_same_room_same_reply(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    await board.task(owner, pid)
    client = await board.connect(owner)
    first = await client.subscribe(project_room(pid))
    second = await client.subscribe(project_room(pid))
    assert first["type"] == second["type"] == "subscribed"
    assert {k: v for k, v in first.items() if k != "id"} == {
        k: v for k, v in second.items() if k != "id"
    }
    # still one subscription: an event arrives once
    await board.task(owner, pid, "after")
    event = await client.next("task:created")
    assert event["data"]["task"]["title"] == "after"
    assert await client.barrier() == []


async def test_unsubscribe(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    await client.subscribe(project_room(pid))
    await client.send({"type": "unsubscribe", "room": project_room(pid), "id": "u1"})
    reply = await client.next()
    assert reply["type"] == "unsubscribed"
    assert reply["room"] == project_room(pid)
    assert reply["id"] == "u1"
    await client.send({"type": "unsubscribe", "room": project_room(pid), "id": 9})
    reply = await client.next()
    assert_error(reply, "not_subscribed", 9)
    # no more events from that room (a subscribed witness proves the event was sent)
    witness = await board.connect(owner)
    await witness.subscribe(project_room(pid))
    await board.task(owner, pid, "unseen")
    await witness.next("task:created")
    assert await client.barrier() == []


async def test_unsubscribe_never_subscribed(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    await client.send({"type": "unsubscribe", "room": project_room(pid), "id": "x"})
    assert_error(await client.next(), "not_subscribed", "x")
    await assert_open(client)


async def test_cleaning_up_rooms_never_subscribed_is_not_abuse(board: Board) -> None:
    """A client that unsubscribes (and leaves presence in) every room it might hold, on a page
    change or after a revocation, gets ``not_subscribed`` for each and stays connected: past
    the 30 refused messages that close an abusive connection with 1008."""
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    rooms = [f"project:prj_gone{i}" for i in range(40)] + [project_room(pid)] * 5
    for n, room in enumerate(rooms):
        await client.send({"type": "presence", "action": "leave", "room": room, "id": f"l{n}"})
        await client.send({"type": "unsubscribe", "room": room, "id": f"u{n}"})
    for n in range(len(rooms)):
        assert_error(await client.next(), "not_subscribed", f"l{n}")
        assert_error(await client.next(), "not_subscribed", f"u{n}")
    await assert_open(client)


async def test_refused_requests_still_count_as_abuse(board: Board) -> None:
    """The exception above is for undoing nothing: 40 subscribes to rooms one may not see
    (or presence joins without a subscription) are still persistent abuse."""
    client = await board.connect(board.user("prober"))
    for n in range(20):
        await client.send({"type": "subscribe", "room": f"project:prj_x{n}"})
        await client.send({"type": "presence", "action": "join", "room": f"project:prj_x{n}"})
    assert await client.expect_close() == 1008


async def test_forbidden_rooms_look_alike(board: Board) -> None:
    owner, stranger = board.user("owner"), board.user("stranger")
    wid, pid = await board.board(owner)
    client = await board.connect(stranger)
    replies: dict[str, dict[str, Any]] = {}
    rooms = {
        "foreign-project": project_room(pid),
        "foreign-workspace": workspace_room(wid),
        "missing-project": "project:prj_doesNotExist123",
        "missing-workspace": "workspace:ws_doesNotExist123",
    }
    for label, room in rooms.items():
        await client.send({"type": "subscribe", "room": room, "id": label})
        reply = await client.next()
        assert_error(reply, "forbidden", label)
        replies[label] = reply
    shapes = {frozenset(r) for r in replies.values()}
    assert len(shapes) == 1, replies
    # existence is not leaked: the texts differ at most by the room they name
    for kind in ("project", "workspace"):
        texts = {
            replies[label]["message"].replace(rooms[label], "ROOM")
            for label in (f"foreign-{kind}", f"missing-{kind}")
        }
        assert len(texts) == 1, replies
    await assert_open(client)
    # and the stranger gets no events of the foreign project
    witness = await board.connect(owner)
    await witness.subscribe(project_room(pid))
    await board.task(owner, pid)
    await witness.next("task:created")
    assert await client.barrier() == []


@pytest.mark.parametrize(
    "room",
    [
        "",
        "project:",
        "workspace:",
        "project",
        "team:abc",
        "project:a b",
        "project:abc/def",
        "Project:abc",
        "project:" + "a" * 129,
    ],
)
async def test_invalid_room(board: Board, room: str) -> None:
    client = await board.connect(board.user("alice"))
    await client.send({"type": "subscribe", "room": room, "id": "r"})
    assert_error(await client.next(), "invalid_room", "r")
    await client.send({"type": "unsubscribe", "room": room, "id": "u"})
    assert_error(await client.next(), "invalid_room", "u")
    await assert_open(client)


async def test_too_many_subscriptions(board: Board) -> None:
    owner = board.user("owner")
    wid = await board.workspace(owner)
    pids = [str((await board.project(owner, wid, f"p{i}"))["id"]) for i in range(MAX_SUBSCRIPTIONS)]
    client = await board.connect(owner)
    rooms = [project_room(pid) for pid in pids]
    for room in rooms:
        assert (await client.subscribe(room))["type"] == "subscribed"
    await client.send({"type": "subscribe", "room": workspace_room(wid), "id": "over"})
    assert_error(await client.next(), "too_many_subscriptions", "over")
    # resubscribing a room already held is not a new subscription
    assert (await client.subscribe(rooms[0]))["type"] == "subscribed"
    await assert_open(client)
    # the refused room sends nothing
    witness = await board.connect(owner)
    await witness.subscribe(workspace_room(wid))
    await board.project(owner, wid, "another")
    await witness.next("project:created")
    assert await client.barrier() == []
    # after an unsubscribe there is room again
    assert (await client.request({"type": "unsubscribe", "room": rooms[1]}))[
        "type"
    ] == "unsubscribed"
    assert (await client.subscribe(workspace_room(wid)))["type"] == "subscribed"


# malformed messages


@pytest.mark.parametrize(
    ("raw", "code", "message_id"),
    [
        ("{not json", "bad_json", None),
        ("", "bad_json", None),
        ('{"type": "ping"', "bad_json", None),
        ("[1, 2, 3]", "invalid_message", None),
        ('"ping"', "invalid_message", None),
        ("42", "invalid_message", None),
        ("null", "invalid_message", None),
        ('{"room": "project:abc"}', "invalid_message", None),
        ('{"type": 5, "id": "t"}', "invalid_message", "t"),
        ('{"type": "subscribe", "id": "m"}', "invalid_message", "m"),
        ('{"type": "subscribe", "room": 12, "id": 3}', "invalid_message", 3),
        (
            '{"type": "subscribe", "room": "project:abc", "since": {"offset": -1, "epoch": "e"}'
            ', "id": "neg"}',
            "invalid_message",
            "neg",
        ),
        (
            '{"type": "subscribe", "room": "project:abc", "since": {"offset": "1", "epoch": "e"}'
            ', "id": "str"}',
            "invalid_message",
            "str",
        ),
        ('{"type": "presence", "action": "dance", "room": "project:a"}', "invalid_message", None),
        ('{"type": "refresh", "id": "r"}', "invalid_message", "r"),
        ("[" * 400 + "]" * 400, "invalid_message", None),
        ('{"type": "ping", "id": ' + "[" * 300 + "]" * 300 + "}", "invalid_message", None),
        ('{"type": "ping", "id": true}', "invalid_message", None),
        ('{"type": "ping", "id": 1.5}', "invalid_message", None),
        ('{"type": "dance"}', "unknown_type", None),
        ('{"type": "dance", "id": "d"}', "unknown_type", "d"),
        ('{"type": "dance", "id": 77}', "unknown_type", 77),
        ('{"type": "SUBSCRIBE", "room": "project:abc"}', "unknown_type", None),
    ],
)
async def test_malformed_message(
    board: Board, raw: str, code: str, message_id: str | int | None
) -> None:
    client = await board.connect(board.user("alice"))
    await client.send_str(raw)
    assert_error(await client.next(), code, message_id)
    await assert_open(client)


async def test_many_different_errors_keep_connection(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    sequence = [
        ("{oops", "bad_json"),
        ("[]", "invalid_message"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"type": "subscribe", "room": "nope"}', "invalid_room"),
        ('{"type": "subscribe", "room": "project:prj_missing"}', "forbidden"),
        (json.dumps({"type": "unsubscribe", "room": project_room(pid)}), "not_subscribed"),
        (
            json.dumps({"type": "presence", "action": "join", "room": project_room(pid)}),
            "not_subscribed",
        ),
        ('{"type": "refresh", "token": "garbage"}', "unauthorized"),
    ]
    for raw, code in sequence:
        await client.send_str(raw)
        assert_error(await client.next(), code)
    await assert_open(client)
    # and it still works for real
    reply = await client.subscribe(project_room(pid))
    assert reply["type"] == "subscribed"
    await board.task(owner, pid)
    assert (await client.next("task:created"))["room"] == project_room(pid)


# close codes


async def test_binary_frame_closes_1003(board: Board) -> None:
    client = await board.connect(board.user("alice"))
    await client.ws.send_bytes(b'{"type": "ping"}')
    assert await client.expect_close() == 1003


async def test_message_at_limit_is_accepted(board: Board) -> None:
    client = await board.connect(board.user("alice"))
    base = json.dumps({"type": "ping", "id": ""})
    message_id = "x" * (MAX_MESSAGE_BYTES - len(base) - 8)
    await client.send({"type": "ping", "id": message_id})
    assert await client.next() == {"type": "pong", "id": message_id}


async def test_oversized_frame_closes_1009(board: Board) -> None:
    client = await board.connect(board.user("alice"))
    await client.send({"type": "ping", "id": "x" * (MAX_MESSAGE_BYTES + 100)})
    assert await client.expect_close() == 1009


async def test_flood_is_rate_limited_then_closed_1008(board: Board) -> None:
    client = await board.connect(board.user("flooder"))

    async def flood() -> int:
        sent = 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not client.closed.is_set() and sent < 20_000:
                await client.send_str('{"type": "ping"}')
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
        return sent

    sender = asyncio.create_task(flood())
    pongs = 0
    limited = 0
    while True:
        try:
            message = await client.next(wait=10)
        except Exception:
            break
        if message["type"] == "pong":
            pongs += 1
        else:
            assert_error(message, "rate_limited")
            limited += 1
    await sender
    assert pongs > 0
    assert limited > 0
    assert await client.expect_close() == 1008
