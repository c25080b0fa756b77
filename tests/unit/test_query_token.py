"""The WebSocket endpoint reads ``?token=`` from the raw request target (endpoint.query_token),
decoding it exactly as aiohttp's ``request.query`` would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from liveboard.realtime.endpoint import query_token


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ws?token=eyJ.abc.def", "eyJ.abc.def"),
        ("/ws?a=1&token=t1&token=t2", "t1"),  # the first, as request.query.get gives
        ("/ws?token=", ""),  # present but empty: refused as a missing token by the caller
        ("/ws?tokens=x", None),
        ("/ws", None),
        ("/ws?", None),
        ("/ws?token=a%2Bb+c", "a+b c"),
    ],
)
def test_query_token(target: str, expected: str | None) -> None:
    assert query_token(target) == expected


@given(
    st.lists(
        st.tuples(st.sampled_from(["token", "t", "x", "tok en"]), st.text(max_size=20)),
        max_size=4,
    )
)
def test_query_token_agrees_with_request_query(pairs: list[tuple[str, str]]) -> None:
    target = str(URL("/ws").with_query(pairs))
    assert query_token(target) == URL(target).query.get("token")
