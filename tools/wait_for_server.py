"""Waits until a liveboard server answers `/healthz`: `python3 -m tools.wait_for_server URL S`.

`make wait` runs it with the system Python (standard library only), so it works while `make run`
is still creating the virtualenv. Exits 0 once the URL answers 2xx, 1 when the time is up.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def wait_for(url: str, seconds: float, poll_interval: float = 0.25) -> bool:
    """True as soon as `url` answers with a 2xx status; False if `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (OSError, urllib.error.URLError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_interval)


def main(argv: list[str]) -> int:
    url, seconds = argv[0], float(argv[1])
    if wait_for(url, seconds):
        print(f"liveboard answers at {url}")
        return 0
    print(f"no answer from {url} after {seconds:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
