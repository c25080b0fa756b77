"""The real app in the test process: its settings, and the type of the factory that starts it.

``make_settings`` gives the settings every in-process app of the tests starts with (the test
secret, 127.0.0.1, a free port); the ``app_client_factory`` fixture (``tests/conftest.py``) is an
``AppClientFactory``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from liveboard.config import Settings
from tests.support.tokens import TEST_SECRET

AppClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "host": "127.0.0.1",
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)
