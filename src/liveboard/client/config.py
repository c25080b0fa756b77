"""The SDK's settings from the environment: the only module of ``liveboard.client`` that reads it.

The SDK cannot import the server's ``liveboard.config`` (it depends on ``liveboard.protocol``
and its own modules only), so it keeps its one environment read here, where the variables it
honours are listed:

- ``LIVEBOARD_TOKEN``: the token ``liveboard tail`` uses when ``--token`` is absent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["environment_token"]


def environment_token(environ: Mapping[str, str] | None = None) -> str | None:
    """``$LIVEBOARD_TOKEN`` (``os.environ`` by default), or None when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get("LIVEBOARD_TOKEN") or None
