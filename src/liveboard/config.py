"""Settings: the only module that reads the environment.

``load_settings`` turns ``LIVEBOARD_*`` variables (CONTRACT §1) into a frozen ``Settings``;
command-line flags are passed as overrides and win over their variable. Invalid values raise
``ConfigError`` naming the variable, so ``serve`` can exit 2 with one clear line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from liveboard.errors import ConfigError
from liveboard.forwarded import Network, parse_trusted_proxies
from liveboard.redis_address_map import AddressMapping, parse_address_map
from liveboard.store.database_url import parse_database_url
from liveboard.tracing_settings import TracingSettings, tracing_settings

DEV_JWT_SECRET = "liveboard-development-secret-do-not-use-in-production"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a liveboard process is configured with. Immutable once loaded."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///./liveboard.db"
    #: The PostgreSQL schema of liveboard's tables and functions (ignored on SQLite).
    db_schema: str = "liveboard"
    redis_url: str | None = None
    #: Where to connect for a Redis Cluster node's announced address (``redis_address_map``);
    #: empty: the addresses the nodes announce.
    redis_address_map: tuple[AddressMapping, ...] = ()
    #: Which broker carries events between instances: ``auto`` (Redis when
    #: ``LIVEBOARD_REDIS_URL`` is set, else memory: one instance), ``memory``, ``redis``, or
    #: ``postgres`` (PostgreSQL's NOTIFY and the log; several instances without Redis).
    broker: str = "auto"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: How long a fetched JWKS key set is used before it is refetched (in the background).
    jwt_jwks_cache_seconds: float = 300.0
    # None: only requests without Origin and same-host origins; ("*",): any origin.
    allowed_origins: tuple[str, ...] | None = None
    # Timeouts (seconds)
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 10.0
    # From a connection's accept (or the first byte after a response) to its request head's end.
    head_timeout: float = 10.0
    # From a request's head to the end of its body.
    body_timeout: float = 30.0
    # An idle keep-alive HTTP connection (no request under way) is closed after this.
    keepalive_timeout: float = 75.0
    # An HTTP response whose sending has been stalled (the client reads nothing) this long.
    send_timeout: float = 60.0
    # Limits
    max_message_bytes: int = 65536
    max_subscriptions: int = 100
    max_connections_per_user: int = 50
    max_body_bytes: int = 1 << 20
    slow_consumer_bytes: int = 1 << 20
    # Connections from one client address (IPv6: one /64) that have not authenticated yet;
    # 0: no cap (behind a reverse proxy every connection comes from the proxy's address).
    max_pending_per_address: int = 256
    history_size: int = 1000
    #: Subscribes under way (a reconnect's recovery read included) past which new WebSocket
    #: upgrades are refused with 503 and ``Retry-After`` (a storm queues at the client, not in
    #: handshakes that time out); 0: no cap.
    max_handshakes: int = 500
    #: The ``Retry-After`` of that 503, seconds.
    handshake_retry_after: int = 1
    #: Service keys (``Authorization: apikey <key>``, CONTRACT §6.3); empty: none accepted.
    api_keys: tuple[str, ...] = ()
    #: Largest ``data`` of an event published over HTTP, in bytes of its JSON.
    max_event_data_bytes: int = 65536
    #: Events kept per room (never fewer than ``history_size``, the recovery window).
    event_retention: int = 10000
    #: Events older than this (seconds) are pruned too, beyond the recovery window; None: no age.
    event_retention_age: float | None = None
    #: How long an ``Idempotency-Key``'s answer is kept (seconds; CONTRACT §6.1: at least 24 h).
    idempotency_ttl: float = 86400.0
    #: At start, how long to keep retrying an unreachable database (seconds; 0: try once).
    db_wait: float = 30.0
    #: PostgreSQL connections each process keeps open, and how many more it may open under load.
    db_pool_size: int = 10
    db_max_overflow: int = 10
    #: ``LIVEBOARD_DATABASE_URL`` is a PgBouncer in transaction mode: no prepared statement cache.
    db_pgbouncer: bool = False
    #: ``/readyz`` answers 503 while Redis is unreachable (it reports ``degraded`` otherwise).
    redis_required: bool = False
    #: Server processes ``serve`` runs on one port (CONTRACT §6.6); more than one needs a broker.
    workers: int = 1
    #: Also serve ``/metrics`` (only) on this port; with several workers, worker ``i`` on
    #: ``metrics_port + i``, so each is scraped on its own. None: only on the main port.
    metrics_port: int | None = None
    #: Bind the listening socket with SO_REUSEPORT: set by the supervisor for its workers.
    reuse_port: bool = False
    # Mode
    dev: bool = False
    log_format: str = "text"
    log_level: str = "INFO"
    #: Peers whose ``Forwarded`` / ``X-Forwarded-For`` name the client (``forwarded.py``).
    trusted_proxies: tuple[Network, ...] = ()
    #: None: tracing is off (the default), and nothing of OpenTelemetry is imported.
    tracing: TracingSettings | None = None
    instance_id: str = field(default_factory=lambda: os.urandom(6).hex())

    @property
    def jwt_configured(self) -> bool:
        """True when some key to verify tokens is configured."""
        return bool(self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url)

    def with_dev_defaults(self) -> Settings:
        """In --dev mode a missing JWT key falls back to the development secret."""
        if self.dev and not self.jwt_configured:
            return replace(self, jwt_secret=DEV_JWT_SECRET)
        return self


#: Settings no ``LIVEBOARD_*`` variable sets: ``--dev`` is a flag, ``reuse_port`` is the
#: supervisor's flag for its workers, the instance id is random, and the body limit and the
#: catch-up window are fixed (the contract names no variable); tracing comes from the standard
#: ``OTEL_*`` variables.
NOT_FROM_ENVIRONMENT = frozenset(
    {"dev", "reuse_port", "instance_id", "max_body_bytes", "history_size", "tracing"}
)
#: ``LIVEBOARD_*`` variables that are not server settings: the SDK's (``liveboard.client.config``).
OTHER_VARIABLES = frozenset({"LIVEBOARD_TOKEN"})


def variable_name(setting: str) -> str:
    """The variable of a ``Settings`` field: ``db_wait`` is ``LIVEBOARD_DB_WAIT``."""
    return "LIVEBOARD_" + setting.upper()


def setting_defaults() -> dict[str, Any]:
    """Each variable ``load_settings`` reads and its setting's default, in ``Settings`` order.

    Derived from ``Settings`` itself, so ``serve --help`` and ``check-config`` cannot drift
    from it (a test checks that ``load_settings`` reads exactly these)."""
    return {
        variable_name(f.name): f.default
        for f in fields(Settings)
        if f.name not in NOT_FROM_ENVIRONMENT and f.default is not MISSING
    }


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``LIVEBOARD_*`` variables set (``os.environ`` by default) that liveboard does not
    read: typos, or settings of another version. Sorted."""
    env = os.environ if environ is None else environ
    known = set(setting_defaults()) | OTHER_VARIABLES
    return sorted(name for name in env if name.startswith("LIVEBOARD_") and name not in known)


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    value = _int(env, name, 0, minimum=1)
    if value > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def _origins(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    items = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    return items or None


#: What an API key may consist of: printable ASCII without space or comma (the list's
#: separator), long enough not to be guessed.
API_KEY_MIN_LENGTH = 16
API_KEY_MAX_LENGTH = 1024
_API_KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {","}


def _api_keys(raw: str | None) -> tuple[str, ...]:
    """``LIVEBOARD_API_KEYS``: a comma list; surrounding blanks dropped, duplicates kept once.

    A key that is too short or holds other characters is a ``ConfigError`` that does not quote
    the key (error lines reach logs), only its position in the list."""
    if raw is None:
        return ()
    keys: list[str] = []
    for position, part in enumerate(raw.split(","), start=1):
        key = part.strip()
        if not key:
            continue
        fits = API_KEY_MIN_LENGTH <= len(key) <= API_KEY_MAX_LENGTH
        if not fits or not set(key) <= _API_KEY_CHARACTERS:
            raise ConfigError(
                f"LIVEBOARD_API_KEYS: key {position} must be {API_KEY_MIN_LENGTH} to "
                f"{API_KEY_MAX_LENGTH} printable ASCII characters without spaces or commas"
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _retention_age(env: Mapping[str, str]) -> float | None:
    raw = _str(env, "LIVEBOARD_EVENT_RETENTION_AGE")
    if raw is None:
        return None
    return _float(env, "LIVEBOARD_EVENT_RETENTION_AGE", 0.0, minimum=1.0)


def parse_workers(raw: str, name: str = "LIVEBOARD_WORKERS") -> int:
    """A worker count: a positive integer, or ``auto`` for the CPUs this process may run on."""
    if raw == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
            return max(1, os.cpu_count() or 1)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer or auto, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer or auto, got {raw!r}")
    return value


BROKERS = ("auto", "memory", "redis", "postgres")


def broker_kind(settings: Settings) -> str:
    """The broker ``settings`` choose: ``LIVEBOARD_BROKER``, or for ``auto`` Redis when
    ``LIVEBOARD_REDIS_URL`` is set and the in-memory broker otherwise."""
    if settings.broker != "auto":
        return settings.broker
    return "memory" if settings.redis_url is None else "redis"


def check_workers(settings: Settings) -> None:
    """``serve``'s rule for several workers (CONTRACT §6.6): a broker, and not ``--dev``."""
    if settings.workers == 1:
        return
    if broker_kind(settings) == "memory":
        raise ConfigError(
            f"{settings.workers} workers need a broker to share rooms: set LIVEBOARD_REDIS_URL,"
            " or LIVEBOARD_BROKER=postgres"
        )
    if settings.dev:
        raise ConfigError("--dev runs one process: drop --workers (or LIVEBOARD_WORKERS)")


def _check_database_url(url: str) -> str:
    """The URL's scheme and parameters (``parse_database_url``), and that the certificate and
    key files it names can be read: a missing file would otherwise look like an unreachable
    database and be retried for ``LIVEBOARD_DB_WAIT`` seconds."""
    for parameter, path in parse_database_url(url).certificate_files:
        if not os.access(path, os.R_OK):
            raise ConfigError(f"LIVEBOARD_DATABASE_URL: {parameter} file {path!r} is not readable")
    return url


#: A schema name liveboard accepts: a plain lowercase SQL identifier, never quoted in SQL.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _check_db_schema(name: str) -> str:
    if _SCHEMA_NAME.fullmatch(name) is None or name.startswith("pg_"):
        raise ConfigError(
            "LIVEBOARD_DB_SCHEMA must be a lowercase SQL identifier (letters, digits, '_', "
            f"at most 63, not starting with a digit or pg_), got {name!r}"
        )
    return name


def _check_redis_url(url: str | None) -> str | None:
    if url is None or url.startswith(("redis://", "rediss://", "unix://")):
        return url
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from liveboard.realtime.brokers.redis_pools import parse_cluster_url

        try:
            parse_cluster_url(url)
        except ValueError as exc:
            raise ConfigError(f"LIVEBOARD_REDIS_URL: {exc}") from None
        return url
    raise ConfigError(
        "LIVEBOARD_REDIS_URL must be redis://HOST:PORT/DB or "
        f"redis+cluster://HOST:PORT[,HOST:PORT…], got {url!r}"
    )


def _address_map(raw: str | None) -> tuple[AddressMapping, ...]:
    if raw is None:
        return ()
    try:
        return parse_address_map(raw)
    except ValueError as exc:
        raise ConfigError(f"LIVEBOARD_REDIS_ADDRESS_MAP: {exc}") from None


def _log_level(env: Mapping[str, str]) -> str:
    raw = env.get("LIVEBOARD_LOG_LEVEL") or "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"LIVEBOARD_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}"
        )
    return raw.upper()


def _trusted_proxies(env: Mapping[str, str]) -> tuple[Network, ...]:
    try:
        return parse_trusted_proxies(env.get("LIVEBOARD_TRUSTED_PROXIES") or "")
    except ValueError as exc:
        raise ConfigError(f"LIVEBOARD_TRUSTED_PROXIES: {exc}") from None


def requested_log_format(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log format asked for (``--log-format``, else ``LIVEBOARD_LOG_FORMAT``), for
    reporting a configuration error: never raises, and anything but ``json`` is ``text``."""
    env = os.environ if environ is None else environ
    return "json" if (flag or env.get("LIVEBOARD_LOG_FORMAT")) == "json" else "text"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the environment (``os.environ`` by default); keyword overrides win (CLI flags).

    Overrides whose value is ``None`` are ignored, so an absent flag keeps the variable's value.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        "host": env.get("LIVEBOARD_HOST") or "127.0.0.1",
        "port": _int(env, "LIVEBOARD_PORT", 8000, minimum=0),
        "database_url": _check_database_url(
            env.get("LIVEBOARD_DATABASE_URL") or "sqlite:///./liveboard.db"
        ),
        "db_schema": _check_db_schema(env.get("LIVEBOARD_DB_SCHEMA") or "liveboard"),
        "redis_url": _check_redis_url(_str(env, "LIVEBOARD_REDIS_URL")),
        "redis_address_map": _address_map(_str(env, "LIVEBOARD_REDIS_ADDRESS_MAP")),
        "broker": _choice(env, "LIVEBOARD_BROKER", BROKERS),
        "jwt_secret": _str(env, "LIVEBOARD_JWT_SECRET"),
        "jwt_public_key": _str(env, "LIVEBOARD_JWT_PUBLIC_KEY"),
        "jwt_jwks_url": _str(env, "LIVEBOARD_JWT_JWKS_URL"),
        "jwt_audience": _str(env, "LIVEBOARD_JWT_AUDIENCE"),
        "jwt_issuer": _str(env, "LIVEBOARD_JWT_ISSUER"),
        "jwt_jwks_cache_seconds": _float(
            env, "LIVEBOARD_JWT_JWKS_CACHE_SECONDS", 300.0, minimum=1.0
        ),
        "allowed_origins": _origins(_str(env, "LIVEBOARD_ALLOWED_ORIGINS")),
        "heartbeat_interval": _float(env, "LIVEBOARD_HEARTBEAT_INTERVAL", 25.0, minimum=0.05),
        "heartbeat_timeout": _float(env, "LIVEBOARD_HEARTBEAT_TIMEOUT", 10.0, minimum=0.05),
        "head_timeout": _float(env, "LIVEBOARD_HEAD_TIMEOUT", 10.0, minimum=0.05),
        "body_timeout": _float(env, "LIVEBOARD_BODY_TIMEOUT", 30.0, minimum=0.05),
        "keepalive_timeout": _float(env, "LIVEBOARD_KEEPALIVE_TIMEOUT", 75.0, minimum=0.05),
        "send_timeout": _float(env, "LIVEBOARD_SEND_TIMEOUT", 60.0, minimum=0.05),
        "max_message_bytes": _int(env, "LIVEBOARD_MAX_MESSAGE_BYTES", 65536, minimum=64),
        "max_subscriptions": _int(env, "LIVEBOARD_MAX_SUBSCRIPTIONS", 100, minimum=1),
        "max_connections_per_user": _int(env, "LIVEBOARD_MAX_CONNECTIONS_PER_USER", 50, minimum=1),
        "slow_consumer_bytes": _int(env, "LIVEBOARD_SLOW_CONSUMER_BYTES", 1 << 20, minimum=1024),
        "max_pending_per_address": _int(env, "LIVEBOARD_MAX_PENDING_PER_ADDRESS", 256, minimum=0),
        "max_handshakes": _int(env, "LIVEBOARD_MAX_HANDSHAKES", 500, minimum=0),
        "handshake_retry_after": _int(env, "LIVEBOARD_HANDSHAKE_RETRY_AFTER", 1, minimum=1),
        "api_keys": _api_keys(_str(env, "LIVEBOARD_API_KEYS")),
        "max_event_data_bytes": _int(env, "LIVEBOARD_MAX_EVENT_DATA_BYTES", 65536, minimum=2),
        "event_retention": _int(env, "LIVEBOARD_EVENT_RETENTION", 10000, minimum=1000),
        "event_retention_age": _retention_age(env),
        "idempotency_ttl": _float(env, "LIVEBOARD_IDEMPOTENCY_TTL", 86400.0, minimum=1.0),
        "db_wait": _float(env, "LIVEBOARD_DB_WAIT", 30.0, minimum=0.0),
        "redis_required": _flag(env, "LIVEBOARD_REDIS_REQUIRED"),
        "db_pool_size": _int(env, "LIVEBOARD_DB_POOL_SIZE", 10, minimum=1),
        "db_max_overflow": _int(env, "LIVEBOARD_DB_MAX_OVERFLOW", 10, minimum=0),
        "db_pgbouncer": _flag(env, "LIVEBOARD_DB_PGBOUNCER"),
        "log_format": env.get("LIVEBOARD_LOG_FORMAT") or "text",
        "log_level": _log_level(env),
        "trusted_proxies": _trusted_proxies(env),
        "tracing": tracing_settings(env),
        "workers": parse_workers(env.get("LIVEBOARD_WORKERS") or "1"),
        "metrics_port": _port(env, "LIVEBOARD_METRICS_PORT"),
    }
    if values["log_format"] not in ("text", "json"):
        raise ConfigError(
            f"LIVEBOARD_LOG_FORMAT must be text or json, got {values['log_format']!r}"
        )
    if values["redis_required"] and values["redis_url"] is None:
        raise ConfigError("LIVEBOARD_REDIS_REQUIRED=1 needs LIVEBOARD_REDIS_URL")
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    if "database_url" in overrides and overrides["database_url"] is not None:
        _check_database_url(values["database_url"])
    _check_broker(values["broker"], values["database_url"], values["redis_url"])
    if values["redis_address_map"] and not (values["redis_url"] or "").startswith(
        ("redis+cluster://", "rediss+cluster://")
    ):
        raise ConfigError(
            "LIVEBOARD_REDIS_ADDRESS_MAP applies to a Redis Cluster only: it needs"
            " LIVEBOARD_REDIS_URL=redis+cluster://…"
        )
    return Settings(**values)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return raw


def _check_broker(broker: str, database_url: str, redis_url: str | None) -> None:
    if broker == "postgres" and not parse_database_url(database_url).is_postgres:
        raise ConfigError("LIVEBOARD_BROKER=postgres needs a PostgreSQL LIVEBOARD_DATABASE_URL")
    if broker == "redis" and redis_url is None:
        raise ConfigError("LIVEBOARD_BROKER=redis needs LIVEBOARD_REDIS_URL")
