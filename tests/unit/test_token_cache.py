"""``liveboard.token_cache.VerifiedTokens`` (pure) and its use by ``TokenVerifier``."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from liveboard.auth import Principal, TokenVerifier
from liveboard.config import Settings
from liveboard.errors import AuthError
from liveboard.token_cache import VerifiedTokens
from tests.support.tokens import TEST_SECRET, make_token


def test_a_remembered_token_is_answered_until_its_exp() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(max_age=300.0)
    tokens.put("t", "alice", expires_at=1_000.0, now=900.0)
    assert tokens.get("t", 999.9) == "alice"
    assert tokens.get("t", 1_000.0) is None  # PyJWT: expired once now >= exp (no leeway)
    assert len(tokens) == 0


def test_leeway_is_honoured_as_the_verifier_does() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(max_age=300.0, leeway=5.0)
    tokens.put("t", "alice", expires_at=1_000.0, now=900.0)
    assert tokens.get("t", 1_004.9) == "alice"
    assert tokens.get("t", 1_005.0) is None


def test_max_age_bounds_a_long_lived_token() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(max_age=60.0)
    tokens.put("t", "alice", expires_at=1e9, now=0.0)
    assert tokens.get("t", 59.9) == "alice"
    assert tokens.get("t", 60.0) is None


def test_an_already_expired_token_is_not_remembered() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens()
    tokens.put("t", "alice", expires_at=10.0, now=10.0)
    assert len(tokens) == 0


def test_the_least_recently_used_goes_first() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(capacity=2)
    tokens.put("a", "A", expires_at=1e9, now=0.0)
    tokens.put("b", "B", expires_at=1e9, now=0.0)
    assert tokens.get("a", 1.0) == "A"  # a is now the most recent
    tokens.put("c", "C", expires_at=1e9, now=1.0)
    assert (tokens.get("a", 2.0), tokens.get("b", 2.0), tokens.get("c", 2.0)) == ("A", None, "C")


def test_capacity_zero_remembers_nothing() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(capacity=0)
    tokens.put("a", "A", expires_at=1e9, now=0.0)
    assert tokens.get("a", 0.0) is None


def test_tokens_differing_in_one_character_are_different_entries() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens()
    tokens.put("token-a", "A", expires_at=1e9, now=0.0)
    assert tokens.get("token-b", 0.0) is None


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT is asked to decode (the real ``jwt.decode`` still runs)."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        seen.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


async def test_the_verifier_decodes_a_token_once(decodes: list[str]) -> None:
    verifier = TokenVerifier(Settings(jwt_secret=TEST_SECRET))
    token = make_token("alice", ttl=3600)
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert first == second == Principal("alice", "alice", first.expires_at)
    assert decodes == [token]


async def test_a_bad_token_is_refused_every_time(decodes: list[str]) -> None:
    verifier = TokenVerifier(Settings(jwt_secret=TEST_SECRET))
    expired = make_token("alice", ttl=-60)
    for _ in range(2):
        with pytest.raises(AuthError):
            await verifier.verify(expired)
    assert decodes == [expired, expired]


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=TEST_SECRET))
    exp = int(time.time()) + 1
    token = jwt.encode({"sub": "alice", "exp": exp}, TEST_SECRET, "HS256")
    await verifier.verify(token)
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    with pytest.raises(AuthError, match="expired"):
        await verifier.verify(token)


def test_clear_forgets_everything() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens()
    tokens.put("a", "A", expires_at=1e9, now=0.0)
    tokens.clear()
    assert tokens.get("a", 0.0) is None
