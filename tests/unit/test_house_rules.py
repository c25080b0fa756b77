"""The house rules of issue 15, on src/: one test per rule, each failure naming its offenders.

The source is read statically (``tools/house_rules.py`` parses it with ``ast``; nothing of
liveboard is imported). What each rule means exactly, the package graph's nodes included, is in
that module's docstring; ``test_house_rules_checker.py`` shows that each rule catches what it
claims on small crafted trees.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import house_rules
from tools.house_rules import SourceTree

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def tree() -> SourceTree:
    return SourceTree(SRC)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} offence(s):\n" + "\n".join(problems)


def test_the_protocol_imports_only_itself_msgspec_and_the_standard_library(
    tree: SourceTree,
) -> None:
    problems = house_rules.protocol_is_pure(tree)
    assert not problems, _report(problems)


def test_the_sdk_imports_only_the_protocol_and_its_own_modules(tree: SourceTree) -> None:
    problems = house_rules.sdk_is_client_only(tree)
    assert not problems, _report(problems)


def test_only_the_transport_touches_aiohttps_websocket_and_privates(tree: SourceTree) -> None:
    problems = house_rules.aiohttp_websocket_in_transport(tree, house_rules.installed_aiohttp())
    assert not problems, _report(problems)


def test_the_transport_imports_neither_node_hub_session_nor_store(tree: SourceTree) -> None:
    problems = house_rules.transport_knows_no_core(tree)
    assert not problems, _report(problems)


def test_no_module_is_over_500_lines(tree: SourceTree) -> None:
    problems = house_rules.module_sizes(tree)
    assert not problems, _report(problems)


def test_no_package_cycle(tree: SourceTree) -> None:
    problems = house_rules.package_cycles(tree)
    assert not problems, _report(problems)


def test_only_the_config_modules_read_the_environment(tree: SourceTree) -> None:
    problems = house_rules.environment_reads(tree)
    assert not problems, _report(problems)
