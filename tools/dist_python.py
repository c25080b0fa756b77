"""Builds the Python client's wheels: `python -m tools.dist_python [OUT_DIR]` (`make dist`).

Two wheels, from the files the server itself runs (no second copy of any source):

- ``liveboard-protocol`` (clients/python/protocol/): ``src/liveboard/protocol``; needs msgspec.
- ``liveboard-client`` (clients/python/): ``src/liveboard/client``; needs liveboard-protocol,
  aiohttp and msgspec.

Each is built by the pinned uv next to this interpreter, with no build isolation: the backend
is the hatchling of requirements-build.lock, already installed here, so a build asks no index
for anything. ``client_requirements`` is the part of requirements.lock (versions and hashes)
that the wheels' dependencies need, for an install that takes nothing unpinned.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tools.lockcheck import parse_lock

ROOT = Path(__file__).resolve().parents[1]
#: The projects, in build (and install) order: the protocol before the client that needs it.
PROJECTS = (ROOT / "clients" / "python" / "protocol", ROOT / "clients" / "python")


def build_wheels(out_dir: Path) -> list[Path]:
    """Build each project's wheel into ``out_dir``; return their paths, in ``PROJECTS`` order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    uv = Path(sys.executable).with_name("uv")
    wheels = []
    for project in PROJECTS:
        name = canonicalize_name(_project_name(project)).replace("-", "_")
        for old in out_dir.glob(f"{name}-*.whl"):
            old.unlink()  # one wheel per project in out_dir: the one just built
        build = ["build", "--wheel", "--no-build-isolation", "--python", sys.executable]
        subprocess.run([uv, "--quiet", *build, "--out-dir", str(out_dir), str(project)], check=True)
        (wheel,) = out_dir.glob(f"{name}-*.whl")
        wheels.append(wheel)
    return wheels


def _project_name(project: Path) -> str:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    return str(data["project"]["name"])


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The ``Requires-Dist`` of a wheel, read from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(archive.read(name).decode())
    return [Requirement(value) for value in headers.get_all("Requires-Dist") or []]


def _closure(roots: Iterable[Requirement]) -> set[NormalizedName]:
    """The names ``roots`` need here, transitively, read from installed metadata (offline)."""
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["extra"] = ""
    seen: set[NormalizedName] = set()
    pending = [r for r in roots if r.marker is None or r.marker.evaluate(environment)]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            child = Requirement(raw)
            for extra in {"", *requirement.extras}:
                if child.marker is None or child.marker.evaluate({**environment, "extra": extra}):
                    pending.append(child)
                    break
    return seen


def client_requirements(wheels: Sequence[Path], lock: Path = ROOT / "requirements.lock") -> str:
    """The lines of ``lock`` (with their hashes) that the wheels' dependencies need, other than
    the wheels themselves: what a fresh environment installs with ``--require-hashes``."""
    built = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    roots = [r for w in wheels for r in wheel_requirements(w)]
    needed = _closure(r for r in roots if canonicalize_name(r.name) not in built)
    lines = []
    for package in parse_lock(lock.read_text(), lock.name).packages:
        if package.name in needed:
            extras = f"[{','.join(sorted(package.extras))}]" if package.extras else ""
            marker = f" ; {package.marker}" if package.marker is not None else ""
            hashes = "".join(f" --hash={h}" for h in package.hashes)
            lines.append(f"{package.name}{extras}=={package.version}{marker}{hashes}")
            needed.discard(package.name)
    if needed:
        raise SystemExit(f"not in {lock.name}: {', '.join(sorted(needed))}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args[0]) if args else ROOT / "dist"
    for wheel in build_wheels(out_dir):
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
