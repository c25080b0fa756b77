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
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)

__all__ = [
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "RETRY_MAX",
    "RETRY_MIN",
    "LogWakeup",
    "parse",
    "parse_sender",
]

log = logging.getLogger("liveboard.node")

#: Seconds between pings of an idle listening connection (a dead peer sends no goodbye).
PING_INTERVAL = 5.0
#: Seconds a ping may take before the connection is given up for a new one.
PING_TIMEOUT = 3.0
#: First wait before reconnecting, in seconds; doubled after each failure up to ``RETRY_MAX``.
RETRY_MIN = 0.1
RETRY_MAX = 2.0
#: The listening connection's name in ``pg_stat_activity`` (for operators, and for the tests
#: that end it with ``pg_terminate_backend``).
LISTEN_SETTINGS = {"application_name": "liveboard listen"}
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5.0


def parse(payload: str) -> tuple[str, int] | None:
    """The room and offset a notification names (``"<room> <offset>"``, or with the sender
    and the first offset as the PostgreSQL broker sends it), or None if malformed."""
    parsed = parse_sender(payload)
    return None if parsed is None else (parsed[0], parsed[1])


def parse_sender(payload: str) -> tuple[str, int, str | None, int] | None:
    """The room, offset, sending instance (None: ``liveboard_emit``) and first offset of a
    notification (``"<room> <offset>[ <instance> <first>]"``: the broker's publishes name the
    range of offsets they carried), or None if malformed. Room names hold no space
    (``liveboard.protocol.rooms``)."""
    parts = payload.split(" ")
    if len(parts) not in (2, 4) or not parts[0] or not parts[1].isdigit():
        return None
    offset = int(parts[1])
    if len(parts) == 2:
        return parts[0], offset, None, offset
    if not parts[2] or not parts[3].isdigit() or int(parts[3]) > offset:
        return None
    return parts[0], offset, parts[2], int(parts[3])


def _payload_only(callback: Callable[[str], None]) -> Callable[[Any, int, str, str], None]:
    """An asyncpg listener that hands ``callback`` the payload only."""

    def listener(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return listener


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
        *,
        on_payload: Callable[[str], None] | None = None,
        extra: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        """``on_payload``, when given, receives each notification of ``channel`` unparsed
        instead of ``on_wake`` (the PostgreSQL broker parses the sender too); ``extra``: more
        channels listened to on the same connection, each with its own callback (payloads)."""
        self._url = database_url
        self._channel = channel
        self._on_wake = on_wake
        self._on_listening = on_listening
        self._on_payload = on_payload
        self._extra = dict(extra or {})
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
        if self._on_payload is not None:
            self._on_payload(payload)
            return
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
                conn = await asyncpg.connect(
                    self._url, timeout=CONNECT_TIMEOUT, server_settings=LISTEN_SETTINGS
                )
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
                for channel, callback in self._extra.items():
                    await conn.add_listener(channel, _payload_only(callback))
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
