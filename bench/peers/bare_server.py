"""The bare server: a uvloop transport and one small protocol object per socket (issue 20 item 7).

Scenario D's baseline for memory: the least a Python server on uvloop holds per idle subscribed
WebSocket. Each accepted socket is a uvloop transport and a ``Bare`` protocol (``__slots__``:
the transport, an input buffer that is the shared empty ``bytes`` when idle, the list of its
rooms); a room is a set of transports. The handshake, the client frames and the replies are
done by hand, with no framework, no task, no timer, no authentication (the token is not
checked), no heartbeat, no limits. The Redis subscriber (one connection for the process, raw
``hiredis``) is there only so that D's served check reaches every socket.

Speaks enough of CONTRACT §4 for ``bench.loadgen``'s ``lb`` clients: ``connected`` on open,
``subscribe`` → ``subscribed`` (with the room's last forwarded offset), events as received,
the peer's close frame answered.

    python -m bench.peers.bare_server --port 8765 --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import struct
from urllib.parse import urlparse

import hiredis
import msgspec
import uvloop

PREFIX = b"liveboard:room:"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Head(msgspec.Struct):
    room: str
    offset: int


class Command(msgspec.Struct):
    type: str
    room: str = ""
    id: int | None = None


_head = msgspec.json.Decoder(Head).decode
_command = msgspec.json.Decoder(Command).decode
_encode = msgspec.json.Encoder().encode

#: Room → its subscribed transports; room → the last offset forwarded.
ROOMS: dict[str, set[asyncio.Transport]] = {}
HEADS: dict[str, int] = {}


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class RedisSubscriber(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def subscribe(self, room: str) -> None:
        channel = PREFIX + room.encode()
        assert self.transport is not None
        self.transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not isinstance(reply, list) or reply[0] != b"message":
                continue
            payload = reply[2]
            try:
                head = _head(payload)
            except msgspec.DecodeError:
                continue
            HEADS[head.room] = head.offset
            frame = text_frame(payload)
            for transport in ROOMS.get(head.room, ()):
                transport.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        raise SystemExit(f"Redis connection lost: {exc}")


REDIS: RedisSubscriber | None = None


class Bare(asyncio.Protocol):
    """One socket: the handshake, then masked client frames (no fragments, no limits)."""

    __slots__ = ("buffer", "open", "rooms", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.open = False
        self.rooms: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self._handshake(buffer[:end])
            buffer = buffer[end + 4 :]
        while len(buffer) >= 6:
            length = buffer[1] & 0x7F
            at = 2
            if length == 126:
                (length,) = struct.unpack_from("!H", buffer, 2)
                at = 4
            elif length == 127:
                (length,) = struct.unpack_from("!Q", buffer, 2)
                at = 10
            if len(buffer) < at + 4 + length:
                break
            mask = buffer[at : at + 4]
            masked = buffer[at + 4 : at + 4 + length]
            payload = bytes(b ^ mask[i & 3] for i, b in enumerate(masked))
            self._frame(buffer[0] & 0x0F, payload)
            buffer = buffer[at + 4 + length :]
        self.buffer = buffer

    def _handshake(self, head: bytes) -> None:
        assert self.transport is not None
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + text_frame(b'{"type":"connected"}')
        )
        self.open = True

    def _frame(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == 0x8:  # close: answer, then close
            transport.write(b"\x88\x02\x03\xe8")
            transport.close()
            return
        if opcode == 0x9:  # ping
            transport.write(bytes((0x8A, len(payload))) + payload)
            return
        if opcode != 0x1:
            return
        try:
            command = _command(payload)
        except msgspec.DecodeError:
            return
        if command.type == "subscribe" and command.room:
            sockets = ROOMS.get(command.room)
            if sockets is None:
                sockets = ROOMS[command.room] = set()
                assert REDIS is not None
                REDIS.subscribe(command.room)
            sockets.add(transport)
            self.rooms.append(command.room)
            answer = {
                "type": "subscribed",
                "room": command.room,
                "offset": HEADS.get(command.room, 0),
                "id": command.id,
            }
            transport.write(text_frame(_encode(answer)))

    def connection_lost(self, exc: Exception | None) -> None:
        for room in self.rooms:
            ROOMS.get(room, set()).discard(self.transport)  # type: ignore[arg-type]
        self.transport = None


async def serve(port: int, redis_url: str) -> None:
    global REDIS
    url = urlparse(redis_url)
    loop = asyncio.get_running_loop()
    _, REDIS = await loop.create_connection(
        RedisSubscriber, url.hostname or "127.0.0.1", url.port or 6379
    )
    server = await loop.create_server(Bare, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.redis))


if __name__ == "__main__":
    main()
