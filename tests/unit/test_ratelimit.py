"""``ratelimit``: the token bucket (REST) and its one-float form (each WebSocket connection)."""

from __future__ import annotations

import random

from liveboard.ratelimit import TokenBucket, take_at


def _run_take_at(times: list[float], rate: float, burst: float) -> list[bool]:
    state, allowed = 0.0, []
    for now in times:
        new = take_at(state, now, rate, burst)
        allowed.append(new is not None)
        if new is not None:
            state = new
    return allowed


def test_a_burst_then_the_rate() -> None:
    rate, burst = 50.0, 200.0
    # 200 at once, then nothing more until a token has come back (1/50 s).
    assert _run_take_at([1000.0] * 201, rate, burst) == [True] * 200 + [False]
    times = [1000.0] * 200 + [1000.0 + 0.019, 1000.0 + 0.021, 1000.0 + 0.022]
    assert _run_take_at(times, rate, burst)[200:] == [False, True, False]
    # Sustained: 100 per second for 10 s gets through about 50 per second after the burst.
    steady = [2000.0 + i / 100 for i in range(1000)]
    assert abs(sum(_run_take_at(steady, rate, burst)) - (200 + 50 * 10)) <= 2


def test_it_decides_as_the_token_bucket_does() -> None:
    rng = random.Random(20)
    for rate, burst in ((50.0, 200.0), (1.0, 30.0), (5.0, 1.0)):
        now, times = 500.0, []
        for _ in range(3000):
            now += rng.choice((0.0, 0.0, 0.001, 0.0137, 0.25, 1.5))
            times.append(now)
        bucket = TokenBucket(rate, burst, times[0])
        expected = [bucket.take(t) for t in times]
        got = _run_take_at(times, rate, burst)
        # Floating point may tip a decision that sits exactly on the boundary: a handful at most.
        assert sum(a != b for a, b in zip(expected, got, strict=True)) <= 3
