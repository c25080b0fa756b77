"""Looking at a ``serve --workers N`` supervisor from outside: its workers and their sockets.

Read from ``/proc`` (Linux), so a test sees exactly what the kernel did: which worker processes
the supervisor has, which of them listen on the port, and which worker holds each accepted
connection (matched by the client's port).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
_LISTEN, _ESTABLISHED = "0A", "01"


def worker_pids(supervisor_pid: int) -> list[int]:
    """The supervisor's child processes (its workers), in the order the kernel lists them."""
    children = PROC / str(supervisor_pid) / "task" / str(supervisor_pid) / "children"
    try:
        return [int(pid) for pid in children.read_text().split()]
    except OSError:
        return []


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        entries = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(PROC / str(pid) / "fd" / entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_sockets() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket of this network namespace."""
    rows: list[tuple[int, int, str, int]] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            rows.append(
                (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode)
            )
    return rows


def listening_workers(pids: list[int], port: int) -> set[int]:
    """Which of ``pids`` hold a socket listening on ``port``."""
    listening = {
        inode for local, _, state, inode in _tcp_sockets() if local == port and state == _LISTEN
    }
    return {pid for pid in pids if _socket_inodes(pid) & listening}


def worker_of_client_ports(pids: list[int], port: int) -> dict[int, int]:
    """For each established connection to ``port`` held by one of ``pids``: the client's port
    → the worker's pid."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    return {
        remote: owner[inode]
        for local, remote, state, inode in _tcp_sockets()
        if local == port and state == _ESTABLISHED and inode in owner
    }


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a process (a zombie counts: it has not been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
