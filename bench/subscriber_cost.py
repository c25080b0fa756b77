"""CPU per message of a Redis pub/sub subscriber: redis-py's asyncio read path (as the brokers
read before issue 20 item 5) against ``brokers.redis_subscriber``, in one process, one run.

A private ``redis-server`` and a publisher process that PUBLISHes ``--count`` messages of
``--size`` bytes one at a time at ``--rate`` per second (so each socket read holds one message,
as in scenario B at a task board's rates). The subscriber, in this process on uvloop, is either

* ``redis-py``: ``read_response(timeout=1)``, then ``read_response(timeout=0)`` until it
  returns None, as ``RedisBroker._read`` did; or
* ``protocol``: ``SubscriberConnection`` (a Protocol feeding ``hiredis.Reader``),

and only counts the messages. The figure is this process's CPU time (user + system) per
message, the variants alternated ``--repeat`` times; ratios are within each round.

    python -m bench.subscriber_cost --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from tempfile import TemporaryDirectory

import uvloop
from redis.asyncio.connection import Connection

from bench.infra import free_port
from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection

CHANNEL = b"liveboard:room:project:bench"

_PUBLISHER = """
import sys, time, redis
port, count, size, rate = map(int, sys.argv[1:5])
r = redis.Redis(port=port)
payload = b"x" * size
start = time.monotonic()
for n in range(count):
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    r.publish(sys.argv[5], payload)
r.publish(sys.argv[5], b"end")
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _redis_py(port: int, start: Callable[[], None]) -> int:
    conn = Connection(port=port, protocol=2)
    await conn.connect()  # type: ignore[no-untyped-call]
    await conn.send_command("SUBSCRIBE", CHANNEL)
    await conn.read_response()
    start()
    received = 0
    while True:
        reply = await conn.read_response(timeout=1.0)
        while reply is not None:
            if reply[2] == b"end":
                await conn.disconnect()
                return received
            received += 1
            reply = await conn.read_response(timeout=0)


async def _protocol(port: int, start: Callable[[], None]) -> int:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    received = 0

    def on_replies(replies: list[object]) -> None:
        nonlocal received
        for reply in replies:
            if isinstance(reply, list) and reply[0] == b"message":
                if reply[2] == b"end":
                    done.set_result(received)
                    return
                received += 1
            elif isinstance(reply, list) and reply[0] == b"subscribe":
                start()

    sub = await SubscriberConnection.open(
        Connection(port=port, protocol=2), on_replies, ping_interval=1.0, ping_timeout=2.0
    )
    sub.send(("SUBSCRIBE", CHANNEL))
    try:
        return await done
    finally:
        sub.close()


VARIANTS: dict[str, Callable[[int, Callable[[], None]], Awaitable[int]]] = {
    "redis-py": _redis_py,
    "protocol": _protocol,
}


async def measure(name: str, port: int, count: int, size: int, rate: int) -> float:
    """µs of this process's CPU per message received by variant ``name``."""
    publisher: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        argv = [sys.executable, "-c", _PUBLISHER, str(port), str(count), str(size), str(rate)]
        argv.append(CHANNEL.decode())
        publisher.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))

    before = _cpu()
    received = await asyncio.wait_for(VARIANTS[name](port, start), count / rate + 30)
    used = _cpu() - before
    publisher[0].wait()
    assert received == count, (name, received)
    return used / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--save", "", "--dir", tmp]
        redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            for round_ in range(args.repeat):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                figures = {
                    name: uvloop.run(measure(name, port, args.count, args.size, args.rate))
                    for name in order
                }
                line = ", ".join(f"{n} {figures[n]:.1f} µs" for n in VARIANTS)
                ratio = figures["redis-py"] / figures["protocol"]
                print(f"round {round_ + 1}: {line} per message; redis-py / protocol {ratio:.2f}")
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
