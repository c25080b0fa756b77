"""Reading the frames a client sends (RFC 6455 §5), as a pure state machine.

``FrameReader.feed`` takes the bytes as they arrive and ``next_frame`` returns the whole
messages and control frames they complete, one at a time; a frame that breaks the protocol
raises ``FrameError`` with the close code to send. What it enforces (the server side of the
RFC, no extensions negotiated):

* every frame is masked (§5.1), no RSV bit is set and the opcode is defined (§5.2): 1002;
* control frames are at most 125 bytes and never fragmented; a continuation needs a message to
  continue and a new message may not start inside one (§5.4, §5.5): 1002;
* a message (all its fragments) is at most ``limit`` bytes, checked against the declared length
  before the payload arrives: 1009;
* text is valid UTF-8 (§8.1): 1007, as soon as a fragment shows it is not (fail fast, as
  Autobahn's 6.4 cases ask), not only once the message is whole;
* a close frame has no body or a valid code (§7.4) and a UTF-8 reason: 1002 / 1007.

It holds what the caller fed and has not taken yet, plus the fragments of one message (at
most ``limit`` bytes); the caller bounds the former by pausing its socket.
"""

from __future__ import annotations

import codecs
from typing import Final, NamedTuple

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

#: The close code a close frame without a body stands for (§7.1.5); never sent.
NO_STATUS: Final = 1005
_DEFINED_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


class FrameError(Exception):
    """The peer broke the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Frame(NamedTuple):
    """A whole message (text as ``str``, binary as ``bytes``) or a control frame.

    For a close frame ``data`` is the reason and ``code`` the close code (``NO_STATUS`` when the
    frame had no body); for the others ``code`` is 0.
    """

    opcode: int
    data: str | bytes
    code: int = 0


def valid_close_code(code: int) -> bool:
    """A code a peer may send in a close frame (§7.4.1, §7.4.2)."""
    return code in _DEFINED_CLOSE_CODES or 3000 <= code <= 4999


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (§5.3), in C via big integers."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


class FrameReader:
    """Incremental parser of one client's frames; see the module docstring for its rules.

    ``feed`` buffers what arrives; ``next_frame`` returns one whole message or control frame at a
    time, so the caller decides how many to take before it reads more from the socket. Bytes are
    appended to one buffer and a frame is parsed only once all of it is there: the work is linear
    in what the peer sends, however the bytes are split.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_decoder",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "_limit",
        "_need",
        "_position",
    )

    def __init__(self, limit: int) -> None:
        self._limit = limit
        # What arrived and is not parsed yet. The shared empty ``bytes`` while there is
        # nothing (an idle connection holds no buffer), a ``bytearray`` otherwise.
        self._buffer: bytes | bytearray = b""
        self._position = 0  # start of the first unparsed frame in ``_buffer``
        self._need = 2  # bytes from ``_position`` needed before parsing is worth trying
        self._closed = False  # a close frame was read: nothing after it is (§5.5.1)
        # The message being continued: one buffer, so that empty fragments cost nothing
        # (the shared empty ``bytes`` when there is none).
        self._fragments: bytes | bytearray = b""
        self._fragment_opcode = 0  # opcode of the message being continued, 0 when none
        self._fragment_size = 0
        # A fragmented text message is checked fragment by fragment, so that invalid UTF-8
        # fails the connection at the fragment that carries it.
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> None:
        """Buffer bytes received from the peer (ignored after a close frame)."""
        if self._closed:
            return
        if self._buffer:
            self._buffer += data  # a bytearray: appended in place
        else:
            self._buffer = bytearray(data)

    def next_frame(self) -> Frame | None:
        """The next whole message or control frame, or None until more bytes arrive.

        Raises ``FrameError`` at the first frame that breaks the rules; the reader is then done.
        """
        while not self._closed:
            buffer, position = self._buffer, self._position
            available = len(buffer) - position
            if available < self._need:
                return None
            first, second = buffer[position], buffer[position + 1]
            if first & 0x70:
                raise FrameError(1002, "reserved bits set without an extension")
            if not second & 0x80:
                raise FrameError(1002, "client frames must be masked")
            opcode, final = first & 0x0F, first & 0x80
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            if available < header:
                self._need = header
                return None
            if header > 2:
                length = int.from_bytes(buffer[position + 2 : position + header], "big")
            self._check(opcode, final, length)
            end = header + 4 + length
            if available < end:
                self._need = end
                return None
            start = position + header
            payload = unmask(buffer[start + 4 : position + end], buffer[start : start + 4])
            self._advance(position + end)
            frame = self._complete(opcode, final, payload)
            if frame is not None:
                if opcode == OP_CLOSE:
                    self._closed = True
                    self._buffer = b""
                return frame
        return None

    def _advance(self, position: int) -> None:
        self._need = 2
        buffer = self._buffer
        if position == len(buffer):
            self._buffer = b""
            self._position = 0
        elif position > 1 << 16:  # drop what was parsed, now and then rather than per frame
            assert isinstance(buffer, bytearray)  # not empty
            del buffer[:position]
            self._position = 0
        else:
            self._position = position

    def _check(self, opcode: int, final: int, length: int) -> None:
        """Refuse a frame from its header alone, before waiting for its payload."""
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise FrameError(1002, f"reserved opcode {opcode:#x}")
            if not final:
                raise FrameError(1002, "fragmented control frame")
            if length > 125:
                raise FrameError(1002, "control frame longer than 125 bytes")
            return
        if opcode > OP_BINARY:
            raise FrameError(1002, f"reserved opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if not self._fragment_opcode:
                raise FrameError(1002, "continuation frame without a message to continue")
            if self._fragment_size + length > self._limit:
                raise FrameError(1009, "message too big")
            return
        if self._fragment_opcode:
            raise FrameError(1002, "new message inside a fragmented message")
        if length > self._limit:
            raise FrameError(1009, "message too big")

    def _complete(self, opcode: int, final: int, payload: bytes) -> Frame | None:
        if opcode >= OP_CLOSE:
            if opcode == OP_CLOSE:
                return _close_frame(payload)
            return Frame(opcode, payload)
        if opcode == OP_CONTINUATION:
            self._fragments += payload
            self._fragment_size += len(payload)
            if self._decoder is not None:
                _check_utf8(self._decoder, payload, final=bool(final))
            if not final:
                return None
            opcode = self._fragment_opcode
            payload = bytes(self._fragments)
            self._fragments = b""
            self._fragment_opcode = self._fragment_size = 0
            self._decoder = None
        elif not final:
            self._fragments = bytearray(payload)
            self._fragment_opcode = opcode
            self._fragment_size = len(payload)
            if opcode == OP_TEXT:
                self._decoder = _UTF8_DECODER()
                _check_utf8(self._decoder, payload, final=False)
            return None
        if opcode == OP_BINARY:
            return Frame(OP_BINARY, payload)
        try:
            return Frame(OP_TEXT, payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise FrameError(1007, "text message is not valid UTF-8") from None


_UTF8_DECODER: Final = codecs.getincrementaldecoder("utf-8")


def _check_utf8(decoder: codecs.IncrementalDecoder, payload: bytes, *, final: bool) -> None:
    """Fails at the first fragment that cannot be UTF-8. What it decodes is dropped: the whole
    message is decoded once more when complete, which costs less than holding a ``str`` per
    fragment (a message of one-byte fragments would take ~50 bytes of objects per byte)."""
    try:
        decoder.decode(payload, final)
    except UnicodeDecodeError:
        raise FrameError(1007, "text message is not valid UTF-8") from None


def _close_frame(payload: bytes) -> Frame:
    if not payload:
        return Frame(OP_CLOSE, "", NO_STATUS)
    if len(payload) == 1:
        raise FrameError(1002, "close frame body of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise FrameError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "close reason is not valid UTF-8") from None
    return Frame(OP_CLOSE, reason, code)
