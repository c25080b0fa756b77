"""Is the database there? The start-up wait (``LIVEBOARD_DB_WAIT``) and ``/readyz``'s probe.

``wait_for_database`` retries only failures to reach the server: a refused or reset connection,
a name that does not resolve, a timeout, PostgreSQL still starting up (SQLSTATE 57P03). Anything
else (a wrong password, a database that does not exist, an unreadable SQLite file) cannot get
better by waiting and fails at once; so does a TLS failure (a certificate that does not verify,
a server without the TLS that ``sslmode=require`` asks for), though it arrives as an ``OSError``.
Either way the failure is a ``StartupError`` with one line that names the database (without its
password) and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from sqlalchemy import text
from sqlalchemy.engine import make_url

from liveboard.errors import StartupError
from liveboard.store.database import Database

log = logging.getLogger("liveboard.database")

#: The first pause between attempts, doubled after each, up to ``BACKOFF_CAP``.
BACKOFF_START = 0.25
BACKOFF_CAP = 4.0
#: How long one start-up attempt (connect and ``SELECT 1``) may take.
ATTEMPT_TIMEOUT = 5.0
#: SQLSTATE of "the database system is starting up" (and shutting down): worth retrying.
_CANNOT_CONNECT_NOW = "57P03"


def describe(database_url: str) -> str:
    """The database's URL without its password and its parameters, for log lines."""
    try:
        return make_url(database_url).set(query={}).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by the connection attempt itself
        return "the configured database"


def is_unreachable(error: BaseException) -> bool:
    """True for a failure to reach the server (worth retrying), False for any other.

    The whole chain (``orig``, causes, contexts) is looked at: a TLS failure or a
    configuration error anywhere in it (asyncpg's ``ClientConfigurationError`` is a
    ``ValueError``, raised while handling the ``FileNotFoundError`` of a missing root
    certificate) makes it not worth retrying, even when an ``OSError`` is in it too."""
    chain = _chain(error)
    if any(_is_tls_failure(e) or isinstance(e, ValueError) for e in chain):
        return False
    return any(
        isinstance(e, OSError | TimeoutError)  # refused, reset, DNS, timeout
        or getattr(e, "sqlstate", None) == _CANNOT_CONNECT_NOW
        for e in chain
    )


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it wraps, was caused by or raised while handling."""
    seen: dict[int, BaseException] = {}
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen[id(current)] = current
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return list(seen.values())


def _is_tls_failure(error: BaseException) -> bool:
    """A failed handshake or certificate check, or a server without TLS (asyncpg raises a plain
    ``ConnectionError`` saying so; only its message tells it from a lost connection)."""
    if isinstance(error, ssl.SSLError):
        return True
    return type(error) is ConnectionError and "rejected SSL upgrade" in str(error)


def reason(error: BaseException) -> str:
    """One line saying why: the error's first line, or its type for an empty message."""
    if isinstance(error, TimeoutError):
        return "timed out"
    # SQLAlchemy's wrapper starts with the wrapper's class; the driver's own error says it all.
    error = getattr(error, "orig", None) or error
    error = error.__cause__ if isinstance(error.__cause__, Exception) else error
    first = str(error).strip().split("\n", 1)[0].strip()
    return first or type(error).__name__


async def probe(db: Database) -> None:
    """One ``SELECT 1`` (a new connection if the pool has no open one). Raises on failure."""
    async with db.read_one() as conn:
        await conn.execute(text("SELECT 1"))


async def wait_for_database(db: Database, wait: float) -> None:
    """Return once ``probe`` succeeds; retry unreachable failures for up to ``wait`` seconds.

    Each failed attempt is logged at WARNING; the pause doubles from ``BACKOFF_START`` up to
    ``BACKOFF_CAP`` and never runs past the deadline. Raises ``StartupError`` at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = BACKOFF_START
    attempt = 0
    where = describe(db.url)
    while True:
        attempt += 1
        left = deadline - loop.time()
        try:
            await asyncio.wait_for(probe(db), max(min(ATTEMPT_TIMEOUT, left), 1.0))
            if attempt > 1:
                log.info("database %s reachable after %d attempts", where, attempt)
            return
        except Exception as error:
            why = reason(error)
            if not is_unreachable(error):
                raise StartupError(f"cannot use the database {where}: {why}") from None
            left = deadline - loop.time()
            if left <= 0:
                waited = f" (waited {wait:g} s, {attempt} attempts)" if wait > 0 else ""
                raise StartupError(f"database {where} unreachable: {why}{waited}") from None
            delay = min(pause, left)
            log.warning(
                "database %s unreachable (attempt %d): %s; retrying in %.2f s",
                where,
                attempt,
                why,
                delay,
            )
        await asyncio.sleep(delay)
        pause = min(pause * 2, BACKOFF_CAP)
