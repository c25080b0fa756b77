"""``LIVEBOARD_DB_WAIT`` and ``LIVEBOARD_REDIS_REQUIRED``, and which start-up failures are
retried (``store.availability.is_unreachable``) and how they read (``reason``)."""

from __future__ import annotations

import socket
import ssl

import pytest
from sqlalchemy import exc

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.store.availability import describe, is_unreachable, reason


def test_db_wait_defaults_to_30_and_accepts_0() -> None:
    assert load_settings({}).db_wait == 30.0
    assert load_settings({"LIVEBOARD_DB_WAIT": "0"}).db_wait == 0.0
    assert load_settings({"LIVEBOARD_DB_WAIT": "2.5"}).db_wait == 2.5


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_db_wait_rejects_bad_values(raw: str) -> None:
    with pytest.raises(ConfigError, match="LIVEBOARD_DB_WAIT"):
        load_settings({"LIVEBOARD_DB_WAIT": raw})


def test_redis_required() -> None:
    assert load_settings({}).redis_required is False
    env = {"LIVEBOARD_REDIS_REQUIRED": "1", "LIVEBOARD_REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert load_settings(env).redis_required is True
    with pytest.raises(ConfigError, match="needs LIVEBOARD_REDIS_URL"):
        load_settings({"LIVEBOARD_REDIS_REQUIRED": "1"})
    with pytest.raises(ConfigError, match="must be 0 or 1"):
        load_settings({"LIVEBOARD_REDIS_REQUIRED": "yes"})


class _StartingUpError(Exception):
    sqlstate = "57P03"


class _AuthFailedError(Exception):
    sqlstate = "28000"


def _raised_while_handling(error: Exception, handled: Exception) -> Exception:
    """``error`` raised in an ``except`` block for ``handled`` (its ``__context__``)."""
    try:
        try:
            raise handled
        except type(handled):
            raise error  # noqa: B904 - the implicit context is what is being tested
    except type(error) as raised:
        return raised


def _wrapped(error: Exception) -> exc.DBAPIError:
    """``error`` as SQLAlchemy hands it over: a ``DBAPIError`` whose ``orig`` was raised from it."""
    try:
        try:
            raise error
        except Exception as driver:
            raise RuntimeError("adapted") from driver
    except RuntimeError as adapted:
        return exc.DBAPIError("SELECT 1", None, adapted)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        socket.gaierror(-2, "Name or service not known"),
        TimeoutError(),
        ConnectionError("unexpected connection_lost() call"),
        _wrapped(ConnectionResetError(104, "Connection reset by peer")),
        _wrapped(_StartingUpError("the database system is starting up")),
    ],
)
def test_unreachable_failures_are_retried(error: BaseException) -> None:
    assert is_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(_AuthFailedError('role "nobody" does not exist')),
        ValueError("invalid DSN"),
        exc.ArgumentError("could not parse URL"),
        # TLS: waiting does not make a certificate verify or a server speak TLS.
        _wrapped(ssl.SSLCertVerificationError(1, "certificate verify failed")),
        ConnectionError('PostgreSQL server at "db:5432" rejected SSL upgrade'),
        _raised_while_handling(
            ValueError('root certificate file "/root/.postgresql/root.crt" does not exist'),
            FileNotFoundError(2, "No such file or directory"),
        ),
    ],
)
def test_other_failures_are_not_retried(error: BaseException) -> None:
    assert not is_unreachable(error)


def test_reason_is_the_drivers_first_line() -> None:
    assert reason(_wrapped(_AuthFailedError('role "nobody" does not exist\nDETAIL: x'))) == (
        'role "nobody" does not exist'
    )
    assert reason(TimeoutError()) == "timed out"
    assert reason(ConnectionRefusedError()) == "ConnectionRefusedError"


def test_describe_hides_the_password() -> None:
    url = describe("postgresql://app:s3cret@db.internal:5432/liveboard?sslmode=require")
    assert url == "postgresql://app:***@db.internal:5432/liveboard"
