"""REST authentication (CONTRACT §2): the bad-token matrix, audience and issuer.

Tokens are built with PyJWT directly (not with the product's ``issue_token``), so these tests
check the verifier against independently made tokens. The database is irrelevant here: SQLite.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.app import AppClientFactory, make_settings
from tests.support.contract import assert_error
from tests.support.tokens import TEST_SECRET

Client = TestClient[Any, Any]


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for alice; an override of ``None`` removes the claim."""
    now = int(time.time())
    values: dict[str, Any] = {"sub": "alice", "name": "Alice", "iat": now, "exp": now + 600}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = TEST_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT warns about short keys for HS384/HS512
        warnings.simplefilter("ignore")
        return jwt.encode(payload, key, algorithm=algorithm)


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(alg: str) -> str:
    """A hand-built token with ``alg`` (e.g. ``none``) and an empty signature."""
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."


def tampered() -> str:
    """A token for alice whose payload was swapped for bob's after signing."""
    header, _, signature = sign(claims()).split(".")
    return f"{header}.{b64(claims(sub='bob'))}.{signature}"


def rs256() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return sign(claims(), key, "RS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(tmp_path: Path, app_client_factory: AppClientFactory) -> Client:
    return await app_client_factory(make_settings(f"sqlite:///{tmp_path / 'auth.db'}"))


async def get_workspaces(client: Client, headers: dict[str, str]) -> tuple[int, Any]:
    async with client.get("/api/workspaces", headers=headers) as response:
        return response.status, await response.json()


BAD_HEADERS: dict[str, Callable[[], dict[str, str]]] = {
    "no-header": lambda: {},
    "empty-header": lambda: {"Authorization": ""},
    "basic-scheme": lambda: {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    "token-scheme": lambda: {"Authorization": f"Token {sign(claims())}"},
    "bare-token": lambda: {"Authorization": sign(claims())},
    "bearer-without-token": lambda: {"Authorization": "Bearer"},
    "bearer-two-tokens": lambda: {"Authorization": f"Bearer {sign(claims())} extra"},
    "alg-none": lambda: bearer(unsigned("none")),
    "alg-None": lambda: bearer(unsigned("None")),
    "alg-NONE": lambda: bearer(unsigned("NONE")),
    "wrong-key": lambda: bearer(sign(claims(), "another-secret-of-32-bytes-length!")),
    "hs384": lambda: bearer(sign(claims(), algorithm="HS384")),
    "hs512": lambda: bearer(sign(claims(), algorithm="HS512")),
    "rs256-unconfigured": lambda: bearer(rs256()),
    "tampered-payload": lambda: bearer(tampered()),
    "expired": lambda: bearer(sign(claims(exp=int(time.time()) - 30))),
    "no-sub": lambda: bearer(sign(claims(sub=None))),
    "empty-sub": lambda: bearer(sign(claims(sub=""))),
    "int-sub": lambda: bearer(sign(claims(sub=42))),
    "no-exp": lambda: bearer(sign(claims(exp=None))),
    "string-exp": lambda: bearer(sign(claims(exp="tomorrow"))),
    "nbf-future": lambda: bearer(sign(claims(nbf=int(time.time()) + 300))),
    "iat-future": lambda: bearer(sign(claims(iat=int(time.time()) + 300))),
    "garbage": lambda: bearer("garbage"),
    "three-garbage-parts": lambda: bearer("a.b.c"),
    "not-base64": lambda: bearer("!!!.???.***"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
async def test_bad_credentials_are_401(client: Client, case: str) -> None:
    status, body = await get_workspaces(client, BAD_HEADERS[case]())
    assert_error(status, body, 401, "unauthorized")


async def test_a_valid_token_is_accepted(client: Client) -> None:
    status, body = await get_workspaces(client, bearer(sign(claims())))
    assert (status, body) == (200, [])
    # Without the optional claims, with nbf in the past, and with a lower-case scheme.
    now = int(time.time())
    token = sign({"sub": "alice", "exp": now + 60, "nbf": now - 60})
    status, body = await get_workspaces(client, {"Authorization": f"bearer {token}"})
    assert (status, body) == (200, [])
    # The token's sub is the caller.
    async with client.post(
        "/api/workspaces", json={"name": "Mine"}, headers=bearer(sign(claims(sub="zoe")))
    ) as response:
        assert response.status == 201
        wid = (await response.json())["id"]
    async with client.get(
        f"/api/workspaces/{wid}/members", headers=bearer(sign(claims(sub="zoe")))
    ) as response:
        assert await response.json() == [{"userId": "zoe", "role": "owner"}]


async def test_aud_and_iss_are_ignored_when_not_configured(client: Client) -> None:
    token = sign(claims(aud="somebody-else", iss="https://elsewhere.example"))
    status, body = await get_workspaces(client, bearer(token))
    assert (status, body) == (200, [])


async def test_every_api_route_needs_a_token(client: Client) -> None:
    routes = [
        ("POST", "/api/workspaces"),
        ("GET", "/api/workspaces"),
        ("POST", "/api/workspaces/w/members"),
        ("GET", "/api/workspaces/w/members"),
        ("DELETE", "/api/workspaces/w/members/u"),
        ("POST", "/api/workspaces/w/projects"),
        ("GET", "/api/workspaces/w/projects"),
        ("GET", "/api/projects/p"),
        ("GET", "/api/projects/p/tasks"),
        ("POST", "/api/projects/p/tasks"),
        ("GET", "/api/tasks/t"),
        ("PATCH", "/api/tasks/t"),
        ("POST", "/api/tasks/t/move"),
        ("DELETE", "/api/tasks/t"),
        ("GET", "/api/unknown"),
    ]
    for method, path in routes:
        async with client.request(method, path, json={"name": "x"}) as response:
            assert_error(response.status, await response.json(), 401, "unauthorized")
    # Service endpoints are public.
    for path in ("/healthz", "/readyz", "/openapi.json"):
        async with client.get(path) as response:
            assert response.status == 200, path


AUDIENCE = "liveboard-api"
ISSUER = "https://issuer.example"


@pytest.mark.parametrize(
    ("token_claims", "accepted"),
    [
        ({"aud": AUDIENCE}, True),
        ({"aud": ["other", AUDIENCE]}, True),
        ({}, False),
        ({"aud": "other"}, False),
        ({"aud": ["other", "more"]}, False),
    ],
    ids=["right", "in-list", "missing", "wrong", "not-in-list"],
)
async def test_audience_is_checked_when_configured(
    tmp_path: Path,
    app_client_factory: AppClientFactory,
    token_claims: dict[str, Any],
    accepted: bool,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'aud.db'}", jwt_audience=AUDIENCE)
    client = await app_client_factory(settings)
    status, body = await get_workspaces(client, bearer(sign(claims(**token_claims))))
    if accepted:
        assert (status, body) == (200, [])
    else:
        assert_error(status, body, 401, "unauthorized")


@pytest.mark.parametrize(
    ("token_claims", "accepted"),
    [
        ({"iss": ISSUER}, True),
        ({}, False),
        ({"iss": "https://evil.example"}, False),
        ({"iss": ISSUER + "/"}, False),
    ],
    ids=["right", "missing", "wrong", "trailing-slash"],
)
async def test_issuer_is_checked_when_configured(
    tmp_path: Path,
    app_client_factory: AppClientFactory,
    token_claims: dict[str, Any],
    accepted: bool,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'iss.db'}", jwt_issuer=ISSUER)
    client = await app_client_factory(settings)
    status, body = await get_workspaces(client, bearer(sign(claims(**token_claims))))
    if accepted:
        assert (status, body) == (200, [])
    else:
        assert_error(status, body, 401, "unauthorized")


async def test_audience_and_issuer_together(
    tmp_path: Path, app_client_factory: AppClientFactory
) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'both.db'}", jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    client = await app_client_factory(settings)
    good = sign(claims(aud=AUDIENCE, iss=ISSUER))
    assert await get_workspaces(client, bearer(good)) == (200, [])
    for token in (sign(claims(aud=AUDIENCE)), sign(claims(iss=ISSUER))):
        status, body = await get_workspaces(client, bearer(token))
        assert_error(status, body, 401, "unauthorized")
