"""Rank keys: the strings that order a column's tasks (CONTRACT §6.2). Pure arithmetic, no I/O.

A rank is a fractional-indexing key in the form of rocicorp/fractional-indexing (CC0, after
David Greenspan's "Implementing Fractional Indexing"), which this module ports for its default
alphabets, so that a key made here and one made by that package agree character for character
(``tests/unit/test_ranks.py`` checks this against the package itself):

* a key is an *integer part* — a head (``a``-``z``: 2 to 27 characters long, ``A``-``Z``: the
  negative integers, longest first) and its base-62 digits — then an optional fraction of base-62
  digits (``0-9A-Za-z``) that does not end in ``0``;
* keys compare as plain strings, byte by byte (code-point order: ``0 < 9 < A < Z < a < z``).
  Databases must compare them the same way (PostgreSQL: ``COLLATE "C"``);
* ``key_between(a, b)`` is a key strictly between ``a`` and ``b`` (``None``: the start, the
  end). Appending at either end grows keys logarithmically (integer increments); inserting again
  and again into the same gap grows them by one character every ~6 insertions, which is why the
  server rebalances a column whose new key would exceed ``REBALANCE_LENGTH``
  (docs/architecture.md, "Card order").
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DIGITS",
    "MAX_RANK_LENGTH",
    "REBALANCE_LENGTH",
    "RankError",
    "is_rank",
    "key_between",
    "keys_between",
]

#: The fraction's digits, in ascending code-point order.
DIGITS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEADS: Final = DIGITS[10:]  # A-Z (negative integers) then a-z (positive integers)
_ZERO: Final = DIGITS[0]
_INDEX: Final = {c: i for i, c in enumerate(DIGITS)}
_HEAD_INDEX: Final = {c: i for i, c in enumerate(_HEADS)}
_SMALLEST_INTEGER: Final = "A" + _ZERO * 26
#: The longest rank the server stores (bytes: ranks are ASCII).
MAX_RANK_LENGTH: Final = 64
#: A new rank longer than this makes the server rebalance the column instead.
REBALANCE_LENGTH: Final = 48


class RankError(ValueError):
    """A key that is not a rank, or bounds that are not in order."""


def _integer_length(head: str) -> int:
    index = _HEAD_INDEX.get(head)
    if index is None:
        raise RankError(f"invalid rank head: {head!r}")
    half = len(_HEADS) // 2
    return half - index + 1 if index < half else index - half + 2


def _integer_part(key: str) -> str:
    length = _integer_length(key[0])
    if length > len(key):
        raise RankError(f"invalid rank: {key!r}")
    return key[:length]


def _validate(key: str) -> None:
    if not key or key == _SMALLEST_INTEGER:
        raise RankError(f"invalid rank: {key!r}")
    integer = _integer_part(key)
    if any(c not in _INDEX for c in key[1:]):
        raise RankError(f"invalid rank: {key!r}")
    if key[len(integer) :].endswith(_ZERO):
        raise RankError(f"invalid rank (trailing zero): {key!r}")


def is_rank(key: str) -> bool:
    """Whether ``key`` is a well-formed rank."""
    try:
        _validate(key)
    except RankError:
        return False
    return True


def _midpoint(a: str, b: str | None) -> str:
    """A fraction strictly between fractions ``a`` (may be empty) and ``b`` (None: the end)."""
    if b is not None and a >= b:
        raise RankError(f"{a!r} >= {b!r}")
    if a.endswith(_ZERO) or (b is not None and b.endswith(_ZERO)):
        raise RankError("trailing zero")
    if b:
        # Skip the longest common prefix, reading `a` as padded with zeros.
        n = 0
        while (a[n] if n < len(a) else _ZERO) == b[n]:
            n += 1
        if n > 0:
            return b[:n] + _midpoint(a[n:], b[n:])
    digit_a = _INDEX[a[0]] if a else 0
    digit_b = _INDEX[b[0]] if b is not None else len(DIGITS)
    if digit_b - digit_a > 1:
        return DIGITS[(digit_a + digit_b + 1) // 2]  # JavaScript's Math.round(x.5) rounds up
    if b is not None and len(b) > 1:
        return b[:1]
    return DIGITS[digit_a] + _midpoint(a[1:], None)


def _increment_integer(x: str) -> str | None:
    head = x[0]
    trailing = ""
    for i in range(len(x) - 1, 0, -1):
        d = _INDEX[x[i]] + 1
        if d == len(DIGITS):
            trailing = _ZERO + trailing
        else:
            return head + x[1:i] + DIGITS[d] + trailing
    head_index = _HEAD_INDEX[head]
    if head_index == len(_HEADS) - 1:
        return None
    new_head = _HEADS[head_index + 1]
    delta = _integer_length(new_head) - _integer_length(head)
    if delta > 0:
        return new_head + trailing + _ZERO
    return new_head + (trailing[1:] if delta < 0 else trailing)


def _decrement_integer(x: str) -> str | None:
    head = x[0]
    last = DIGITS[-1]
    trailing = ""
    for i in range(len(x) - 1, 0, -1):
        d = _INDEX[x[i]] - 1
        if d == -1:
            trailing = last + trailing
        else:
            return head + x[1:i] + DIGITS[d] + trailing
    head_index = _HEAD_INDEX[head]
    if head_index == 0:
        return None
    new_head = _HEADS[head_index - 1]
    delta = _integer_length(new_head) - _integer_length(head)
    if delta > 0:
        return new_head + trailing + last
    return new_head + (trailing[1:] if delta < 0 else trailing)


def key_between(a: str | None, b: str | None) -> str:
    """A rank strictly between ``a`` and ``b``: ``a < result < b`` as strings.

    ``None`` for ``a`` is the start, for ``b`` the end; with both ``None``, the first rank
    (``"a0"``). Raises ``RankError`` if a bound is not a rank or ``a >= b``."""
    if a is not None:
        _validate(a)
    if b is not None:
        _validate(b)
    if a is not None and b is not None and a >= b:
        raise RankError(f"{a!r} >= {b!r}")
    if a is None:
        if b is None:
            return "a" + _ZERO
        ib = _integer_part(b)
        fb = b[len(ib) :]
        if ib == _SMALLEST_INTEGER:
            return ib + _midpoint("", fb)
        if ib < b:
            return ib
        lower = _decrement_integer(ib)
        if lower is None:
            raise RankError("cannot decrement any more")
        return lower
    ia = _integer_part(a)
    fa = a[len(ia) :]
    if b is None:
        higher = _increment_integer(ia)
        return ia + _midpoint(fa, None) if higher is None else higher
    ib = _integer_part(b)
    if ia == ib:
        return ia + _midpoint(fa, b[len(ib) :])
    higher = _increment_integer(ia)
    if higher is None:
        raise RankError("cannot increment any more")
    if higher < b:
        return higher
    return ia + _midpoint(fa, None)


def keys_between(a: str | None, b: str | None, n: int) -> list[str]:
    """``n`` distinct ranks between ``a`` and ``b``, ascending. With an open end they are
    consecutive integers (``a0``, ``a1``, …); between two bounds, short keys spread evenly."""
    if n <= 0:
        return []
    if n == 1:
        return [key_between(a, b)]
    if b is None:
        keys = [key_between(a, None)]
        for _ in range(n - 1):
            keys.append(key_between(keys[-1], None))
        return keys
    if a is None:
        keys = [key_between(None, b)]
        for _ in range(n - 1):
            keys.append(key_between(None, keys[-1]))
        keys.reverse()
        return keys
    mid = n // 2
    c = key_between(a, b)
    return [*keys_between(a, c, mid), c, *keys_between(c, b, n - mid - 1)]
