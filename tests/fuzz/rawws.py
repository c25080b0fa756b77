"""A WebSocket client on a raw TCP socket, with its own frame encoder, for hostile tests.

``aiohttp`` (and every other client library) refuses to send what these tests need: unmasked
client frames, reserved opcodes, RSV bits, control frames over 125 bytes, fragmented control
frames, length fields that lie, invalid UTF-8 in text frames. ``encode_frame`` builds any of them
(RFC 6455 §5.2) and ``RawWs`` performs the HTTP upgrade by hand, then reads the server's frames
one by one (``read_frame``), or as contract messages (``next_message``: a JSON object, or
``Closed`` with the close code; pings are answered unless ``autopong=False``).

Server-side facts read from ``/metrics`` and ``/proc`` are here too (``metrics``, ``rss_kib``).
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
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """One frame, exactly as told.

    ``rsv``: the three RSV bits (0-7). ``mask=False``: an unmasked client frame (a protocol
    violation). ``length``: the length field to write when it must lie about ``payload``.
    ``length_form``: 7, 16 or 64 to force an encoding of the length (non-minimal ones included).
    """
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    form = length_form or (7 if declared < 126 else 16 if declared < 1 << 16 else 64)
    if form == 7:
        header = bytes((first, mask_bit | declared))
    elif form == 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return header + key + apply_mask(key, payload)


def apply_mask(key: bytes, payload: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def text(message: Any, **kwargs: Any) -> bytes:
    """A masked text frame holding ``message`` (JSON-encoded unless str/bytes)."""
    if isinstance(message, bytes):
        data = message
    elif isinstance(message, str):
        data = message.encode()
    else:
        data = json.dumps(message).encode()
    return encode_frame(OP_TEXT, data, **kwargs)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


PING = b'{"type":"ping","id":"p"}'

#: Frames that break RFC 6455 or CONTRACT §4, with the close code the server must answer; the
#: last two assume the default ``LIVEBOARD_MAX_MESSAGE_BYTES`` (65536). Checked against a live
#: server (``test_protocol_live``) and against the frame reader alone (``test_rfc6455``).
RFC_CASES: dict[str, tuple[list[bytes], int]] = {
    # RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that is not
    # masked" (with 1002, §7.4.1).
    "unmasked text frame": ([encode_frame(OP_TEXT, PING, mask=False)], 1002),
    "unmasked ping frame": ([encode_frame(OP_PING, b"x", mask=False)], 1002),
    "unmasked close frame": ([encode_frame(OP_CLOSE, close_payload(1000), mask=False)], 1002),
    # §5.2: RSV bits without a negotiated extension, reserved opcodes
    "RSV1 set": ([encode_frame(OP_TEXT, PING, rsv=4)], 1002),
    "RSV2 set": ([encode_frame(OP_TEXT, PING, rsv=2)], 1002),
    "RSV3 set": ([encode_frame(OP_TEXT, PING, rsv=1)], 1002),
    "opcode 0x3": ([encode_frame(0x3, b"x")], 1002),
    "opcode 0x7": ([encode_frame(0x7, b"x")], 1002),
    "opcode 0xB": ([encode_frame(0xB, b"x")], 1002),
    "opcode 0xF": ([encode_frame(0xF, b"x")], 1002),
    # §5.5: control frames are at most 125 bytes and never fragmented
    "ping of 126 bytes": ([encode_frame(OP_PING, b"x" * 126)], 1002),
    "pong of 200 bytes": ([encode_frame(OP_PONG, b"x" * 200)], 1002),
    "close of 126 bytes": ([encode_frame(OP_CLOSE, close_payload(1000, b"r" * 124))], 1002),
    "fragmented ping": ([encode_frame(OP_PING, b"a", fin=False)], 1002),
    # §5.4: fragmentation rules
    "continuation without start": ([encode_frame(OP_CONT, PING)], 1002),
    "text inside a fragmented text": (
        [encode_frame(OP_TEXT, b'{"type":', fin=False), encode_frame(OP_TEXT, PING)],
        1002,
    ),
    # §8.1: text must be UTF-8
    "invalid utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xff"}')], 1007),
    "surrogate in utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xed\xa0\x80"}')], 1007),
    "overlong utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xc0\xaf"}')], 1007),
    "invalid utf-8 across fragments": (
        [encode_frame(OP_TEXT, b'{"id":"\xe2', fin=False), encode_frame(OP_CONT, b'\x28"}')],
        1007,
    ),
    # §7.4: close codes and bodies
    "close code 0": ([encode_frame(OP_CLOSE, close_payload(0))], 1002),
    "close code 999": ([encode_frame(OP_CLOSE, close_payload(999))], 1002),
    "close code 1004": ([encode_frame(OP_CLOSE, close_payload(1004))], 1002),
    "close code 1005": ([encode_frame(OP_CLOSE, close_payload(1005))], 1002),
    "close code 1015": ([encode_frame(OP_CLOSE, close_payload(1015))], 1002),
    "close code 2999": ([encode_frame(OP_CLOSE, close_payload(2999))], 1002),
    "close code 1006": ([encode_frame(OP_CLOSE, close_payload(1006))], 1002),
    "close code 5000": ([encode_frame(OP_CLOSE, close_payload(5000))], 1002),
    "close code 65535": ([encode_frame(OP_CLOSE, close_payload(65535))], 1002),
    "close body of 1 byte": ([encode_frame(OP_CLOSE, b"\x03")], 1002),
    "close reason not utf-8": ([encode_frame(OP_CLOSE, close_payload(1000, b"\xff"))], 1007),
    # CONTRACT §4
    "binary frame": ([encode_frame(OP_BINARY, PING)], 1003),
    "declared length 2**63": ([encode_frame(OP_TEXT, b"", length=2**63, length_form=64)], 1009),
    "fragments past the limit": (
        [
            encode_frame(OP_TEXT, b"x" * 40_000, fin=False),
            encode_frame(OP_CONT, b"x" * 40_000),
        ],
        1009,
    ),
}


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


# Server-side facts


def metrics(base_url: str) -> dict[str, float]:
    """``/metrics`` samples ``{"name{labels}": value}`` (blocking; call via ``to_thread``)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        body = response.read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as response:
            return response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open file descriptors by kind: sockets, pipes, anonymous inodes, files (by extension)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else "file " + target.rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def holds_connection(pid: int, local_port: int, remote_port: int) -> bool:
    """Whether process ``pid`` has a descriptor for its TCP connection from ``local_port`` to
    ``remote_port`` on this host. A socket the process has closed, even one the kernel still
    keeps to send what it had queued (FIN-WAIT-1), is not held."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as table:
            next(table)  # the header
            for line in table:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == local_port and (
                    int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    inodes.add(f"socket:[{inode}]")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False
