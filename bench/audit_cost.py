"""The database cost of the node's once-a-second room audit (crash safety, CONTRACT §5.5).

Creates a fresh PostgreSQL database with N rooms and times the audit's one query
(``eventlog.room_positions`` for every active room, in a read snapshot) for 10, 100 and 1,000
active rooms. Run: ``.venv/bin/python -m bench.audit_cost`` (PostgreSQL at 127.0.0.1:5432, or
``BENCH_POSTGRES_URL``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import asyncpg

from liveboard.store import eventlog
from liveboard.store.database import Database
from liveboard.store.migrations import migrate

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPEAT = 50


async def main() -> None:
    name = f"liveboard_audit_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        await migrate(db)
        rooms = [f"project:p{i}" for i in range(1000)]
        async with db.write() as conn:
            for room in rooms:
                await eventlog.create_room(conn, room)
        for count in (10, 100, 1000):
            started = time.perf_counter()
            for _ in range(REPEAT):
                async with db.read() as conn:
                    await eventlog.room_positions(conn, rooms[:count])
            per_query = (time.perf_counter() - started) / REPEAT * 1000
            print(f"audit of {count} active rooms: {per_query:.2f} ms per second of wall time")
    finally:
        await db.aclose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
