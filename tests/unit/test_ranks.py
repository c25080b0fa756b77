"""``liveboard.protocol.ranks``: properties of the key arithmetic, and a differential test against
rocicorp's fractional-indexing package itself (clients/js's pinned devDependency, run by Node).

Node and the package come from clients/js/package-lock.json (`npm ci`, which `make test` runs).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveboard.protocol.ranks import (
    MAX_RANK_LENGTH,
    REBALANCE_LENGTH,
    RankError,
    is_rank,
    key_between,
    keys_between,
)

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
PACKAGE = JS / "node_modules" / "fractional-indexing" / "src" / "index.js"


def test_first_keys_and_ends() -> None:
    assert key_between(None, None) == "a0"
    assert key_between("a0", None) == "a1"
    assert key_between(None, "a0") == "Zz"
    assert key_between("a0", "a1") == "a0V"
    assert key_between("az", None) == "b00"
    assert keys_between(None, None, 3) == ["a0", "a1", "a2"]


@pytest.mark.parametrize(
    ("a", "b"), [("a0", "a0"), ("a1", "a0"), ("a00", None), ("", None), ("a", None), ("a0é", None)]
)
def test_bad_bounds_are_refused(a: str, b: str | None) -> None:
    with pytest.raises(RankError):
        key_between(a, b)


# A list of operations: insert at a random index of the growing list (seeded by hypothesis).
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=150))
def test_any_sequence_of_insertions_keeps_a_strict_order(choices: list[int]) -> None:
    keys: list[str] = []
    for choice in choices:
        at = choice % (len(keys) + 1)
        lower = keys[at - 1] if at > 0 else None
        upper = keys[at] if at < len(keys) else None
        key = key_between(lower, upper)
        assert is_rank(key)
        assert lower is None or lower < key
        assert upper is None or key < upper
        keys.insert(at, key)
    assert keys == sorted(set(keys))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=3))
def test_keys_between_are_strict_and_inside_their_bounds(n: int, bounds: int) -> None:
    lower = "a5" if bounds & 1 else None
    upper = "a6" if bounds & 2 else None
    keys = keys_between(lower, upper, n)
    assert len(keys) == n
    assert keys == sorted(set(keys))
    assert all(is_rank(k) for k in keys)
    assert all((lower is None or lower < k) and (upper is None or k < upper) for k in keys)


def test_appending_grows_logarithmically_and_one_gap_linearly() -> None:
    """Why the server rebalances: 10,000 appends stay short; 10,000 insertions into one gap
    would not (about one character per 6 insertions)."""
    key = "a0"
    for _ in range(10_000):
        key = key_between(key, None)
    assert len(key) <= 4
    low, high, longest, inserted = "a0", "a1", 0, 0
    while longest <= REBALANCE_LENGTH:
        high = key_between(low, high)
        longest, inserted = len(high), inserted + 1
    assert inserted > 200  # the room between two neighbours before a rebalance
    assert REBALANCE_LENGTH < MAX_RANK_LENGTH


def _cases(seed: int, count: int) -> list[tuple[str | None, str | None]]:
    """Bounds seen by a board: ends, gaps between neighbours, long fractions, long integers."""
    rng = random.Random(seed)
    keys = keys_between(None, None, 5)
    cases: list[tuple[str | None, str | None]] = [(None, None)]
    for _ in range(count):
        at = rng.randrange(len(keys) + 1)
        if rng.random() < 0.3:  # favour a hot spot, so fractions get long
            at = min(len(keys), 3)
        lower = keys[at - 1] if at > 0 else None
        upper = keys[at] if at < len(keys) else None
        cases.append((lower, upper))
        keys.insert(at, key_between(lower, upper))
    cases.append(("zzzzzzzzzzzzzzzzzzzzzzzzzzz", None))
    cases.append((None, "A00000000000000000000000001"))
    cases.append(("Zz", "a0"))
    return cases


def test_the_same_keys_as_rocicorp_fractional_indexing() -> None:
    node = shutil.which("node")
    assert node is not None, "node is missing (clients/js needs it: see .ci/run)"
    assert PACKAGE.is_file(), f"{PACKAGE} is missing: run `make clients/js/node_modules`"
    cases = _cases(seed=17, count=3000)
    script = (
        f"import {{ generateKeyBetween, generateNKeysBetween }} from {json.dumps(str(PACKAGE))};"
        "let s=''; process.stdin.on('data', d => s += d); process.stdin.on('end', () => {"
        " const cases = JSON.parse(s);"
        " const one = cases.map(([a, b]) => generateKeyBetween(a, b));"
        " const many = cases.slice(0, 200).map(([a, b]) => generateNKeysBetween(a, b, 7));"
        " process.stdout.write(JSON.stringify({one, many})); });"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    theirs = json.loads(result.stdout)
    assert [key_between(a, b) for a, b in cases] == theirs["one"]
    assert [keys_between(a, b, 7) for a, b in cases[:200]] == theirs["many"]
