"""An HTTP proxy that loses answers: the request reaches the server, its response never returns.

``LossyHttpProxy`` listens on a free port of 127.0.0.1 and forwards each connection to
``target``. It expects one request per connection (clients send ``Connection: close``): it
forwards the request as it comes, reads the server's whole response (until the server closes),
then either forwards it or, when ``drop(n)`` says so for the ``n``-th connection, closes the
client's connection without a byte, as a proxy timeout or a dead mobile link would. The server
has by then done the work and answered; only the answer is gone.

Each dropped response is kept in ``dropped``, by the request's ``Idempotency-Key``, so a test can
compare the answer a retry gets with the one that was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.servers import free_port

_KEY = re.compile(rb"\r\nidempotency-key: *([^\r\n]*)\r\n", re.IGNORECASE)
_HEADER = re.compile(rb"\r\n([A-Za-z-]+): *([^\r\n]*)")


@dataclass(frozen=True)
class RawResponse:
    """A response as the server wrote it: status, the headers that matter, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    @staticmethod
    def parse(raw: bytes) -> RawResponse:
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {k.decode(): v.decode() for k, v in _HEADER.findall(head)}
        return RawResponse(status, headers, body)


class LossyHttpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``, dropping the responses ``drop`` picks."""

    def __init__(self, target_host: str, target_port: int, drop: Callable[[int], bool]) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._drop = drop
        self.connections = 0
        self.dropped: dict[str, list[RawResponse]] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LossyHttpProxy:
        for _attempt in range(3):
            port = free_port()
            try:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
            except OSError:
                continue
            self.port = port
            return self
        raise RuntimeError("no free port for the proxy")

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        request = bytearray()
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            forwarding = asyncio.ensure_future(self._forward(reader, upstream, request))
            response = await upstream_reader.read()  # the server closes after its answer
            forwarding.cancel()
            if self._drop(number) and response:
                found = _KEY.search(bytes(request))
                key = found.group(1).decode() if found else ""
                self.dropped.setdefault(key, []).append(RawResponse.parse(response))
                return  # the client's connection closes with nothing written
            client.write(response)
            await client.drain()
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            for writer in (client, upstream):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    @staticmethod
    async def _forward(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                seen += data
                writer.write(data)
                await writer.drain()
