"""liveboard: a real-time layer for task boards.

A task service (REST) whose every change is committed together with an event, and a WebSocket
layer that delivers those events to everyone looking at a project, in order, without gaps, across
many instances joined by Redis. See README.md and docs/ for the guarantees.
"""

__version__ = "0.1.0"
