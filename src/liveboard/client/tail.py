"""``liveboard tail``: print a room's events as they happen, one per line (for operators).

    liveboard tail --room project:ID [--url http://127.0.0.1:8000] [--token T]
                   [--since OFFSET --epoch E] [--json] [--presence]

The token comes from ``--token`` or ``$LIVEBOARD_TOKEN``. Events go to stdout — by default as
``time  #offset  type  user  summary``, with ``--json`` as the raw event JSON — each once and in
order across reconnects (the SDK resubscribes with ``since``). Connection changes, resyncs and
(with ``--presence``) presence changes go to stderr, so stdout stays pipeable.

Exit codes: 0 on Ctrl-C or SIGTERM, 1 when the subscription is refused or revoked or the
connection cannot be used (a rejected token; a fixed token also ends the tail when it expires),
2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from liveboard.client.client import LiveboardClient
from liveboard.client.config import environment_token
from liveboard.client.connection import ConnectionState
from liveboard.client.errors import LiveboardClientError
from liveboard.client.messages import Resync, Revoked
from liveboard.protocol import Event, Position, PresenceUpdate, encode_event

DEFAULT_URL = "http://127.0.0.1:8000"
_SUMMARY_WIDTH = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``tail``'s options to ``parser`` (a sub-command parser of ``liveboard``)."""
    parser.add_argument("--room", required=True, help="the room: project:ID or workspace:ID")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL ({DEFAULT_URL})")
    parser.add_argument("--token", help="a JWT (default: $LIVEBOARD_TOKEN)")
    parser.add_argument(
        "--since", type=int, metavar="OFFSET", help="replay events after OFFSET (needs --epoch)"
    )
    parser.add_argument("--epoch", help="the epoch of --since")
    parser.add_argument("--json", action="store_true", help="print each event's raw JSON")
    parser.add_argument(
        "--presence", action="store_true", help="join the room's presence; print changes"
    )


def format_event(event: Event) -> str:
    """One human line: ``12:00:01.234  #42  task:moved  alice  tsk_1 todo → done``."""
    moment = datetime.fromtimestamp(event.ts / 1000).strftime("%H:%M:%S.%f")[:-3]
    return f"{moment}  #{event.offset}  {event.type}  {event.user_id}  {summarize(event)}"


def summarize(event: Event) -> str:
    """A short description of what changed."""
    data = event.data
    kind = event.type
    task: dict[str, Any] = data["task"] if isinstance(data.get("task"), dict) else {}
    if kind == "task:created":
        return f"{_title(task)} in {task.get('status')} ({task.get('id')})"
    if kind == "task:updated":
        changes = data.get("changes") or {}
        parts = [
            f"{name} {_short(change.get('from'))} → {_short(change.get('to'))}"
            for name, change in changes.items()
            if isinstance(change, dict)
        ]
        return f"{_title(task)}: " + ", ".join(parts)
    if kind == "task:moved":
        return (
            f"{data.get('taskId')} {data.get('fromStatus')} → {data.get('toStatus')}"
            f" (order {data.get('order')})"
        )
    if kind == "task:deleted":
        return str(data.get("taskId"))
    if kind == "project:created":
        project: dict[str, Any] = data["project"] if isinstance(data.get("project"), dict) else {}
        return f"{_title(project, 'name')} ({project.get('id')})"
    if kind == "member:added":
        return f"{data.get('userId')} as {data.get('role')}"
    if kind == "member:removed":
        return str(data.get("userId"))
    return _short(data)


def _title(resource: Any, key: str = "title") -> str:
    return _short(resource.get(key) if isinstance(resource, dict) else None)


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 1] + "…"


async def run(args: argparse.Namespace) -> int:
    """Run ``liveboard tail`` until Ctrl-C / SIGTERM (0) or a fatal error (1)."""
    token = args.token or environment_token()
    if not token:
        print("liveboard tail: no token: pass --token or set LIVEBOARD_TOKEN", file=sys.stderr)
        return 2
    if (args.since is None) != (args.epoch is None):
        print("liveboard tail: --since and --epoch go together", file=sys.stderr)
        return 2
    since = None
    if args.since is not None:
        since = Position(offset=args.since, epoch=args.epoch)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        client = LiveboardClient(args.url, token)
    except ValueError as exc:
        print(f"liveboard tail: {exc}", file=sys.stderr)
        return 2
    client.on_state_change(lambda state: _status(f"{state}"))
    tail = asyncio.ensure_future(_tail(client, args.room, since, args.json, args.presence))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({tail, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if tail.done():
            return tail.result()
        return 0
    finally:
        stopper.cancel()
        tail.cancel()
        with contextlib.suppress(BaseException):
            await tail
        await client.aclose()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _tail(
    client: LiveboardClient,
    room: str,
    since: Position | None,
    raw: bool,
    presence: bool,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    try:
        sub = await client.subscribe(room, since=since)
        if sub.position is not None:
            _status(f"subscribed to {room} at #{sub.position.offset}")
        if presence:
            await sub.join_presence()
        async for item in sub:
            if isinstance(item, Event):
                line = encode_event(item).decode() if raw else format_event(item)
                print(line, file=out, flush=True)
            elif isinstance(item, Resync):
                _status(
                    f"resync ({item.reason}): events before #{item.offset + 1} may be missing;"
                    " continuing"
                )
            elif isinstance(item, PresenceUpdate):
                names = ", ".join(u.name for u in item.users) or "nobody"
                _status(f"present: {names}")
            elif isinstance(item, Revoked):
                _status(f"subscription ended by the server ({item.reason})")
                return 1
    except LiveboardClientError as exc:
        _status(f"error: {exc.code}: {exc.message}")
        return 1
    except BrokenPipeError:
        return 0
    if client.error is not None:
        _status(f"error: {client.error.code}: {client.error.message}")
        return 1
    return 0


def _status(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"-- {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m liveboard.client.tail ...``: the same as ``liveboard tail ...``."""
    parser = argparse.ArgumentParser(prog="liveboard tail", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["ConnectionState", "add_arguments", "format_event", "main", "run", "summarize"]
