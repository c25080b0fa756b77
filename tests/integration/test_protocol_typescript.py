"""The generated TypeScript declarations (clients/js/src/protocol.ts) under the pinned tsc.

- ``tsc --strict`` accepts the declarations and test/types/usage.ts, a client's typed use of
  them (events by type with their ``data``, an exhaustive switch over server messages, client
  messages, close codes and the reconnect policy);
- it refuses test/types/wrong.ts with exactly the errors the file marks (``// TSnnnn`` at the
  end of a line), each on its line: a wrong event name, a wrong field, a wrong error code or
  close code fails to compile, so the types bite;
- the same for the client's API (issue 19): test/types/client-usage.ts, an app's typed use of
  ``LiveboardClient``, ``Subscription`` and ``Board``, compiles (it is in tsconfig.json); and
  test/types/client-wrong.ts (a misspelt client, subscription or board event, a field its
  payload lacks, an undeclared custom event, a write to the frozen snapshot) fails on each
  marked line with that error.

TypeScript comes from clients/js/package-lock.json (`npm ci`, which `make test` runs).
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
TSC = JS / "node_modules" / ".bin" / "tsc"
TYPES = JS / "test" / "types"
WRONG = ("wrong.ts", "client-wrong.ts")  # both in tsconfig.wrong.json: one tsc run


def tsc(project: Path) -> subprocess.CompletedProcess[str]:
    assert TSC.is_file(), f"{TSC} is missing: run `make clients/js/node_modules` (npm ci)"
    return subprocess.run(
        [str(TSC), "--noEmit", "--pretty", "false", "-p", str(project)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_declarations_and_a_typed_client_compile_under_strict() -> None:
    result = tsc(JS / "tsconfig.json")
    assert result.returncode == 0, result.stdout + result.stderr


@functools.cache
def wrong_run() -> subprocess.CompletedProcess[str]:
    return tsc(TYPES / "tsconfig.wrong.json")


@pytest.mark.parametrize("name", WRONG)
def test_misuses_fail_to_compile_each_with_its_error(name: str) -> None:
    expected = {
        (number, code)
        for number, line in enumerate((TYPES / name).read_text(encoding="utf-8").splitlines(), 1)
        for code in re.findall(r"// (TS\d{4})$", line)
    }
    assert len(expected) >= 10
    result = wrong_run()
    assert result.returncode != 0
    pattern = rf"^test/types/{re.escape(name)}\((\d+),\d+\): error (TS\d{{4}}):"
    reported = {(int(number), code) for number, code in re.findall(pattern, result.stdout, re.M)}
    assert reported == expected, result.stdout
    # Nothing else fails: the declarations and the client's sources themselves compile.
    files = set(re.findall(r"^(\S+?)\(\d+,\d+\): error", result.stdout, re.M))
    assert files == {f"test/types/{n}" for n in WRONG}, result.stdout
