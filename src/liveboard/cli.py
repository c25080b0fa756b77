"""The ``liveboard`` command: ``serve``, ``token``, ``migrate`` and ``check-config`` (CONTRACT §1).

Exit codes: 0 success (including a graceful stop on SIGTERM/SIGINT), 1 runtime failure,
2 bad usage or configuration (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from liveboard import __version__
from liveboard.config import (
    DEV_JWT_SECRET,
    Settings,
    check_workers,
    load_settings,
    parse_workers,
    requested_log_format,
    unknown_variables,
)
from liveboard.errors import ConfigError, StartupError
from liveboard.logs import configure_logging
from liveboard.tracing_settings import require_opentelemetry

if TYPE_CHECKING:
    from aiohttp import web

    from liveboard.app import Listener

# The server stack is imported inside the commands that need it: `liveboard token` stays fast.

log = logging.getLogger("liveboard")

#: How long a graceful stop may take before the rest is cancelled (CONTRACT §5.7: exit within 10 s).
SHUTDOWN_TIMEOUT = 8.0
#: Of ``SHUTDOWN_TIMEOUT``, what the WebSockets' wait leaves for closing the rest.
CLEANUP_RESERVE = 4.0
#: aiohttp's own lingering time; ``LIVEBOARD_BODY_TIMEOUT`` lowers it when it is shorter.
LINGERING_TIME = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveboard", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"liveboard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    from liveboard.settings_report import settings_help

    serve = commands.add_parser(
        "serve",
        help="run the server (REST + WebSocket)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "settings (environment variables; a flag wins over its variable), with defaults:\n"
            f"{settings_help()}\n\n"
            "What each one means: README.md and docs/operations.md. `liveboard check-config`\n"
            "validates the environment and prints the effective values."
        ),
    )
    serve.add_argument("--host", help="listen address (LIVEBOARD_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (LIVEBOARD_PORT, default 8000)")
    serve.add_argument(
        "--dev", action="store_true", help="development mode: demo data, dev tokens, demo board"
    )
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log format (LIVEBOARD_LOG_FORMAT)"
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        help="server processes on one port, a number or auto = the CPU count"
        " (LIVEBOARD_WORKERS, default 1; more than one needs LIVEBOARD_REDIS_URL)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="also serve /metrics alone on port P; with --workers, worker i on P+i"
        " (LIVEBOARD_METRICS_PORT)",
    )
    # Set by the supervisor for its workers: bind the port with SO_REUSEPORT.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    token = commands.add_parser("token", help="print an HS256 JWT signed with LIVEBOARD_JWT_SECRET")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument("--name", help="the display name")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (3600)")
    token.add_argument("--dev", action="store_true", help="sign with the development secret")

    commands.add_parser("migrate", help="apply pending database migrations and exit")

    check = commands.add_parser(
        "check-config",
        help="validate the LIVEBOARD_* environment and print the effective settings",
        description="Validate the LIVEBOARD_* environment as `serve` would (exit 2 with one line"
        " on an invalid setting), warn about LIVEBOARD_* variables liveboard does not read, and"
        " print every setting's effective value with secrets masked. Connects to nothing.",
    )
    check.add_argument("--dev", action="store_true", help="check as `serve --dev` would")

    from liveboard.client import tail

    tail.add_arguments(commands.add_parser("tail", help="print a room's live events"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = _serve_settings(
                host=args.host,
                port=args.port,
                dev=args.dev or None,
                log_format=args.log_format,
                workers=parse_workers(args.workers, "--workers") if args.workers else None,
                reuse_port=args.reuse_port or None,
                metrics_port=_metrics_port(args.metrics_port),
            )
            configure_logging(settings.log_format, settings.log_level)
            if settings.workers > 1:
                from liveboard.workers import Supervisor

                return _run(Supervisor(settings).run())
            return _run(serve(settings))
        if args.command == "check-config":
            return check_config(dev=args.dev)
        if args.command == "token":
            settings = load_settings()
            secret = DEV_JWT_SECRET if args.dev else settings.jwt_secret
            if secret is None:
                raise ConfigError("LIVEBOARD_JWT_SECRET is not set (or pass --dev)")
            if args.ttl <= 0:
                raise ConfigError("--ttl must be positive")
            from liveboard.auth import issue_token

            try:
                token = issue_token(secret, args.sub, name=args.name, ttl=args.ttl)
            except ValueError as exc:  # a token the server would refuse (sub, name, ttl)
                raise ConfigError(str(exc)) from None
            print(token)
            return 0
        if args.command == "tail":
            from liveboard.client import tail

            return _run(tail.run(args))
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        return _run(run_migrations(settings))
    except ConfigError as exc:
        _report_config_error(exc, requested_log_format(getattr(args, "log_format", None)))
        return 2


def _serve_settings(**flags: Any) -> Settings:
    """The settings ``serve`` runs with; ``ConfigError`` when they cannot serve."""
    settings = load_settings(**flags).with_dev_defaults()
    if not settings.jwt_configured:
        raise ConfigError(
            "no JWT key configured: set LIVEBOARD_JWT_SECRET (or LIVEBOARD_JWT_PUBLIC_KEY"
            " / LIVEBOARD_JWT_JWKS_URL), or run with --dev"
        )
    check_workers(settings)
    if settings.tracing is not None:
        require_opentelemetry()  # tracing asked for (OTEL_*) needs the otel extra
    return settings


def check_config(*, dev: bool) -> int:
    """``liveboard check-config``: warnings on stderr, the effective settings on stdout, 0.

    An invalid setting raises ``ConfigError`` (``main`` prints it and exits 2)."""
    from liveboard.settings_report import effective_settings, unknown_variable_warnings

    settings = _serve_settings(dev=dev or None)
    for warning in unknown_variable_warnings(unknown_variables()):
        print(f"liveboard: {warning}", file=sys.stderr)
    print("\n".join(effective_settings(settings)))
    if dev:
        print("# --dev: development mode (the development JWT secret when no key is set)")
    return 0


def _report_config_error(exc: ConfigError, fmt: str) -> None:
    """One line on stderr: ``liveboard: …`` in the text format (as a usage error), one JSON
    record when JSON logs were asked for (a log collector parses every line)."""
    if fmt == "json":
        configure_logging("json")
        log.error("%s", exc.message)
    else:
        print(f"liveboard: {exc.message}", file=sys.stderr)


def _metrics_port(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise ConfigError(f"--metrics-port must be a TCP port (1-65535), got {value}")
    return value


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)
    return uvloop.run(coro)


async def run_migrations(settings: Settings) -> int:
    from liveboard.store.database import Database
    from liveboard.store.migrations import prepare_database

    db = Database(
        settings.database_url,
        schema=settings.db_schema,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pgbouncer=settings.db_pgbouncer,
    )
    try:
        applied = await prepare_database(db, settings.db_wait)
    except StartupError as exc:
        log.error("%s", exc.message)
        return 1
    finally:
        await db.aclose()
    print(f"applied migrations: {applied}" if applied else "database is up to date")
    return 0


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully: refuse new connections, close sockets."""
    from aiohttp import web

    from liveboard.app import build_app, listen, serve_metrics_alone
    from liveboard.fdlimit import raise_open_files_limit, watch_open_files
    from liveboard.logs import AccessLogger

    app = build_app(settings)  # first: a ConfigError (tracing without its package) is the only line
    raise_open_files_limit()
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # An idle keep-alive connection is closed after this; aiohttp's default is 3,630 s.
        keepalive_timeout=settings.keepalive_timeout,
        # After a response, the rest of an unread body is read and dropped for up to this long
        # (so the client gets the response rather than a reset), then the connection closes.
        lingering_time=min(LINGERING_TIME, settings.body_timeout),
    )
    try:
        await runner.setup()  # opens the database (waiting up to LIVEBOARD_DB_WAIT) and migrates
    except StartupError as exc:
        log.error("%s", exc.message)  # one line, no traceback
        await runner.cleanup()
        return 1
    listener: Listener | None = None
    metrics_runner: web.AppRunner | None = None
    try:
        try:
            listener = await listen(
                runner, settings.host, settings.port, reuse_port=settings.reuse_port
            )
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror)
            return 1
        port = listener.port or settings.port
        if settings.metrics_port is not None:
            try:
                metrics_runner = await serve_metrics_alone(
                    app, settings.host, settings.metrics_port
                )
            except OSError as exc:
                log.error(
                    "cannot listen on %s:%s for /metrics: %s",
                    settings.host,
                    settings.metrics_port,
                    exc.strerror,
                )
                return 1
        log.info(
            "liveboard %s listening on http://%s:%s%s",
            __version__,
            settings.host,
            port,
            " (dev mode)" if settings.dev else "",
            extra={"port": port, "instance": settings.instance_id},
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.create_task(watch_open_files())
        try:
            await stop.wait()
        finally:
            watch.cancel()
        log.info("shutting down")
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await _shut_down(app, runner, listener)
    return 0


async def _shut_down(
    app: web.Application, runner: web.AppRunner, listener: Listener | None
) -> None:
    """WebSockets first (``Listener.shutdown``), then aiohttp and the components
    (``runner.cleanup``), within one deadline of ``SHUTDOWN_TIMEOUT`` + 1 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_TIMEOUT + 1.0
    try:
        if listener is not None:  # new connections are refused from here on
            # Leave the components a few seconds of the deadline to close.
            grace = SHUTDOWN_TIMEOUT - CLEANUP_RESERVE
            await asyncio.wait_for(listener.shutdown(app, grace), SHUTDOWN_TIMEOUT - 1.0)
    except TimeoutError:
        log.warning("WebSockets took too long to close; going on")
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), max(1.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("shutdown took too long; exiting anyway")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
