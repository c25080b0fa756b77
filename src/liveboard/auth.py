"""Token verification (CONTRACT §2): the only module that knows PyJWT.

``TokenVerifier.verify`` turns a JWT into a ``Principal`` or raises ``AuthError`` with a short
human message that never contains the token. Guarantees:

* Accepted algorithms are fixed by the configured keys, never by the token: ``HS256`` with
  ``jwt_secret``; with ``jwt_public_key`` exactly the algorithm of the key (RSA → ``RS256``,
  EC P-256 → ``ES256``, P-384 → ``ES384``, P-521 → ``ES512``); with ``jwt_jwks_url`` the same
  for each RSA/EC key of the set. A key is only ever used with its own algorithm, so a public key
  can never serve as an HMAC secret, and ``alg: none`` is always rejected.
* ``sub`` and ``exp`` are required: ``sub`` a user id as ``liveboard.text`` defines it (1 to
  255 characters, no U+0000, no unpaired surrogate: what both databases store alike), ``exp`` a
  number up to ``MAX_EXP``; ``nbf``/``iat`` are honoured; ``aud``/``iss`` are checked only when
  configured; ``name``, when present and not null, must be a string without U+0000 or unpaired
  surrogates (an empty name falls back to ``sub``). Anything else is an ``AuthError`` (401).
* JWKS: the key set is cached for ``jwt_jwks_cache_seconds`` (``LIVEBOARD_JWT_JWKS_CACHE_SECONDS``).
  Once it expires it is refetched in the background while the expired set keeps serving: a
  verification waits for the endpoint only when there is no set yet, or for a token whose
  ``kid`` the set lacks (key rotation), never because the endpoint is slow or hangs. A token
  with an unknown ``kid`` causes at most one refetch per ``JWKS_MIN_REFETCH_SECONDS`` (so
  forged ``kid`` values cannot turn the server into an amplifier); at most one fetch runs at a
  time and every verify that needs it shares it; a failed fetch is not retried for
  ``JWKS_MIN_REFETCH_SECONDS`` and the previous set, if any, stays in use (a warning is logged
  for each failure).
* With a secret or PEM key, ``verify`` never awaits: it is pure CPU work (microseconds for HS256).
* A verified token is answered from memory (``token_cache``) until its ``exp``, for at most
  ``VERIFIED_MAX_AGE`` s and the JWKS lifetime, and until a refetched JWKS set differs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidSubjectError
from jwt.types import Options

from liveboard.actor import Actor
from liveboard.config import Settings
from liveboard.errors import AuthError, ConfigError
from liveboard.text import storable, user_id_problem
from liveboard.token_cache import VerifiedTokens

__all__ = ["Actor", "Principal", "TokenVerifier", "bearer_token", "issue_token"]

log = logging.getLogger(__name__)

#: Longest token accepted, in characters (bounds the work an unauthenticated peer can cause).
MAX_TOKEN_LENGTH = 16 * 1024
#: The longest a verified token is answered from memory before it is verified again.
VERIFIED_MAX_AGE = 300.0
#: Latest ``exp`` accepted: 2**53 - 1 seconds, the largest integer a JavaScript number holds
#: exactly (``refreshed.expiresAt`` reaches browsers) and far inside a float (no overflow).
MAX_EXP = 2**53 - 1
#: Minimum time between two JWKS fetches caused by unknown ``kid`` values or failures.
JWKS_MIN_REFETCH_SECONDS = 10.0
#: Total timeout of one JWKS fetch.
JWKS_FETCH_TIMEOUT = 5.0
_JWKS_MAX_BYTES = 1 << 20
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_JWKS_ALGORITHMS = frozenset({"RS256", *_EC_ALGORITHMS.values()})

_PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as stated by a verified token."""

    user_id: str  # the `sub` claim
    name: str  # the `name` claim, or user_id when absent/empty
    expires_at: float  # the `exp` claim, unix seconds


@dataclass(frozen=True, slots=True)
class _Jwk:
    kid: str | None
    algorithm: str
    key: _PublicKey


class _FetchError(Exception):
    pass


def _key_algorithm(key: object) -> str | None:
    """The one algorithm a public key may verify, or None for unsupported keys."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(key.curve.name)
    return None


def _load_public_key(pem: str) -> tuple[_PublicKey, str]:
    """Parse ``jwt_public_key`` (a PEM public key or certificate); ConfigError if unusable."""
    # Environment variables often carry PEM text with literal "\\n" instead of newlines.
    data = pem.strip().replace("\\n", "\n").encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError("LIVEBOARD_JWT_PUBLIC_KEY is not a PEM public key") from exc
    algorithm = _key_algorithm(key)
    if algorithm is None or not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(
            "LIVEBOARD_JWT_PUBLIC_KEY must be an RSA or EC (P-256/P-384/P-521) public key"
        )
    return key, algorithm


def _parse_jwks(document: object) -> tuple[_Jwk, ...]:
    """The usable signing keys of a JWKS document (RSA and EC only; others are skipped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError("not a JWKS document")
    keys: list[_Jwk] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            if entry.get("kty") == "RSA":
                key: object = RSAAlgorithm.from_jwk(entry)
            elif entry.get("kty") == "EC":
                key = ECAlgorithm.from_jwk(entry)
            else:
                continue
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            key = key.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            continue
        algorithm = _key_algorithm(key)
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        keys.append(_Jwk(kid, algorithm, key))
    if not keys:
        raise _FetchError("no usable signing key in the set")
    return tuple(keys)


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, only to pick the key and algorithm.

    PyJWT parses the token again, strictly, when it verifies it with exactly that algorithm, so
    this cheap parse (one segment instead of three) cannot widen what is accepted.
    """
    head, dot, _ = token.partition(".")
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise AuthError("malformed token") from None
    if not dot or not isinstance(header, dict):
        raise AuthError("malformed token")
    return header


# Most specific first: the first matching class gives the message.
_MESSAGES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidSignatureError, "invalid signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (InvalidSubjectError, "sub claim must be a string"),
    (jwt.InvalidIssuedAtError, "iat claim must be a number"),
    (jwt.DecodeError, "malformed token"),
)


def _message(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim} claim"
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return message
    return "invalid token"


class TokenVerifier:
    """Verifies bearer tokens against the keys in ``Settings`` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: aiohttp.ClientSession | None = None,
        jwks_cache_seconds: float | None = None,
        leeway: float = 0.0,
    ) -> None:
        """Load the configured keys; raises ConfigError for an unusable key (fail fast)."""
        self._secret = settings.jwt_secret or None
        if self._secret is not None:
            try:
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(self._secret)
            except jwt.InvalidKeyError:
                raise ConfigError(
                    "LIVEBOARD_JWT_SECRET looks like a public key; "
                    "use LIVEBOARD_JWT_PUBLIC_KEY for RS256/ES256"
                ) from None
        self._public_key: _PublicKey | None = None
        self._public_algorithm: str | None = None
        if settings.jwt_public_key:
            self._public_key, self._public_algorithm = _load_public_key(settings.jwt_public_key)
        self._jwks_url = settings.jwt_jwks_url or None
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._leeway = leeway
        self._jwks_cache_seconds = (
            settings.jwt_jwks_cache_seconds if jwks_cache_seconds is None else jwks_cache_seconds
        )
        allowed: set[str] = set()
        if self._secret is not None:
            allowed.add("HS256")
        if self._public_algorithm is not None:
            allowed.add(self._public_algorithm)
        if self._jwks_url is not None:
            allowed |= _JWKS_ALGORITHMS
        self._allowed = frozenset(allowed)
        self._options: Options = {
            "require": ["sub", "exp"],
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
        }
        self._http = http
        self._owns_http = http is None
        self._closed = False
        self._fetching: asyncio.Task[None] | None = None  # the one fetch in flight
        self._jwks: tuple[_Jwk, ...] | None = None
        self._jwks_expires = 0.0
        self._last_attempt: float | None = None
        self._last_failure: float | None = None
        # No older than the JWKS set (a verification after it expired starts the refetch), and
        # forgotten whenever a refetched set differs: a removed key stops working at once.
        self._verified: VerifiedTokens[Principal] = VerifiedTokens(
            max_age=min(VERIFIED_MAX_AGE, self._jwks_cache_seconds), leeway=leeway
        )

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; AuthError (message without the token) otherwise.

        Awaits only when the token needs a JWKS key that is not cached. A token that verified
        is remembered (``token_cache.VerifiedTokens``) until its ``exp``, for at most
        ``VERIFIED_MAX_AGE`` seconds (no longer than the JWKS set is cached), and until the JWKS
        set changes.
        """
        if not self._allowed:
            raise AuthError("no token signing key is configured")
        if not isinstance(token, str):
            raise AuthError("token must be a string")
        if not token:
            raise AuthError("token is empty")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token too long")
        now = time.time()
        remembered = self._verified.get(token, now)
        if remembered is not None:
            return remembered
        principal = await self._verify(token)
        self._verified.put(token, principal, principal.expires_at, now)
        return principal

    async def _verify(self, token: str) -> Principal:
        header = _unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._allowed:
            raise AuthError("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token")
        key: str | _PublicKey
        if algorithm == "HS256" and self._secret is not None:
            key = self._secret
        elif self._jwks_url is not None and (
            kid is not None or algorithm != self._public_algorithm
        ):
            key = await self._jwks_key(kid, algorithm)
        elif self._public_key is not None:
            key = self._public_key
        else:  # unreachable: an allowed algorithm always has a key
            raise AuthError("algorithm not allowed")
        return self._decode(token, key, algorithm)

    def _decode(self, token: str, key: str | _PublicKey, algorithm: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_message(exc)) from None
        sub = claims["sub"]
        if not sub:
            raise AuthError("token has no sub claim")
        problem = user_id_problem(sub)
        if problem is not None:
            raise AuthError(f"sub claim {problem}")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AuthError("exp claim must be a number")
        if not exp <= MAX_EXP:  # also false for NaN
            raise AuthError("exp claim is out of range")
        name = claims.get("name")
        if name is not None and not isinstance(name, str):
            raise AuthError("name claim must be a string")
        if name is not None and not storable(name):
            raise AuthError("name claim must not contain U+0000 or unpaired surrogates")
        return Principal(user_id=sub, name=name or sub, expires_at=float(exp))

    async def _jwks_key(self, kid: object, algorithm: str) -> _PublicKey:
        keys = await self._jwks_keys(refresh=False)
        candidates = self._candidates(keys, kid)
        if not candidates and kid is not None:  # key rotation: look again, rate-limited
            candidates = self._candidates(await self._jwks_keys(refresh=True), kid)
            if not candidates:
                raise AuthError("unknown signing key")
        for entry in candidates:
            if entry.algorithm == algorithm:
                return entry.key
        raise AuthError("algorithm not allowed")

    @staticmethod
    def _candidates(keys: tuple[_Jwk, ...], kid: object) -> list[_Jwk]:
        if kid is None:
            if len(keys) != 1:
                raise AuthError("token has no kid and there are several signing keys")
            return list(keys)
        return [entry for entry in keys if entry.kid == kid]

    async def _jwks_keys(self, *, refresh: bool) -> tuple[_Jwk, ...]:
        """The key set: the cached one (expired or not: an expired one starts a refetch in the
        background), or, with none yet or on ``refresh``, the outcome of a fetch (rate-limited)."""
        now = time.monotonic()
        keys = self._jwks
        if keys is not None and not refresh:
            if now >= self._jwks_expires and self._may_retry(now):
                self._start_fetch()
            return keys
        if refresh:
            allowed = self._last_attempt is None or (
                now - self._last_attempt >= JWKS_MIN_REFETCH_SECONDS
            )
        else:
            allowed = self._may_retry(now)
        fetching = self._fetching
        if fetching is None and allowed:
            fetching = self._start_fetch()
        if fetching is not None:
            # asyncio.wait: a fetch cancelled by aclose() does not cancel this verification.
            await asyncio.wait({fetching})
        if self._jwks is None:
            raise AuthError("signing keys unavailable")
        return self._jwks

    def _may_retry(self, now: float) -> bool:
        return self._last_failure is None or now - self._last_failure >= JWKS_MIN_REFETCH_SECONDS

    def _start_fetch(self) -> asyncio.Task[None]:
        if self._fetching is None:
            self._last_attempt = time.monotonic()
            self._fetching = asyncio.ensure_future(self._refetch())
        return self._fetching

    async def _refetch(self) -> None:
        """One fetch; on success the set is replaced, on failure the previous one stays."""
        try:
            keys = await self._fetch()
        except _FetchError as exc:
            self._last_failure = time.monotonic()
            log.warning("could not fetch the JWKS signing keys: %s", exc)
        except Exception:  # a bug must not leave an exception nobody retrieves
            self._last_failure = time.monotonic()
            log.exception("could not fetch the JWKS signing keys")
        else:
            if keys != self._jwks:  # a removed key stops working now, remembered tokens too
                self._verified.clear()
            self._jwks = keys
            self._jwks_expires = time.monotonic() + self._jwks_cache_seconds
            self._last_failure = None
        finally:
            self._fetching = None

    async def _fetch(self) -> tuple[_Jwk, ...]:
        if self._closed or self._jwks_url is None:
            raise _FetchError("the verifier is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.get(
                self._jwks_url, timeout=aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT)
            ) as response:
                if response.status != 200:
                    raise _FetchError(f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > _JWKS_MAX_BYTES:
                        raise _FetchError("document too large")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _FetchError(f"{type(exc).__name__}: {exc}") from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchError("not JSON") from None
        return _parse_jwks(document)

    async def aclose(self) -> None:
        """Release resources; closes the HTTP session only if this verifier created it.

        Idempotent. Afterwards JWKS keys are no longer fetched (cached ones stay usable).
        """
        self._closed = True
        fetching = self._fetching
        if fetching is not None:
            fetching.cancel()
            await asyncio.wait({fetching})
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.close()


def issue_token(
    secret: str,
    sub: str,
    *,
    name: str | None = None,
    ttl: float = 3600.0,
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """An HS256 JWT with ``sub``, ``iat`` = now, ``exp`` = now + ttl (whole seconds, rounded down)
    and ``name`` when given. ``extra`` claims are added first; they never override those.

    A negative ``ttl`` yields an already expired token (useful in tests). ValueError for a token
    ``TokenVerifier`` would refuse whatever the time: a ``sub`` or ``name`` it does not accept,
    an ``exp`` past ``MAX_EXP``.
    """
    if not secret:
        raise ValueError("secret must not be empty")
    problem = user_id_problem(sub)
    if problem is not None:
        raise ValueError(f"sub {problem}")
    if name is not None and not storable(name):
        raise ValueError("name must not contain U+0000 or unpaired surrogates")
    issued = time.time() if now is None else now
    if not math.isfinite(issued) or not math.isfinite(ttl):
        raise ValueError("now and ttl must be finite")
    if issued + ttl > MAX_EXP:
        raise ValueError(f"now + ttl must be at most {MAX_EXP} (exp)")
    claims: dict[str, Any] = dict(extra or {})
    claims.update(sub=sub, iat=math.floor(issued), exp=math.floor(issued + ttl))
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer_token(authorization_header: str | None) -> str | None:
    """``"Bearer <jwt>"`` (scheme case-insensitive) → ``"<jwt>"``; anything else → None."""
    if not authorization_header:
        return None
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]
