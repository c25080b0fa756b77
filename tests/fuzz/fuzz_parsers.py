"""Coverage-guided fuzzing (atheris, libFuzzer) of liveboard's two hand-written parsers.

    python -m tests.fuzz.fuzz_parsers frames|heads [libFuzzer options] [CORPUS_DIR ...]

``frames``: the client frame reader (``realtime.transport.rfc6455``), fed the input split at points
the input chooses. It may only return frames or raise ``FrameError`` with 1002, 1007 or 1009, and
what it returns must keep the RFC's shape (control frames ≤ 125 bytes, text as ``str``, no message
over the limit, close codes a peer may send).

``heads``: the upgrade-head parser (``realtime.transport.handshake``), with aiohttp's own request
parser as the oracle: a head that ``parse_upgrade`` accepts must be one aiohttp accepts too, read
the same way (method, path, query, version, Host, key, Origin, Authorization). The router hands
every head it does not take to aiohttp, so this is the property that keeps the two upgrade paths
accepting the same requests.

Any other exception, or a broken property, is a crash: libFuzzer stops and writes the input to
``-artifact_prefix``. ``tests/fuzz/test_parsers_fuzz.py`` runs both briefly in ``make test`` and
for longer in ``make fuzz``, from the corpus committed under ``tests/fuzz/corpus/``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
import sys
from collections.abc import Callable
from unittest import mock

import atheris  # type: ignore[import-untyped]  # (no type information shipped)

with atheris.instrument_imports():
    from liveboard.realtime.transport import handshake, rfc6455

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser

_CLOSE_CODES_FAILING = frozenset({1002, 1007, 1009})
_LOOP = asyncio.new_event_loop()


def fuzz_frames(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    limit = provider.ConsumeIntInRange(0, 4096)
    cuts = sorted(
        provider.ConsumeIntInRange(0, 1 << 12) for _ in range(provider.ConsumeIntInRange(0, 6))
    )
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    reader = rfc6455.FrameReader(limit)
    bounds = [0, *(min(cut, len(stream)) for cut in cuts), len(stream)]
    try:
        for start, end in itertools.pairwise(bounds):
            reader.feed(stream[start:end])
            while (frame := reader.next_frame()) is not None:
                _check_frame(frame, limit)
                if frame.opcode == rfc6455.OP_CLOSE:
                    return
    except rfc6455.FrameError as error:
        if error.code not in _CLOSE_CODES_FAILING:
            raise AssertionError(f"unexpected close code {error.code}") from error


def _check_frame(frame: rfc6455.Frame, limit: int) -> None:
    if frame.opcode == rfc6455.OP_TEXT:
        assert isinstance(frame.data, str)
        assert len(frame.data.encode("utf-8")) <= limit
    elif frame.opcode == rfc6455.OP_BINARY:
        assert isinstance(frame.data, bytes)
        assert len(frame.data) <= limit
    elif frame.opcode in (rfc6455.OP_PING, rfc6455.OP_PONG):
        assert isinstance(frame.data, bytes)
        assert len(frame.data) <= 125
    else:
        assert frame.opcode == rfc6455.OP_CLOSE
        assert frame.code == rfc6455.NO_STATUS or rfc6455.valid_close_code(frame.code)
        assert isinstance(frame.data, str)
        assert len(frame.data.encode("utf-8")) <= 123


def fuzz_heads(data: bytes) -> None:
    end = handshake.head_end(data)
    if end < 0:
        return
    head = data[:end]
    upgrade = handshake.parse_upgrade(head)
    if upgrade is None:
        return
    parser = HttpRequestParser(mock.Mock(), _LOOP, 1 << 16, max_line_size=8190, max_field_size=8190)
    try:
        messages, _upgraded, _tail = parser.feed_data(head)
    except HttpProcessingError as error:
        raise AssertionError(f"accepted a head aiohttp refuses: {error!r}") from error
    assert messages, "accepted a head aiohttp does not see as complete"
    message = messages[0][0]
    assert message.method == "GET"
    assert message.version == (1, 1)
    assert message.url.raw_path == upgrade.path, (message.url.raw_path, upgrade.path)
    assert message.url.raw_query_string == upgrade.raw_query
    headers = message.headers
    assert headers.getall("Host") == [upgrade.host]
    assert headers.getall("Sec-WebSocket-Key") == [upgrade.key]
    assert headers.get("Origin") == upgrade.origin
    assert headers.get("Authorization") == upgrade.authorization


TARGETS: dict[str, Callable[[bytes], None]] = {"frames": fuzz_frames, "heads": fuzz_heads}
_TARGET_VARIABLE = "LIVEBOARD_FUZZ_TARGET"


def main(argv: list[str]) -> None:
    # The target travels in the environment: libFuzzer runs this file again for -merge and
    # -jobs, with the libFuzzer options only.
    if len(argv) > 1 and argv[1] in TARGETS:
        os.environ[_TARGET_VARIABLE] = argv.pop(1)
    name = os.environ.get(_TARGET_VARIABLE)
    if name not in TARGETS:
        sys.exit(f"usage: {argv[0]} {'|'.join(TARGETS)} [libFuzzer options] [CORPUS_DIR ...]")
    # libFuzzer runs argv[0] through the shell for -merge and -jobs: make it this interpreter
    # running this file, which also works where the file is not executable.
    argv[0] = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(__file__))}"
    atheris.Setup(argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
