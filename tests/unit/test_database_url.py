"""``store.database_url``: which libpq parameters ``LIVEBOARD_DATABASE_URL`` may carry, what
asyncpg receives for them, and the one-line refusals; and the pool settings beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.store.database_url import SSL_MODES, parse_database_url

BASE = "postgresql://app:p%40ss@db.example.com:6432/liveboard"


def test_a_plain_url_passes_through_as_the_dsn() -> None:
    parsed = parse_database_url(BASE)
    assert parsed.is_postgres
    assert parsed.parameters == ()
    assert parsed.asyncpg_arguments() == {"dsn": BASE}


def test_postgres_scheme_is_normalised_for_asyncpg() -> None:
    parsed = parse_database_url("postgres://u@h/db")
    assert parsed.dsn == "postgresql://u@h/db"


@pytest.mark.parametrize("mode", SSL_MODES)
def test_every_sslmode_stays_in_the_dsn(mode: str) -> None:
    parsed = parse_database_url(f"{BASE}?sslmode={mode}")
    assert parsed.asyncpg_arguments() == {"dsn": f"{BASE}?sslmode={mode}"}


def test_each_parameter_goes_where_asyncpg_takes_it() -> None:
    url = (
        f"{BASE}?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/k.pem"
        "&application_name=liveboard-a&connect_timeout=2.5&options=-c%20search_path%3Dapp"
    )
    parsed = parse_database_url(url)
    assert parsed.asyncpg_arguments() == {
        "dsn": f"{BASE}?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
        "&sslcert=%2Fetc%2Fc.pem&sslkey=%2Fetc%2Fk.pem",
        "timeout": 2.5,
        "server_settings": {"application_name": "liveboard-a", "options": "-c search_path=app"},
    }
    assert parsed.certificate_files == (
        ("sslrootcert", "/etc/ca.pem"),
        ("sslcert", "/etc/c.pem"),
        ("sslkey", "/etc/k.pem"),
    )
    assert parsed.get("sslmode") == "verify-full"
    assert parsed.get("sslcrl") is None


def test_a_unix_socket_directory_as_host_parameter() -> None:
    parsed = parse_database_url("postgresql://app@/liveboard?host=/run/postgresql&port=5433")
    assert parsed.asyncpg_arguments() == {
        "dsn": "postgresql://app@/liveboard?host=%2Frun%2Fpostgresql&port=5433"
    }


def test_sqlite_urls_are_not_judged() -> None:
    parsed = parse_database_url("sqlite:///./liveboard.db")
    assert not parsed.is_postgres
    assert parsed.parameters == ()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmod=require", "unknown parameter 'sslmod' (known: sslmode, sslrootcert"),
        ("pgbouncer=true", "unknown parameter 'pgbouncer' (set LIVEBOARD_DB_PGBOUNCER=1 instead)"),
        ("ssl=true", "unknown parameter 'ssl' (use sslmode=)"),
        ("sslmode=required", "sslmode must be one of disable, allow, prefer, require, verify-ca"),
        ("sslmode=require&sslmode=disable", "parameter 'sslmode' is given twice"),
        ("application_name=", "parameter 'application_name' is empty"),
        ("connect_timeout=0", "connect_timeout must be a positive number of seconds, got '0'"),
        ("connect_timeout=soon", "connect_timeout must be a positive number of seconds"),
        ("connect_timeout=inf", "connect_timeout must be a positive number of seconds"),
        ("sslmode", "malformed query string 'sslmode'"),
    ],
)
def test_bad_parameters_are_refused_with_one_line(query: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_database_url(f"{BASE}?{query}")
    message = raised.value.message
    assert message.startswith("LIVEBOARD_DATABASE_URL")
    assert says in message
    assert "\n" not in message


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match="must be sqlite:///PATH or postgresql://"):
        parse_database_url("mysql://u@h/db")


def test_the_loader_refuses_a_certificate_file_it_cannot_read(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    url = f"{BASE}?sslmode=verify-full&sslrootcert={ca}"
    with pytest.raises(ConfigError, match=r"sslrootcert file '.*ca\.pem' is not readable"):
        load_settings({"LIVEBOARD_DATABASE_URL": url})
    ca.write_text("a certificate")
    assert load_settings({"LIVEBOARD_DATABASE_URL": url}).database_url == url


def test_the_loader_refuses_unknown_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'sslmod'"):
        load_settings({"LIVEBOARD_DATABASE_URL": f"{BASE}?sslmod=require"})


def test_pool_settings_default_to_10_and_10() -> None:
    settings = load_settings({})
    assert (settings.db_pool_size, settings.db_max_overflow, settings.db_pgbouncer) == (
        10,
        10,
        False,
    )
    settings = load_settings(
        {
            "LIVEBOARD_DB_POOL_SIZE": "3",
            "LIVEBOARD_DB_MAX_OVERFLOW": "0",
            "LIVEBOARD_DB_PGBOUNCER": "1",
        }
    )
    assert (settings.db_pool_size, settings.db_max_overflow, settings.db_pgbouncer) == (3, 0, True)


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("LIVEBOARD_DB_POOL_SIZE", "0", "LIVEBOARD_DB_POOL_SIZE must be at least 1"),
        ("LIVEBOARD_DB_POOL_SIZE", "ten", "LIVEBOARD_DB_POOL_SIZE must be an integer"),
        ("LIVEBOARD_DB_MAX_OVERFLOW", "-1", "LIVEBOARD_DB_MAX_OVERFLOW must be at least 0"),
        ("LIVEBOARD_DB_PGBOUNCER", "true", "LIVEBOARD_DB_PGBOUNCER must be 0 or 1"),
    ],
)
def test_pool_settings_are_validated(name: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings({name: raw})
