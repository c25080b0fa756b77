"""Bad input answers from the contract's closed list, the same on SQLite and PostgreSQL.

CONTRACT §3: every error is a 4xx with ``{"error": {"code", "message"}}``; nothing a client
sends may make a 500. Each class an outside test broke has its cases here, run on a real SQLite
file and on the real PostgreSQL server (``database_url``):

* bodies the JSON decoder chokes on: invalid UTF-8 in a string, nesting deeper than it recurses
  (in a field the model ignores) → 400;
* text the databases store differently: U+0000 in any string field → 422 on both (PostgreSQL
  refuses it, SQLite stored it); path ids that no row can have → 404;
* header values ``int()`` chokes on: ``If-Match`` of 5,000 digits, ``²``, past 2**63 - 1 → 400;
* validly signed tokens with claims the store or the clock cannot hold: ``sub`` over 255
  characters, with U+0000 or an unpaired surrogate; ``exp`` past ``auth.MAX_EXP`` (10**400
  overflowed ``float()``); a ``name`` with an unpaired surrogate → 401, and ``error
  unauthorized`` (not 1011) for a WebSocket ``refresh``.

Then the property: generated bodies, headers, path ids and tokens sent to a SQLite server and a
PostgreSQL server (real processes) get the same status from both, never a 5xx.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.board import Board
from tests.support.contract import CONTRACT_CODES
from tests.support.servers import LiveboardProcess
from tests.support.tokens import auth, make_token, signed_token

# The PostgreSQL database is shared by the whole test run: a user of this module's own.
OWNER = f"bad-input-{secrets.token_hex(4)}"
ALICE = auth(OWNER)


async def _setup(client: TestClient[Any, Any]) -> dict[str, str]:
    """OWNER's workspace, project and task: the ids path parameters may take."""
    r = await client.post("/api/workspaces", json={"name": "w"}, headers=ALICE)
    wid = (await r.json())["id"]
    r = await client.post(f"/api/workspaces/{wid}/projects", json={"name": "p"}, headers=ALICE)
    pid = (await r.json())["id"]
    r = await client.post(f"/api/projects/{pid}/tasks", json={"title": "t"}, headers=ALICE)
    tid = (await r.json())["id"]
    return {"wid": wid, "pid": pid, "tid": tid}


async def _answer(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> None:
    body = await response.text()
    assert response.status == status, body
    error = json.loads(body)["error"]
    assert error["code"] == (code or CONTRACT_CODES[status]), body


def _json_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**ALICE, "Content-Type": "application/json", **(extra or {})}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"title": "\xff"}', id="invalid-utf8-in-a-string"),
        pytest.param(b'{"title": "ok \xed\xa0\x80"}', id="utf8-encoded-surrogate"),
        pytest.param(
            b'{"title": "t", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            id="100000-nested-arrays-in-an-unknown-field",
        ),
        pytest.param(
            b'{"title": "t", "x": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
            id="50000-nested-objects-in-an-unknown-field",
        ),
        pytest.param(b'{"title": "\\ud800"}', id="unpaired-surrogate-escape"),
    ],
)
async def test_bodies_the_decoder_chokes_on_are_400(
    client: TestClient[Any, Any], body: bytes
) -> None:
    ids = await _setup(client)
    response = await client.post(
        f"/api/projects/{ids['pid']}/tasks", data=body, headers=_json_headers()
    )
    await _answer(response, 400)


NUL = "a\u0000b"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/workspaces", {"name": NUL}, "name"),
        ("POST", "/api/projects/{pid}/tasks", {"title": NUL}, "title"),
        ("POST", "/api/projects/{pid}/tasks", {"title": "t", "description": NUL}, "description"),
        ("POST", "/api/projects/{pid}/tasks", {"title": "t", "status": NUL}, "status"),
        ("POST", "/api/projects/{pid}/tasks", {"title": "t", "assigneeId": NUL}, "assigneeId"),
        ("PATCH", "/api/tasks/{tid}", {"title": NUL}, "title"),
        ("PATCH", "/api/tasks/{tid}", {"description": NUL}, "description"),
        ("POST", "/api/tasks/{tid}/move", {"toStatus": NUL}, "toStatus"),
        ("POST", "/api/workspaces/{wid}/projects", {"name": NUL}, "name"),
        ("POST", "/api/workspaces/{wid}/projects", {"name": "p", "statuses": [NUL]}, "statuses"),
        ("POST", "/api/workspaces/{wid}/members", {"userId": NUL}, "userId"),
    ],
)
async def test_text_with_nul_is_refused_on_both_databases(
    client: TestClient[Any, Any], method: str, path: str, body: dict[str, Any], field: str
) -> None:
    ids = await _setup(client)
    response = await client.request(method, path.format(**ids), json=body, headers=ALICE)
    await _answer(response, 422)
    assert (await response.json())["error"]["details"]["field"].startswith(field)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tasks/%00"),
        ("PATCH", "/api/tasks/a%00b"),
        ("GET", "/api/projects/%00/tasks"),
        ("GET", "/api/workspaces/%00/members"),
        ("DELETE", "/api/workspaces/{wid}/members/%00"),
        ("DELETE", "/api/workspaces/{wid}/members/" + "u" * 256),
        ("GET", "/api/tasks/" + "t" * 5000),
    ],
)
async def test_path_ids_no_row_can_have_are_404(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    ids = await _setup(client)
    body = {"title": "x"} if method == "PATCH" else None
    response = await client.request(method, path.format(**ids), json=body, headers=ALICE)
    await _answer(response, 404)


@pytest.mark.parametrize(
    "if_match", ["9" * 5000, "\u00b2", '"\u0663"', str(2**63), "0", "-1", "1.0", ""]
)
async def test_if_match_that_is_no_version_is_400(
    client: TestClient[Any, Any], if_match: str
) -> None:
    ids = await _setup(client)
    headers = {**ALICE, "If-Match": if_match}
    for method, path in (("PATCH", "/api/tasks/{tid}"), ("DELETE", "/api/tasks/{tid}")):
        body = {"title": "x"} if method == "PATCH" else None
        response = await client.request(method, path.format(**ids), json=body, headers=headers)
        await _answer(response, 400)
    # A version past the bound in the body is a field out of range, as any other.
    too_high: dict[str, object] = {"title": "x", "version": 2**63}
    response = await client.patch(f"/api/tasks/{ids['tid']}", json=too_high, headers=ALICE)
    await _answer(response, 422)


EXP = int(time.time()) + 3600
MAX_EXP = 2**53 - 1  # liveboard.auth.MAX_EXP: the largest integer a JavaScript number holds
_ME = OWNER.encode()
CLAIMS_REFUSED = {
    "sub-256-characters": b'{"sub": "%s", "exp": %d}' % (b"u" * 256, EXP),
    "sub-with-nul": b'{"sub": "a\\u0000b", "exp": %d}' % EXP,
    "sub-unpaired-surrogate": b'{"sub": "\\ud800", "exp": %d}' % EXP,
    "exp-10**400": b'{"sub": "%s", "exp": 1%s}' % (_ME, b"0" * 400),
    "exp-past-max": b'{"sub": "%s", "exp": %d}' % (_ME, MAX_EXP + 1),
    "exp-1e308": b'{"sub": "%s", "exp": 1e308}' % _ME,
    "exp-NaN": b'{"sub": "%s", "exp": NaN}' % _ME,
    "exp-Infinity": b'{"sub": "%s", "exp": Infinity}' % _ME,
    "name-unpaired-surrogate": b'{"sub": "%s", "exp": %d, "name": "\\udc00"}' % (_ME, EXP),
    "claims-nested-3000-deep": b'{"sub": "%s", "exp": %d, "x": %s}'
    % (_ME, EXP, b"[" * 3000 + b"]" * 3000),
}


@pytest.mark.parametrize("claims", CLAIMS_REFUSED.values(), ids=CLAIMS_REFUSED.keys())
async def test_signed_tokens_with_claims_the_store_cannot_hold_are_401(
    client: TestClient[Any, Any], claims: bytes
) -> None:
    headers = {"Authorization": f"Bearer {signed_token(claims)}"}
    for method, path in (("POST", "/api/workspaces"), ("GET", "/api/workspaces")):
        body = {"name": "w"} if method == "POST" else None
        response = await client.request(method, path, json=body, headers=headers)
        await _answer(response, 401)


async def test_the_longest_user_id_works_on_both_databases(client: TestClient[Any, Any]) -> None:
    """The bound is the columns' size: a 255-character ``sub`` is a user like any other."""
    user = "u" * 255
    response = await client.post("/api/workspaces", json={"name": "w"}, headers=auth(user))
    assert response.status == 201
    wid = (await response.json())["id"]
    response = await client.get(f"/api/workspaces/{wid}/members", headers=auth(user))
    assert await response.json() == [{"userId": user, "role": "owner"}]


async def test_refused_claims_on_the_websocket(board: Board) -> None:
    """An upgrade with such a token is a 401; a ``refresh`` with one is ``error unauthorized``
    and the connection stays open (it was closed 1011 when ``float(exp)`` overflowed)."""
    huge = signed_token(CLAIMS_REFUSED["exp-10**400"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await board.connect(token=huge)
    assert refused.value.status == 401
    client = await board.connect(board.user("alice"))
    for name in ("exp-10**400", "exp-1e308", "sub-with-nul", "name-unpaired-surrogate"):
        token = signed_token(CLAIMS_REFUSED[name])
        reply = await client.request({"type": "refresh", "token": token})
        assert (reply["type"], reply["code"]) == ("error", "unauthorized"), name
    assert (await client.request({"type": "ping"}))["type"] == "pong"


# The property: the same input, the same answer on both databases, never a 5xx.

MAX_EXAMPLES = int(os.environ.get("LIVEBOARD_BAD_INPUT_EXAMPLES", "60"))
OPERATIONS = [
    ("POST", "/api/workspaces", "name"),
    ("POST", "/api/workspaces/{wid}/projects", "name"),
    ("POST", "/api/workspaces/{wid}/members", "userId"),
    ("POST", "/api/projects/{pid}/tasks", "title"),
    ("POST", "/api/projects/{pid}/tasks", "description"),
    ("PATCH", "/api/tasks/{tid}", "title"),
    ("PATCH", "/api/tasks/{tid}", "description"),
    ("PATCH", "/api/tasks/{tid}", "assigneeId"),
    ("POST", "/api/tasks/{tid}/move", "toStatus"),
    ("POST", "/api/projects/{pid}/tasks", "order"),
    ("POST", "/api/tasks/{tid}/move", "order"),
    ("PATCH", "/api/tasks/{tid}", "version"),
]
REQUIRED = {
    "/api/projects/{pid}/tasks": {"title": "t"},
    "/api/tasks/{tid}/move": {"toStatus": "todo"},
}

# Text with what databases and decoders disagree on: U+0000, other controls, astral characters,
# unpaired surrogates (as JSON escapes: no encoder writes them), lengths around the bounds.
_texts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=190, max_size=300),
    st.sampled_from(["\u0000", "a\u0000", "\ud800", "x\udfff", "u" * 255, "u" * 256, "𝄞" * 201]),
)
_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity", "1e308", "0.5"]),
)


def _json_string(text: str) -> bytes:
    """``text`` as a JSON string, unpaired surrogates written as ``\\uXXXX`` escapes."""
    return json.dumps(text).encode("utf-8", "surrogatepass")


@st.composite
def _bodies(draw: st.DrawFn, field: str, required: dict[str, str]) -> bytes:
    value = draw(st.one_of(_texts.map(_json_string), _numbers.map(str.encode)))
    members = [b'"%s": %s' % (field.encode(), value)]
    members += [b'"%s": "%s"' % (k.encode(), v.encode()) for k, v in required.items() if k != field]
    shape = draw(st.sampled_from(["plain", "deep", "bad-utf8", "truncated"]))
    if shape == "deep":
        depth = draw(st.sampled_from([10, 2000, 100_000]))
        members.append(b'"extra": ' + b"[" * depth + b"]" * depth)
    body = b"{" + b", ".join(members) + b"}"
    if shape == "bad-utf8":
        cut = draw(st.integers(min_value=1, max_value=len(body) - 1))
        body = body[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[cut:]
    elif shape == "truncated":
        body = body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]
    return body


@st.composite
def _tokens(draw: st.DrawFn) -> str:
    sub = draw(st.one_of(st.just(OWNER), _texts))
    claims = b'{"sub": %s, "exp": %s' % (_json_string(sub), draw(_numbers).encode())
    if draw(st.booleans()):
        claims += b', "name": ' + _json_string(draw(_texts))
    return signed_token(claims + b"}")


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    """One request; ``{wid}``-style placeholders stand for each server's own ids."""
    method, path, field = draw(st.sampled_from(OPERATIONS))
    body: bytes | None = draw(_bodies(field, REQUIRED.get(path, {})))
    headers = {"Content-Type": "application/json"}
    kind = draw(st.sampled_from(["body", "if-match", "path-id", "token"]))
    if kind == "if-match":
        method, path, body = "PATCH", "/api/tasks/{tid}", b'{"title": "t"}'
        latin1 = st.characters(codec="latin-1", exclude_categories=["Cc"])
        header = draw(st.one_of(_numbers, st.text(alphabet=latin1)))
        headers["If-Match"] = header.strip() or "1"
    elif kind == "path-id":
        text = draw(_texts)
        quoted = urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")
        method, path = draw(
            st.sampled_from(
                [
                    ("GET", "/api/tasks/" + quoted),
                    ("GET", "/api/projects/" + quoted),
                    ("GET", "/api/workspaces/" + quoted + "/members"),
                    ("DELETE", "/api/workspaces/{wid}/members/" + quoted),
                ]
            )
        )
        body = None
    if kind == "token":
        headers["Authorization"] = "Bearer " + draw(_tokens())
    else:
        headers["Authorization"] = "Bearer " + make_token(OWNER)
    return method, path, headers, body


TALLY: Counter[int] = Counter()


@pytest.fixture
def two_servers(
    server_factory: Callable[..., LiveboardProcess], postgres_server_url: str
) -> Iterator[list[tuple[LiveboardProcess, dict[str, str]]]]:
    """A server on a new SQLite file and one on PostgreSQL, each with OWNER's board; prints the
    statuses both answered (``-s``) at the end."""
    servers = []
    for database_url in (None, postgres_server_url):
        server = server_factory(database_url=database_url)
        session = requests.Session()
        session.headers.update(ALICE)
        wid = session.post(f"{server.url}/api/workspaces", json={"name": "w"}).json()["id"]
        url = f"{server.url}/api/workspaces/{wid}/projects"
        pid = session.post(url, json={"name": "p"}).json()["id"]
        url = f"{server.url}/api/projects/{pid}/tasks"
        tid = session.post(url, json={"title": "t"}).json()["id"]
        servers.append((server, {"wid": wid, "pid": pid, "tid": tid}))
    TALLY.clear()
    yield servers
    print(f"\nstatuses answered alike by both: {dict(sorted(TALLY.items()))}")


@pytest.mark.postgres
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_requests())
def test_both_databases_answer_every_input_alike(
    two_servers: list[tuple[LiveboardProcess, dict[str, str]]],
    request: tuple[str, str, dict[str, str], bytes | None],
) -> None:
    """Each generated request goes to both servers, which hold the same state (the same
    requests, in the same order): the same status from both, from the contract's list."""
    method, path, headers, body = request
    answers = []
    for server, ids in two_servers:
        url = server.url + path.replace("{wid}", ids["wid"]).replace("{pid}", ids["pid"])
        url = url.replace("{tid}", ids["tid"])
        response = requests.request(method, url, headers=headers, data=body, timeout=30)
        answers.append((response.status_code, response.text))
    (sqlite_status, sqlite_text), (postgres_status, postgres_text) = answers
    shown = (method, path, body and body[:200], sqlite_text[:300], postgres_text[:300])
    assert sqlite_status < 500, shown
    assert postgres_status < 500, shown
    assert sqlite_status == postgres_status, shown
    TALLY[sqlite_status] += 1
    if sqlite_status >= 400:
        for _, text in answers:
            assert json.loads(text)["error"]["code"] == CONTRACT_CODES[sqlite_status], shown
