"""The PATCH path's cheaper parts give what the slower forms they replace gave, without I/O:
the clock's text, the log redaction's shortcut, the access line and the request histogram's
series lookup."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from liveboard import logs
from liveboard.log_context import ContextFilter
from liveboard.request_metrics import _Series
from liveboard.tasks.clock import Clock


def _strftime_reading(ms: int) -> str:
    """What ``Clock.now`` wrote before it kept the second's text."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@given(st.integers(min_value=-(10**12), max_value=4 * 10**12))
def test_a_clock_reading_is_the_formatted_time(ms: int) -> None:
    assert Clock.at(ms).iso == _strftime_reading(ms)
    assert Clock.at(ms).ms == ms


def test_readings_across_a_second_boundary_each_name_their_own_second() -> None:
    for ms in (1_733_500_000_999, 1_733_500_001_000, 1_733_500_000_999, 1_733_500_002_500):
        assert Clock.at(ms).iso == _strftime_reading(ms)


#: Characters the patterns turn on, with case variants Unicode folds onto them (Kelvin sign,
#: dotless i, dotted capital I).
_REDACT_ALPHABET = list("?eyJabcKk\u0131\u0130\u212aBbEeAaPpIiRrYy /=.\t\n_-'\"\\,")


@given(st.text(alphabet=st.sampled_from(_REDACT_ALPHABET), max_size=40))
def test_redact_is_the_substitution_whatever_the_text(text: str) -> None:
    assert logs.redact(text) == logs._SECRETS.sub("[redacted]", text)


def test_redact_still_removes_every_kind_of_secret() -> None:
    assert logs.redact("Authorization: Bearer abc.def") == "Authorization: [redacted]"
    assert logs.redact("got 'APIKEY lb_123'") == "got '[redacted]'"
    assert logs.redact("/ws?token=x") == "/ws[redacted]"
    assert "eyJhbGciOi" not in logs.redact("line: eyJhbGciOi")
    assert logs.redact("PATCH /api/tasks/t1 200 3.1ms") == "PATCH /api/tasks/t1 200 3.1ms"


def _access_handler(level: int, fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    logger = logging.getLogger("test.patch_path.access")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(fmt)
    logger.addHandler(handler)
    return logger, stream


def test_the_access_line_carries_its_fields_in_both_formats() -> None:
    text = logs.TextFormatter("%(levelname)s %(name)s: %(message)s")
    logger, stream = _access_handler(logging.INFO, text)
    logs.log_access(logger, "PATCH", "/api/tasks/t1", 200, 0.0031, "10.0.0.1", request_id="r1")
    assert stream.getvalue() == (
        "INFO test.patch_path.access: PATCH /api/tasks/t1 200 3.1ms request_id=r1\n"
    )
    logger, stream = _access_handler(logging.INFO, logs.JsonFormatter())
    logs.log_access(
        logger, "PATCH", "/api/tasks/t1", 200, 0.0031, "10.0.0.1", request_id="r1", user_id=None
    )
    line = json.loads(stream.getvalue())
    assert line["message"] == "PATCH /api/tasks/t1 200 3.1ms"
    assert (line["method"], line["path"], line["status"], line["ms"]) == (
        "PATCH",
        "/api/tasks/t1",
        200,
        3.1,
    )
    assert (line["remote"], line["request_id"], line["level"]) == ("10.0.0.1", "r1", "info")
    assert "user_id" not in line


def test_no_access_line_below_its_level() -> None:
    logger, stream = _access_handler(logging.WARNING, logs.JsonFormatter())
    logs.log_access(logger, "PATCH", "/api/tasks/t1", 200, 0.003, None, request_id="r1")
    assert stream.getvalue() == ""


def test_the_series_lookup_observes_into_the_labelled_series() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", ("method", "route", "status"), registry=registry)
    series = _Series(histogram)
    for seconds in (0.001, 0.002, 0.5):
        series.observe("PATCH", "/api/tasks/{tid}", "200", seconds)
    series.observe("PATCH", "/api/tasks/{tid}", "409", 0.004)

    def value(name: str, status: str) -> float | None:
        labels = {"method": "PATCH", "route": "/api/tasks/{tid}", "status": status}
        return registry.get_sample_value(name, labels)

    assert value("h_count", "200") == 3
    assert value("h_sum", "200") == 0.503
    assert value("h_count", "409") == 1
