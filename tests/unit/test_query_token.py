"""The WebSocket endpoint reads ``?token=`` from the raw query string (admission.query_token)
instead of ``request.query``, decoding it exactly as ``request.query`` would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from liveboard.realtime.admission import query_token


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ws?token=eyJ.abc.def", "eyJ.abc.def"),
        ("/ws?a=1&token=t1&token=t2", "t1"),  # the first, as request.query.get gives
        ("/ws?token=", ""),  # present but empty: refused as a missing token by the caller
        ("/ws?token", ""),
        ("/ws?tokens=x", None),
        ("/ws", None),
        ("/ws?", None),
        ("/ws?token=a%2Bb+c", "a+b c"),
        ("/ws?token=a;b", "a;b"),  # ';' is not a separator
        ("/ws?token=a%zz", "a%zz"),  # an invalid escape is kept as it is
        ("/ws?%74oken=x", "x"),  # an encoded name
        ("/ws?token=JWT#fragment", "JWT"),  # the fragment is not part of the query
        ("http://example.com:8000/ws?token=JWT", "JWT"),  # an absolute-form request target
    ],
)
def test_query_token_decodes_as_request_query(target: str, expected: str | None) -> None:
    url = URL(target)
    assert query_token(url.raw_query_string) == expected
    assert url.query.get("token") == expected


@given(
    st.lists(
        st.tuples(st.sampled_from(["token", "t", "x", "tok en"]), st.text(max_size=20)),
        max_size=4,
    )
)
def test_query_token_agrees_with_request_query(pairs: list[tuple[str, str]]) -> None:
    url = URL("/ws").with_query(pairs)
    assert query_token(url.raw_query_string) == url.query.get("token")
