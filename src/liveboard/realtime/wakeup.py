"""The wake-up: events other backends commit with ``liveboard_emit`` reach this instance at once.

``liveboard_emit`` (``store.open_log_sql``) ends with ``pg_notify(channel, "<room> <offset>")``,
which PostgreSQL delivers to every listening session when, and only if, the transaction
commits. Each instance on PostgreSQL keeps one dedicated connection (not one of the pool's)
that ``LISTEN``s on its installation's channel and hands each notification to ``on_wake``; the
node reads the room's log from there (``repair.LogRepair.wake``), by the same path as a gap fill
or the audit, so such events are ordered and deduplicated by offset with every other event of
the room.

Guarantees:

* A notification is handed over as it arrives; one that cannot be parsed is logged and dropped
  (only ``liveboard_emit`` sends on the channel).
* The connection is watched: a loss seen by the driver, or a ping (``PING_INTERVAL``) that gets no
  answer within ``PING_TIMEOUT``, ends it, and a new one is opened after ``RETRY_MIN`` seconds,
  doubling up to ``RETRY_MAX`` while the database does not answer. Notifications sent while no
  connection listens are lost to it: after every (re)connection ``on_listening`` is called, and
  the node reads every active room's log then. The periodic audit (``repair.AUDIT_INTERVAL``)
  stays the backstop for anything else.
* One line is logged when listening stops working and one when it works again, not one per try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)

__all__ = ["PING_INTERVAL", "PING_TIMEOUT", "RETRY_MAX", "RETRY_MIN", "LogWakeup", "parse"]

log = logging.getLogger("liveboard.node")

#: Seconds between pings of an idle listening connection (a dead peer sends no goodbye).
PING_INTERVAL = 5.0
#: Seconds a ping may take before the connection is given up for a new one.
PING_TIMEOUT = 3.0
#: First wait before reconnecting, in seconds; doubled after each failure up to ``RETRY_MAX``.
RETRY_MIN = 0.1
RETRY_MAX = 2.0
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5.0


def parse(payload: str) -> tuple[str, int] | None:
    """The room and offset a notification names (``"<room> <offset>"``), or None if malformed."""
    room, _, offset = payload.rpartition(" ")
    if not room or not offset.isdigit():
        return None
    return room, int(offset)


def _on_termination(conn: Any) -> asyncio.Event:
    """An event set when the driver sees ``conn`` end."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    return lost


class LogWakeup:
    """One instance's ``LISTEN`` on ``channel`` of the database at ``database_url`` (see the
    module). ``start`` begins; ``aclose`` ends (idempotent)."""

    def __init__(
        self,
        database_url: str,
        channel: str,
        on_wake: Callable[[str, int], None],
        on_listening: Callable[[], None],
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._on_wake = on_wake
        self._on_listening = on_listening
        self._task: asyncio.Task[None] | None = None
        #: Set while a connection listens (for tests and /metrics-style checks).
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        parsed = parse(payload)
        if parsed is None:
            log.warning("ignored a malformed wake-up %r", payload[:200])
            return
        self._on_wake(*parsed)

    async def _run(self) -> None:
        delay = RETRY_MIN
        failing = False
        while True:
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
            except Exception as error:
                if not failing:
                    log.warning("cannot listen for events from other backends: %s", error)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            try:
                lost = _on_termination(conn)
                await conn.add_listener(self._channel, self._notified)
                if failing:
                    log.info("listening for events from other backends again")
                failing = False
                delay = RETRY_MIN
                self.listening.set()
                self._on_listening()
                await self._watch(conn, lost)
                log.warning("lost the connection listening for events from other backends")
                failing = True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not failing:
                    log.warning("listening for events from other backends failed: %s", error)
                failing = True
            finally:
                self.listening.clear()
                conn.terminate()
            await asyncio.sleep(delay)

    @staticmethod
    async def _watch(conn: Any, lost: asyncio.Event) -> None:
        """Return when ``conn`` is lost: the driver saw it close, or a ping went unanswered."""
        while True:
            try:
                await asyncio.wait_for(lost.wait(), PING_INTERVAL)
                return
            except TimeoutError:
                pass
            try:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
            except Exception:
                return
