"""liveboard.auth: token verification (CONTRACT §2), JWKS caching, issue_token, bearer_token."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from liveboard import auth
from liveboard.auth import Principal, TokenVerifier, bearer_token, issue_token
from liveboard.config import Settings, load_settings
from liveboard.errors import AuthError, ConfigError
from tests.support.timing import timeout

SECRET = "unit-test-secret-" + "s" * 64  # long enough for HS512 too: no key-length warnings
OTHER_SECRET = "another-secret-" + "o" * 64


# --------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims (sub, name, exp in an hour); ``None`` values remove a claim."""
    base: dict[str, Any] = {"sub": "u1", "name": "Ada", "exp": int(time.time()) + 3600}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def hs(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm=alg, headers=headers or None)


def hand_hmac(payload: dict[str, Any], secret: bytes, alg: str = "HS256") -> str:
    """An HMAC token built without PyJWT (which refuses PEM text as an HMAC secret)."""
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(payload)}"
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(digest)}"


def alg_none(payload: dict[str, Any]) -> str:
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(data, dict)
    if kid is not None:
        data["kid"] = kid
    return data


async def rejected(verifier: TokenVerifier, token: Any) -> str:
    """Verify a token that must fail; return the message (checked not to leak the token)."""
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    message = info.value.message
    assert info.value.code == "unauthorized"
    if isinstance(token, str) and len(token) > 8:
        assert token not in message
        assert token not in str(info.value)
    return message


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def make_verifier() -> AsyncIterator[Callable[..., TokenVerifier]]:
    made: list[TokenVerifier] = []

    def make(settings: Settings | None = None, **kwargs: Any) -> TokenVerifier:
        verifier = TokenVerifier(settings or Settings(jwt_secret=SECRET), **kwargs)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


# --------------------------------------------------------------------------- HS256


async def test_valid_hs256_token(make_verifier: Callable[..., TokenVerifier]) -> None:
    exp = int(time.time()) + 600
    principal = await make_verifier().verify(hs(claims(exp=exp)))
    assert principal == Principal(user_id="u1", name="Ada", expires_at=float(exp))
    assert isinstance(principal.expires_at, float)


@pytest.mark.parametrize(
    ("name_claim", "expected"),
    [(None, "u1"), ("", "u1"), ("Grace Hopper", "Grace Hopper")],
    ids=["absent", "empty", "present"],
)
async def test_name_defaults_to_sub(
    make_verifier: Callable[..., TokenVerifier], name_claim: str | None, expected: str
) -> None:
    principal = await make_verifier().verify(hs(claims(name=name_claim)))
    assert principal.user_id == "u1"
    assert principal.name == expected


async def test_null_name_counts_as_absent(make_verifier: Callable[..., TokenVerifier]) -> None:
    payload = claims()
    payload["name"] = None
    assert (await make_verifier().verify(hs(payload))).name == "u1"


async def test_hs256_verify_completes_without_suspending(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    assert run_now(make_verifier().verify(hs(claims()))).user_id == "u1"


def _valid_parts() -> list[str]:
    return hs(claims()).split(".")


def _now() -> int:
    return int(time.time())


Builder = Callable[[rsa.RSAPrivateKey], Any]
BAD_HS256_TOKENS: list[tuple[str, Builder, str]] = [
    ("none", lambda _: None, "token must be a string"),
    ("bytes", lambda _: hs(claims()).encode(), "token must be a string"),
    ("empty", lambda _: "", "token is empty"),
    ("garbage", lambda _: "this is not a jwt", "malformed token"),
    ("two-segments", lambda _: ".".join(_valid_parts()[:2]), "malformed token"),
    ("bad-base64", lambda _: "{0}.!!!!.{2}".format(*_valid_parts()), "malformed token"),
    ("too-long", lambda _: "a" * (auth.MAX_TOKEN_LENGTH + 1), "token too long"),
    ("alg-none", lambda _: alg_none(claims()), "algorithm not allowed"),
    (
        "alg-missing",
        lambda _: "{1}.{0[1]}.{0[2]}".format(_valid_parts(), segment({"typ": "JWT"})),
        "algorithm not allowed",
    ),
    ("wrong-secret", lambda _: hs(claims(), OTHER_SECRET), "invalid signature"),
    (
        "tampered-payload",
        lambda _: "{0[0]}.{1}.{0[2]}".format(_valid_parts(), segment(claims(sub="admin"))),
        "invalid signature",
    ),
    ("hs384-right-secret", lambda _: hs(claims(), alg="HS384"), "algorithm not allowed"),
    ("hs512-right-secret", lambda _: hs(claims(), alg="HS512"), "algorithm not allowed"),
    ("rs256", lambda key: jwt.encode(claims(), key, algorithm="RS256"), "algorithm not allowed"),
    ("expired", lambda _: hs(claims(exp=_now() - 5)), "token expired"),
    ("no-sub", lambda _: hs(claims(sub=None)), "token has no sub claim"),
    ("empty-sub", lambda _: hs(claims(sub="")), "token has no sub claim"),
    ("int-sub", lambda _: hs(claims(sub=42)), "sub claim must be a string"),
    ("no-exp", lambda _: hs(claims(exp=None)), "token has no exp claim"),
    ("string-exp", lambda _: hs(claims(exp=str(_now() + 60))), "exp claim must be a number"),
    ("nbf-future", lambda _: hs(claims(nbf=_now() + 600)), "token not yet valid"),
    ("iat-future", lambda _: hs(claims(iat=_now() + 600)), "token not yet valid"),
    ("int-name", lambda _: hs(claims(name=7)), "name claim must be a string"),
    ("list-name", lambda _: hs(claims(name=["a"])), "name claim must be a string"),
]


@pytest.mark.parametrize(
    ("build", "message"),
    [case[1:] for case in BAD_HS256_TOKENS],
    ids=[case[0] for case in BAD_HS256_TOKENS],
)
async def test_bad_tokens_rejected_with_hs256(
    make_verifier: Callable[..., TokenVerifier],
    rsa_key: rsa.RSAPrivateKey,
    build: Builder,
    message: str,
) -> None:
    assert await rejected(make_verifier(), build(rsa_key)) == message


async def test_nbf_and_iat_in_the_past_are_accepted(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    now = int(time.time())
    principal = await make_verifier().verify(hs(claims(nbf=now - 10, iat=now - 10)))
    assert principal.user_id == "u1"


async def test_leeway_applies_to_exp_and_nbf(make_verifier: Callable[..., TokenVerifier]) -> None:
    now = int(time.time())
    lenient = make_verifier(leeway=30.0)
    assert (await lenient.verify(hs(claims(exp=now - 5)))).expires_at == float(now - 5)
    assert (await lenient.verify(hs(claims(nbf=now + 5)))).user_id == "u1"
    assert await rejected(lenient, hs(claims(exp=now - 60))) == "token expired"


async def test_no_key_configured(make_verifier: Callable[..., TokenVerifier]) -> None:
    verifier = make_verifier(Settings())
    assert await rejected(verifier, hs(claims())) == "no token signing key is configured"


def run_now(coroutine: Coroutine[Any, Any, Principal]) -> Principal:
    """Run a verify that must not suspend (HS256/PEM never await)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Principal = done.value
        return result
    coroutine.close()
    raise AssertionError("verify suspended")


FUZZ_VERIFIER = TokenVerifier(Settings(jwt_secret=SECRET))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
CLAIM = st.sampled_from(["sub", "exp", "nbf", "iat", "name", "aud", "iss", "jti", "x"])


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text_only_raises_auth_error(token: str) -> None:
    with pytest.raises(AuthError):
        run_now(FUZZ_VERIFIER.verify(token))


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.dictionaries(CLAIM, JSON, max_size=6))
def test_fuzz_signed_claims_give_principal_or_auth_error(payload: dict[str, Any]) -> None:
    token = hand_hmac(payload, SECRET.encode())
    try:
        principal = run_now(FUZZ_VERIFIER.verify(token))
    except AuthError:
        return
    assert principal.user_id == payload["sub"]
    assert isinstance(payload["sub"], str)
    assert principal.expires_at == payload["exp"] > time.time()
    assert principal.name == (payload.get("name") or payload["sub"])


# --------------------------------------------------------------------------- audience / issuer


async def test_audience_checked_when_configured(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    verifier = make_verifier(Settings(jwt_secret=SECRET, jwt_audience="liveboard"))
    assert (await verifier.verify(hs(claims(aud="liveboard")))).user_id == "u1"
    assert (await verifier.verify(hs(claims(aud=["other", "liveboard"])))).user_id == "u1"
    assert await rejected(verifier, hs(claims(aud="other"))) == "token audience not accepted"
    assert await rejected(verifier, hs(claims())) == "token has no aud claim"


async def test_issuer_checked_when_configured(make_verifier: Callable[..., TokenVerifier]) -> None:
    verifier = make_verifier(Settings(jwt_secret=SECRET, jwt_issuer="https://idp.example"))
    assert (await verifier.verify(hs(claims(iss="https://idp.example")))).user_id == "u1"
    message = await rejected(verifier, hs(claims(iss="https://evil.example")))
    assert message == "token issuer not accepted"
    assert await rejected(verifier, hs(claims())) == "token has no iss claim"


async def test_audience_and_issuer_ignored_when_not_configured(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    token = hs(claims(aud="anything", iss="anyone"))
    assert (await make_verifier().verify(token)).user_id == "u1"


# --------------------------------------------------------------------------- PEM keys


async def test_rs256_public_key(
    make_verifier: Callable[..., TokenVerifier],
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = make_verifier(Settings(jwt_public_key=pem(rsa_key)))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await verifier.verify(token)).user_id == "u1"
    wrong_key = jwt.encode(claims(), rsa_key2, algorithm="RS256")
    assert await rejected(verifier, wrong_key) == "invalid signature"
    rs384 = jwt.encode(claims(), rsa_key, algorithm="RS384")
    assert await rejected(verifier, rs384) == "algorithm not allowed"
    ps256 = jwt.encode(claims(), rsa_key, algorithm="PS256")
    assert await rejected(verifier, ps256) == "algorithm not allowed"
    es256 = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert await rejected(verifier, es256) == "algorithm not allowed"
    assert await rejected(verifier, alg_none(claims())) == "algorithm not allowed"
    assert await rejected(verifier, hs(claims())) == "algorithm not allowed"
    expired = jwt.encode(claims(exp=int(time.time()) - 1), rsa_key, algorithm="RS256")
    assert await rejected(verifier, expired) == "token expired"


async def test_hs256_signed_with_the_public_key_is_rejected(
    make_verifier: Callable[..., TokenVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: the public PEM used as an HMAC secret."""
    public_pem = pem(rsa_key)
    forged = hand_hmac(claims(sub="admin"), public_pem.encode())
    only_rsa = make_verifier(Settings(jwt_public_key=public_pem))
    assert await rejected(only_rsa, forged) == "algorithm not allowed"
    both = make_verifier(Settings(jwt_secret=SECRET, jwt_public_key=public_pem))
    assert await rejected(both, forged) == "invalid signature"
    stripped = hand_hmac(claims(sub="admin"), public_pem.strip().encode())
    assert await rejected(both, stripped) == "invalid signature"


async def test_secret_and_public_key_both_accepted(
    make_verifier: Callable[..., TokenVerifier],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = make_verifier(Settings(jwt_secret=SECRET, jwt_public_key=pem(rsa_key)))
    assert (await verifier.verify(hs(claims(sub="h")))).user_id == "h"
    rs = jwt.encode(claims(sub="r"), rsa_key, algorithm="RS256")
    assert (await verifier.verify(rs)).user_id == "r"
    es = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert await rejected(verifier, es) == "algorithm not allowed"
    assert await rejected(verifier, hs(claims(), alg="HS384")) == "algorithm not allowed"


async def test_es256_public_key(
    make_verifier: Callable[..., TokenVerifier],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = make_verifier(Settings(jwt_public_key=pem(ec_key)))
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert (await verifier.verify(token)).user_id == "u1"
    other = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert await rejected(verifier, other) == "invalid signature"
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert await rejected(verifier, rs) == "algorithm not allowed"
    head, body, _ = token.split(".")
    assert await rejected(verifier, f"{head}.{body}.{b64url(b'short')}") == "invalid signature"


async def test_es384_key_accepts_exactly_es384(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    verifier = make_verifier(Settings(jwt_public_key=pem(key)))
    assert (await verifier.verify(jwt.encode(claims(), key, algorithm="ES384"))).user_id == "u1"


async def test_certificate_pem_is_accepted(
    make_verifier: Callable[..., TokenVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    verifier = make_verifier(Settings(jwt_public_key=cert_pem))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await verifier.verify(token)).user_id == "u1"


async def test_public_key_with_escaped_newlines(
    make_verifier: Callable[..., TokenVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    escaped = pem(rsa_key).replace("\n", "\\n")
    assert "\n" not in escaped
    verifier = make_verifier(Settings(jwt_public_key=escaped))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await verifier.verify(token)).user_id == "u1"


def test_unusable_keys_are_config_errors(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match="LIVEBOARD_JWT_PUBLIC_KEY"):
        TokenVerifier(Settings(jwt_public_key="not a pem"))
    secp256k1 = pem(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ConfigError, match="LIVEBOARD_JWT_PUBLIC_KEY"):
        TokenVerifier(Settings(jwt_public_key=secp256k1))
    with pytest.raises(ConfigError, match="LIVEBOARD_JWT_SECRET"):
        TokenVerifier(Settings(jwt_secret=pem(rsa_key)))


# --------------------------------------------------------------------------- JWKS


@dataclass
class JwksServer:
    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    body: bytes | None = None  # served instead of the key set when set
    delay: float = 0.0
    hold: asyncio.Event | None = None  # a hanging endpoint: answers once this is set
    in_flight: int = 0  # requests received and not answered yet


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer(url="")

    async def handler(request: web.Request) -> web.StreamResponse:
        state.fetches += 1
        state.in_flight += 1
        try:
            if state.delay:
                await asyncio.sleep(state.delay)
            if state.hold is not None:
                await state.hold.wait()
        finally:
            state.in_flight -= 1
        if state.status != 200:
            return web.Response(status=state.status, text="unavailable")
        if state.body is not None:
            return web.Response(body=state.body, content_type="application/json")
        return web.json_response({"keys": state.keys})

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/jwks.json"))
    yield state
    if state.hold is not None:
        state.hold.set()
    await server.close()


async def settled(verifier: TokenVerifier) -> None:
    """Wait for the verifier's background JWKS fetch, if one runs, to finish."""
    fetching = verifier._fetching
    if fetching is not None:
        await asyncio.wait({fetching})


def rs256(key: rsa.RSAPrivateKey, kid: str | None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)


async def test_jwks_key_set_is_cached(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    for sub in ("a", "b", "c"):
        assert (await verifier.verify(rs256(rsa_key, "k1", sub=sub))).user_id == sub
    assert (await verifier.verify(rs256(rsa_key2, "k2"))).user_id == "u1"
    assert jwks_server.fetches == 1
    assert await rejected(verifier, rs256(rsa_key2, "k1")) == "invalid signature"
    assert await rejected(verifier, hs(claims())) == "algorithm not allowed"
    assert await rejected(verifier, alg_none(claims())) == "algorithm not allowed"
    assert jwks_server.fetches == 1


async def test_jwks_cache_expires(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url), jwks_cache_seconds=0.05)
    await verifier.verify(rs256(rsa_key, "k1"))
    await verifier.verify(rs256(rsa_key, "k1"))
    assert jwks_server.fetches == 1
    await asyncio.sleep(0.1)
    await verifier.verify(rs256(rsa_key, "k1"))  # served by the expired set, refetched behind
    await settled(verifier)
    assert jwks_server.fetches == 2


async def test_an_expired_jwks_set_serves_while_a_hanging_endpoint_is_refetched(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verifications never wait for the endpoint while a set is cached: before, each one that
    arrived after the set expired waited for the refetch (up to JWKS_FETCH_TIMEOUT, 5 s, every
    JWKS_MIN_REFETCH_SECONDS for as long as the endpoint hung)."""
    monkeypatch.setattr(auth, "JWKS_FETCH_TIMEOUT", 60.0)  # hangs for good, as far as we see
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url), jwks_cache_seconds=0.05)
    await verifier.verify(rs256(rsa_key, "k1"))
    jwks_server.hold = asyncio.Event()
    await asyncio.sleep(0.1)  # the set has expired
    for n in range(20):
        verified = verifier.verify(rs256(rsa_key, "k1", sub=f"u{n}"))
        principal = await asyncio.wait_for(verified, timeout(10))
        assert principal.user_id == f"u{n}"
    # All that while one refetch was in flight, and only one.
    assert (jwks_server.fetches, jwks_server.in_flight) == (2, 1)
    jwks_server.keys = [jwk(rsa_key, "k2")]  # the endpoint answers at last, with a new set
    jwks_server.hold.set()
    await settled(verifier)
    assert await rejected(verifier, rs256(rsa_key, "k1")) == "unknown signing key"
    assert (await verifier.verify(rs256(rsa_key, "k2"))).user_id == "u1"


def test_the_jwks_lifetime_is_configured() -> None:
    assert load_settings({}).jwt_jwks_cache_seconds == 300.0
    env = {"LIVEBOARD_JWT_JWKS_CACHE_SECONDS": "30.5"}
    assert load_settings(env).jwt_jwks_cache_seconds == 30.5
    for bad in ("0.5", "x", "nan"):
        with pytest.raises(ConfigError, match="LIVEBOARD_JWT_JWKS_CACHE_SECONDS"):
            load_settings({"LIVEBOARD_JWT_JWKS_CACHE_SECONDS": bad})


async def test_jwks_unknown_kid_refetches_once_then_rate_limited(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    # A kid unknown right after the first fetch: no second fetch inside the interval.
    assert await rejected(verifier, rs256(rsa_key2, "k2")) == "unknown signing key"
    assert jwks_server.fetches == 1

    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 1.0)  # wide: the machine may be busy
    await asyncio.sleep(1.1)
    jwks_server.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]  # key rotation
    assert (await verifier.verify(rs256(rsa_key2, "k2"))).user_id == "u1"
    assert jwks_server.fetches == 2
    # Forged kids in a burst cause no more fetches.
    for n in range(20):
        assert await rejected(verifier, rs256(rsa_key2, f"forged-{n}")) == "unknown signing key"
    assert jwks_server.fetches == 2
    await asyncio.sleep(1.1)
    assert await rejected(verifier, rs256(rsa_key2, "forged")) == "unknown signing key"
    assert jwks_server.fetches == 3
    # Known kids keep working from the cache.
    assert (await verifier.verify(rs256(rsa_key, "k1"))).user_id == "u1"
    assert jwks_server.fetches == 3


async def test_jwks_token_without_kid(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1")]
    single = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    assert (await single.verify(rs256(rsa_key, None))).user_id == "u1"

    jwks_server.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]
    several = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    message = await rejected(several, rs256(rsa_key, None))
    assert message == "token has no kid and there are several signing keys"


async def test_jwks_ec_key_and_algorithm_binding(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks_server.keys = [jwk(ec_key, "ec"), jwk(rsa_key, "rsa")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    es = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec"})
    assert (await verifier.verify(es)).user_id == "u1"
    # An RS256 token naming the EC key's kid: the key only verifies ES256.
    assert await rejected(verifier, rs256(rsa_key, "ec")) == "algorithm not allowed"
    assert jwks_server.fetches == 1


async def test_jwks_skips_symmetric_and_mislabelled_keys(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    oct_key = {"kty": "oct", "kid": "hmac", "k": b64url(SECRET.encode())}
    mislabelled = {**jwk(rsa_key, "rs512"), "alg": "RS512"}
    encryption = {**jwk(rsa_key, "enc"), "use": "enc"}
    jwks_server.keys = [oct_key, mislabelled, encryption, jwk(rsa_key, "good")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    assert (await verifier.verify(rs256(rsa_key, "good"))).user_id == "u1"
    assert await rejected(verifier, hs(claims(), kid="hmac")) == "algorithm not allowed"
    assert await rejected(verifier, rs256(rsa_key, "rs512")) == "unknown signing key"
    assert await rejected(verifier, rs256(rsa_key, "enc")) == "unknown signing key"


async def test_jwks_concurrent_verifies_share_one_fetch(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1")]
    jwks_server.delay = 0.05
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    tokens = [rs256(rsa_key, "k1", sub=f"user{n}") for n in range(20)]
    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert [p.user_id for p in principals] == [f"user{n}" for n in range(20)]
    assert jwks_server.fetches == 1


@pytest.mark.parametrize(
    "failure",
    ["http-500", "not-json", "no-keys", "wrong-shape", "only-unusable-keys", "too-large"],
)
async def test_jwks_fetch_failure(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    failure: str,
) -> None:
    if failure == "http-500":
        jwks_server.status = 500
    elif failure == "not-json":
        jwks_server.body = b"<html>oops</html>"
    elif failure == "no-keys":
        jwks_server.body = b'{"keys": []}'
    elif failure == "wrong-shape":
        jwks_server.body = b'{"keys": "nope"}'
    elif failure == "too-large":
        jwks_server.keys = [jwk(rsa_key, "k1"), {"padding": "x" * (2 << 20)}]
    else:
        jwks_server.keys = [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    assert await rejected(verifier, rs256(rsa_key, "k1")) == "signing keys unavailable"
    # A failed fetch is not retried at once: a burst of tokens does not hammer the endpoint.
    assert await rejected(verifier, rs256(rsa_key, "k1")) == "signing keys unavailable"
    assert jwks_server.fetches == 1


async def test_jwks_unreachable(
    make_verifier: Callable[..., TokenVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("/jwks.json"))
    await server.close()  # nothing listens on the port any more
    verifier = make_verifier(Settings(jwt_jwks_url=url))
    assert await rejected(verifier, rs256(rsa_key, "k1")) == "signing keys unavailable"


async def test_jwks_fetch_timeout(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "JWKS_FETCH_TIMEOUT", 0.1)
    jwks_server.keys = [jwk(rsa_key, "k1")]
    jwks_server.delay = 1.0
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url))
    started = time.monotonic()
    assert await rejected(verifier, rs256(rsa_key, "k1")) == "signing keys unavailable"
    assert time.monotonic() - started < 0.9


async def test_jwks_stale_set_used_while_endpoint_fails(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 0.05)
    jwks_server.keys = [jwk(rsa_key, "k1")]
    verifier = make_verifier(Settings(jwt_jwks_url=jwks_server.url), jwks_cache_seconds=0.05)
    await verifier.verify(rs256(rsa_key, "k1"))
    jwks_server.status = 503
    await asyncio.sleep(0.1)
    assert (await verifier.verify(rs256(rsa_key, "k1"))).user_id == "u1"
    await settled(verifier)
    assert jwks_server.fetches == 2
    assert (await verifier.verify(rs256(rsa_key, "k1"))).user_id == "u1"
    await settled(verifier)
    assert jwks_server.fetches == 2  # failure back-off
    jwks_server.status = 200
    await asyncio.sleep(0.1)
    await verifier.verify(rs256(rsa_key, "k1"))
    await settled(verifier)
    assert jwks_server.fetches == 3


async def test_jwks_with_public_key_and_secret(
    make_verifier: Callable[..., TokenVerifier],
    jwks_server: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
) -> None:
    jwks_server.keys = [jwk(rsa_key2, "k2")]
    settings = Settings(
        jwt_secret=SECRET, jwt_public_key=pem(rsa_key), jwt_jwks_url=jwks_server.url
    )
    verifier = make_verifier(settings)
    assert (await verifier.verify(hs(claims(sub="h")))).user_id == "h"
    assert (await verifier.verify(rs256(rsa_key, None, sub="pem"))).user_id == "pem"
    assert jwks_server.fetches == 0
    assert (await verifier.verify(rs256(rsa_key2, "k2", sub="jwks"))).user_id == "jwks"
    assert jwks_server.fetches == 1


async def test_aclose_is_idempotent_and_leaves_a_given_session_open(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.keys = [jwk(rsa_key, "k1")]
    async with aiohttp.ClientSession() as http:
        verifier = TokenVerifier(Settings(jwt_jwks_url=jwks_server.url), http=http)
        await verifier.verify(rs256(rsa_key, "k1"))
        await verifier.aclose()
        await verifier.aclose()
        assert not http.closed
    owned = TokenVerifier(Settings(jwt_jwks_url=jwks_server.url))
    await owned.verify(rs256(rsa_key, "k1"))
    await owned.aclose()
    await owned.aclose()
    # Cached keys stay usable; nothing new is fetched after close.
    assert (await owned.verify(rs256(rsa_key, "k1"))).user_id == "u1"
    await TokenVerifier(Settings(jwt_secret=SECRET)).aclose()


# --------------------------------------------------------------------------- issue_token


async def test_issue_token_round_trip(make_verifier: Callable[..., TokenVerifier]) -> None:
    now = time.time()
    token = issue_token(SECRET, "u7", name="Grace", ttl=120, now=now)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded == {"sub": "u7", "name": "Grace", "iat": int(now), "exp": int(now + 120)}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    principal = await make_verifier().verify(token)
    assert principal == Principal(user_id="u7", name="Grace", expires_at=float(int(now + 120)))


async def test_issue_token_defaults_and_extra(make_verifier: Callable[..., TokenVerifier]) -> None:
    token = issue_token(SECRET, "u8", extra={"aud": "liveboard", "sub": "intruder", "exp": 1})
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience="liveboard")
    assert decoded["sub"] == "u8"
    assert "name" not in decoded
    assert decoded["exp"] - decoded["iat"] == 3600
    assert abs(decoded["iat"] - time.time()) < 5
    verifier = make_verifier(Settings(jwt_secret=SECRET, jwt_audience="liveboard"))
    assert await verifier.verify(token) == Principal("u8", "u8", float(decoded["exp"]))


async def test_issue_token_negative_ttl_is_expired(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    assert await rejected(make_verifier(), issue_token(SECRET, "u1", ttl=-10)) == "token expired"


@pytest.mark.parametrize(
    ("secret", "sub", "ttl"),
    [("", "u1", 60.0), (SECRET, "", 60.0), (SECRET, "u1", float("inf"))],
)
def test_issue_token_rejects_bad_arguments(secret: str, sub: str, ttl: float) -> None:
    with pytest.raises(ValueError, match="must"):
        issue_token(secret, sub, ttl=ttl)


# --------------------------------------------------------------------------- bearer_token


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER abc.def.ghi", "abc.def.ghi"),
        ("  Bearer   abc.def.ghi  ", "abc.def.ghi"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer a b", None),
        ("Bearerabc.def.ghi", None),
        ("abc.def.ghi", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected
