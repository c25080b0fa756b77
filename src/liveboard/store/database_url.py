"""``LIVEBOARD_DATABASE_URL``'s libpq-style parameters: parsed and checked, without any I/O.

A PostgreSQL URL may carry the parameters managed services and libpq users hand out::

    postgresql://app:secret@db.example.com:5432/liveboard?sslmode=verify-full&sslrootcert=/etc/ca.pem

``parse_database_url`` accepts exactly the parameters in ``PARAMETERS`` and refuses any other
(a typo would otherwise be sent to the server as a setting, or ignored) with a ``ConfigError``
naming it. What each becomes (``DatabaseUrl.asyncpg_arguments``):

* ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey`` (and ``host``, ``port``): left in the
  DSN that asyncpg parses itself, with libpq's meaning (asyncpg's own libpq-compatible TLS
  set-up: ``require`` encrypts without verifying, ``verify-ca`` checks the chain,
  ``verify-full`` the host name too). Without ``sslmode`` asyncpg's default is ``prefer``, as
  libpq's.
* ``application_name``, ``options``: sent in the start-up packet (asyncpg's
  ``server_settings``); ``options`` is libpq's, e.g. ``-c search_path=app``.
* ``connect_timeout``: seconds for one connection attempt (asyncpg's ``timeout``).

SQLite URLs are returned unchanged: their query string is not liveboard's to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from liveboard.errors import ConfigError

#: The libpq ``sslmode`` values, weakest first.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: asyncpg interprets these itself (from the DSN), as libpq does.
TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
#: ``host``: e.g. a Unix socket's directory (``postgresql:///liveboard?host=/run/postgresql``).
DSN_PARAMETERS = (*TLS_PARAMETERS, "host", "port")
#: Those that name a file.
CERTIFICATE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey")
#: Sent to the server in the start-up packet.
STARTUP_PARAMETERS = ("application_name", "options")
#: Every parameter a PostgreSQL URL may carry.
PARAMETERS = (*DSN_PARAMETERS, *STARTUP_PARAMETERS, "connect_timeout")
#: Parameters people bring from other tools, and what to use instead.
_INSTEAD = {
    "pgbouncer": "set LIVEBOARD_DB_PGBOUNCER=1 instead",
    "prepared_statement_cache_size": "set LIVEBOARD_DB_PGBOUNCER=1 to turn the caches off",
    "statement_cache_size": "set LIVEBOARD_DB_PGBOUNCER=1 to turn the caches off",
    "ssl": "use sslmode=",
}
_NAME = "LIVEBOARD_DATABASE_URL"


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A checked database URL. ``dsn`` is the URL without ``connect_timeout`` and the start-up
    parameters (which travel as asyncpg arguments); ``parameters`` are all of them, in order."""

    url: str
    is_postgres: bool
    dsn: str
    parameters: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        """A parameter's value, or None when the URL does not carry it."""
        return next((value for key, value in self.parameters if key == name), None)

    @property
    def certificate_files(self) -> tuple[tuple[str, str], ...]:
        """``(parameter, path)`` of each certificate or key file the URL names."""
        return tuple((k, v) for k, v in self.parameters if k in CERTIFICATE_PARAMETERS)

    def asyncpg_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect``: ``dsn``, and ``timeout`` and
        ``server_settings`` when the URL sets them."""
        arguments: dict[str, Any] = {"dsn": self.dsn}
        timeout = self.get("connect_timeout")
        if timeout is not None:
            arguments["timeout"] = float(timeout)
        settings = {k: v for k, v in self.parameters if k in STARTUP_PARAMETERS}
        if settings:
            arguments["server_settings"] = settings
        return arguments


def parse_database_url(url: str) -> DatabaseUrl:
    """Check ``url`` (``sqlite:///PATH`` or ``postgresql://…``) and its parameters.

    Raises ``ConfigError`` with one line naming the variable and what is wrong: an unsupported
    scheme, an unknown or repeated parameter, an ``sslmode`` outside ``SSL_MODES``, a
    ``connect_timeout`` that is not a positive number of seconds, an empty value."""
    if url.startswith("sqlite:///"):
        return DatabaseUrl(url=url, is_postgres=False, dsn=url)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{_NAME} must be sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB, got {url!r}"
        )
    parts = urlsplit(url)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"{_NAME} has a malformed query string {parts.query!r}") from None
    seen: set[str] = set()
    for key, value in pairs:
        _check_parameter(key, value, seen)
    dsn_pairs = [(k, v) for k, v in pairs if k in DSN_PARAMETERS]
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(dsn_pairs), ""))
    return DatabaseUrl(url=url, is_postgres=True, dsn=dsn, parameters=tuple(pairs))


def _check_parameter(key: str, value: str, seen: set[str]) -> None:
    if key not in PARAMETERS:
        hint = _INSTEAD.get(key, "known: " + ", ".join(PARAMETERS))
        raise ConfigError(f"{_NAME}: unknown parameter {key!r} ({hint})")
    if key in seen:
        raise ConfigError(f"{_NAME}: parameter {key!r} is given twice")
    seen.add(key)
    if value == "":
        raise ConfigError(f"{_NAME}: parameter {key!r} is empty")
    if key == "sslmode" and value not in SSL_MODES:
        raise ConfigError(f"{_NAME}: sslmode must be one of {', '.join(SSL_MODES)}, got {value!r}")
    if key == "connect_timeout":
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(
                f"{_NAME}: connect_timeout must be a positive number of seconds, got {value!r}"
            )
