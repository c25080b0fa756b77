"""GC probe for a benchmarked server: on ``PYTHONPATH`` (``bench.fixed_cost --gc``) this file is
imported by ``site`` at start-up, before liveboard, in every Python process that inherits the
path (the harness does not: it is set on the server's environment only).

It counts the garbage collector's runs per generation and the wall and CPU time inside them
(``gc.callbacks``), and on SIGUSR2 writes the totals, the tracked-object count and ``gc.freeze``'s
permanent generation size as JSON to ``$BENCH_GCPROBE_OUT`` (atomically: written then renamed).
Nothing happens when that variable is absent."""

from __future__ import annotations

import gc
import json
import os
import signal
import time

_OUT = os.environ.get("BENCH_GCPROBE_OUT")


def _install(out: str) -> None:
    counts = [0, 0, 0]
    wall = [0.0, 0.0, 0.0]
    cpu = [0.0, 0.0, 0.0]
    started = [0.0, 0.0]
    seq = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            started[1] = time.process_time()
            return
        generation = info["generation"]
        counts[generation] += 1
        wall[generation] += time.perf_counter() - started[0]
        cpu[generation] += time.process_time() - started[1]

    def dump(_signum: int, _frame: object) -> None:
        seq[0] += 1
        state = {
            "seq": seq[0],
            "collections": counts,
            "wall_s": wall,
            "cpu_s": cpu,
            "tracked": len(gc.get_objects()),
            "frozen": gc.get_freeze_count(),
            "thresholds": gc.get_threshold(),
        }
        tmp = f"{out}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, out)

    gc.callbacks.append(callback)
    signal.signal(signal.SIGUSR2, dump)


if _OUT:
    _install(_OUT)
