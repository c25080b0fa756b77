"""tools.lockcheck on small crafted locks, with real METADATA files read by importlib.metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tools.lockcheck import InstalledMetadata, check_closed, parse_lock

HASH = "--hash=sha256:" + "0" * 64


def _distribution(site: Path, name: str, version: str, *metadata_lines: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *metadata_lines]
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """picows' shape: `app` needs `socks[asyncio]`, whose extra adds `timeout`."""
    _distribution(tmp_path, "app", "1.0", "Requires-Dist: socks[asyncio]>=3.1")
    _distribution(
        tmp_path,
        "socks",
        "3.2.1",
        "Provides-Extra: asyncio",
        'Requires-Dist: timeout>=4; extra == "asyncio"',
    )
    _distribution(tmp_path, "timeout", "4.0.3")
    return tmp_path


def _problems(site: Path, lock_text: str, roots: tuple[str, ...] = ("app",)) -> list[str]:
    lock = parse_lock(lock_text, "crafted.lock")
    installed = InstalledMetadata([str(site)])
    found = check_closed(
        lock,
        [Requirement(r) for r in roots],
        installed,
        {k: str(v) for k, v in default_environment().items()},
        "crafted.lock",
    )
    return [str(problem) for problem in found]


def test_a_closed_lock_passes(site: Path) -> None:
    lock = f"app==1.0 {HASH}\nsocks==3.2.1 \\\n    {HASH}\n    # via app\ntimeout==4.0.3 {HASH}\n"
    assert _problems(site, lock) == []


def test_an_unlocked_extra_fails(site: Path) -> None:
    """socks is locked, but what its `asyncio` extra adds is not: an installer must pick it."""
    lock = f"app==1.0 {HASH}\nsocks==3.2.1 {HASH}\n"
    assert _problems(site, lock) == [
        'crafted.lock: timeout>=4; extra == "asyncio" (required by socks[asyncio]) is not locked'
    ]


def test_an_extra_asked_by_a_locked_line_is_followed(site: Path) -> None:
    lock = f"socks[asyncio]==3.2.1 {HASH}\n"
    assert _problems(site, lock, roots=()) == [
        'crafted.lock: timeout>=4; extra == "asyncio" (required by socks[asyncio]) is not locked'
    ]


def test_a_locked_version_the_requirer_refuses_fails(site: Path) -> None:
    _distribution(site, "old", "1.0", "Requires-Dist: timeout<4")
    lock = f"app==1.0 {HASH}\nold==1.0 {HASH}\nsocks==3.2.1 {HASH}\ntimeout==4.0.3 {HASH}\n"
    assert _problems(site, lock) == [
        "crafted.lock:4: timeout==4.0.3 does not satisfy timeout<4 (required by old)"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"socks>=3.1 {HASH}", "'socks>=3.1' is not pinned with == to one version"),
        (f"socks==3.* {HASH}", "'socks==3.*' is not pinned with == to one version"),
        (f"socks==3.2.1,<4 {HASH}", "'socks==3.2.1,<4' is not pinned with == to one version"),
        ("socks==3.2.1", "socks has no --hash"),
        (f"-e ./socks {HASH}", "option '-e': a lock holds only pins"),
    ],
)
def test_lines_that_are_not_hashed_pins_fail(site: Path, line: str, message: str) -> None:
    assert f"crafted.lock:1: {message}" in _problems(site, line + "\n", roots=())


def test_a_package_locked_twice_fails(site: Path) -> None:
    lock = f"timeout==4.0.3 {HASH}\ntimeout==4.0.2 {HASH}\n"
    assert _problems(site, lock, roots=()) == ["crafted.lock:2: timeout is locked twice (line 1)"]


def test_lines_for_other_environments_are_neither_read_nor_counted(site: Path) -> None:
    lock = (
        f"timeout==4.0.3 {HASH}\n"
        f"timeout==3.0 ; sys_platform == 'no-such-platform' {HASH}\n"
        f"absent==1.0 ; python_version < '3' {HASH}\n"
    )
    assert _problems(site, lock, roots=("timeout",)) == []


def test_a_project_requirement_missing_from_the_lock_fails(site: Path) -> None:
    assert _problems(site, f"timeout==4.0.3 {HASH}\n", roots=("timeout", "app>=1")) == [
        "crafted.lock: app>=1 (required by pyproject.toml) is not locked"
    ]


def test_a_locked_package_that_is_not_installed_cannot_be_read(site: Path) -> None:
    assert _problems(site, f"ghost==1.0 {HASH}\n", roots=()) == [
        "crafted.lock: cannot read ghost==1.0: it is not installed here"
    ]
