"""A WebSocket client on a raw TCP socket, for hostile tests: it sends frames exactly as encoded.

``RawWs`` performs the HTTP upgrade by hand (on the router's path, or on aiohttp's after a
keep-alive request), sends bytes as given (``send_raw``: frames from ``tests.support.frames``),
then reads the server's frames one by one (``read_frame``), or as contract messages
(``next_message``: a JSON object, or ``Closed`` with the close code; pings are answered unless
``autopong=False``). It can stop reading, cut the connection (RST) or close politely.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tests.support.frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    close_payload,
    encode_frame,
    text,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True, slots=True)
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The end of a connection: the close frame's code, or None when the socket just ended."""

    code: int | None
    reason: str = ""


class HandshakeRefusedError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused with HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class RawWs:
    """One raw connection. ``open`` upgrades it; frames go out exactly as encoded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed: Closed | None = None
        self.pings_seen = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        token: str | None = None,
        *,
        path: str = "/ws/connect",
        query_token: bool = False,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        wait: float = 10.0,
        after_a_request: bool = False,
    ) -> RawWs:
        """Connect and upgrade; ``HandshakeRefusedError`` (with the status) when refused.

        ``after_a_request``: send ``GET /healthz`` first and read its answer, so that the upgrade
        is the connection's second request (served by aiohttp's route, not the router's)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), wait)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        except BaseException:
            sock.close()
            raise
        self = cls(reader, writer)
        try:
            if after_a_request:
                await asyncio.wait_for(self._health_check(), wait)
            await asyncio.wait_for(
                self._handshake(host, port, token, path, query_token, headers or {}), wait
            )
        except BaseException:
            self.abort()
            raise
        return self

    async def _health_check(self) -> None:
        self.writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        assert head.startswith("HTTP/1.1 200"), head
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        await self.reader.readexactly(length)

    async def _handshake(
        self,
        host: str,
        port: int,
        token: str | None,
        path: str,
        query_token: bool,
        headers: dict[str, str],
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        target = path
        lines = [
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if token is not None:
            if query_token:
                target += ("&" if "?" in target else "?") + "token=" + quote(token, safe="")
            else:
                lines.append(f"Authorization: Bearer {token}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = f"GET {target} HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        received = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                received[name.strip().lower()] = value.strip()
        if status != 101:
            length = int(received.get("content-length", "0") or 0)
            body = await self.reader.readexactly(length) if length else b""
            raise HandshakeRefusedError(status, body)
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if received.get("sec-websocket-accept") != accept:
            raise AssertionError(f"bad Sec-WebSocket-Accept: {received}")

    def stop_reading(self) -> None:
        """Read nothing more from the socket: its receive buffer fills, TCP pushes back."""
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        self.writer.transport.resume_reading()  # type: ignore[attr-defined]

    # Writing

    def send_raw(self, data: bytes) -> bool:
        """Queue bytes; False if the socket is already gone."""
        if self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.writer.drain()

    async def send(self, message: Any) -> None:
        self.send_raw(text(message))
        await self.drain()

    # Reading

    async def read_frame(self, wait: float) -> Frame | None:
        """The next frame from the server; None at the end of the stream."""
        try:
            return await asyncio.wait_for(self._read_frame(), wait)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _read_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        masked = bool(second & 0x80)
        key = await self.reader.readexactly(4) if masked else b""
        payload = await self.reader.readexactly(length)
        if masked:
            payload = apply_mask(key, payload)
        return Frame(bool(first & 0x80), (first >> 4) & 0x7, first & 0xF, payload, masked)

    async def next_message(self, wait: float = 5.0, *, autopong: bool = True) -> Any:
        """The next text message (parsed JSON) or ``Closed``; raises TimeoutError."""
        if self.closed is not None:
            return self.closed
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError
            frame = await self.read_frame(remaining)
            if frame is None:
                self.closed = Closed(None)
                return self.closed
            if frame.masked or frame.rsv or not frame.fin:
                raise AssertionError(f"server sent an invalid frame: {frame}")
            if frame.opcode == OP_TEXT:
                return json.loads(frame.payload)
            if frame.opcode == OP_CLOSE:
                code = struct.unpack("!H", frame.payload[:2])[0] if frame.payload else None
                reason = frame.payload[2:].decode("utf-8", "replace")
                self.closed = Closed(code, reason)
                if code is not None:  # answer the close handshake
                    self.send_raw(encode_frame(OP_CLOSE, frame.payload[:2]))
                return self.closed
            if frame.opcode == OP_PING:
                self.pings_seen += 1
                if autopong:
                    self.send_raw(encode_frame(OP_PONG, frame.payload))
                continue
            if frame.opcode == OP_PONG:
                return {"type": "<pong frame>", "data": frame.payload.decode("latin-1")}
            raise AssertionError(f"server sent opcode {frame.opcode}")

    async def until_closed(self, wait: float = 5.0) -> tuple[list[Any], Closed]:
        """Every message until the end of the connection, and how it ended."""
        messages: list[Any] = []
        while True:
            message = await self.next_message(wait)
            if isinstance(message, Closed):
                return messages, message
            messages.append(message)

    # Ending

    def abort(self) -> None:
        """Cut the TCP connection (RST), without a close frame."""
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def close(self) -> None:
        """A polite close: close frame, wait briefly for the answer, then close the socket."""
        if self.closed is None and self.send_raw(encode_frame(OP_CLOSE, close_payload(1000))):
            with contextlib.suppress(TimeoutError, AssertionError):
                await asyncio.wait_for(self.until_closed(2.0), 2.0)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
