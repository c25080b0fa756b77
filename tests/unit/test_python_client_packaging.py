"""The client distributions' metadata agrees with the code they are built from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import liveboard
from tools.dist_python import PROJECTS

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_wheels_have_the_servers_version_and_pin_each_other() -> None:
    """Built from the same files at the same commit, so one version for all three, and the
    client requires exactly that protocol (a protocol from another commit may differ)."""
    protocol, client = (tomllib.loads((p / "pyproject.toml").read_text()) for p in PROJECTS)
    assert protocol["project"]["version"] == liveboard.__version__
    assert client["project"]["version"] == liveboard.__version__
    assert f"liveboard-protocol=={liveboard.__version__}" in client["project"]["dependencies"]


def test_the_wheels_map_the_servers_own_source_directories() -> None:
    protocol, client = (tomllib.loads((p / "pyproject.toml").read_text()) for p in PROJECTS)
    for project, config, package in (
        (PROJECTS[0], protocol, "protocol"),
        (PROJECTS[1], client, "client"),
    ):
        mapping = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
        ((source, target),) = mapping.items()
        assert (project / source).resolve() == ROOT / "src" / "liveboard" / package
        assert target == f"liveboard/{package}"
        assert (ROOT / "src" / "liveboard" / package / "py.typed").is_file()
