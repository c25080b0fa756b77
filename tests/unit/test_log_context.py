"""Logs that join up (issue 21, item 3), the pure parts: the client address behind trusted
proxies, the request id a client may send, the fields and timestamps of a line, and the
settings that turn them (and tracing) on."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from liveboard import log_context
from liveboard.config import load_settings, requested_log_format
from liveboard.errors import ConfigError
from liveboard.forwarded import client_address, parse_trusted_proxies
from liveboard.logs import JsonFormatter, TextFormatter, iso_timestamp

PROXIES = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7, ::1")


@pytest.mark.parametrize(
    ("peer", "forwarded", "x_forwarded", "client"),
    [
        # Headers from a peer nobody trusts are ignored.
        ("203.0.113.9", [], ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", ["for=198.51.100.1"], [], "203.0.113.9"),
        # From a trusted proxy: the first address from the right that is not a proxy.
        ("10.1.2.3", [], ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", [], ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),
        ("10.1.2.3", [], ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # repeated header
        ("::1", [], ["198.51.100.1:4711"], "198.51.100.1"),
        ("::ffff:10.0.0.1", [], ["198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peer
        # Forwarded (RFC 7239) wins over X-Forwarded-For.
        ("192.0.2.7", ["for=198.51.100.1;proto=https"], ["6.6.6.6"], "198.51.100.1"),
        ("192.0.2.7", ['for="[2001:db8::1]:4711", for=10.0.0.5'], [], "2001:db8::1"),
        ("192.0.2.7", ["For=6.6.6.6, for=198.51.100.2;by=10.0.0.1"], [], "198.51.100.2"),
        # Not an address: the walk ends at the last hop a trusted proxy vouched for.
        ("10.1.2.3", ["for=unknown"], [], "10.1.2.3"),
        ("10.1.2.3", [], ["junk\x1b, 10.0.0.8"], "10.0.0.8"),
        # Every hop trusted: the leftmost.
        ("10.1.2.3", [], ["10.0.0.8, 10.0.0.9"], "10.0.0.8"),
        # No header: the peer.
        ("10.1.2.3", [], [], "10.1.2.3"),
    ],
)
def test_client_address(
    peer: str, forwarded: list[str], x_forwarded: list[str], client: str
) -> None:
    assert client_address(peer, PROXIES, forwarded=forwarded, x_forwarded=x_forwarded) == client


def test_no_trusted_proxy_means_the_peer() -> None:
    assert client_address("10.1.2.3", (), x_forwarded=["198.51.100.1"]) == "10.1.2.3"
    assert client_address(None, PROXIES, x_forwarded=["198.51.100.1"]) is None


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "example.com", "10.0.0.0/33", "1.2.3"])
def test_trusted_proxies_must_be_addresses_or_networks(bad: str) -> None:
    with pytest.raises(ConfigError, match="LIVEBOARD_TRUSTED_PROXIES") as caught:
        load_settings({"LIVEBOARD_TRUSTED_PROXIES": f"10.0.0.0/8,{bad}"})
    assert repr(bad) in caught.value.message


def test_trusted_proxies_setting() -> None:
    settings = load_settings({"LIVEBOARD_TRUSTED_PROXIES": " 10.0.0.0/8 , ::1,"})
    assert [str(net) for net in settings.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert load_settings({}).trusted_proxies == ()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("a:b/c=d+e_f.g", True),
        ("", False),
        ("x" * 129, False),
        ("has space", False),
        ("new\nline", False),
        ("caf\u00e9", False),
        (None, False),
    ],
)
def test_a_request_id_is_kept_only_when_sane(sent: str | None, kept: bool) -> None:
    assert log_context.accepted_request_id(sent) == (sent if kept else None)


def test_new_request_ids_are_random_hex() -> None:
    first, second = log_context.new_request_id(), log_context.new_request_id()
    assert first != second
    assert len(first) == 32
    assert int(first, 16) >= 0


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(log_context.ContextFilter())
    logger = logging.getLogger("liveboard.test_log_context")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    yield logger, stream, handler
    logger.handlers[:] = []


def test_json_lines_carry_the_contexts_ids_and_an_iso_utc_time(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.info("outside")
    token = log_context.request_id.set("req-1")
    try:
        log_context.bind_user("alice")
        logger.info("inside")
        logger.info("explicit", extra={"user_id": "bob"})  # a line's own field wins
    finally:
        log_context.request_id.reset(token)
        log_context.user_id.set(None)
    outside, inside, explicit = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "request_id" not in outside
    assert "user_id" not in outside
    assert (inside["request_id"], inside["user_id"]) == ("req-1", "alice")
    assert (explicit["request_id"], explicit["user_id"]) == ("req-1", "bob")
    assert inside["ts"].endswith("Z")
    assert "T" in inside["ts"]


def test_text_lines_end_with_the_ids(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(TextFormatter("%(levelname)s %(message)s"))
    log_context.bind_connection("c-1", "user\nforged")
    try:
        logger.info("hello")
    finally:
        log_context.connection_id.set(None)
        log_context.user_id.set(None)
    assert stream.getvalue() == "INFO hello connection_id=c-1 user_id=user\\nforged\n"


def test_iso_timestamp() -> None:
    assert iso_timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(1796557588.1234) == "2026-12-06T11:46:28.123Z"


@pytest.mark.parametrize(
    ("raw", "level"), [(None, "INFO"), ("debug", "DEBUG"), ("WARNING", "WARNING")]
)
def test_log_level(raw: str | None, level: str) -> None:
    env = {} if raw is None else {"LIVEBOARD_LOG_LEVEL": raw}
    assert load_settings(env).log_level == level


def test_a_wrong_log_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LIVEBOARD_LOG_LEVEL must be one of"):
        load_settings({"LIVEBOARD_LOG_LEVEL": "verbose"})


def test_the_format_a_config_error_is_reported_in() -> None:
    assert requested_log_format(None, {"LIVEBOARD_LOG_FORMAT": "json"}) == "json"
    assert requested_log_format("json", {}) == "json"
    assert requested_log_format("text", {"LIVEBOARD_LOG_FORMAT": "json"}) == "text"
    assert requested_log_format(None, {"LIVEBOARD_LOG_FORMAT": "yaml"}) == "text"


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "board"}, None),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ("console", "otlp")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask(
    env: dict[str, str], exporters: tuple[str, ...] | None
) -> None:
    tracing = load_settings(env).tracing
    assert (tracing and tracing.exporters) == exporters


def test_the_service_name() -> None:
    on = {"OTEL_TRACES_EXPORTER": "console"}
    assert load_settings(on).tracing is not None
    assert load_settings(on).tracing.service_name == "liveboard"  # type: ignore[union-attr]
    named = load_settings({**on, "OTEL_SERVICE_NAME": "board-eu"}).tracing
    assert named is not None
    assert named.service_name == "board-eu"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf"),
    ],
)
def test_tracing_settings_liveboard_cannot_honour_are_config_errors(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)
