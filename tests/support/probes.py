"""A server observed from outside: its ``/metrics`` and ``/healthz``, and its process in ``/proc``.

``parse_metrics`` reads Prometheus text strictly (invalid lines kept apart, for the tests of the
exposition itself); both it and ``metrics`` also give each labelled family's total under its
bare name (``liveboard_rooms`` = the sum of ``liveboard_rooms{kind=…}``; ``add_totals``), so a
test that needs no label reads one number. ``metrics`` and ``healthy`` fetch ``/metrics`` and
``/healthz`` blocking
(call them with ``asyncio.to_thread`` from async code). ``rss_kib``, ``open_fds``, ``fd_kinds``
and ``holds_connection`` read a server process's memory, descriptors and sockets (Linux).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request

# A label value is quoted and may hold braces (a route template: ``route="/api/projects/{pid}"``).
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?)\s+(\S+)$')


class MetricsText(dict[str, float]):
    """Samples ``{"name{labels}": value}``; ``invalid`` lists lines that are not valid samples."""

    invalid: list[str]


def parse_metrics(text: str) -> MetricsText:
    """Prometheus text → ``{"name{labels}": value}`` (invalid lines kept in ``.invalid``)."""
    samples = MetricsText()
    samples.invalid = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        try:
            if match is None:
                raise ValueError(line)
            samples[match.group(1)] = float(match.group(2))
        except ValueError:
            samples.invalid.append(line)
    add_totals(samples)
    return samples


def add_totals(samples: dict[str, float]) -> None:
    """Add, for each labelled name without an unlabelled sample, the sum of its samples under
    the bare name (not for histogram buckets, whose sum means nothing)."""
    totals: dict[str, float] = {}
    for key, value in samples.items():
        name, brace, _ = key.partition("{")
        if brace and not name.endswith("_bucket") and name not in samples:
            totals[name] = totals.get(name, 0.0) + value
    samples.update(totals)


def metrics(base_url: str) -> dict[str, float]:
    """``/metrics`` samples ``{"name{labels}": value}`` (blocking; call via ``to_thread``)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        body = response.read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    add_totals(samples)
    return samples


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as response:
            return response.status == 200 and bool(json.loads(response.read()) == {"status": "ok"})
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open file descriptors by kind: sockets, pipes, anonymous inodes, files (by extension)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else "file " + target.rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def holds_connection(pid: int, local_port: int, remote_port: int) -> bool:
    """Whether process ``pid`` has a descriptor for its TCP connection from ``local_port`` to
    ``remote_port`` on this host. A socket the process has closed, even one the kernel still
    keeps to send what it had queued (FIN-WAIT-1), is not held."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as table:
            next(table)  # the header
            for line in table:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == local_port and (
                    int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    inodes.add(f"socket:[{inode}]")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False
