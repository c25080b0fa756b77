"""The browser Board's pure reconciliation logic (``PendingWrites`` in liveboard.js) under Node.

clients/js/test/board/*.test.js are ``node:test`` files that import liveboard.js as the module
it is; this runs them with ``node --test`` and fails with Node's report if one fails. Node is
the one ``make test`` already needs for clients/js (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "clients" / "js" / "test" / "board"


def test_pending_writes_pass_their_node_tests() -> None:
    node = shutil.which("node")
    assert node, "node is missing: apt-get install nodejs (see .ci/run)"
    files = sorted(str(p) for p in TESTS.glob("*.test.js"))
    assert files, f"no tests in {TESTS}"
    result = subprocess.run(
        [node, "--test", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 0" not in result.stdout, result.stdout
