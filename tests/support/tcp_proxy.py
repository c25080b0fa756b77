"""A TCP proxy for partition tests: put it between one process and a server, then break the link.

``TcpProxy`` listens on a free port of 127.0.0.1 and forwards every connection to ``target``. It
runs in the test's event loop (``await proxy.start()``; ``await proxy.aclose()`` at the end) and
has three states:

* **flowing** (after ``start`` and ``resume``): bytes go both ways as they arrive.
* **paused** (``pause``): a partition that drops packets. Open connections stay open but nothing
  crosses in either direction: each side's bytes wait in the proxy (at most one read's worth per
  direction, then in the kernel buffers), as TCP would keep retransmitting them. New connections
  are accepted (the kernel completes the handshake anyway) but held: the proxy connects them to
  the target only on ``resume``. ``resume`` lets everything held through, late, as a real
  network does when a partition heals within TCP's retransmission time, so a client that gave up
  on a command may see it executed afterwards.
* **cut** (``cut``): a partition that resets connections. Every open connection is closed on both
  sides and each new one is closed as soon as it is accepted, until ``resume``.

``connections`` counts the connections accepted so far (to check the process did use the proxy).

``TcpProxy(..., delayable=True)`` also has a ``delay`` (seconds, 0 by default, changeable at any
time): every chunk from the target reaches the client that much after the proxy read it, in
order, as over a slow link; the client's bytes still reach the target at once (the server does
the work now; its answer, and anything else it sends, arrives late). ``ProxyThread`` runs a
proxy on an event loop of its own, for synchronous tests (Playwright's sync API).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from tests.support.servers import free_port

CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; can be paused or cut (see the module doc)."""

    def __init__(self, target_host: str, target_port: int, *, delayable: bool = False) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self.delay = 0.0
        self._delayable = delayable
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def state(self) -> str:
        if self._cut:
            return "cut"
        return "flowing" if self._flowing.is_set() else "paused"

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        """The proxy's address as a URL (by default a Redis URL, database 0)."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self, port: int | None = None) -> TcpProxy:
        """Listen on ``port`` (a test's client may already be trying it), else on a free one."""
        if port is not None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
            self.port = port
            return self
        for _attempt in range(3):  # the free port may be taken between choosing and binding it
            port = free_port()
            try:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
            except OSError:
                continue
            self.port = port
            return self
        raise RuntimeError("no free port for the proxy")

    def pause(self) -> None:
        """Hold every byte and every new connection until ``resume``."""
        self._flowing.clear()

    def cut(self) -> None:
        """Close every open connection, and each new one, until ``resume``."""
        self._cut = True
        self._flowing.set()  # held pumps wake up and end on the closed streams
        for writer in list(self._writers):
            _close(writer)

    def resume(self) -> None:
        """Back to flowing: held bytes and connections go through."""
        self._cut = False
        self._flowing.set()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _close(writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.add(client)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._cut:
                return
            await self._flowing.wait()  # paused: held, as by a network that drops packets
            if self._cut:
                return
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            downstream = (
                self._pump_late(upstream_reader, client)
                if self._delayable
                else self._pump(upstream_reader, client)
            )
            await asyncio.gather(self._pump(client_reader, upstream), downstream)
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            for writer in (client, upstream):
                if writer is not None:
                    self._writers.discard(writer)
                    _close(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer`` while flowing; end both on EOF, an error or a cut."""
        try:
            while not self._cut:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # paused while reading: hold what was read
                if self._cut:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            _close(writer)

    async def _pump_late(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``_pump``, each chunk written ``delay`` seconds after it was read (order kept)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while not self._cut:
                    await self._flowing.wait()
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    chunks.put_nowait((loop.time() + self.delay, data))
            except OSError:
                pass
            finally:
                chunks.put_nowait(None)

        reading = asyncio.ensure_future(read())
        try:
            while (chunk := await chunks.get()) is not None:
                due, data = chunk
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._flowing.wait()
                if self._cut:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            reading.cancel()
            _close(writer)


class ProxyThread:
    """A ``TcpProxy`` on its own event loop in a daemon thread; every method waits for it."""

    def __init__(self, target_host: str, target_port: int, *, delayable: bool = False) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(target_host, target_port, delayable=delayable)
        self._run(self.proxy.start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _call(self, name: str) -> None:
        getattr(self.proxy, name)()

    def pause(self) -> None:
        self._run(self._call("pause"))

    def cut(self) -> None:
        self._run(self._call("cut"))

    def resume(self) -> None:
        self._run(self._call("resume"))

    def set_delay(self, seconds: float) -> None:
        async def set_it() -> None:
            self.proxy.delay = seconds

        self._run(set_it())

    def close(self) -> None:
        async def wind_down() -> None:
            self.proxy.cut()  # the pumps end on their closed streams, rather than cancelled
            for _ in range(100):
                if not self.proxy._tasks:
                    break
                await asyncio.sleep(0.02)
            await self.proxy.aclose()

        self._run(wind_down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
