"""OpenTelemetry tracing (issue 21, item 2), with the SDK's in-memory exporter.

Two instances of the real app run in this process on one PostgreSQL database and a private
``redis-server``, each with its own tracer provider (its own ``service.instance.id``) and
exporter. One ``PATCH`` through instance A, sent with a W3C ``traceparent``:

* A's trace holds the server span (a child of the caller's span), the write transaction and
  the publish below it, with route, status, request id, room and offset;
* A and B each have exactly one delivery span for the event, with its room and offset; A's
  links to the publish span; B's starts its own trace (the join is the room and offset).

Without the ``OTEL_*`` variables nothing of OpenTelemetry is imported (a subprocess that
cannot import it serves a request); with them but without the package, ``serve`` exits 2
with one line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from liveboard.events import RecordingPublisher
from liveboard.tracing import Tracing
from tests.support.app import AppClientFactory, make_settings
from tests.support.contract import project_room
from tests.support.redis_server import RedisServer
from tests.support.rest import Board
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import auth, make_token
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def _tracing(instance: str) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": "liveboard", "service.instance.id": instance})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _deliveries(spans: tuple[ReadableSpan, ...], room: str, offset: int) -> list[ReadableSpan]:
    return [
        span
        for span in _named(spans, "liveboard.deliver")
        if span.attributes is not None
        and span.attributes.get("liveboard.room") == room
        and span.attributes.get("liveboard.offset") == offset
    ]


async def _wait_for(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(5)
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_a_patch_is_traced_from_the_request_to_each_instance(
    module_postgres_url: str,
    redis_server: RedisServer,
    app_client_factory: AppClientFactory,
) -> None:
    tracing_a, spans_a = _tracing("instance-a")
    tracing_b, spans_b = _tracing("instance-b")
    settings = {"redis_url": redis_server.url}
    client_a = await app_client_factory(
        make_settings(module_postgres_url, instance_id="instance-a", **settings),
        publisher=RecordingPublisher(),
        tracing=tracing_a,
    )
    client_b = await app_client_factory(
        make_settings(module_postgres_url, instance_id="instance-b", **settings),
        tracing=tracing_b,
    )
    board = Board(client_a, RecordingPublisher())
    _, project, task = await board.setup()
    room = project_room(project["id"])
    ws_url = str(client_b.make_url("/ws/connect")).replace("http://", "ws://")
    watcher = await WsClient.connect(ws_url, make_token("alice"))
    try:
        await watcher.subscribe(room)
        spans_a.clear()
        spans_b.clear()

        status, updated = await board.call(
            "PATCH",
            f"/api/tasks/{task['id']}",
            body={"title": "traced"},
            headers={
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
                "X-Request-Id": "patch-1",
            },
        )
        assert status == 200, updated
        event = await watcher.next("task:updated")
        offset = event["offset"]
        await _wait_for(lambda: _deliveries(spans_b.get_finished_spans(), room, offset), "B")
    finally:
        await watcher.close()

    finished_a = spans_a.get_finished_spans()
    [server] = _named(finished_a, "PATCH /api/tasks/{tid}")
    [transaction] = _named(finished_a, "liveboard.transaction")
    [publish] = _named(finished_a, "liveboard.publish")

    # The request's span continues the caller's trace; the others are its children.
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes == {
        "http.request.method": "PATCH",
        "url.path": f"/api/tasks/{task['id']}",
        "http.route": "/api/tasks/{tid}",
        "liveboard.request_id": "patch-1",
        "client.address": "127.0.0.1",
        "http.response.status_code": 200,
    }
    assert server.status.status_code is StatusCode.UNSET
    for child in (transaction, publish):
        assert child.context.trace_id == server.context.trace_id
        assert child.parent is not None
        assert child.parent.span_id == server.context.span_id
    assert transaction.attributes == {"db.system.name": "postgresql"}
    assert transaction.end_time is not None
    assert publish.start_time is not None
    assert transaction.end_time <= publish.start_time  # published after the commit
    assert publish.kind is SpanKind.PRODUCER
    assert publish.attributes is not None
    assert publish.attributes["liveboard.room"] == room
    assert publish.attributes["liveboard.offset"] == offset
    assert publish.attributes["liveboard.event_count"] == 1

    # One delivery span per instance for the event, each with its room and offset.
    [local] = _deliveries(finished_a, room, offset)
    [remote] = _deliveries(spans_b.get_finished_spans(), room, offset)
    for delivery, instance in ((local, "instance-a"), (remote, "instance-b")):
        assert delivery.kind is SpanKind.CONSUMER
        assert delivery.parent is None  # a trace of its own
        assert delivery.resource.attributes["service.instance.id"] == instance
        assert delivery.attributes is not None
        assert delivery.attributes["liveboard.epoch"] == event["epoch"]
        assert delivery.attributes["liveboard.event_type"] == "task:updated"
    assert [link.context.span_id for link in local.links] == [publish.context.span_id]
    assert remote.links == ()
    assert remote.context.trace_id != server.context.trace_id


async def test_a_failed_request_is_marked_and_a_404_is_not(
    tmp_path: Path, app_client_factory: AppClientFactory
) -> None:
    tracing, spans = _tracing("solo")
    client = await app_client_factory(
        make_settings(f"sqlite:///{tmp_path / 'liveboard.db'}"), tracing=tracing
    )
    board = Board(client, RecordingPublisher())
    status, _ = await board.call("GET", "/api/tasks/nope")
    assert status == 404
    status, _ = await board.call("GET", "/no/such/route")
    assert status == 404
    [task, unrouted] = [span for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert task.name == "GET /api/tasks/{tid}"
    assert task.attributes is not None
    assert task.attributes["http.response.status_code"] == 404
    assert task.status.status_code is StatusCode.UNSET  # the client's mistake
    assert unrouted.name == "GET"
    assert unrouted.attributes is not None
    assert "http.route" not in unrouted.attributes
    # A read makes no write transaction; a write makes one, named after SQLite.
    await board.workspace()
    finished = spans.get_finished_spans()
    [post] = _named(finished, "POST /api/workspaces")
    children = [span for span in finished if span.parent is not None]
    assert not [s for s in children if s.parent and s.parent.span_id == task.context.span_id]
    [transaction] = [s for s in children if s.parent and s.parent.span_id == post.context.span_id]
    assert transaction.name == "liveboard.transaction"
    assert transaction.attributes == {"db.system.name": "sqlite"}


# The start of a process in which ``import opentelemetry`` fails.
NO_OPENTELEMETRY = textwrap.dedent(
    """
    import sys

    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    """
)
CLI = "from liveboard.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _without_opentelemetry(
    tmp_path: Path, args: list[str], env: dict[str, str], wait: float
) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "LIVEBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'liveboard.db'}",
        "LIVEBOARD_JWT_SECRET": "secret",
    }
    return subprocess.run(
        [sys.executable, "-c", NO_OPENTELEMETRY + CLI, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout(wait),
        check=False,
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tracing_asked_for_without_opentelemetry_is_one_line_and_exit_2(
    tmp_path: Path, fmt: str
) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "LIVEBOARD_LOG_FORMAT": fmt}
    result = _without_opentelemetry(tmp_path, ["serve", "--port", "0"], env, 60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert (record["level"], record["logger"]) == ("error", "liveboard")
        line = record["message"]
    else:
        assert line.startswith("liveboard: OTEL_* variables turn tracing on")
    assert "OpenTelemetry is not installed" in line
    assert "pip install 'liveboard[otel]'" in line


def test_liveboard_runs_without_opentelemetry(tmp_path: Path) -> None:
    """``migrate`` and a served request (through ``build_app``) need nothing of it."""
    result = _without_opentelemetry(tmp_path, ["migrate"], {}, 60)
    assert result.returncode == 0, result.stderr
    script = textwrap.dedent(
        """
        import asyncio, sys
        from aiohttp.test_utils import TestClient, TestServer
        from liveboard.app import DATABASE_KEY, build_app
        from liveboard.realtime.endpoint import NODE_KEY
        from liveboard.config import load_settings

        async def main():
            client = TestClient(TestServer(build_app(load_settings())))
            await client.start_server()
            try:
                answer = await client.get("/readyz")
                print(answer.status, answer.headers["X-Request-Id"] != "")
                # The untraced classes themselves: the hot path has nothing to check.
                print(type(client.app[NODE_KEY]).__name__, type(client.app[DATABASE_KEY]).__name__)
            finally:
                await client.close()
            print("opentelemetry" in sys.modules)

        asyncio.run(main())
        """
    )
    served = subprocess.run(
        [sys.executable, "-c", NO_OPENTELEMETRY + script],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "LIVEBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'liveboard.db'}",
            "LIVEBOARD_JWT_SECRET": "secret",
        },
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["200", "True", "Node", "Database", "False"]


async def test_a_server_process_traces_as_its_otel_variables_say(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    """The standard variables alone: ``console`` writes one JSON span per line on stdout (the
    log file here); the stop exports what is left."""
    server = server_factory(
        env={
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "board-under-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
            "LIVEBOARD_LOG_FORMAT": "json",
        }
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/api/workspaces",
            json={"name": "Traced"},
            headers={
                **auth("alice"),
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            },
        ) as answer,
    ):
        assert answer.status == 201
    assert server.terminate() == 0
    records = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    spans = [r for r in records if "context" in r and "resource" in r]
    [post] = [s for s in spans if s["name"] == "POST /api/workspaces"]
    assert post["context"]["trace_id"] == f"0x{CALLER_TRACE}"
    assert post["parent_id"] == f"0x{CALLER_SPAN}"
    assert post["attributes"]["http.response.status_code"] == 201
    # The request's log lines name its trace.
    [access] = [r for r in records if r.get("path") == "/api/workspaces"]
    assert (access["trace_id"], access["user_id"]) == (CALLER_TRACE, "alice")
    resource = post["resource"]["attributes"]
    assert resource["service.name"] == "board-under-test"
    assert resource["deployment.environment.name"] == "test"
    instance = next(r for r in records if "listening on" in r.get("message", ""))["instance"]
    assert resource["service.instance.id"] == instance
    [transaction] = [
        s
        for s in spans
        if s["name"] == "liveboard.transaction" and s["parent_id"] == post["context"]["span_id"]
    ]
    assert transaction["attributes"] == {"db.system.name": "sqlite"}
