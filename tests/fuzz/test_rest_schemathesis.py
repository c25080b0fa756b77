"""REST fuzzing with schemathesis against the app's own OpenAPI document (CONTRACT §3).

A real ``liveboard serve --dev`` process serves ``/openapi.json``; every operation in it is fuzzed
with schemathesis-generated requests, positive (valid by the schema) and negative (invalid),
authenticated with valid tokens of workspace admins. Path parameters are, half of the time, real
ids (a workspace, project, tasks and members that exist), so the calls reach past the 404s.

What must hold for every response:

* no 5xx (``not_a_server_error``);
* every 4xx body is ``{"error": {"code", "message", "details"?}}`` with the code the contract
  pairs with the status (400 ``bad_request`` ... 429 ``rate_limited``);
* schemathesis' conformance checks: the status is documented, the content type and the body of
  the response match the document; invalid input is refused (``negative_data_rejection``); a
  request without the token is refused (``ignored_auth``); unsupported methods are refused.

Knobs: ``LIVEBOARD_SCHEMATHESIS_EXAMPLES`` examples per operation and mode (default 25: ~30 s;
``make fuzz`` uses 400), ``LIVEBOARD_FUZZ_SEED``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from liveboard.openapi import build_document
from tests.support.contract import CONTRACT_CODES
from tests.support.servers import LiveboardProcess
from tests.support.tokens import make_token

EXAMPLES = int(os.environ.get("LIVEBOARD_SCHEMATHESIS_EXAMPLES", "25"))
FUZZ_SEED = int(os.environ.get("LIVEBOARD_FUZZ_SEED", "20261126"))

# 405 is outside the contract's status list; the app answers it with the bad_request code.
EXTRA_CODES = {405: "bad_request"}

# The document is generated from the route table, without a server: operations are known at
# collection time. ``test_served_document_is_the_one_fuzzed`` checks the server serves this one.
DOCUMENT = build_document(dev=True)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [
    (method.upper(), path) for path, methods in DOCUMENT["paths"].items() for method in methods
]

pytestmark = pytest.mark.timeout(900)


@dataclass
class Api:
    """The server under test and the real ids path parameters may take."""

    server: LiveboardProcess
    users: list[str]
    ids: dict[str, list[str]]
    session: requests.Session = field(default_factory=requests.Session)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self) -> dict[str, str]:
        """A token of the next admin in turn (each user has its own REST rate limit)."""
        with self._lock:
            user = self.users[next(self._turn) % len(self.users)]
        return {"Authorization": f"Bearer {make_token(user)}"}

    def call(self, method: str, path: str, user: str, body: Any = None) -> Any:
        response = self.session.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {make_token(user)}"},
            timeout=10,
        )
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("fuzz-rest")
    server = LiveboardProcess(
        database_url=f"sqlite:///{directory / 'liveboard.db'}",
        log_path=directory / "server.log",
        dev=True,
    ).start()
    try:
        owner = "st-owner"
        admins = [owner] + [f"st-admin-{i}" for i in range(7)]
        victims = [f"st-member-{i}" for i in range(6)]
        bootstrap = Api(server, admins, {})
        ws = bootstrap.call("POST", "/api/workspaces", owner, {"name": "fuzz"})
        wid = ws["id"]
        for user in admins[1:]:
            body = {"userId": user, "role": "admin"}
            bootstrap.call("POST", f"/api/workspaces/{wid}/members", owner, body)
        for user in victims:
            bootstrap.call("POST", f"/api/workspaces/{wid}/members", owner, {"userId": user})
        pid = bootstrap.call("POST", f"/api/workspaces/{wid}/projects", owner, {"name": "p"})["id"]
        tids = [
            bootstrap.call("POST", f"/api/projects/{pid}/tasks", owner, {"title": f"t{i}"})["id"]
            for i in range(40)
        ]
        # members that fuzzed DELETEs may remove; the owner (409 if removed) and one admin
        bootstrap.ids = {"wid": [wid], "pid": [pid], "tid": tids, "uid": [*victims, owner]}
        yield bootstrap
    finally:
        server.kill()


def _contract_error_shape(ctx: schemathesis.CheckContext, response: Any, case: Any) -> None:
    """Every 4xx: ``{"error": {"code", "message", "details"?}}``, the code the status's own."""
    status = response.status_code
    if not 400 <= status < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{status} body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict), f"{status} body is not an object: {body!r}"
    assert set(body) == {"error"}, f"{status} body keys {sorted(body)}: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"{status} error is not an object: {body!r}"
    assert set(error) <= {"code", "message", "details"}, f"{status} error keys: {body!r}"
    expected = CONTRACT_CODES.get(status) or EXTRA_CODES.get(status)
    assert expected is not None, f"status {status} is outside the contract: {body!r}"
    assert error.get("code") == expected, f"{status} with code {error.get('code')!r}: {body!r}"
    message = error.get("message")
    assert isinstance(message, str), f"{status} message is not a string: {body!r}"
    assert message, f"{status} with an empty message: {body!r}"
    if "details" in error:
        assert isinstance(error["details"], dict), f"{status} details: {body!r}"


def test_served_document_is_the_one_fuzzed(api: Api) -> None:
    served = api.session.get(f"{api.url}/openapi.json", timeout=10).json()
    assert served == DOCUMENT
    assert OPERATIONS, "the document lists no operation"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation(api: Api, method: str, path: str, mode: GenerationMode) -> None:
    operation = SCHEMA[path][method]
    rng = random.Random(f"{FUZZ_SEED}:{method}:{path}:{mode}")
    statuses: dict[int, int] = {}

    @seed(FUZZ_SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        if case.path_parameters and rng.random() < 0.5:
            for name in case.path_parameters:
                if name in api.ids:
                    case.path_parameters[name] = rng.choice(api.ids[name])
        headers = api.headers()
        response = case.call(base_url=api.url, session=api.session, headers=headers, timeout=10)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(
            response,
            headers=headers,
            # the document's ids are opaque strings: a valid id that names nothing is a 404
            excluded_checks=[positive_data_acceptance],
            additional_checks=[_contract_error_shape],
            transport_kwargs={"base_url": api.url, "session": api.session, "headers": headers},
        )

    run()
    assert statuses, "no request was made"
    assert api.server.process is not None
    assert api.server.process.poll() is None, "the server died"
    print(f"\n{method} {path} {mode}: statuses {dict(sorted(statuses.items()))}")
