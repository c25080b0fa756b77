"""Scenario G's client side: one worker process of reconnecting subscribers (``bench.storm``).

Driven like ``bench.loadgen`` (JSON commands on stdin, one JSON answer per line on stdout).
Every client holds one liveboard connection subscribed to one room and keeps, for the whole
run, the highest offset it has and the epoch: each event must be that offset + 1 (anything
else is counted as a gap or a duplicate). When its connection ends (the server's 1012), it
comes back by itself: it waits ``uniform(0, delay)``, connects, and subscribes with ``since``
= what it has (``delay`` 0: "all at once": no attempt until the orchestrator says the new
server listens, then every client at once, and a refused one again after ``uniform(RETRY_FLOOR,
1)`` s, the 503's ``Retry-After``); a connect refused (the server is down, or answers
503) or a handshake that times out is counted by kind and retried after another
``uniform(0, delay)`` (at least ``RETRY_FLOOR``), as the SDK does in its restart window; a 503
after ``RETRY_AFTER`` plus that, as the Python SDK honours the server's ``Retry-After``. Each
reconnect records when its ``subscribed`` came, whether it said ``recovered: true``, and the
arrival time (``time.time()``) of every event after it, so the orchestrator can tell when the
client held its room's head as of the moment the restarted server listened.

Commands: ``connect``, ``arm``, ``collect``, ``close``, ``ping``, ``exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import resource
import sys
import time
from collections import Counter
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
#: The shortest pause between two attempts of one client, so a client refused at once does not
#: spin (the SDK's own policy never waits less than its jitter either).
RETRY_FLOOR = 0.05
#: The server's ``Retry-After`` on a 503 (``LIVEBOARD_HANDSHAKE_RETRY_AFTER``, default 1), honoured
#: with ``--delay`` as the Python SDK does (seconds).
RETRY_AFTER = 1.0


class Head(msgspec.Struct):
    type: str = ""
    room: str = ""
    offset: int = -1
    epoch: str = ""
    recovered: bool | None = None
    code: str = ""
    message: str = ""


_decode = msgspec.json.Decoder(Head).decode
#: The first gaps seen: [room, offset held, offset received, reconnects so far].
GAP_SAMPLES: list[list[Any]] = []
_encode = msgspec.json.encode


class Client(WSListener):
    """One subscriber across reconnects; frames are handled in picows' data callback."""

    def __init__(self, token: str, room: str) -> None:
        super().__init__()
        self.token = token
        self.room = room
        self.last = -1  # highest offset held (-1: not subscribed yet)
        self.epoch = ""
        self.gaps = 0
        self.dups = 0
        self.not_recovered = 0
        self.recording = False  # since ``arm``: record arrivals after each reconnect
        self.arrivals: list[tuple[float, int]] = []  # (time, offset) while recording
        self.subscribed_at: list[float] = []  # each reconnect's ``subscribed``
        self.transport: WSTransport | None = None
        self.waiting = "connected"
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.gone: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def fresh(self) -> None:
        loop = asyncio.get_running_loop()
        self.waiting = "connected"
        self.future = loop.create_future()
        self.gone = loop.create_future()
        self.close_code = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.future.done():
            self.future.set_exception(ConnectionError(f"closed (code {self.close_code})"))
        if not self.gone.done():
            self.gone.set_result(self.close_code)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != TEXT:
            if frame.msg_type == CLOSE:
                self.close_code = frame.get_close_code()
                if not transport.is_close_frame_sent:  # (a property in picows 2)
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            return
        head = _decode(frame.get_payload_as_bytes())
        kind = head.type
        if head.offset >= 0 and ":" in kind:  # an event
            offset = head.offset
            if offset == self.last + 1:
                self.last = offset
            elif offset <= self.last:
                self.dups += 1
            else:
                self.gaps += offset - self.last - 1
                if len(GAP_SAMPLES) < 10:
                    GAP_SAMPLES.append([self.room, self.last, offset, len(self.subscribed_at)])
                self.last = offset
            if self.recording:
                self.arrivals.append((time.time(), offset))
            return
        if kind == "subscribed":
            if self.last < 0:
                self.last, self.epoch = head.offset, head.epoch
            elif head.recovered is not True:
                self.not_recovered += 1
            if self.recording:
                self.subscribed_at.append(time.time())
        elif kind == "error" and not self.future.done():
            self.future.set_exception(RuntimeError(f"{head.code}: {head.message}"))
            return
        if kind == self.waiting and not self.future.done():
            self.future.set_result(head)

    def subscribe_message(self) -> bytes:
        message: dict[str, Any] = {"type": "subscribe", "room": self.room, "id": 1}
        if self.last >= 0:
            message["since"] = {"offset": self.last, "epoch": self.epoch}
        return _encode(message)


class Worker:
    def __init__(self, tokens: list[str], index: int) -> None:
        self.tokens = tokens
        self.index = index
        self.clients: list[Client] = []
        self.url = ""
        self.delay = 0.0
        self.wait = 10.0
        self.refusals: Counter[str] = Counter()
        self.lives: list[asyncio.Task[None]] = []
        self._source = 0
        self._rng = random.Random(index)
        self.released = asyncio.Event()  # delay 0: the new server listens

    def source_address(self) -> str:
        self._source += 1
        return f"127.0.{40 + self.index}.{2 + self._source % 250}"

    async def open(self, client: Client) -> None:
        """Connect, wait for ``connected``, subscribe (with ``since`` when it holds events)."""
        client.fresh()
        async with asyncio.timeout(self.wait):
            await ws_connect(
                lambda: client,
                f"{self.url}/ws?token={client.token}",
                local_addr=(self.source_address(), 0),
                websocket_handshake_timeout=self.wait,
                enable_auto_pong=True,
                logger_name="bench",
            )
            await client.future
            assert client.transport is not None
            client.waiting = "subscribed"
            client.future = asyncio.get_running_loop().create_future()
            client.transport.send(TEXT, client.subscribe_message())
            await client.future

    def _kind(self, exc: BaseException) -> str:
        text = str(exc)
        if isinstance(exc, ConnectionRefusedError):
            return "refused"
        if isinstance(exc, TimeoutError):
            return "timeout"
        for status in ("503", "429", "401", "500"):
            if status in text:
                return f"http_{status}"
        return type(exc).__name__

    async def live(self, client: Client) -> None:
        """Come back after every close, for as long as the run lasts."""
        while True:
            await asyncio.shield(client.gone)
            at_once = self.delay == 0.0
            if at_once:
                await self.released.wait()
            while True:
                if not at_once:
                    await asyncio.sleep(max(RETRY_FLOOR, self._rng.uniform(0.0, self.delay)))
                try:
                    await self.open(client)
                    break
                except Exception as exc:  # counted; the client tries again
                    self.refusals[self._kind(exc)] += 1
                    if at_once:
                        await asyncio.sleep(self._rng.uniform(RETRY_FLOOR, 1.0))
                    elif self._kind(exc) == "http_503":
                        await asyncio.sleep(RETRY_AFTER)  # then the jittered pace, above
                    if client.transport is not None and not client.gone.done():
                        client.transport.disconnect()
                    client.transport = None

    async def connect(
        self, url: str, specs: list[list[Any]], concurrency: int, delay: float, wait: float
    ) -> dict[str, Any]:
        self.url, self.delay, self.wait = url, delay, wait
        gate = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        started = time.perf_counter()

        async def one(user: int, room: str) -> None:
            client = Client(self.tokens[user], room)
            for _attempt in range(5):  # the set-up, not the storm: a busy machine may time out
                async with gate:
                    try:
                        await self.open(client)
                        break
                    except Exception as exc:
                        errors[self._kind(exc)] += 1
                        if client.transport is not None and not client.gone.done():
                            client.transport.disconnect()
                        client.transport = None
                await asyncio.sleep(0.5)
            else:
                return
            self.clients.append(client)

        await asyncio.gather(*(one(int(u), str(r)) for u, r in specs))
        self.lives = [asyncio.create_task(self.live(c)) for c in self.clients]
        gc.collect()
        gc.freeze()
        return {
            "opened": len(self.clients),
            "errors": dict(errors),
            "seconds": time.perf_counter() - started,
        }

    def arm(self) -> dict[str, Any]:
        """From now on, record arrivals (the storm is about to start)."""
        self.refusals.clear()
        self.released.clear()
        for client in self.clients:
            client.recording = True
            client.arrivals.clear()
            client.subscribed_at.clear()
        return {"clients": len(self.clients)}

    def collect(self, heads: dict[str, int], since: float) -> dict[str, Any]:
        """Per client: when it first held ``heads[room]`` (None: not yet), and the counts."""
        caught: list[float | None] = []
        returned: list[float | None] = []
        for client in self.clients:
            target = heads[client.room]
            at = next((t for t, offset in client.arrivals if offset >= target), None)
            if at is None and client.last >= target and client.subscribed_at:
                at = client.subscribed_at[-1]  # nothing was missing: back is caught up
            caught.append(None if at is None else at - since)
            returned.append(client.subscribed_at[0] - since if client.subscribed_at else None)
        return {
            "caught": caught,
            "returned": returned,
            "reconnects": sum(len(c.subscribed_at) for c in self.clients),
            "gaps": sum(c.gaps for c in self.clients),
            "gap_samples": GAP_SAMPLES,
            "dups": sum(c.dups for c in self.clients),
            "not_recovered": sum(c.not_recovered for c in self.clients),
            "refusals": dict(self.refusals),
            "behind": sum(1 for c in self.clients if c.last < heads[c.room]),
        }

    async def close(self) -> dict[str, Any]:
        for task in self.lives:
            task.cancel()
        for task in self.lives:
            with contextlib.suppress(BaseException):
                await task
        for client in self.clients:
            if client.transport is not None and not client.gone.done():
                with contextlib.suppress(Exception):
                    client.transport.send_close(WSCloseCode.OK)
                    client.transport.disconnect()
        closed = len(self.clients)
        self.clients, self.lives = [], []
        gc.unfreeze()
        gc.collect()
        return {"closed": closed}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        kind = command.pop("cmd")
        if kind == "connect":
            return await self.connect(**command)
        if kind == "arm":
            return self.arm()
        if kind == "release":
            self.released.set()
            return {}
        if kind == "collect":
            return self.collect(**command)
        if kind == "close":
            return await self.close()
        if kind == "ping":
            return {"clients": len(self.clients)}
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
    parser = argparse.ArgumentParser(description="scenario G: reconnecting subscribers")
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--worker", type=int, default=0)
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
