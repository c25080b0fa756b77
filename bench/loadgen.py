"""The load generator: one worker process of the benchmark's client side.

``bench.run`` starts one or more workers (``python -m bench.loadgen --tokens FILE --worker N``)
and drives them with JSON commands, one per line on stdin; each answer is one JSON line on
stdout. A worker opens authenticated WebSocket connections with picows on uvloop and speaks
either protocol:

* ``lb``: liveboard (CONTRACT §4): ``/ws?token=…``, ``connected`` → ``subscribe`` →
  ``subscribed`` → events; ``presence`` join → ``presence:update``.
* ``sio``: Socket.IO v5 over Engine.IO v4, WebSocket transport only, framed by hand (the
  python-socketio client is far too slow for thousands of sockets): ``0{…}`` open → ``40{auth}``
  → ``40{sid}``; ``421["subscribe",{room}]`` → ack ``431[…]``; events ``42["type",{…}]``;
  ping ``2`` → pong ``3``.

For every event delivered it records the latency (receive time - the event's ``ts``, in ms;
``ts`` is whole milliseconds, so a latency reads up to 1 ms high) into a flat float32 array, and
per connection the highest offset seen, the number of new offsets, the offsets skipped (a
gap), those that arrived after a later one (reordered) and duplicates. A frame is parsed once
per distinct payload: the same event reaches every socket as the same bytes, so the
(offset, ts) of a payload already seen is looked up, not parsed again. Going further, a whole
received chunk already seen on another connection is accounted without parsing at all
(``bench.chunks``): the client's cost per delivery falls as the server joins frames, so the
rate ladder measures the server, not the load generator.
Loss is counted at the end of a phase: each connection should have received every offset of
its room from the phase's start head to its end head.

Commands: ``connect``, ``reset``, ``drain``, ``collect``, ``close``, ``churn``, ``exit``
(see ``Worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import sys
import time
from array import array
from collections import Counter
from typing import Any

import msgspec
import numpy as np
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.chunks import ChunkTable, scan_frames

EVENT_TYPES = frozenset(
    {
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
        "project:created",
        "member:added",
        "member:removed",
    }
)
TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
CACHE_MAX = 50_000
#: picows can run on its own transports (aiofastnet) or on uvloop's; see docs/benchmarks.md.
USE_AIOFASTNET = os.environ.get("BENCH_AIOFASTNET", "0") == "1"


class Head(msgspec.Struct):
    """The fields of a server message the load generator looks at (the rest is skipped)."""

    type: str = ""
    room: str = ""
    offset: int = -1
    ts: int = 0
    code: str = ""
    message: str = ""


_decode_head = msgspec.json.Decoder(Head).decode
_decode_sio_event = msgspec.json.Decoder(tuple[str, Head]).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode

# Per-worker recording, shared by every connection (a worker is one thread).
LAT = array("f")  # latency of each event delivery since the last reset, ms
TRACE_TAG = array("q")  # with tracing on: the tag of each delivery (see _TAG) ...
TRACE_TIME = array("d")  # ... and its receive time (unix seconds)
_STATE = {"tracing": False}
#: payload bytes → (offset, ts, tag) of every event frame seen (bounded; cleared when full)
CACHE: dict[bytes, tuple[int, int, int]] = {}
#: The harness names the task of mutation i "Mutation i": the tag maps a delivery to its request.
_TAG = re.compile(rb'"title":"Mutation (\d+)"')

#: Whole chunks seen (see ``ChunkTap``); cleared with the per-frame arrays at each reset.
CHUNKS = ChunkTable()
#: ``BENCH_CHUNK_CACHE=0`` turns the chunk cache off (every frame goes through picows).
USE_CHUNK_CACHE = os.environ.get("BENCH_CHUNK_CACHE", "1") == "1"

_now = time.time
_lat_append = LAT.append


class ChunkTap(asyncio.Protocol):
    """Sits between uvloop's transport and picows' protocol once a connection is open.

    A chunk that starts at a frame boundary and is a repeat of one remembered in ``CHUNKS`` is
    accounted at once (``Client.account``). Anything else is fed to picows, which calls
    ``on_ws_frame`` per frame as before; if the chunk turns out to be whole event frames only,
    the frames it held are remembered for its next repeat.
    """

    def __init__(self, inner: asyncio.BufferedProtocol, client: Client) -> None:
        self.inner = inner
        self.client = client
        self.tail = b""  # the start of an unfinished frame, from the previous chunks

    def data_received(self, data: bytes) -> None:
        if not self.tail:
            chunk = CHUNKS.chunks.get(data)
            if chunk is not None:
                self.client.account(chunk)
                return
            self.client.recording = []
        self._feed(data)
        recorded, self.client.recording = self.client.recording, None
        if self.tail:
            data = self.tail + data
        frames, partial, text = scan_frames(data)
        self.tail = data[len(data) - partial :] if partial else b""
        if recorded is not None and not partial and text and len(recorded) == frames:
            CHUNKS.remember(data, recorded)

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buffer = memoryview(self.inner.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            self.inner.buffer_updated(n)
            view = view[n:]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Client(WSListener):
    """One connection. Frames are handled synchronously in picows' data callback."""

    def __init__(self, proto: str, token: str, room: str) -> None:
        super().__init__()
        self.proto = proto
        self.token = token
        self.room = room
        self.last = 0  # highest event offset received
        self.base = 0  # head of the room when the phase started
        self.uniq = 0  # new offsets received since the last reset
        self.dups = 0  # offsets received again since the last reset
        self.reordered = 0  # offsets received after a later one (then counted in uniq)
        self.holes: set[int] = set()  # offsets skipped so far (may arrive late)
        self.closed = False
        self.close_code: int | None = None
        self.transport: WSTransport | None = None
        self.waiting = "connected"
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        #: While ``ChunkTap`` feeds picows a new chunk: (offset, ts, tag) of its event frames.
        self.recording: list[tuple[int, int, int]] | None = None

    def tap(self) -> None:
        """Put a ``ChunkTap`` in front of picows (call between messages: no frame half read)."""
        assert self.transport is not None
        underlying = self.transport.underlying_transport
        inner = underlying.get_protocol()
        assert isinstance(inner, asyncio.BufferedProtocol)
        underlying.set_protocol(ChunkTap(inner, self))

    def account(self, chunk: Any) -> None:
        """A repeat of a remembered chunk: its offsets as if each frame had been read."""
        if chunk.consecutive and chunk.first == self.last + 1:
            self.last = chunk.last
            self.uniq += len(chunk.offsets)
        else:
            for offset in chunk.offsets:
                if offset == self.last + 1:
                    self.last = offset
                    self.uniq += 1
                else:
                    self._unusual(offset)
        CHUNKS.hit_index.append(chunk.index)
        CHUNKS.hit_time.append(_now())

    # picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        future = self.future
        if not future.done():
            future.set_exception(ConnectionError(f"closed (code {self.close_code})"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != TEXT:
            if frame.msg_type == CLOSE:
                self.close_code = frame.get_close_code()
                if not transport.is_close_frame_sent():
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            return
        payload = frame.get_payload_as_bytes()
        hit = CACHE.get(payload)
        if hit is not None:
            if self.recording is not None:
                self.recording.append(hit)
            offset = hit[0]
            if offset == self.last + 1:
                self.last = offset
                self.uniq += 1
            else:
                self._unusual(offset)
            _lat_append(_now() * 1000.0 - hit[1])
            if _STATE["tracing"]:
                TRACE_TAG.append(hit[2])
                TRACE_TIME.append(_now())
            return
        if self.proto == "lb":
            self._slow_lb(payload)
        else:
            self._slow_sio(transport, payload)

    # First sight of a payload, and control messages

    def _unusual(self, offset: int) -> None:
        """An offset that is not the next one: a gap, a late arrival or a duplicate."""
        last = self.last
        if offset > last:  # a gap: remember the offsets skipped, they may still come
            self.holes.update(range(last + 1, offset))
            self.last = offset
            self.uniq += 1
        elif offset in self.holes:  # arrived after a later one
            self.holes.discard(offset)
            self.uniq += 1
            self.reordered += 1
        elif offset > self.base:
            self.dups += 1

    def _event(self, payload: bytes, offset: int, ts: int) -> None:
        if len(CACHE) >= CACHE_MAX:
            CACHE.clear()
        match = _TAG.search(payload)
        tag = int(match[1]) if match else -1
        CACHE[payload] = (offset, ts, tag)
        if self.recording is not None:
            self.recording.append((offset, ts, tag))
        if offset == self.last + 1:
            self.last = offset
            self.uniq += 1
        else:
            self._unusual(offset)
        _lat_append(_now() * 1000.0 - ts)
        if _STATE["tracing"]:
            TRACE_TAG.append(tag)
            TRACE_TIME.append(_now())

    def _slow_lb(self, payload: bytes) -> None:
        try:
            head = _decode_head(payload)
        except msgspec.DecodeError:
            self._resolve("error", RuntimeError("undecodable frame"))
            return
        if head.type in EVENT_TYPES and head.offset >= 0:
            self._event(payload, head.offset, head.ts)
        elif head.type == "subscribed":
            self.last = max(self.last, head.offset)
            self._resolve("subscribed", head.offset)
        elif head.type == "error":
            self._resolve("error", RuntimeError(f"{head.code}: {head.message}"))
        else:
            self._resolve(head.type, head)

    def _slow_sio(self, transport: WSTransport, payload: bytes) -> None:
        if payload == b"2":  # Engine.IO ping
            transport.send(TEXT, b"3")
        elif payload.startswith(b"42"):
            try:
                name, head = _decode_sio_event(payload[2:])
            except msgspec.DecodeError:
                self._resolve("error", RuntimeError("undecodable event"))
                return
            if name in EVENT_TYPES and head.offset >= 0:
                self._event(payload, head.offset, head.ts)
            else:
                self._resolve(name, head)
        elif payload.startswith(b"43"):  # ack: 43<id>[value]
            body = _decode_any(payload[payload.index(b"[") :])
            value = body[0] if body else None
            if isinstance(value, dict) and value.get("type") == "error":
                self._resolve("error", RuntimeError(str(value.get("code"))))
            else:
                if isinstance(value, dict) and isinstance(value.get("offset"), int):
                    self.last = max(self.last, value["offset"])
                self._resolve("ack", value)
        elif payload.startswith(b"40"):  # namespace connected
            self._resolve("connected", payload)
        elif payload.startswith(b"44"):  # connect refused
            self._resolve("error", RuntimeError(payload[2:].decode(errors="replace")))
        elif payload.startswith(b"0"):  # Engine.IO open: connect the default namespace
            transport.send(TEXT, b"40" + _encode({"token": self.token}))
        elif payload.startswith(b"41"):
            self._resolve("error", RuntimeError("disconnected by the server"))

    def _resolve(self, kind: str, value: Any) -> None:
        future = self.future
        if future.done():
            return
        if kind == "error":
            future.set_exception(value)
        elif kind == self.waiting:
            future.set_result(value)

    # Requests

    def expect(self, kind: str) -> asyncio.Future[Any]:
        self.waiting = kind
        self.future = asyncio.get_running_loop().create_future()
        return self.future

    def subscribe(self) -> asyncio.Future[Any]:
        assert self.transport is not None
        if self.proto == "lb":
            future = self.expect("subscribed")
            message = {"type": "subscribe", "room": self.room, "id": 1}
            self.transport.send(TEXT, _encode(message))
        else:
            future = self.expect("ack")
            self.transport.send(TEXT, b'421["subscribe",' + _encode({"room": self.room}) + b"]")
        return future

    def join_presence(self) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = self.expect("presence:update")
        body = {"action": "join", "room": self.room}
        if self.proto == "lb":
            self.transport.send(TEXT, _encode({"type": "presence", **body}))
        else:
            self.transport.send(TEXT, b'42["presence",' + _encode(body) + b"]")
        return future

    async def close(self, wait: float = 3.0) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        with contextlib.suppress(Exception):
            if self.proto == "sio":
                transport.send(TEXT, b"41")
            transport.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(wait):
                await transport.wait_disconnected()
        except Exception:
            transport.disconnect()


class Worker:
    """Executes the orchestrator's commands. One per process."""

    def __init__(self, tokens: list[str], index: int) -> None:
        self.tokens = tokens
        self.index = index
        self.clients: list[Client] = []
        self._source = 0

    def source_address(self) -> str:
        """A loopback source address: spreads sockets over many (addr, port) spaces."""
        self._source += 1
        return f"127.0.{10 + self.index}.{2 + self._source % 250}"

    async def open_client(
        self, proto: str, url: str, user: int, room: str, wait: float, presence: bool = False
    ) -> Client:
        token = self.tokens[user]
        if proto == "lb":
            target = f"{url}/ws?token={token}"
        else:
            target = f"{url}/socket.io/?EIO=4&transport=websocket"
        client = Client(proto, token, room)
        async with asyncio.timeout(wait):
            await ws_connect(
                lambda: client,
                target,
                local_addr=(self.source_address(), 0),
                websocket_handshake_timeout=wait,
                enable_auto_pong=True,
                logger_name="bench",
                use_aiofastnet=USE_AIOFASTNET,
            )
            await client.future
            if USE_CHUNK_CACHE:
                client.tap()
            await client.subscribe()
            if presence:
                await client.join_presence()
        return client

    # Commands

    async def connect(
        self, proto: str, url: str, specs: list[list[Any]], concurrency: int, wait: float
    ) -> dict[str, Any]:
        """Open and subscribe one connection per ``[user index, room]``."""
        started = time.perf_counter()
        errors: Counter[str] = Counter()
        gate = asyncio.Semaphore(concurrency)

        async def one(user: int, room: str) -> None:
            async with gate:
                try:
                    self.clients.append(await self.open_client(proto, url, user, room, wait))
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

        await asyncio.gather(*(one(int(u), str(r)) for u, r in specs))
        gc.collect()
        gc.freeze()
        return {
            "opened": len(specs) - sum(errors.values()),
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "seconds": time.perf_counter() - started,
        }

    def reset(self, heads: dict[str, int], tracing: bool) -> dict[str, Any]:
        """Start a phase: every connection should next get its room's ``heads[room] + 1``."""
        del LAT[:]
        del TRACE_TAG[:]
        del TRACE_TIME[:]
        CHUNKS.clear()
        _STATE["tracing"] = tracing
        for client in self.clients:
            base = heads.get(client.room, client.last)
            client.base = client.last = base
            client.uniq = client.dups = client.reordered = 0
            client.holes.clear()
        return {"open": sum(not c.closed for c in self.clients)}

    async def drain(self, heads: dict[str, int], wait: float) -> dict[str, Any]:
        """Wait until every open connection has its room's ``heads[room]`` (or ``wait`` s)."""
        started = time.perf_counter()
        deadline = started + wait
        while True:
            behind = sum(
                1 for c in self.clients if not c.closed and c.last < heads.get(c.room, c.last)
            )
            if not behind or time.perf_counter() >= deadline:
                return {"behind": behind, "waited": time.perf_counter() - started}
            await asyncio.sleep(0.02)

    def collect(self, heads: dict[str, int], path: str) -> dict[str, Any]:
        """Counts of the phase; the latencies (and trace) are saved to ``path`` (.npz)."""
        missing = dups = reordered = closed = 0
        for client in self.clients:
            expected = heads.get(client.room, client.base) - client.base
            missing += max(0, expected - client.uniq)
            dups += client.dups
            reordered += client.reordered
            closed += client.closed
        # Copies: a live view would stop the arrays from growing (exported buffer).
        latency = np.frombuffer(LAT, dtype=np.float32).copy()
        trace_tag = np.frombuffer(TRACE_TAG, dtype=np.int64).copy()
        trace_time = np.frombuffer(TRACE_TIME, dtype=np.float64).copy()
        repeat_latency, repeat_tag, repeat_time = CHUNKS.expand()
        latency = np.concatenate([latency, repeat_latency])
        if _STATE["tracing"]:
            trace_tag = np.concatenate([trace_tag, repeat_tag])
            trace_time = np.concatenate([trace_time, repeat_time])
        np.savez(path, latency=latency, trace_tag=trace_tag, trace_time=trace_time)
        return {
            "deliveries": len(latency),
            "missing": missing,
            "dups": dups,
            "reordered": reordered,
            "closed": closed,
        }

    async def close(self, concurrency: int) -> dict[str, Any]:
        clients, self.clients = self.clients, []
        gate = asyncio.Semaphore(concurrency)

        async def one(client: Client) -> None:
            async with gate:
                await client.close()

        await asyncio.gather(*(one(c) for c in clients))
        CACHE.clear()
        gc.unfreeze()
        gc.collect()
        return {"closed": len(clients)}

    async def churn(
        self,
        proto: str,
        url: str,
        users: list[int],
        rooms: list[str],
        concurrency: int,
        duration: float,
        wait: float,
    ) -> dict[str, Any]:
        """For ``duration`` s, ``concurrency`` loops of connect → subscribe → presence join →
        close. Returns completed cycles, failures and cycle times."""
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        errors: Counter[str] = Counter()
        times: list[float] = []
        counter = 0

        async def loop_one(slot: int) -> None:
            nonlocal counter
            while loop.time() < end:
                counter += 1
                user = users[(counter * 7919 + slot) % len(users)]
                room = rooms[counter % len(rooms)]
                started = time.perf_counter()
                try:
                    client = await self.open_client(proto, url, user, room, wait, True)
                    await client.close()
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    await asyncio.sleep(0.01)
                else:
                    times.append(time.perf_counter() - started)

        started = loop.time()
        await asyncio.gather(*(loop_one(i) for i in range(concurrency)))
        elapsed = loop.time() - started
        ms = np.array(times) * 1000.0
        return {
            "cycles": len(times),
            "failures": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "seconds": elapsed,
            "cycle_p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "cycle_p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        }

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        kind = command.pop("cmd")
        if kind == "connect":
            return await self.connect(**command)
        if kind == "reset":
            return self.reset(**command)
        if kind == "drain":
            return await self.drain(**command)
        if kind == "collect":
            return self.collect(**command)
        if kind == "close":
            return await self.close(**command)
        if kind == "churn":
            return await self.churn(**command)
        if kind == "ping":
            return {"pid": os.getpid(), "open": sum(not c.closed for c in self.clients)}
        raise ValueError(f"unknown command {kind!r}")


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        command = json.loads(line)
        if command.get("cmd") == "exit":
            return
        try:
            answer: dict[str, Any] = {"ok": True, **await worker.handle(command)}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="liveboard benchmark load generator worker")
    parser.add_argument("--tokens", required=True, help="JSON file: a list of JWTs, by user")
    parser.add_argument("--worker", type=int, default=0, help="this worker's index")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.set_threshold(50_000, 50, 50)
    with open(args.tokens) as f:
        tokens = json.load(f)
    import uvloop

    uvloop.run(serve(Worker(tokens, args.worker)))


if __name__ == "__main__":
    main()
