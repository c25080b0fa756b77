"""Request/reply on the WebSocket: ids, the futures waiting for replies, and matching them.

Guarantees:

* Ids come from one counter per client, so an id is never reused, across reconnects too; a
  late reply to a request of an earlier connection can never answer a newer request.
* ``request`` resolves only with the reply that echoes its id: the reply struct of the
  expected type, ``LiveboardClientError(code, message)`` for an ``error`` reply, or
  ``LiveboardClientError("unexpected_reply", ...)`` for any other type.
* A request on a link that is not current fails at once with ``ConnectionLostError``; one
  still waiting when its link ends fails with the error given to ``fail_pending``
  (``ConnectionLostError``, or the client's fatal error / ``ClientClosedError`` on shutdown).
* ``within`` bounds the wait (``TimeoutError``); the pending entry is removed however the
  request ends, so nothing leaks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TypeVar

from liveboard.client.errors import ConnectionLostError, LiveboardClientError
from liveboard.client.link import Link
from liveboard.protocol import ClientMessage, ErrorReply, Reply

log = logging.getLogger("liveboard.client")

R = TypeVar("R", bound=Reply)


class Requests:
    """The client's requests in flight, by id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}

    def new_id(self) -> int:
        """A request id never used before by this client."""
        return next(self._ids)

    async def request(
        self,
        link: Link,
        message: ClientMessage,
        rid: int,
        reply_type: type[R],
        *,
        within: float | None = None,
    ) -> R:
        """Send ``message`` (whose id is ``rid``) and wait for the reply that echoes ``rid``."""
        if not link.current:
            raise ConnectionLostError()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await link.send(message)
            async with asyncio.timeout(within):
                reply = await future
        finally:
            self._pending.pop(rid, None)
        if not isinstance(reply, reply_type):
            raise LiveboardClientError(
                "unexpected_reply", f"expected {reply_type.__name__}, got {type(reply).__name__}"
            )
        return reply

    def resolve(self, reply: Reply) -> None:
        """Answer the request ``reply`` echoes; a reply nobody waits for is dropped (logged
        if it is an error)."""
        rid = reply.id
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is None or future.done():
            if isinstance(reply, ErrorReply):
                log.warning("server error for request %s: %s: %s", rid, reply.code, reply.message)
            return
        if isinstance(reply, ErrorReply):
            future.set_exception(LiveboardClientError(reply.code, reply.message))
        else:
            future.set_result(reply)

    def fail_pending(self, error: LiveboardClientError) -> None:
        """Fail every request still waiting with ``error``."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved
