"""The example integration in ``examples/external-app`` (Node.js and ``pg``; issue 18 item 7).

A real ``liveboard serve`` on its own PostgreSQL database; the example's ``cli.js`` runs as a
separate Node.js process against the same database, with its own ``comments`` table in
``public``, and no liveboard code:

* ``add``: the comment row and ``liveboard_emit(…, 'comment:added', …)`` in one transaction; a
  subscriber gets the event at the offset the app was told, with the comment's data;
* ``add --roll-back``: emits, then fails before COMMIT: no row, no event, no offset consumed;
* ``list``: the comments and the room's position read in one snapshot agree with the log;
* ``add --http``: the comment row, then ``POST /api/rooms/{room}/events`` with an API key and
  the comment's ``Idempotency-Key``; a retry with that key publishes nothing new.

The npm dependencies come from the example's lock (``npm ci``, wired into ``make test``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.board import Board
from tests.support.contract import project_room
from tests.support.postgres import fresh_postgres_database
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "external-app"


@pytest.fixture(scope="module", name="database")
def database_fixture(postgres_server_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_server_url, prefix="liveboard_example") as url:
        yield url


@pytest.fixture(scope="module", name="server")
def server_fixture(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveboardProcess]:
    directory = tmp_path_factory.mktemp("external_app")
    process = LiveboardProcess(database_url=database, log_path=directory / "server.log").start()
    yield process
    process.kill()


def node() -> str:
    found = shutil.which("node")
    assert found is not None, "Node.js (node) must be on PATH for the example's test"
    assert (EXAMPLE / "node_modules" / "pg").is_dir(), "run `make test` (it runs npm ci there)"
    return found


async def example(
    database: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``node cli.js ARGS`` against ``database`` (``env``: more of its environment)."""
    return await asyncio.to_thread(
        subprocess.run,
        [node(), "cli.js", *args],
        cwd=EXAMPLE,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
    )


def answer(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result
    return json.loads(result.stdout)


async def test_a_comment_and_its_event_commit_together(
    server: LiveboardProcess, database: str
) -> None:
    assert answer(await example(database, "migrate")) == {"migrated": True}
    async with Board(server) as board:
        owner = board.user("owner")
        _, pid = await board.board(owner)
        task = await board.task(owner, pid, "discussed")
        room = project_room(pid)
        client = await board.connect(owner)
        subscribed = await client.subscribe(room)

        added = answer(
            await example(
                database, "add", "--project", pid, "--task", task["id"], "--body", "Looks good"
            )
        )
        assert added["offset"] == subscribed["offset"] + 1
        event = await client.next("comment:added", wait=5)
        assert event["offset"] == added["offset"]
        assert event["userId"] is None
        assert event["data"]["commentId"] == added["commentId"]
        assert event["data"]["taskId"] == task["id"]
        assert event["data"]["body"] == "Looks good"

        refused = await example(
            database, "add", "--project", pid, "--task", task["id"], "--body", "no", "--roll-back"
        )
        assert refused.returncode == 1
        assert "rolled back on purpose" in refused.stderr
        # An event of liveboard's own comes next, at the very next offset: nothing in between.
        await board.patch(owner, task["id"], {"title": "discussed twice"})
        after = await client.next(wait=5)  # the very next message
        assert (after["type"], after["offset"]) == ("task:updated", added["offset"] + 1)

        listed = answer(await example(database, "list", "--project", pid))
        assert [c["body"] for c in listed["comments"]] == ["Looks good"]
        assert listed["offset"] == after["offset"]
        assert listed["epoch"] == event["epoch"]


async def test_a_comment_for_a_project_liveboard_does_not_know_is_refused(
    server: LiveboardProcess, database: str
) -> None:
    answer(await example(database, "migrate"))
    result = await example(database, "add", "--project", "nope", "--task", "t", "--body", "x")
    assert result.returncode == 1
    assert "liveboard_emit: no room 'project:nope'" in result.stderr
    listed = await example(database, "list", "--project", "nope")
    assert listed.returncode == 1
    assert "liveboard_position: no room 'project:nope'" in listed.stderr


API_KEY = "example-app-key-0123456789abcdef"


@pytest.fixture(scope="module", name="keyed_server")
def keyed_server_fixture(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveboardProcess]:
    """A second instance on the same database, taking the example's API key."""
    directory = tmp_path_factory.mktemp("external_app_http")
    process = LiveboardProcess(
        database_url=database,
        log_path=directory / "server.log",
        env={"LIVEBOARD_API_KEYS": API_KEY},
    ).start()
    yield process
    process.kill()


async def test_the_http_variant_publishes_once_per_comment(
    keyed_server: LiveboardProcess, database: str
) -> None:
    answer(await example(database, "migrate"))
    async with Board(keyed_server) as board:
        owner = board.user("owner")
        _, pid = await board.board(owner)
        task = await board.task(owner, pid, "discussed over HTTP")
        room = project_room(pid)
        client = await board.connect(owner)
        subscribed = await client.subscribe(room)
        env = {"LIVEBOARD_URL": keyed_server.url, "LIVEBOARD_API_KEY": API_KEY}
        added = answer(
            await example(
                database,
                "add",
                "--http",
                "--project",
                pid,
                "--task",
                task["id"],
                "--body",
                "Posted",
                env=env,
            )
        )
        assert added["offset"] == subscribed["offset"] + 1
        event = await client.next("comment:added", wait=5)
        assert (event["offset"], event["userId"]) == (added["offset"], None)
        assert event["data"]["commentId"] == added["commentId"]
        # A retry with the comment's key (an answer lost on the way) publishes nothing new. A
        # retry repeats the request's bytes: JavaScript's JSON.stringify of the example's object
        # (its key order, no spaces), rebuilt here.
        headers = {
            "Authorization": f"apikey {API_KEY}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"comment-{added['commentId']}",
        }
        order = ("taskId", "commentId", "author", "body", "createdAt")
        data = {key: event["data"][key] for key in order}
        body = json.dumps({"type": "comment:added", "data": data}, separators=(",", ":"))
        async with board.http.post(
            f"{keyed_server.url}/api/rooms/{room}/events", data=body.encode(), headers=headers
        ) as response:
            assert response.status == 201
            assert (await response.json())["offset"] == added["offset"]
        await board.patch(owner, task["id"], {"title": "after the retry"})
        after = await client.next(wait=5)
        assert (after["type"], after["offset"]) == ("task:updated", added["offset"] + 1)
