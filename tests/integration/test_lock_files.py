"""The repository's lock files are closed: installing them never asks the index for a version."""

from __future__ import annotations

from pathlib import Path

from tools.lockcheck import InstalledMetadata, check_files

ROOT = Path(__file__).resolve().parents[2]


def test_every_lock_file_is_closed_under_its_packages_requirements() -> None:
    """Checked against the installed packages' own metadata (`make test` installs every lock)."""
    locks = sorted(ROOT.glob("requirements*.lock"))
    assert {path.name for path in locks} >= {
        "requirements.lock",
        "requirements-test.lock",
        "requirements-bench.lock",
        "requirements-build.lock",
        "requirements-uv.lock",
    }
    problems = check_files(locks, ROOT / "pyproject.toml", InstalledMetadata())
    assert [str(problem) for problem in problems] == []
