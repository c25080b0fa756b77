"""Python bytecodes and calls per event on the receive path, counted, not timed: a number the
machine's load cannot move (issue 20 item 5).

    python -m bench.receive_ops [--against DIR]

One Redis message of scenario B (a ``task:updated`` of ~600 bytes for a room of 10 live
subscribers whose transports take every write and do nothing) goes through the real classes:
``SubscriberConnection.data_received`` (hiredis), ``RedisBroker``'s reply handling and decode,
the node's hand-off and ``Hub.deliver`` (sequencing, framing, fan-out, metrics). A
``sys.settrace`` with opcode events counts what the interpreter executes for it, per function.
The lean server's ``RedisSubscriber.data_received`` gets the same message (its sockets' ``send``
a no-op Python method, counted apart). ``--against DIR`` does the same for another tree's
``src`` (in a child process), e.g. main before a change.

Why count: on the server, an event's Python runs after the kernel's ten sends and the other
processes have gone through the caches, where each bytecode costs several times what it costs
in a loop (``bench.receive_cost --cold``); what is not executed is not paid for.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import uvloop

from bench.null_transport import NullTransport

ROOT = Path(__file__).resolve().parent.parent
ROOMS = 100
PER_ROOM = 10


class _Counter:
    """Opcodes and calls per code object while installed (``sys.settrace``)."""

    def __init__(self) -> None:
        self.ops: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        name = frame.f_code.co_qualname
        if event == "call":
            self.calls[name] += 1
        elif event == "opcode":
            self.ops[name] += 1
        return self.trace

    def count(self, call: Any, *args: Any) -> None:
        sys.settrace(self.trace)
        try:
            call(*args)
        finally:
            sys.settrace(None)


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _payloads(rooms: list[str], count: int) -> list[bytes]:
    encode = msgspec.json.Encoder().encode
    task = {
        "id": "t1",
        "projectId": "p1",
        "title": "Benchmark task, revision 1",
        "description": "A task the benchmark updates; its event carries the whole task.",
        "status": "todo",
        "order": 1.0,
        "assigneeId": None,
        "createdById": "owner",
        "version": 1,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }
    now = int(time.time() * 1000)
    return [
        encode(
            {
                "type": "task:updated",
                "room": rooms[k % len(rooms)],
                "offset": k // len(rooms) + 1,
                "epoch": "e1",
                "ts": now,
                "userId": "owner",
                "data": {"task": task, "changes": {"title": {"from": "a", "to": "b"}}},
            }
        )
        for k in range(count)
    ]


async def _liveboard() -> dict[str, Any]:
    from liveboard.realtime.brokers.redis import RedisBroker
    from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection
    from liveboard.realtime.hub import Hub
    from liveboard.realtime.metrics import Metrics
    from liveboard.realtime.outlet import Outlet

    hub = Hub(
        Metrics(), on_slow_consumer=lambda o: None, on_gap=lambda r: None, on_resync=lambda r: None
    )

    class Node:  # the node's part: ``Node.on_events`` hands the events to the hub
        def on_events(self, events: Any) -> None:
            hub.deliver(events)

        def on_broker_restored(self) -> None:
            pass

        def on_presence_signal(self, room: str) -> None:
            pass

    broker = RedisBroker("redis://127.0.0.1:1", Node(), instance_id="ops")
    rooms = [f"project:p{r}" for r in range(ROOMS)]
    for name in rooms:
        for i in range(PER_ROOM):
            outlet = Outlet(NullTransport(), f"c{i}", "u")
            room = hub.join(name, outlet)
            hub.start_sequence(room, "e1", 0)
            hub.complete_join(room, outlet, 0)
        broker._wanted.add(broker._channel_of(name))
    broker._subscriber_up = True
    pending: set[bytes] = set()
    # As ``RedisBroker._session`` wires it: a closure over the session's state.
    connection = SubscriberConnection(
        lambda replies: broker._on_replies(replies, pending, False),
        ping_interval=30.0,
        ping_timeout=10.0,
    )
    messages = [
        _resp(b"message", broker._channel_of(json.loads(p)["room"]), p)
        for p in _payloads(rooms, 2 * ROOMS + 1)
    ]
    for message in messages[:-1]:  # warm: every room has released events before
        connection.data_received(message)
    counter = _Counter()
    counter.count(connection.data_received, messages[-1])
    return {"ops": dict(counter.ops), "calls": dict(counter.calls)}


def _lean() -> dict[str, Any]:
    from bench.peers import lean_server

    class Socket:
        __slots__ = ()

        def send(self, kind: object, payload: bytes) -> None:
            pass

    rooms = [f"project:p{r}" for r in range(ROOMS)]
    for name in rooms:
        lean_server.ROOMS[name] = {Socket() for _ in range(PER_ROOM)}
    subscriber = lean_server.RedisSubscriber()
    messages = [
        _resp(b"message", b"liveboard:room:" + json.loads(p)["room"].encode(), p)
        for p in _payloads(rooms, 2 * ROOMS + 1)
    ]
    for message in messages[:-1]:
        subscriber.data_received(message)
    counter = _Counter()
    counter.count(subscriber.data_received, messages[-1])
    return {"ops": dict(counter.ops), "calls": dict(counter.calls)}


def _report(label: str, got: dict[str, Any], stub: str) -> str:
    ops, calls = got["ops"], got["calls"]
    own = {k: v for k, v in ops.items() if not k.endswith(stub)}
    own_calls = {k: v for k, v in calls.items() if not k.endswith(stub)}
    lines = [
        f"{label}: {sum(own.values())} bytecodes, {sum(own_calls.values())} Python calls per event"
        + f" (not counting the test sockets' {stub})"
    ]
    for name, n in sorted(ops.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:5d} ops {calls.get(name, 0):3d} calls  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout (its src/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(uvloop.run(_liveboard())))
        return
    print(_report("liveboard (this tree)", uvloop.run(_liveboard()), "NullTransport.write"))
    if args.against:
        env = {**os.environ, "PYTHONPATH": f"{args.against.resolve() / 'src'}{os.pathsep}{ROOT}"}
        out = subprocess.run(
            [sys.executable, "-m", "bench.receive_ops", "--child"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(_report(f"liveboard ({args.against})", json.loads(out), "NullTransport.write"))
    print(_report("lean server", _lean(), "Socket.send"))


if __name__ == "__main__":
    main()
