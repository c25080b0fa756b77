"""A session's own bookkeeping of its rooms: subscriptions, presence and revocations seen.

The node calls these methods and does the hub's, the broker's and presence's part (tested with
the node in ``tests/integration/test_node_revocation.py`` and the WebSocket tests).
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from liveboard.auth import Principal
from liveboard.realtime.session import NOWHERE, Session
from liveboard.realtime.transport import Connection
from tests.support.app import make_settings
from tests.support.fakes import FakeConnection


def new_session() -> Session:
    principal = Principal(user_id="carol", name="Carol", expires_at=time.time() + 3600)
    return Session(cast(Connection, FakeConnection()), "c-1", principal, make_settings("sqlite://"))


async def test_a_subscription_is_recorded_once_with_its_workspace() -> None:
    session = new_session()
    assert not session.is_subscribed("project:p1")
    assert session.subscribe_to("project:p1", "w1") is True
    assert session.subscribe_to("project:p1", "w1") is False, "a renewal is not new"
    assert session.subscribe_to("workspace:w2", "w2") is True
    assert session.is_subscribed("project:p1")
    assert session.subscription_count() == 2
    assert session.subscriptions == {"project:p1": "w1", "workspace:w2": "w2"}


async def test_the_subscriptions_view_is_read_only() -> None:
    session = new_session()
    session.subscribe_to("project:p1", "w1")
    view: Any = session.subscriptions
    with pytest.raises(TypeError):
        view["project:p2"] = "w1"
    assert session.subscriptions == {"project:p1": "w1"}


async def test_dropping_a_subscription_returns_its_workspace() -> None:
    session = new_session()
    session.subscribe_to("project:p1", "w1")
    assert session.drop_subscription("project:p1") == "w1"
    assert session.drop_subscription("project:p1") is None
    assert not session.is_subscribed("project:p1")
    assert session.subscription_count() == 0


async def test_the_rooms_of_a_workspace_and_dropping_them_all() -> None:
    session = new_session()
    for room, workspace_id in (("project:p1", "w1"), ("workspace:w1", "w1"), ("project:p2", "w2")):
        session.subscribe_to(room, workspace_id)
    assert session.rooms_of_workspace("w1") == ["project:p1", "workspace:w1"]
    assert session.rooms_of_workspace("w3") == []
    assert session.drop_all_subscriptions() == [
        ("project:p1", "w1"),
        ("workspace:w1", "w1"),
        ("project:p2", "w2"),
    ]
    assert session.subscriptions == {}


async def test_presence_in_rooms() -> None:
    session = new_session()
    assert not session.is_present("project:p1")
    session.mark_present("project:p1")
    session.mark_present("project:p2")
    assert session.is_present("project:p1")
    assert session.mark_absent("project:p1") is True
    assert session.mark_absent("project:p1") is False, "not present: nothing to leave"
    assert not session.is_present("project:p1")
    assert session.leave_all_presence() == {"project:p2"}
    assert not session.is_present("project:p2")
    assert session.leave_all_presence() == frozenset()


async def test_sessions_present_nowhere_share_one_empty_value() -> None:
    """Thousands of idle connections: none of them holds a set of its own."""
    first, second = new_session(), new_session()
    assert first.leave_all_presence() is NOWHERE
    assert second.leave_all_presence() is NOWHERE
    first.mark_present("project:p1")
    first.leave_all_presence()
    assert first.leave_all_presence() is NOWHERE


async def test_the_latest_revocation_of_a_workspace_is_remembered() -> None:
    session = new_session()
    assert not session.revoked_after("w1", 0)
    session.note_revocation("w1", 7)
    session.note_revocation("w1", 5)  # an older one, seen later
    assert session.revoked_after("w1", 6)
    assert not session.revoked_after("w1", 7)
    assert not session.revoked_after("w2", 0)
