"""The Grafana dashboard and the Prometheus rules of ``deploy/``: well-formed, and naming only
metrics a running server exports.

``promtool check rules`` runs when ``promtool`` is installed (Debian's ``prometheus`` package,
which ``.ci/run`` installs); without it the test skips, except in CI (``CI=true``), where it
fails. The rules are also checked against the rules file's schema here, promtool or not, and
every metric named in an expression of the dashboard or the rules must be among the samples of
a live server's ``/metrics`` after some traffic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # (types-PyYAML is not a test dependency)
from prometheus_client.parser import text_string_to_metric_families

from liveboard.protocol import project_room
from tests.support.board import Board

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "liveboard.json"
RULES = ROOT / "deploy" / "prometheus" / "liveboard-rules.yml"
#: Names in PromQL that are metrics of ours or of prometheus-client's default collectors.
METRIC_NAME = re.compile(r"\b((?:liveboard|process|python)_[a-z0-9_]+)\b")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def dashboard_expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(document["panels"]):
        found += [target["expr"] for target in panel.get("targets", [])]
    for variable in document["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] == "liveboard"
    assert isinstance(document["schemaVersion"], int)
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in document["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    expressions = dashboard_expressions()
    assert len(expressions) > 20
    for panel in document["panels"]:
        if panel["type"] == "row":
            continue
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert '$instance"' in target["expr"], f"{panel['title']}: not filtered by instance"


def test_the_rules_file_follows_the_rules_schema() -> None:
    """What ``promtool`` checks that can be checked without it: the shape of every rule."""
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    alerts: list[str] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert isinstance(rule["alert"], str)
            assert re.fullmatch(r"[A-Za-z_]\w*", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhdwy]", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["summary"]
            alerts.append(rule["alert"])
    # every alert docs/operations.md lists is in the file, and the other way round
    documented = set(
        re.findall(r"^\* `(Liveboard\w+)`", (ROOT / "docs/operations.md").read_text(), re.M)
    )
    assert documented == set(alerts)


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


async def test_every_metric_the_dashboard_and_rules_name_is_exported(board: Board) -> None:
    # Traffic first: a labelled family has no sample before its first labelled value.
    owner = board.user("owner")
    _, pid = await board.board(owner)
    watcher = await board.connect(owner)
    await watcher.subscribe(project_room(pid))
    await board.task(owner, pid, "one")
    await watcher.events(1)
    await (await board.connect(owner)).close()
    async with board.http.get(board.url + "/metrics") as response:
        text = await response.text()
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    expressions = dashboard_expressions() + [rule["expr"] for rule in rules()]
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(named) > 20
    assert sorted(named - exported) == [], "named in deploy/ but not exported"
