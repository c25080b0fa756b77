"""liveboard: a real-time layer for task boards.

A task service (REST) whose every change is committed together with an event, and a WebSocket
layer that delivers those events to everyone looking at a project, in order, without gaps, across
many instances joined by Redis. See README.md and docs/ for the guarantees.

``liveboard.emit(conn, room, type, data)`` and ``liveboard.position(conn, room)`` let a Python
backend append its own events to a room inside its own transaction (``liveboard.open_log``);
they are imported on first use, so ``import liveboard.client`` stays free of SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from liveboard.open_log import EmitError, emit, position

__all__ = ["EmitError", "__version__", "emit", "position"]


def __getattr__(name: str) -> Any:
    if name in ("EmitError", "emit", "position"):
        from liveboard import open_log

        return getattr(open_log, name)
    raise AttributeError(f"module 'liveboard' has no attribute {name!r}")
