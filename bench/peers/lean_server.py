"""The lean server: the least a server can do per event for scenario B (issue 20's baseline).

One process, uvloop, picows for the WebSockets, and the Redis subscriber read straight from
the socket by an ``asyncio.Protocol`` feeding ``hiredis.Reader``. Per Redis message it decodes
only the event's ``room`` and ``offset`` (msgspec, into a two-field struct), remembers the
room's head, and forwards the payload bytes as one text frame to each subscribed socket: one
``send`` (one write) per socket. No authentication (the token is not checked), no log, no
ordering or gap repair, no presence, no metrics, no backpressure: what is left is the cost any
server pays for reading Redis and writing sockets, which liveboard is measured against.

Speaks enough of CONTRACT §4 for ``bench.loadgen``'s ``lb`` clients: ``connected`` on open,
``subscribe`` → ``subscribed`` (with the room's last forwarded offset), events as received.

    python -m bench.peers.lean_server --port 8765 --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlparse

import hiredis
import msgspec
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

PREFIX = b"liveboard:room:"
TEXT = WSMsgType.TEXT


class Head(msgspec.Struct):
    """What sequencing needs of an event; every other field is skipped unparsed."""

    room: str
    offset: int


class Command(msgspec.Struct):
    type: str
    room: str = ""
    id: int | None = None


_head = msgspec.json.Decoder(Head).decode
_command = msgspec.json.Decoder(Command).decode
_encode = msgspec.json.Encoder().encode

#: Room → its subscribed sockets; room → the last offset forwarded.
ROOMS: dict[str, set[WSTransport]] = {}
HEADS: dict[str, int] = {}


class RedisSubscriber(asyncio.Protocol):
    """Raw hiredis read: every complete reply of a socket read handled in the same callback."""

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
            for socket in ROOMS.get(head.room, ()):
                socket.send(TEXT, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        raise SystemExit(f"Redis connection lost: {exc}")


class Client(WSListener):  # type: ignore[misc]
    def __init__(self, redis: RedisSubscriber) -> None:
        super().__init__()
        self.redis = redis
        self.rooms: list[str] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(TEXT, b'{"type":"connected"}')

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != TEXT:
            return
        try:
            command = _command(frame.get_payload_as_bytes())
        except msgspec.DecodeError:
            return
        if command.type == "subscribe" and command.room:
            sockets = ROOMS.get(command.room)
            if sockets is None:
                sockets = ROOMS[command.room] = set()
                self.redis.subscribe(command.room)
            sockets.add(transport)
            self.rooms.append(command.room)
            answer = {
                "type": "subscribed",
                "room": command.room,
                "offset": HEADS.get(command.room, 0),
                "id": command.id,
            }
            transport.send(TEXT, _encode(answer))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for room in self.rooms:
            ROOMS.get(room, set()).discard(transport)


async def serve(port: int, redis_url: str, *, tune_sockets: bool = False) -> None:
    url = urlparse(redis_url)
    loop = asyncio.get_running_loop()
    _, redis = await loop.create_connection(
        RedisSubscriber, url.hostname or "127.0.0.1", url.port or 6379
    )

    def listener(_request: WSUpgradeRequest) -> Client:
        return Client(redis)

    server = await ws_create_server(listener, "127.0.0.1", port, websocket_handshake_timeout=30)
    if tune_sockets:  # liveboard's socket options, inherited by every accepted socket
        from liveboard.realtime.transport.sockets import tune_socket

        for sock in server.sockets:
            tune_socket(sock)  # type: ignore[arg-type]
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument(
        "--tune-sockets",
        action="store_true",
        help="liveboard's socket options (256 KiB send buffer, keepalive) on every socket",
    )
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.redis, tune_sockets=args.tune_sockets))


if __name__ == "__main__":
    main()
