"""Where a server's CPU goes, from ``perf record`` call chains (``bench.lean_gap --perf-record``).

    python -m bench.perf_buckets PERF.data [PERF.data …] [--events N] [--leaves BUCKET]

Each CPU-clock sample is put in one bucket by the frames of its call chain (DWARF-unwound, so
uvloop's and CPython's C frames are there; Python functions are not, 3.11 has no perf map):

* ``socket write: kernel`` / ``socket write: user``: under ``UVStream.write`` (liveboard) or
  picows' ``WSTransport.send`` (the lean server), in the ``write``/``sendto`` system call or
  around it (uvloop's and picows' own code);
* ``epoll_pwait``, ``read(): kernel``: the loop's wait and its socket reads;
* ``read callback: user, not writes``: everything else done in a socket's read callback: for
  the Redis subscriber, hiredis, the decode, and the Python of the receive path;
* ``call_soon callbacks``, ``timers (call_later)``: the loop's ready queue (task steps: the
  audit, presence, the heartbeats' wheel) and its timers;
* ``scheduler (other)``, ``kernel, other``, ``user, other``.

With ``--events N`` (events in the recorded phase) each bucket is also given in µs of CPU
per event: the CPU clock its samples stand for (their periods) ÷ N.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
from collections.abc import Iterator

Chain = list[tuple[str, str]]  # (symbol, dso), leaf first
Sample = tuple[int, Chain]  # (ns of CPU the sample stands for, its chain)

WRITE = ("UVStream_write", "UVStream__exec_write", "UVStream__initiate_write")
SEND = ("WSTransport__send", "WSTransport_send", "WSTransport__fast_write")
WRITE_SYSCALL = ("ksys_write", "__sys_sendto", "__x64_sys_write", "__x64_sys_sendto")


def samples(path: str) -> Iterator[Sample]:
    """The samples of a ``perf.data`` file: each one's period (ns of CPU clock) and call
    chain, leaf first."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,tid,period,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    period, chain = 0, []
    for line in out.splitlines():
        if not line.strip():
            if chain:
                yield period, chain
            chain = []
            continue
        if not line[0].isspace():  # a sample's header: comm, tid, period
            period, chain = int(line.split()[-1]), []
            continue
        _ip, _, rest = line.strip().partition(" ")
        symbol, _, dso = rest.rpartition(" (")
        chain.append((symbol, dso.rstrip(")")))
    if chain:
        yield period, chain


def bucket(chain: Chain) -> str:
    """The bucket of one sample (see the module docstring). Pure."""
    symbols = [s for s, _ in chain]
    in_kernel = chain[0][1] == "[kernel.kallsyms]"

    def under(*keys: str) -> bool:
        return any(key in s for s in symbols for key in keys)

    if under(*WRITE, *SEND):
        return (
            "socket write: kernel"
            if in_kernel and under(*WRITE_SYSCALL)
            else ("socket write: user")
        )
    if under("epoll_pwait", "epoll_wait"):
        return "epoll_pwait"
    if under("ksys_read", "__x64_sys_read"):
        return "read(): kernel"
    if in_kernel and under("finish_task_switch", "__schedule"):
        return "scheduler (other)"
    if under("__uv_stream_on_read", "uv__read", "uv__stream_io"):
        return "read callback: user, not writes"
    if under("uv__run_timers", "TimerHandle"):
        return "timers (call_later)"
    if under("uv__run_idle", "_on_idle", "cb_idle_callback"):
        return "call_soon callbacks"
    return "kernel, other" if in_kernel else "user, other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--events", type=int, default=0, help="events in the recorded phase")
    parser.add_argument("--leaves", help="also the top leaf symbols of this bucket")
    args = parser.parse_args()
    for path in args.files:
        counts: collections.Counter[str] = collections.Counter()
        clock: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        total = kernel = 0
        for period, chain in samples(path):
            total += 1
            kernel += chain[0][1] == "[kernel.kallsyms]"
            name = bucket(chain)
            counts[name] += 1
            clock[name] += period
            if name == args.leaves:
                leaves[f"{chain[0][0]} ({chain[0][1].rsplit('/', 1)[-1]})"] += 1
        if not total:
            print(f"{path}: no samples")
            continue
        cpu_ms = sum(clock.values()) / 1e6
        print(
            f"{path}: {total} samples, {cpu_ms:.0f} ms of CPU, {kernel / total:.1%} in the kernel"
        )
        for name, n in counts.most_common():
            us = f"  {clock[name] / 1e3 / args.events:6.1f} µs/event" if args.events else ""
            print(f"  {n:6d} {n / total:6.1%}{us}  {name}")
        for leaf, n in leaves.most_common(25):
            print(f"      {n:6d}  {leaf}")


if __name__ == "__main__":
    main()
