"""What a token costs the server per request, verified or remembered (issue 20 item 6).

    python -m bench.token_cost [--tokens 5000] [--runs 3]

In one process and one run, per call of ``TokenVerifier.verify`` (HS256, the contract's default):

* ``first sight``: ``--tokens`` distinct tokens, each verified once (signature, claims, and the
  entry remembered): what every request paid before tokens were remembered, plus the remembering;
* ``remembered``: one token verified ``--tokens`` times: what a client that sends the same token
  with every request pays from its second request on;
* ``pyjwt alone``: ``jwt.decode`` on the same tokens, the floor of a verification.

Reported in µs per call, with the ratio first sight / remembered, per run.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import jwt

from liveboard.auth import TokenVerifier
from liveboard.config import Settings

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


def _tokens(count: int) -> list[str]:
    exp = int(time.time()) + 3600
    return [jwt.encode({"sub": f"user-{n}", "exp": exp}, SECRET, "HS256") for n in range(count)]


async def _per_call(verifier: TokenVerifier, tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        await verifier.verify(token)
    return (time.perf_counter() - started) / len(tokens) * 1e6


def _pyjwt(tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["sub", "exp"]})
    return (time.perf_counter() - started) / len(tokens) * 1e6


async def run(count: int) -> tuple[float, float, float]:
    tokens = _tokens(count)
    first = await _per_call(TokenVerifier(Settings(jwt_secret=SECRET)), tokens)
    verifier = TokenVerifier(Settings(jwt_secret=SECRET))
    await verifier.verify(tokens[0])
    remembered = await _per_call(verifier, [tokens[0]] * count)
    return first, remembered, _pyjwt(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for n in range(args.runs):
        first, remembered, floor = asyncio.run(run(args.tokens))
        print(
            f"run {n + 1}: first sight {first:.1f} µs, remembered {remembered:.2f} µs, "
            f"pyjwt alone {floor:.1f} µs; first sight / remembered {first / remembered:.0f}x"
        )


if __name__ == "__main__":
    main()
