"""Setting up rooms across a cluster's instances: a shared board, subscribers, presence."""

from __future__ import annotations

import asyncio

from tests.support.board import Board
from tests.support.cluster import Cluster
from tests.support.wsclient import WsClient


async def shared_board(cluster: Cluster, owner: str, *members: str) -> tuple[str, str]:
    """A workspace (owner + members) with one project, made through instance 1: (wid, pid).

    Members are added concurrently, spread over the instances (each has its own REST rate
    limiter, 200 calls of burst per user).
    """
    first = cluster.boards[0]
    wid = await first.workspace(owner)
    semaphore = asyncio.Semaphore(16)

    async def add(index: int, member: str) -> None:
        async with semaphore:
            board = cluster.boards[index % len(cluster.boards)]
            await board.add_member(owner, wid, member)

    await asyncio.gather(*(add(i, m) for i, m in enumerate(members)))
    project = await first.project(owner, wid)
    return wid, str(project["id"])


async def subscriber(board: Board, user: str, room: str, *, name: str | None = None) -> WsClient:
    """A connection of ``user`` on ``board``'s instance, subscribed to ``room``."""
    client = await board.connect(user, name=name)
    reply = await client.subscribe(room)
    assert reply["type"] == "subscribed", reply
    return client


async def join_presence(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "join", "room": room})


async def leave_presence(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "leave", "room": room})
