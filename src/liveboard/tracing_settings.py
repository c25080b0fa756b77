"""What the standard ``OTEL_*`` variables ask of tracing: pure, and free of OpenTelemetry.

``config.load_settings`` hands it the environment it read (``config.py`` stays the only module
that reads it); ``tracing.py`` starts what this decided.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from liveboard.errors import ConfigError

#: The span exporters liveboard can start (``OTEL_TRACES_EXPORTER``); ``none`` turns tracing off.
TRACE_EXPORTERS = ("otlp", "console")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry tracing, when the ``OTEL_*`` variables ask for it (``tracing_settings``).

    Only the switch, the exporters and the service name are decided here. The exporter's own
    details (endpoint, headers, TLS, timeouts), the sampler, the batch processor's limits and
    extra resource attributes are read by the OpenTelemetry SDK itself from the same standard
    variables, as in every program it instruments (docs/operations.md lists them).
    """

    exporters: tuple[str, ...] = ("otlp",)
    service_name: str = "liveboard"


def tracing_settings(env: Mapping[str, str]) -> TracingSettings | None:
    """Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter, or (unset) when an OTLP
    endpoint is set; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off.

    Off by default, unlike the specification's ``otlp``: a server that was not asked to trace
    should not send spans to ``localhost:4318`` and log export failures.
    """
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return None
    raw = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        raw = "otlp" if endpoint else "none"
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if names == ("none",):
        return None
    unknown = [name for name in names if name not in TRACE_EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: liveboard can export to {', '.join(TRACE_EXPORTERS)} "
            f"(or none), got {raw!r}"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    if "otlp" in names and protocol and protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: liveboard exports OTLP over http/protobuf, got "
            f"{protocol!r}"
        )
    return TracingSettings(names, (env.get("OTEL_SERVICE_NAME") or "").strip() or "liveboard")


#: What tracing needs installed (the ``otel`` extra).
REQUIRED_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def require_opentelemetry() -> None:
    """Raise ``ConfigError`` (one line: what to install) when tracing's packages are missing.

    Checked before anything starts: by ``serve`` (the supervisor of ``--workers`` too, so that
    workers do not die one after the other) and by ``app.build_app``."""
    for name in REQUIRED_PACKAGES:
        try:
            missing = importlib.util.find_spec(name) is None
        except ModuleNotFoundError:  # a parent package is missing
            missing = True
        if missing:
            raise ConfigError(
                f"OTEL_* variables turn tracing on, but OpenTelemetry is not installed ({name}):"
                " pip install 'liveboard[otel]', or unset them"
            )
