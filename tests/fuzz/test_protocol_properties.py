"""Property-based tests (hypothesis) of the live WebSocket protocol (CONTRACT §4).

For any text frame a client may send, a real server answers with exactly one direct reply:
the one the oracle predicts (``generators.ConnectionModel``), an ``error`` with a code from
the closed list when it is not a valid message; the connection stays open; the reply echoes the
``id`` when one could be read. Hypothesis shrinks any counter-example to a minimal frame.

Examples per property: ``LIVEBOARD_PROPERTY_EXAMPLES`` (default 150; ``make fuzz`` uses 3000).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.generators import ERROR_CODES, ConnectionModel, FuzzWorld
from tests.support.frames import text
from tests.support.rawws import Closed, RawWs
from tests.support.servers import LiveboardProcess, start_server
from tests.support.tokens import make_token

EXAMPLES = int(os.environ.get("LIVEBOARD_PROPERTY_EXAMPLES", "150"))
USER = "prop-user"
PER_CONNECTION = 15  # refused messages count towards the abuse limit (30): reconnect before


class Live:
    """One connection at a time to the server, driven from synchronous hypothesis tests."""

    def __init__(self, server: LiveboardProcess) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.ws: RawWs | None = None
        self.used = 0
        self.world = FuzzWorld(
            project_room="project:prj_none",
            workspace_room="workspace:ws_none",
            foreign_rooms=[],
            epoch="",
            tokens={f"self:{USER}": make_token(USER)},
            members=[],
            strangers=[USER],
        )

    def exchange(self, frame_text: str) -> tuple[Any, Any]:
        return self.loop.run_until_complete(self._exchange(frame_text))

    async def _exchange(self, frame_text: str) -> tuple[Any, Any]:
        if self.ws is None or self.used >= PER_CONNECTION:
            if self.ws is not None:
                self.ws.abort()
            self.ws = await RawWs.open("127.0.0.1", self.server.port, make_token(USER))
            assert (await self.ws.next_message(5))["type"] == "connected"
            self.used = 0
        self.used += 1
        self.ws.send_raw(text(frame_text.encode()) + text({"type": "ping", "id": "after"}))
        await self.ws.drain()
        reply = await self.ws.next_message(10)
        after = await self.ws.next_message(10)
        return reply, after

    def close(self) -> None:
        if self.ws is not None:
            self.ws.abort()
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = start_server(tmp_path_factory, "fuzz-properties")
    client = Live(server)
    yield client
    client.close()
    server.kill()


def _check(live: Live, frame_text: str) -> None:
    expected = ConnectionModel(USER, False, live.world).expect(frame_text)
    reply, after = live.exchange(frame_text)
    assert not isinstance(reply, Closed), f"closed by {frame_text[:200]!r}: {reply}"
    assert after == {"type": "pong", "id": "after"}, f"not open after {frame_text[:200]!r}"
    assert expected is not None  # a stranger's presence is refused: always one reply
    kind, code, message_id = expected
    assert reply.get("type") == kind, (frame_text[:200], reply, expected)
    if kind == "error":
        assert reply["code"] in ERROR_CODES
        assert reply["code"] == code, (frame_text[:200], reply, expected)
        assert isinstance(reply["message"], str)
        assert reply["message"]
    got = reply.get("id")
    assert type(got) is type(message_id), (frame_text[:200], reply, expected)
    assert got == message_id


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(["type", "room", "id", "since", "action", "token", "offset", "epoch"])
TYPES = st.sampled_from(
    ["ping", "subscribe", "unsubscribe", "presence", "refresh", "Ping", "pong", "", "error"]
)
ROOMS = st.one_of(
    st.sampled_from(["project:prj_none", "workspace:ws_none", "project:", "team:x"]),
    st.text(max_size=20),
    st.from_regex(r"(project|workspace):[A-Za-z0-9_-]{1,130}", fullmatch=True),
)
messages = st.fixed_dictionaries(
    {"type": st.one_of(TYPES, json_values)},
    optional={
        "room": st.one_of(ROOMS, json_values),
        "id": st.one_of(st.text(max_size=10), st.integers(), json_values),
        "since": st.one_of(
            st.fixed_dictionaries(
                {"offset": st.one_of(st.integers(), json_values), "epoch": st.text(max_size=5)}
            ),
            json_values,
        ),
        "action": st.one_of(st.sampled_from(["join", "leave"]), json_values),
        "token": st.one_of(st.text(max_size=20), json_values),
    },
)

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@PROPERTY
@given(value=json_values)
def test_any_json_value_gets_one_contract_reply(live: Live, value: Any) -> None:
    _check(live, json.dumps(value))


@PROPERTY
@given(message=messages, extra=st.dictionaries(KEYS, json_values, max_size=2))
def test_any_message_shaped_object_gets_its_reply(
    live: Live, message: dict[str, Any], extra: dict[str, Any]
) -> None:
    _check(live, json.dumps({**extra, **message}))


@PROPERTY
@given(frame_text=st.text(max_size=200))
def test_any_text_gets_one_contract_reply(live: Live, frame_text: str) -> None:
    try:
        frame_text.encode()
    except UnicodeEncodeError:  # lone surrogates cannot be sent in a text frame
        return
    _check(live, frame_text)
