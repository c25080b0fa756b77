"""The Python ``Board``'s optimistic changes against a real server (SQLite), through a TCP proxy.

* A move shows at once, pending; it stops being pending exactly when the board has applied the
  event its answer named (``Liveboard-Offset``), and not before, whatever arrives first.
* A rename made from a version someone else's rename has overtaken is refused (409): undone, the
  future raises, ``on_rollback`` gets a sentence, and the board shows the other title.
* Changes made while the server cannot be reached wait, then go out in order once it can, each
  applied once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from liveboard.client import ApiError, Board, ConnectionState, LiveboardClient
from liveboard.client.board import Rollback
from tests.integration.test_client_live import collect, sdk, setup_board
from tests.support.servers import LiveboardProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.timing import timeout
from tests.support.tokens import make_token

ServerFactory = Callable[..., LiveboardProcess]

pytestmark = pytest.mark.slow


async def test_a_move_is_pending_until_its_offset_is_applied(server_factory: ServerFactory) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    proxy = await TcpProxy("127.0.0.1", server.port, delayable=True).start()
    bob = sdk(server.url, make_token("bob"))
    try:
        card = await bob.create_task(pid, "Ship it")
        async with sdk(proxy.url("http", ""), make_token("alice")) as alice:
            board = await Board.open(alice, pid)
            await asyncio.wait_for(board.wait_for(lambda b: card.id in b.tasks), timeout(5))
            start = board.offset
            seen: list[tuple[int, bool, bool]] = []  # (offset, pending, answered) at each change

            def record(b: Board, _item: object) -> None:
                write = next((w for w in b.pending.writes if w.task_id == card.id), None)
                seen.append((b.offset, b.is_pending(card.id), write is None or write.answered))

            board.on_change(record)
            proxy.delay = 0.3  # the server's answers and events come 0.3 s late
            moved = board.move(card.id, "done")
            assert [t.id for t in board.columns()["done"]] == [card.id]  # shown at once
            assert board.is_pending(card.id)
            answer = await asyncio.wait_for(moved, timeout(10))
            assert answer is not None
            assert answer.status == "done"
            await asyncio.wait_for(board.wait_for(lambda b: not b.is_pending(card.id)), timeout(10))
            event_offset = start + 1
            assert board.offset >= event_offset
            # Pending exactly while the answer had not come or its offset was not applied yet.
            assert seen
            for offset, pending, answered in seen:
                assert pending == (not answered or offset < event_offset), seen
            assert board.tasks[card.id].status == "done"
            await board.aclose()
    finally:
        await bob.aclose()
        await proxy.aclose()


async def test_a_refused_rename_is_undone_with_a_sentence(server_factory: ServerFactory) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    proxy = await TcpProxy("127.0.0.1", server.port).start()
    bob = sdk(server.url, make_token("bob"))
    try:
        card = await bob.create_task(pid, "Draft")
        async with sdk(proxy.url("http", ""), make_token("alice")) as alice:
            board = await Board.open(alice, pid)
            await asyncio.wait_for(board.wait_for(lambda b: card.id in b.tasks), timeout(5))
            rollbacks: list[Rollback] = []
            board.on_rollback(rollbacks.append)
            proxy.cut()  # Alice's rename waits while Bob renames the same card
            renamed = board.rename(card.id, "Alice's title")
            assert board.columns()["todo"][0].title == "Alice's title"
            await bob.update_task(card.id, title="Bob's title")
            proxy.resume()
            with pytest.raises(ApiError) as refused:
                await asyncio.wait_for(renamed, timeout(15))
            assert refused.value.status == 409
            assert [r.message for r in rollbacks] == [
                "Someone else changed this card — your edit was undone."
            ]
            await asyncio.wait_for(
                board.wait_for(lambda b: b.columns()["todo"][0].title == "Bob's title"),
                timeout(10),
            )
            assert not board.is_pending(card.id)
            await board.aclose()
    finally:
        await bob.aclose()
        await proxy.aclose()


async def test_changes_made_offline_go_out_in_order_once_back(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    _, pid = await setup_board(server.url, "alice", "bob")
    proxy = await TcpProxy("127.0.0.1", server.port).start()
    bob = sdk(server.url, make_token("bob"))
    try:
        watch = await bob.subscribe(f"project:{pid}")
        alice: LiveboardClient
        async with sdk(proxy.url("http", ""), make_token("alice")) as alice:
            board = await Board.open(alice, pid)
            proxy.cut()
            await alice.wait_for_state(ConnectionState.RECONNECTING)
            created = [board.create_task(f"Idea {n}") for n in range(3)]
            first = board.columns()["todo"][0].id
            board.move(first, "done")
            board.move(first, "in_progress")
            board.rename(first, "Idea 0, refined")
            assert board.waiting == 6
            assert [t.title for t in board.columns()["in_progress"]] == ["Idea 0, refined"]
            await asyncio.sleep(0.5)  # attempts fail meanwhile; the writes wait
            assert board.waiting == 6
            proxy.resume()
            tasks = await asyncio.wait_for(asyncio.gather(*created), timeout(20))
            await asyncio.wait_for(board.wait_for(lambda b: not b.pending.writes), timeout(20))
            events = await collect(watch, 6)
            await board.aclose()
        ids = [t.id for t in tasks if t is not None]
        assert [
            (e.type, e.data.get("taskId", e.data.get("task", {}).get("id"))) for e in events
        ] == [
            ("task:created", ids[0]),
            ("task:created", ids[1]),
            ("task:created", ids[2]),
            ("task:moved", ids[0]),
            ("task:moved", ids[0]),
            ("task:updated", ids[0]),
        ]
        snapshot = await bob.get_snapshot(pid)
        assert sorted(t.title for t in snapshot.tasks) == ["Idea 0, refined", "Idea 1", "Idea 2"]
        assert {t.id: t.status for t in snapshot.tasks}[ids[0]] == "in_progress"
    finally:
        await bob.aclose()
        await proxy.aclose()
