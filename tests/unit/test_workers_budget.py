"""``liveboard.workers``: the restart budget (pure) and a worker's command line."""

from __future__ import annotations

import pytest

from liveboard.config import Settings, load_settings
from liveboard.errors import ConfigError
from liveboard.workers import RestartBudget, worker_command


def test_deaths_within_the_budget_are_replaced() -> None:
    budget = RestartBudget(max_deaths=3, window=60.0)
    assert [budget.allows_restart(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.allows_restart(3.0) is False  # the fourth within 60 s


def test_old_deaths_leave_the_window() -> None:
    budget = RestartBudget(max_deaths=2, window=10.0)
    assert budget.allows_restart(0.0)
    assert budget.allows_restart(5.0)
    assert budget.allows_restart(10.0)  # the death at 0.0 is out of (0.0, 10.0]
    assert budget.allows_restart(15.0)  # and the one at 5.0
    assert not budget.allows_restart(16.0)  # 10, 15, 16


def test_a_worker_serves_one_process_on_the_supervisors_port_with_reuse_port() -> None:
    settings = Settings(host="0.0.0.0", port=0, workers=4, log_format="json")
    command = worker_command(settings, 8123)
    assert command[1:4] == ["-m", "liveboard", "serve"]
    joined = " ".join(command)
    assert "--host 0.0.0.0 --port 8123 --workers 1 --reuse-port --log-format json" in joined


def test_worker_i_serves_its_metrics_on_the_base_port_plus_i() -> None:
    settings = Settings(workers=3, metrics_port=9100)
    assert worker_command(settings, 8000, 2)[-2:] == ["--metrics-port", "9102"]
    assert "--metrics-port" not in worker_command(Settings(workers=3), 8000, 2)


def test_the_metrics_port_is_a_tcp_port() -> None:
    assert load_settings({"LIVEBOARD_METRICS_PORT": "9100"}).metrics_port == 9100
    assert load_settings({}).metrics_port is None
    for bad in ("0", "70000", "x"):
        with pytest.raises(ConfigError, match="LIVEBOARD_METRICS_PORT"):
            load_settings({"LIVEBOARD_METRICS_PORT": bad})
