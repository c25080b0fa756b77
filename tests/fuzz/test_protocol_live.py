"""Live protocol fuzzing: hostile messages and raw frames against a real ``liveboard serve``.

``test_live_fuzz`` runs seeded, reproducible episodes, each on its own connection (raw TCP, our
own frame encoder, ``tests/support/rawws.py``), many at once:

* ``messages``: 1-24 client messages, valid or mutated (``generators.MessageGen``), each
  carried by frames that must mean the same thing (fragmented with control frames in between,
  non-minimal lengths, any mask key), sometimes dribbled a few bytes at a time; then a ``ping``
  barrier. The direct replies must be exactly those the oracle predicts, in order, ids echoed,
  every error code from CONTRACT §4's closed list, and the connection still open. Then the
  episode ends with a polite close, an RFC 6455 violation (``generators.violation``: the close
  code must be the expected one), chaos (only the general invariants), a drop (RST or FIN,
  mid-frame or not), or a stall mid-frame (the heartbeat must drop it).
* ``upgrade``: a hostile handshake; refused with an HTTP error in the contract's shape.

Meanwhile a watcher subscribed to the project room receives every event of a steady stream of
REST mutations: gap-free, complete, in order. After every batch the server must be alive and
healthy; at the end its connection, subscription, room and presence gauges are back to the
watcher's own, its RSS grew less than ``RSS_BOUND_MIB`` after warm-up, and its log holds no
traceback.

Knobs (environment): ``LIVEBOARD_FUZZ_COUNT`` inputs to send (default 4000: ~20 s; ``make
fuzz`` uses 60000), ``LIVEBOARD_FUZZ_SEED`` (default fixed), ``LIVEBOARD_FUZZ_EPISODE`` to replay
one episode alone. A failure lists each kind of problem once with its episode numbers; replay
one with ``LIVEBOARD_FUZZ_SEED=<seed> LIVEBOARD_FUZZ_EPISODE=<n>``.

The deterministic tests below pin each RFC 6455 rule and the size limit on a fresh connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.fuzz.generators import (
    ALLOWED_CLOSE_CODES,
    DIRECT_REPLIES,
    ERROR_CODES,
    UNSOLICITED,
    ConnectionModel,
    Expected,
    FuzzWorld,
    MessageGen,
    chaos,
    good_close,
    violation,
    wrap,
)
from tests.support.frames import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    encode_frame,
    text,
)
from tests.support.probes import healthy, metrics, rss_kib
from tests.support.rawws import Closed, HandshakeRefusedError, RawWs
from tests.support.rfc_cases import PING, RFC_CASES
from tests.support.servers import LiveboardProcess, start_server
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET, make_token
from tests.support.wsclient import WsClient

FUZZ_COUNT = int(os.environ.get("LIVEBOARD_FUZZ_COUNT", "4000"))
FUZZ_SEED = int(os.environ.get("LIVEBOARD_FUZZ_SEED", "20261126"))
ONLY_EPISODE = os.environ.get("LIVEBOARD_FUZZ_EPISODE")
CONCURRENCY = 12
BATCH = 48  # episodes between two health checks
HEARTBEAT_INTERVAL = 1.5
HEARTBEAT_TIMEOUT = 1.5
MAX_MESSAGE_BYTES = 65536
RSS_BOUND_MIB = 48
MAX_ERROR_TEXT = 1024
EPISODE_LIMIT = 30.0
EPISODE_KINDS = ["messages", "upgrade"]
ENDINGS = ["polite", "violation", "chaos", "drop", "stall", "none"]
ENDING_WEIGHTS = [25, 40, 8, 15, 2, 10]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveboardProcess]:
    process = start_server(
        tmp_path_factory,
        "fuzz-protocol",
        env={
            "LIVEBOARD_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
            "LIVEBOARD_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "LIVEBOARD_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        },
    )
    yield process
    process.kill()


# ------------------------------------------------------------------------------------ set-up


class Rest:
    def __init__(self, server: LiveboardProcess) -> None:
        self.url = server.url
        self.http = aiohttp.ClientSession()

    async def call(self, method: str, path: str, user: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {make_token(user)}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            data = await r.text()
            if r.status >= 300:
                raise AssertionError(f"{method} {path}: HTTP {r.status} {data}")
            return json.loads(data) if data else None


async def make_world(rest: Rest, tag: str) -> FuzzWorld:
    owner = f"fz-owner-{tag}"
    members = [owner] + [f"fz-m{i}-{tag}" for i in range(6)]
    strangers = [f"fz-s{i}-{tag}" for i in range(2)]
    ws = await rest.call("POST", "/api/workspaces", owner, {"name": "fuzz"})
    for user in members[1:]:
        await rest.call("POST", f"/api/workspaces/{ws['id']}/members", owner, {"userId": user})
    project = await rest.call("POST", f"/api/workspaces/{ws['id']}/projects", owner, {"name": "p"})
    other = f"fz-other-{tag}"
    foreign_ws = await rest.call("POST", "/api/workspaces", other, {"name": "foreign"})
    foreign = await rest.call(
        "POST", f"/api/workspaces/{foreign_ws['id']}/projects", other, {"name": "f"}
    )
    snapshot = await rest.call("GET", f"/api/projects/{project['id']}/tasks", owner)
    now = int(time.time())
    tokens = {f"self:{u}": make_token(u) for u in members + strangers}
    tokens.update(
        {
            "expired": make_token(owner, ttl=-60),
            "garbage": "not-a-jwt",
            "empty": "",
            "huge": "a" * 20_000,
            "alg-none": jwt.encode({"sub": owner, "exp": now + 600}, None, algorithm="none"),  # type: ignore[arg-type]  # ("none" takes no key)
            "wrong-key": jwt.encode(
                {"sub": owner, "exp": now + 600}, "another-secret-0123456789abcdef!!", "HS256"
            ),
            "no-sub": jwt.encode({"exp": now + 600}, TEST_SECRET, "HS256"),
            "other-user": make_token(other),
        }
    )
    return FuzzWorld(
        project_room=f"project:{project['id']}",
        workspace_room=f"workspace:{ws['id']}",
        foreign_rooms=[
            f"project:{foreign['id']}",
            f"workspace:{foreign_ws['id']}",
            "project:prj_doesNotExist",
            "workspace:ws_doesNotExist",
        ],
        epoch=str(snapshot["epoch"]),
        tokens=tokens,
        members=members,
        strangers=strangers,
    )


# ------------------------------------------------------------------------------------ episodes


@dataclass
class Outcome:
    index: int
    kind: str
    inputs: int = 0
    ending: str = ""
    detail: str = ""
    category: str = ""
    close: int | str | None = None
    problems: list[str] = field(default_factory=list)
    error_codes: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)


def _matches(reply: dict[str, Any], expected: Expected) -> bool:
    kind, code, message_id = expected
    if reply.get("type") != kind:
        return False
    if kind == "error" and reply.get("code") != code:
        return False
    got = reply.get("id")
    return type(got) is type(message_id) and got == message_id


def _check_reply_shape(reply: Any, outcome: Outcome) -> None:
    if not isinstance(reply, dict) or not isinstance(reply.get("type"), str):
        outcome.problems.append(f"reply is not a typed object: {str(reply)[:200]}")
        return
    kind = reply["type"]
    if kind not in DIRECT_REPLIES and kind not in UNSOLICITED:
        outcome.problems.append(f"unexpected message type {kind!r}: {str(reply)[:200]}")
    if kind == "error":
        outcome.error_codes[str(reply.get("code"))] += 1
        if reply.get("code") not in ERROR_CODES:
            outcome.problems.append(f"error code outside the contract: {reply.get('code')!r}")
        message = reply.get("message")
        if not isinstance(message, str) or not message:
            outcome.problems.append(f"error without a message: {reply}")
        elif len(message) > MAX_ERROR_TEXT:
            outcome.problems.append(f"error message of {len(message)} characters")


async def _send(ws: RawWs, frames: list[bytes], rng: random.Random) -> None:
    data = b"".join(frames)
    if rng.random() < 0.1:  # dribble the start a few bytes at a time
        head, data = data[:1500], data[1500:]
        at = 0
        while at < len(head):
            step = rng.randint(1, 40)
            ws.send_raw(head[at : at + step])
            at += step
            await ws.drain()
            await asyncio.sleep(0)
    ws.send_raw(data)
    await ws.drain()


async def _collect_until(
    ws: RawWs, barrier: str, outcome: Outcome, wait: float
) -> tuple[list[dict[str, Any]], int, Closed | None]:
    """Direct replies up to the barrier's pong; pong frames seen; the close if it came first."""
    direct: list[dict[str, Any]] = []
    pong_frames = 0
    while True:
        message = await ws.next_message(wait)
        if isinstance(message, Closed):
            return direct, pong_frames, message
        _check_reply_shape(message, outcome)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "<pong frame>":
            pong_frames += 1
        elif kind in DIRECT_REPLIES and not (kind == "unsubscribed" and "reason" in message):
            direct.append(message)
            if kind == "pong" and message.get("id") == barrier:
                return direct, pong_frames, None


async def _read_to_close(ws: RawWs, outcome: Outcome, wait: float) -> Closed | None:
    """Messages until the close (checked for shape); None if still open after ``wait``."""
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            message = await ws.next_message(remaining)
        except TimeoutError:
            return None
        if isinstance(message, Closed):
            return message
        _check_reply_shape(message, outcome)
        if isinstance(message, dict) and message.get("type") in ("pong", "refreshed"):
            outcome.problems.append(f"reply after a violation: {str(message)[:120]}")


async def message_episode(
    index: int, rng: random.Random, world: FuzzWorld, server: LiveboardProcess
) -> Outcome:
    outcome = Outcome(index, "messages")
    members = world.members
    user = rng.choice(members + members + world.strangers)
    model = ConnectionModel(user, user in members, world)
    gen = MessageGen(rng, world, user)
    ws = await RawWs.open(
        "127.0.0.1",
        server.port,
        world.tokens[f"self:{user}"],
        query_token=rng.random() < 0.3,
        path=rng.choice(["/ws/connect", "/ws"]),
        # One episode in four on aiohttp's path (an upgrade after a keep-alive request): the
        # oracle holds on both. From the index, not the rng, so that the inputs stay the same.
        after_a_request=index % 4 == 3,
    )
    try:
        connected = await ws.next_message(timeout(5))
        if not (isinstance(connected, dict) and connected.get("type") == "connected"):
            outcome.problems.append(f"first message is not connected: {connected}")
            return outcome
        if connected.get("userId") != user:
            outcome.problems.append(f"connected as {connected.get('userId')}, not {user}")
        frames: list[bytes] = []
        expected: list[Expected] = []
        pings = 0
        errors = 0
        sent: list[str] = []
        for _ in range(rng.randint(1, 24)):
            for _attempt in range(10):
                message, how = gen.text()
                data = message.encode()
                if len(data) >= MAX_MESSAGE_BYTES:
                    continue
                probe = ConnectionModel(user, model.member, world, set(model.subscriptions))
                reply = probe.expect(message)
                if reply is not None and reply[0] == "error" and errors >= 20:
                    continue  # stay clear of the abuse limit (30 invalid messages): 1008
                model.subscriptions = probe.subscriptions
                break
            else:
                continue
            if reply is not None:
                expected.append(reply)
                errors += reply[0] == "error"
            carried, pinged, wrapping = wrap(rng, data)
            frames += carried
            pings += pinged
            outcome.inputs += len(carried)
            outcome.mutations[how] += 1
            sent.append(f"{how}/{wrapping}: {message[:160]!r}")
        barrier = f"barrier-{index}"
        frames.append(text({"type": "ping", "id": barrier}))
        expected.append(("pong", None, barrier))
        outcome.inputs += 1
        await _send(ws, frames, rng)
        try:
            direct, pong_frames, closed = await _collect_until(ws, barrier, outcome, timeout(15))
        except TimeoutError:
            outcome.problems.append("no barrier pong within 15 s")
            return outcome
        if closed is not None:
            outcome.problems.append(f"closed ({closed.code}) before the barrier: {sent[-3:]}")
            outcome.close = closed.code
            return outcome
        if pong_frames != pings:
            outcome.problems.append(f"{pings} ping frames, {pong_frames} pong frames")
        if len(direct) != len(expected) or not all(
            _matches(r, e) for r, e in zip(direct, expected, strict=False)
        ):
            got = [(r.get("type"), r.get("code"), r.get("id")) for r in direct]
            first = next(
                (
                    i
                    for i, (r, e) in enumerate(zip(direct, expected, strict=False))
                    if not _matches(r, e)
                ),
                min(len(direct), len(expected)),
            )
            outcome.problems.append(
                "replies differ from the oracle at #"
                f"{first}: expected {expected[first : first + 2]}, got {got[first : first + 2]}"
                f"; message: {sent[first] if first < len(sent) else 'barrier'}"
            )
        await end_episode(ws, rng, outcome)
    finally:
        ws.abort()
    return outcome


async def end_episode(ws: RawWs, rng: random.Random, outcome: Outcome) -> None:
    ending = rng.choices(ENDINGS, ENDING_WEIGHTS)[0]
    outcome.ending = ending
    if ending == "polite":
        ws.send_raw(good_close(rng))
        outcome.inputs += 1
        closed = await _read_to_close(ws, outcome, timeout(5))
        outcome.close = "open" if closed is None else closed.code
        if closed is None or closed.code not in ALLOWED_CLOSE_CODES:
            outcome.problems.append(f"polite close answered with {outcome.close}")
    elif ending == "violation":
        v = violation(rng)
        outcome.detail, outcome.category = v.name, v.kind
        ws.send_raw(b"".join(v.frames))
        outcome.inputs += len(v.frames)
        closed = await _read_to_close(ws, outcome, timeout(3))
        outcome.close = "open" if closed is None else closed.code
        if closed is None or closed.code not in v.expect:
            outcome.problems.append(
                f"violation '{v.name}' answered with {outcome.close}, expected {sorted(v.expect)}"
            )
    elif ending == "chaos":
        name, data = chaos(rng)
        outcome.detail, outcome.category = name, name.split(" at byte")[0]
        ws.send_raw(data)
        outcome.inputs += 1
        closed = await _read_to_close(ws, outcome, timeout(1))
        outcome.close = "open" if closed is None else closed.code
        if closed is not None and closed.code not in (*ALLOWED_CLOSE_CODES, None):
            outcome.problems.append(f"chaos '{name}' answered with {closed.code}")
        if closed is not None and closed.code == 1011:
            outcome.problems.append(f"chaos '{name}' caused an internal error (1011)")
    elif ending in ("drop", "stall"):
        frame = encode_frame(OP_TEXT, b'{"type":"ping","id":"never"}' + b" " * 300)
        cut = rng.randint(1, len(frame) - 1)
        ws.send_raw(frame[:cut])
        outcome.inputs += 1
        outcome.detail = f"after {cut} bytes of a frame"
        if ending == "drop":
            await ws.drain()
            if rng.random() < 0.5:
                ws.abort()
            else:
                ws.writer.close()
            outcome.close = "dropped"
            return
        # stalled mid-frame, answering nothing: the heartbeat must drop it
        deadline = HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT + timeout(5)
        started = time.monotonic()
        while True:
            remaining = deadline - (time.monotonic() - started)
            try:
                message = await ws.next_message(max(0.01, remaining), autopong=False)
            except TimeoutError:
                outcome.problems.append(f"a stalled peer was not dropped within {deadline:.1f}s")
                outcome.close = "open"
                return
            if isinstance(message, Closed):
                outcome.close = message.code if message.code is not None else "aborted"
                return
    else:
        outcome.close = "client left"


UPGRADES: list[tuple[str, dict[str, str | None], str, frozenset[int]]] = [
    # name, header changes (None removes), token position, acceptable statuses
    ("no token", {}, "none", frozenset({401})),
    ("garbage token", {}, "garbage", frozenset({401})),
    ("expired token", {}, "expired", frozenset({401})),
    ("alg none token", {}, "alg-none", frozenset({401})),
    ("wrong key token", {}, "wrong-key", frozenset({401})),
    ("token without sub", {}, "no-sub", frozenset({401})),
    ("basic auth", {"Authorization": "Basic Zm9vOmJhcg=="}, "none", frozenset({401})),
    ("foreign origin", {"Origin": "http://evil.example"}, "valid", frozenset({403})),
    ("null origin", {"Origin": "null"}, "valid", frozenset({403})),
    ("no key", {"Sec-WebSocket-Key": None}, "valid", frozenset({400})),
    ("short key", {"Sec-WebSocket-Key": "c2hvcnQ="}, "valid", frozenset({400})),
    ("bad version", {"Sec-WebSocket-Version": "abc"}, "valid", frozenset({400, 426})),
    ("no upgrade", {"Upgrade": None, "Connection": None}, "valid", frozenset({400})),
    ("h2c upgrade", {"Upgrade": "h2c"}, "valid", frozenset({400})),
]


async def upgrade_episode(
    index: int, rng: random.Random, world: FuzzWorld, server: LiveboardProcess
) -> Outcome:
    outcome = Outcome(index, "upgrade", inputs=1)
    name, changes, token_kind, statuses = rng.choice(UPGRADES)
    outcome.detail = outcome.category = name
    headers: dict[str, str | None] = {
        "Host": f"127.0.0.1:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(rng.randbytes(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if token_kind != "none":
        token = world.tokens[f"self:{world.members[0]}" if token_kind == "valid" else token_kind]
        headers["Authorization"] = f"Bearer {token}"
    headers.update(changes)
    request = "GET /ws/connect HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if v is not None
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write((request + "\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
        status = int(head.split()[1])
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":")[1])
        body = await asyncio.wait_for(reader.readexactly(length), timeout(5))
    finally:
        writer.close()
    outcome.close = f"http {status}"
    if status not in statuses:
        outcome.problems.append(f"upgrade '{name}' answered {status}, expected {set(statuses)}")
        return outcome
    try:
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError, AssertionError):
        outcome.problems.append(f"upgrade '{name}': body not in the contract shape: {body[:200]!r}")
    return outcome


async def run_episode(index: int, world: FuzzWorld, server: LiveboardProcess) -> Outcome:
    rng = random.Random(f"{FUZZ_SEED}:{index}")
    kind = rng.choices(EPISODE_KINDS, [19, 1])[0]
    episode = upgrade_episode if kind == "upgrade" else message_episode

    async def guarded() -> Outcome:
        try:
            return await episode(index, rng, world, server)
        except HandshakeRefusedError as exc:
            return Outcome(index, kind, problems=[f"upgrade refused: {exc}"])
        except (OSError, asyncio.IncompleteReadError) as exc:  # TimeoutError included
            return Outcome(index, kind, problems=[f"connection failed or timed out: {exc!r}"])

    try:
        return await asyncio.wait_for(guarded(), timeout(EPISODE_LIMIT))
    except TimeoutError:
        return Outcome(index, kind, problems=[f"episode still running after {EPISODE_LIMIT}s"])


# ------------------------------------------------------------------------------------ watcher


class Producer:
    """REST mutations in the project room at a steady pace; counts the events they owe.

    A change that changes nothing (a move to where the task already is) owes no event: a task's
    ``version`` says whether it changed.
    """

    def __init__(self, rest: Rest, world: FuzzWorld) -> None:
        self.rest = rest
        self.user = world.members[0]
        self.pid = world.project_room.removeprefix("project:")
        self.events = 0
        self.versions: dict[str, int] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        rng = random.Random(FUZZ_SEED)
        while not self.stop.is_set():
            roll = rng.random()
            tids = sorted(self.versions)
            if roll < 0.5 or len(tids) < 3:
                path, body = f"/api/projects/{self.pid}/tasks", {"title": "t"}
                task = await self.rest.call("POST", path, self.user, body)
            elif roll < 0.9:
                tid = rng.choice(tids)
                if roll < 0.75:
                    method, path, body = "PATCH", f"/api/tasks/{tid}", {"title": f"{rng.random()}"}
                else:
                    status = rng.choice(["todo", "in_progress", "done"])
                    method, path, body = "POST", f"/api/tasks/{tid}/move", {"toStatus": status}
                task = await self.rest.call(method, path, self.user, body)
            else:
                tid = rng.choice(tids)
                await self.rest.call("DELETE", f"/api/tasks/{tid}", self.user)
                del self.versions[tid]
                task = None
            if task is None or self.versions.get(task["id"]) != task["version"]:
                self.events += 1
            if task is not None:
                self.versions[task["id"]] = task["version"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.04)


async def _events_until(watcher: WsClient, room: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        try:
            message = await watcher.next(wait=10)
        except TimeoutError:
            seen = [e["offset"] for e in events]
            raise AssertionError(
                f"the watcher got {len(events)} of {count} events: {seen[:3]}…{seen[-3:]}"
            ) from None
        if message.get("room") == room and str(message.get("type", "")).startswith("task:"):
            events.append(message)
    return events


# ------------------------------------------------------------------------------------ the fuzz


@pytest.fixture
async def rest(server: LiveboardProcess) -> AsyncIterator[Rest]:
    client = Rest(server)
    yield client
    await client.http.close()


def _summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    closes: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        key = o.ending if o.kind == "messages" else o.kind
        label = o.category if o.ending in ("violation", "chaos") or o.kind == "upgrade" else ""
        closes[f"{key}: {label}" if label else key][str(o.close)] += 1
    errors: Counter[str] = Counter()
    mutations: Counter[str] = Counter()
    for o in outcomes:
        errors.update(o.error_codes)
        mutations.update(o.mutations)
    return {
        "episodes": len(outcomes),
        "inputs": sum(o.inputs for o in outcomes),
        "closes": {k: dict(v) for k, v in sorted(closes.items())},
        "error_codes": dict(errors),
        "messages_by_mutation": dict(mutations),
    }


async def test_live_fuzz(server: LiveboardProcess, rest: Rest) -> None:
    world = await make_world(rest, f"{FUZZ_SEED % 10_000}-{random.randrange(10**6)}")
    owner = world.members[0]
    watcher = await WsClient.connect(server.ws_url, make_token(owner))
    producer = Producer(rest, world)
    producing: asyncio.Task[None] | None = None
    try:
        base = int((await watcher.subscribe(world.project_room))["offset"])
        await watcher.subscribe(world.workspace_room)
        baseline = await asyncio.to_thread(metrics, server.url)
        producing = asyncio.create_task(producer.run())

        outcomes: list[Outcome] = []
        rss: list[int] = []
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def bounded(index: int) -> Outcome:
            async with semaphore:
                return await run_episode(index, world, server)

        if ONLY_EPISODE is not None:
            outcomes.append(await run_episode(int(ONLY_EPISODE), world, server))
        index = 0
        started = time.monotonic()
        while ONLY_EPISODE is None and sum(o.inputs for o in outcomes) < FUZZ_COUNT:
            batch = await asyncio.gather(*(bounded(i) for i in range(index, index + BATCH)))
            outcomes += batch
            index += BATCH
            assert server.process is not None
            assert server.process.poll() is None, f"the server died:\n{server.log()}"
            assert await asyncio.to_thread(healthy, server.url), "the server is not healthy"
            rss.append(rss_kib(server.pid))
        elapsed = time.monotonic() - started

        producer.stop.set()
        await producing
        # the watcher got every event of the steady stream, in order, once
        snapshot = await rest.call("GET", f"/api/projects/{producer.pid}/tasks", owner)
        head = int(snapshot["offset"])
        made = producer.events
        assert head - base == made, f"{head - base} events in the log, {made} changes made"
        events = await _events_until(watcher, world.project_room, head - base)
        assert [e["offset"] for e in events] == list(range(base + 1, head + 1))
        leftovers = [
            m for m in await watcher.barrier() if str(m.get("type", "")).startswith("task:")
        ]
        assert leftovers == [], f"events beyond those made: {leftovers[:3]}"

        # every connection of the fuzz is gone, and so are its rooms and presence
        gauges = ("liveboard_connections", "liveboard_subscriptions", "liveboard_rooms")
        deadline = time.monotonic() + timeout(15)
        while True:
            now = await asyncio.to_thread(metrics, server.url)
            settled = [(g, now[g], baseline[g]) for g in gauges if now[g] != baseline[g]]
            if now["liveboard_presence_rooms"] != 0:
                settled.append(("liveboard_presence_rooms", now["liveboard_presence_rooms"], 0))
            if not settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        failures: list[str] = []
        if settled:
            failures.append(f"gauges not back to the baseline (name, now, baseline): {settled}")
        grown = (rss[-1] - rss[0]) / 1024 if len(rss) > 1 else 0.0
        if grown >= RSS_BOUND_MIB:
            failures.append(f"RSS grew {grown:.1f} MiB after warm-up (KiB per batch: {rss})")
        log = server.log_path.read_text(errors="replace")
        if "Traceback" in log:
            failures.append("traceback in the server log:\n" + log[log.index("Traceback") :][:2000])

        summary = _summarise(outcomes)
        summary.update(
            seed=FUZZ_SEED,
            seconds=round(elapsed, 1),
            watcher_events=producer.events,
            rss_kib_after_batches=rss,
            rss_growth_mib=round(grown, 1),
        )
        print("\nfuzz summary:", json.dumps(summary, indent=1, sort_keys=True))
        report = os.environ.get("LIVEBOARD_FUZZ_REPORT")
        if report:
            await asyncio.to_thread(
                Path(report).write_text, json.dumps(summary, indent=1, sort_keys=True)
            )

        problems: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for o in outcomes:
            for p in o.problems:
                problems[p.split(":")[0]].append((o.index, p))
        for kind, cases in sorted(problems.items(), key=lambda kv: -len(kv[1])):
            ids = [i for i, _ in cases]
            failures.append(
                f"{kind}: {len(ids)} episodes {ids[:8]}{'…' if len(ids) > 8 else ''}"
                f"\n    e.g. #{cases[0][0]}: {cases[0][1][:400]}"
            )
        assert not failures, (
            f"{len(failures)} problems with seed {FUZZ_SEED} (replay one episode with "
            f"LIVEBOARD_FUZZ_SEED={FUZZ_SEED} LIVEBOARD_FUZZ_EPISODE=<n>):\n- "
            + "\n- ".join(failures[:40])
        )
        assert summary["inputs"] >= FUZZ_COUNT or ONLY_EPISODE is not None
    finally:
        producer.stop.set()
        if producing is not None and not producing.done():
            producing.cancel()
        await watcher.close()


# ------------------------------------------------------------------------------------ RFC rules


async def _fresh(
    server: LiveboardProcess, user: str = "rfc-user", *, after_a_request: bool = False
) -> RawWs:
    ws = await RawWs.open(
        "127.0.0.1", server.port, make_token(user), after_a_request=after_a_request
    )
    first = await ws.next_message(timeout(5))
    assert isinstance(first, dict)
    assert first["type"] == "connected"
    return ws


async def _outcome(ws: RawWs, frames: list[bytes], wait: float = 3.0, count: int = 0) -> list[Any]:
    """Send ``frames``; read until the close, ``count`` messages, or ``wait`` seconds."""
    for frame in frames:
        ws.send_raw(frame)
    await ws.drain()
    seen: list[Any] = []
    with contextlib.suppress(TimeoutError):
        while not count or len(seen) < count:
            message = await ws.next_message(timeout(wait))
            seen.append(message)
            if isinstance(message, Closed):
                break
    return seen


PATHS = pytest.mark.parametrize(
    "after_a_request", [False, True], ids=["router's path", "aiohttp's path"]
)


@PATHS
@pytest.mark.parametrize("case", list(RFC_CASES))
async def test_rfc6455_violation_closes_the_connection(
    server: LiveboardProcess, case: str, after_a_request: bool
) -> None:
    """Each violation gets its code on both paths: the same frames, the same close."""
    frames, code = RFC_CASES[case]
    ws = await _fresh(server, after_a_request=after_a_request)
    try:
        # the connection works, then the violation ends it with the expected code
        assert await _outcome(ws, [text(PING)], count=1) == [{"type": "pong", "id": "p"}]
        seen = await _outcome(ws, frames)
        last = seen[-1] if seen else None
        assert isinstance(last, Closed), f"{case}: not closed; got {seen}"
        assert last.code == code, f"{case}: expected close {code}, got {seen}"
        assert seen[:-1] == [], f"{case}: replies before the close: {seen[:-1]}"
    finally:
        ws.abort()
    assert await asyncio.to_thread(healthy, server.url)


@PATHS
@pytest.mark.parametrize("code", [None, 1000, 1001, 1003, 1011, 3000, 4999])
async def test_a_valid_close_is_acknowledged_with_1000(
    server: LiveboardProcess, code: int | None, after_a_request: bool
) -> None:
    ws = await _fresh(server, after_a_request=after_a_request)
    try:
        payload = b"" if code is None else close_payload(code, b"bye")
        seen = await _outcome(ws, [encode_frame(OP_CLOSE, payload)])
        assert len(seen) == 1, seen
        assert isinstance(seen[0], Closed), seen
        assert seen[0].code == 1000, seen
    finally:
        ws.abort()


def _ping_of(size: int) -> bytes:
    head, tail = b'{"type":"ping","id":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("size", [MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES])
async def test_message_up_to_the_limit_is_accepted(server: LiveboardProcess, size: int) -> None:
    """CONTRACT §1: ``LIVEBOARD_MAX_MESSAGE_BYTES`` is the largest client frame *accepted*."""
    ws = await _fresh(server)
    try:
        data = _ping_of(size)
        for frames in ([encode_frame(OP_TEXT, data)], _fragments(data, 3)):
            seen = await _outcome(ws, frames, count=1)
            assert seen, f"{size} bytes: no answer"
            assert isinstance(seen[0], dict), f"{size} bytes: {seen}"
            assert seen[0]["type"] == "pong", seen[0]
    finally:
        ws.abort()


def _fragments(data: bytes, count: int) -> list[bytes]:
    step = len(data) // count + 1
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    return [
        encode_frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]


@pytest.mark.parametrize("fragmented", [False, True])
async def test_message_over_the_limit_closes_1009(
    server: LiveboardProcess, fragmented: bool
) -> None:
    ws = await _fresh(server)
    try:
        data = _ping_of(MAX_MESSAGE_BYTES + 1)
        frames = _fragments(data, 4) if fragmented else [encode_frame(OP_TEXT, data)]
        seen = await _outcome(ws, frames)
        assert seen == [Closed(1009, seen[-1].reason if seen else "")], seen
    finally:
        ws.abort()


async def test_a_peer_still_sending_its_oversized_message_gets_the_1009(
    server: LiveboardProcess,
) -> None:
    """The server answers an over-the-limit frame at its header; the peer is still sending the
    payload. The close frame must not be lost to the reset a close with unread input causes."""
    ws = await _fresh(server)
    chunk = b"x" * 65536

    async def keep_sending() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(200):  # up to 13 MB over about 2 s
                if not ws.send_raw(chunk):
                    return
                await ws.drain()
                await asyncio.sleep(0.01)

    try:
        ws.send_raw(encode_frame(OP_TEXT, b"", length=8 << 20))  # the header alone: 8 MiB
        sender = asyncio.create_task(keep_sending())
        message = await ws.next_message(timeout(5))
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        assert isinstance(message, Closed), message
        assert message.code == 1009, message
    finally:
        ws.abort()


async def test_legal_framing_is_understood(server: LiveboardProcess) -> None:
    """Fragments with control frames between them, non-minimal lengths, a zero mask key, empty
    fragments: all legal, all one message each; ping frames are answered with their payload."""
    ws = await _fresh(server)
    try:
        message = '{"type":"ping","id":"é-ü-😀"}'.encode()
        frames = [
            encode_frame(OP_TEXT, message[:3], fin=False),
            encode_frame(OP_PING, b"between"),
            encode_frame(OP_CONT, b"", fin=False),
            encode_frame(OP_PONG, b"unsolicited"),
            encode_frame(OP_CONT, message[3:24], fin=False),  # splits a UTF-8 sequence
            encode_frame(OP_CONT, message[24:]),
            encode_frame(OP_TEXT, PING, length_form=16),
            encode_frame(OP_TEXT, PING, length_form=64),
            encode_frame(OP_TEXT, PING, mask_key=b"\x00\x00\x00\x00"),
            encode_frame(OP_PING, b"p" * 125),
        ]
        seen = await _outcome(ws, frames, count=6)
        assert seen == [
            {"type": "<pong frame>", "data": "between"},
            {"type": "pong", "id": "é-ü-😀"},
            {"type": "pong", "id": "p"},
            {"type": "pong", "id": "p"},
            {"type": "pong", "id": "p"},
            {"type": "<pong frame>", "data": "p" * 125},
        ]
    finally:
        ws.abort()
