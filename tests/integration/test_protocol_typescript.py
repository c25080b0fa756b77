"""The generated TypeScript declarations (clients/js/src/protocol.ts) under the pinned tsc.

- ``tsc --strict`` accepts the declarations and test/types/usage.ts, a client's typed use of
  them (events by type with their ``data``, an exhaustive switch over server messages, client
  messages, close codes and the reconnect policy);
- it refuses test/types/wrong.ts with exactly the errors the file marks (``// TSnnnn`` at the
  end of a line), each on its line: a wrong event name, a wrong field, a wrong error code or
  close code fails to compile, so the types bite.

TypeScript comes from clients/js/package-lock.json (`npm ci`, which `make test` runs).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
TSC = JS / "node_modules" / ".bin" / "tsc"
WRONG = JS / "test" / "types" / "wrong.ts"


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


def test_misuses_fail_to_compile_each_with_its_error() -> None:
    expected = {
        (number, code)
        for number, line in enumerate(WRONG.read_text(encoding="utf-8").splitlines(), 1)
        for code in re.findall(r"// (TS\d{4})$", line)
    }
    assert len(expected) >= 10
    result = tsc(JS / "test" / "types" / "tsconfig.wrong.json")
    assert result.returncode != 0
    reported = {
        (int(number), code)
        for number, code in re.findall(
            r"^test/types/wrong\.ts\((\d+),\d+\): error (TS\d{4}):", result.stdout, re.M
        )
    }
    assert reported == expected, result.stdout
    # Nothing else fails: the declarations themselves compile.
    files = set(re.findall(r"^(\S+?)\(\d+,\d+\): error", result.stdout, re.M))
    assert files == {"test/types/wrong.ts"}, result.stdout
