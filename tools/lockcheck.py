"""Checks that lock files are closed, offline: `python -m tools.lockcheck FILE...`.

A requirements lock is only reproducible if installing it never has to ask the index which
version to take. That holds when, for the environment installing it:

- every line pins one exact version (`==`) and carries at least one `--hash`;
- no package is locked twice;
- every requirement of every locked package, including those its requested extras add
  (`python-socks[asyncio]` adds python-socks' `asyncio` requirements), names a package that is
  itself locked, at a version the requirement accepts;
- the project's own requirements for that lock (pyproject.toml) are locked the same way.

The packages' requirements are read from their own metadata (the `METADATA` files of installed
distributions), so the check needs no network: run it in the virtualenv the locks were installed
into (`make check-locks`). Lines whose environment markers do not apply here are not checked (a
Windows-only package cannot be read on Linux); everything that applies is.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

Environment = Mapping[str, str]


@dataclass(frozen=True)
class LockedPackage:
    """One requirement line of a lock file: `name[extras]==version ; marker --hash=...`."""

    name: NormalizedName
    version: Version
    extras: frozenset[str]
    marker: Marker | None
    hashes: tuple[str, ...]
    line: int

    def applies(self, environment: Environment) -> bool:
        """Whether an installer in `environment` installs this line."""
        return self.marker is None or self.marker.evaluate(dict(environment))


@dataclass(frozen=True)
class Problem:
    """One reason a lock is not reproducible, with where it was found."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True)
class ParsedLock:
    packages: tuple[LockedPackage, ...]
    problems: tuple[Problem, ...]


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Joins backslash continuations and drops comments; yields (first line number, text)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(part.strip() for part in pending).strip()
        pending = []
        if joined:
            yield start, joined
    if pending:
        joined = " ".join(part.strip() for part in pending).strip()
        if joined:
            yield start, joined


def parse_lock(text: str, source: str) -> ParsedLock:
    """Reads a requirements lock; every line that is not an exact, hashed pin is a problem."""
    packages: list[LockedPackage] = []
    problems: list[Problem] = []
    for number, line in _logical_lines(text):
        where = f"{source}:{number}"
        tokens = line.split()
        hashes = tuple(t.removeprefix("--hash=") for t in tokens if t.startswith("--hash="))
        options = [t for t in tokens if t.startswith("-") and not t.startswith("--hash=")]
        requirement_text = " ".join(t for t in tokens if not t.startswith("--hash="))
        if options:
            problems.append(Problem(where, f"option {options[0]!r}: a lock holds only pins"))
            continue
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as error:
            problems.append(Problem(where, f"not a requirement: {error}"))
            continue
        specifiers = list(requirement.specifier)
        if (
            requirement.url is not None
            or len(specifiers) != 1
            or specifiers[0].operator != "=="
            or "*" in specifiers[0].version
        ):
            problems.append(
                Problem(where, f"{requirement_text!r} is not pinned with == to one version")
            )
            continue
        if not hashes:
            problems.append(Problem(where, f"{requirement.name} has no --hash"))
            continue
        try:
            version = Version(specifiers[0].version)
        except InvalidVersion as error:
            problems.append(Problem(where, f"{requirement.name}: {error}"))
            continue
        packages.append(
            LockedPackage(
                name=canonicalize_name(requirement.name),
                version=version,
                extras=frozenset(requirement.extras),
                marker=requirement.marker,
                hashes=hashes,
                line=number,
            )
        )
    return ParsedLock(tuple(packages), tuple(problems))


class InstalledMetadata:
    """Requirements of distributions as their installed `METADATA` states them."""

    def __init__(self, paths: Sequence[str] | None = None) -> None:
        found = metadata.distributions(path=list(paths)) if paths is not None else None
        distributions = found if found is not None else metadata.distributions()
        self._by_name: dict[NormalizedName, metadata.Distribution] = {}
        for distribution in distributions:
            name = canonicalize_name(distribution.metadata["Name"])
            # The first on the path wins, as for an import.
            self._by_name.setdefault(name, distribution)

    def version(self, name: NormalizedName) -> Version | None:
        distribution = self._by_name.get(name)
        return None if distribution is None else Version(distribution.version)

    def requirements(self, name: NormalizedName) -> list[Requirement]:
        distribution = self._by_name[name]
        return [Requirement(text) for text in distribution.requires or []]


def _applies(requirement: Requirement, environment: Environment, extra: str) -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({**environment, "extra": extra})


def check_closed(
    lock: ParsedLock,
    roots: Sequence[Requirement],
    installed: InstalledMetadata,
    environment: Environment,
    source: str,
) -> list[Problem]:
    """Problems that make installing `lock` in `environment` ask the index for a version.

    Walks the requirement graph from `roots` and from every applicable locked line, extras
    included; each requirement reached must name a locked package whose version it accepts.
    """
    problems = list(lock.problems)
    locked: dict[NormalizedName, LockedPackage] = {}
    for package in lock.packages:
        if not package.applies(environment):
            continue
        if package.name in locked:
            first = locked[package.name].line
            problems.append(
                Problem(
                    f"{source}:{package.line}", f"{package.name} is locked twice (line {first})"
                )
            )
            continue
        locked[package.name] = package

    # (requirer, requirement) pairs still to check; `requirer` names where it came from.
    pending: list[tuple[str, Requirement, str]] = [("pyproject.toml", root, "") for root in roots]
    expanded: set[tuple[NormalizedName, str]] = set()

    def expand(name: NormalizedName, extra: str) -> None:
        """Queues the requirements `name` has (with `extra` requested, or its base ones)."""
        if (name, extra) in expanded:
            return
        expanded.add((name, extra))
        package = locked[name]
        installed_version = installed.version(name)
        if installed_version is None:
            problems.append(
                Problem(source, f"cannot read {name}=={package.version}: it is not installed here")
            )
            return
        if installed_version != package.version:
            problems.append(
                Problem(
                    source,
                    f"cannot read {name}=={package.version}: {installed_version} is installed",
                )
            )
            return
        requirer = f"{name}[{extra}]" if extra else str(name)
        pending.extend(
            (requirer, requirement, extra) for requirement in installed.requirements(name)
        )

    for package in locked.values():
        expand(package.name, "")
        for extra in sorted(package.extras):
            expand(package.name, extra)

    while pending:
        requirer, requirement, requirer_extra = pending.pop()
        if not _applies(requirement, environment, requirer_extra):
            continue
        name = canonicalize_name(requirement.name)
        target = locked.get(name)
        if target is None:
            problems.append(
                Problem(source, f"{requirement} (required by {requirer}) is not locked")
            )
            continue
        if not requirement.specifier.contains(target.version, prereleases=True):
            problems.append(
                Problem(
                    f"{source}:{target.line}",
                    f"{name}=={target.version} does not satisfy {requirement} "
                    f"(required by {requirer})",
                )
            )
        for extra in sorted(requirement.extras):
            expand(name, extra)
    return problems


# Which of pyproject.toml's requirements each lock file must hold.
_ROOTS_BY_LOCK: dict[str, tuple[str, ...]] = {
    "requirements.lock": ("project",),
    "requirements-test.lock": ("project", "optional:test"),
    "requirements-bench.lock": ("project", "optional:bench"),
    "requirements-build.lock": ("group:build",),
}


def project_roots(lock_name: str, pyproject: Mapping[str, object]) -> list[Requirement]:
    """The pyproject.toml requirements that the lock called `lock_name` is made from."""
    project = pyproject.get("project", {})
    groups = pyproject.get("dependency-groups", {})
    assert isinstance(project, dict)
    assert isinstance(groups, dict)
    texts: list[str] = []
    for part in _ROOTS_BY_LOCK.get(lock_name, ()):
        if part == "project":
            texts += project.get("dependencies", [])
        elif part.startswith("optional:"):
            texts += project.get("optional-dependencies", {})[part.removeprefix("optional:")]
        else:
            texts += groups[part.removeprefix("group:")]
    return [Requirement(text) for text in texts]


def check_files(
    paths: Sequence[Path], pyproject_path: Path, installed: InstalledMetadata
) -> list[Problem]:
    """Every problem of every lock in `paths`, for this interpreter's environment."""
    with pyproject_path.open("rb") as file:
        pyproject = tomllib.load(file)
    environment = {key: str(value) for key, value in default_environment().items()}
    problems: list[Problem] = []
    for path in paths:
        lock = parse_lock(path.read_text(encoding="utf-8"), path.name)
        roots = project_roots(path.name, pyproject)
        problems += check_closed(lock, roots, installed, environment, path.name)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("locks", nargs="+", type=Path)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    arguments = parser.parse_args(argv)
    problems = check_files(arguments.locks, arguments.pyproject, InstalledMetadata())
    for problem in problems:
        print(problem, file=sys.stderr)
    names = ", ".join(str(path) for path in arguments.locks)
    if problems:
        print(f"lockcheck: {len(problems)} problem(s) in {names}", file=sys.stderr)
        return 1
    print(f"lockcheck: {names}: every requirement locked at one version, with hashes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
