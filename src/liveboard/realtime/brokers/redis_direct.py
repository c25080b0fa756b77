"""Single Redis commands on one connection kept out of the pool, for a hot path (PUBLISH).

redis-py's ``execute_command`` takes a connection from the pool and gives it back around each
command (the pool's condition and lock, a timeout, its observability hooks, the retry policy's
wrapper): on a ``PATCH`` that is most of the PUBLISH's CPU, more than the round trip itself
(docs/benchmarks.md). ``DirectCommands`` keeps one of the pool's connections checked out and
sends each command on it directly while it is free; a command arriving while it is busy goes
through the client as before (the pool's other connections).

Guarantees, the client's (``Redis.execute_command`` with one retry on a fresh connection):

* A reply is what the client's ``execute_command`` returns for it (its response callbacks
  apply: ``PING`` is True); an error reply raises ``ResponseError`` (the connection stays in
  step and is kept).
* A command whose connection fails (closed by a Redis restart, reset: ``ConnectionError``, or
  ``TimeoutError``) is sent once more through the client, on a connection from the pool; the
  kept one goes back to the pool (redis-py has disconnected it; the pool reconnects it when
  it hands it out again). As with the client's own retry, a command whose reply was lost may
  so run twice (a PUBLISH is delivered twice; subscribers drop the repeat by its offset).
* A command cancelled (the caller's timeout) gives the connection back to the pool,
  disconnected by redis-py, so no later command reads its reply.
* No bound of its own: the caller bounds each command (``asyncio.timeout``).
"""

from __future__ import annotations

import inspect
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["DirectCommands"]


class DirectCommands:
    """``execute`` a command on the kept connection when it is free (see the module)."""

    def __init__(self, client: Redis, pool: BlockingConnectionPool) -> None:
        # Any: redis-py's asyncio client and pool are not typed (``no-untyped-call``).
        self._client: Any = client
        self._pool: Any = pool
        self._kept: Any = None  # the connection kept out of the pool, while free
        self._busy = False
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Run one command (see the module); raises what ``Redis.execute_command`` raises."""
        if self._busy or self._closed:
            return await self._client.execute_command(*args)
        self._busy = True
        conn, self._kept = self._kept, None
        try:
            if conn is None:
                conn = await self._pool.get_connection()
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            self._keep(conn)  # answered: in step
            raise
        except (RedisConnectionError, RedisTimeoutError):
            if conn is not None:
                await self._pool.release(conn)
        except BaseException:
            if conn is not None:
                await self._pool.release(conn)
            raise
        else:
            self._keep(conn)
            callback = self._client.response_callbacks.get(args[0])
            if callback is None:
                return reply
            reply = callback(reply)  # as the client's own parse_response does
            return await reply if inspect.isawaitable(reply) else reply
        finally:
            self._busy = False
        return await self._client.execute_command(*args)  # once more, on a fresh connection

    def _keep(self, conn: Any) -> None:
        # Closed meanwhile: the pool has closed every connection, this one included.
        self._kept = None if self._closed else conn

    async def aclose(self) -> None:
        """Give the kept connection back to the pool (before the pool closes). Idempotent."""
        self._closed = True
        conn, self._kept = self._kept, None
        if conn is not None:
            await self._pool.release(conn)
