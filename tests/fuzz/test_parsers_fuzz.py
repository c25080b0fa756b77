"""Runs the coverage-guided fuzzers of tests/fuzz/fuzz_parsers.py (atheris) from the committed
corpus: `LIVEBOARD_ATHERIS_SECONDS` each (10 in `make test`, 300 in `make fuzz`).

libFuzzer first replays the corpus (every input that ever found new coverage, and every crash
input kept as a regression), then mutates it for the time given. New inputs go to a temporary
folder, so the committed corpus only changes when someone merges them in (docs/reliability.md,
"Fuzzing the parsers").
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
SECONDS = int(os.environ.get("LIVEBOARD_ATHERIS_SECONDS", "10"))


@pytest.mark.parametrize("target", ["frames", "heads"])
def test_the_fuzzer_finds_no_crash(target: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        message = "atheris has wheels for Linux x86-64 only (CPython 3.11-3.13)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    found = tmp_path / "found"
    found.mkdir()
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.fuzz_parsers",
        target,
        f"-max_total_time={SECONDS}",
        f"-artifact_prefix={tmp_path}/",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        str(found),
        str(CORPUS / target),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS * 3 + 120, check=False
    )
    artifacts = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    shown = [f"{path.name}: {base64.b64encode(path.read_bytes()).decode()}" for path in artifacts]
    assert result.returncode == 0, "\n".join([result.stderr[-4000:], *shown])
    assert not artifacts, shown
    runs = re.search(r"stat::number_of_executed_units: (\d+)", result.stderr)
    assert runs is not None, result.stderr[-2000:]
    corpus_size = len(list((CORPUS / target).iterdir()))
    assert int(runs.group(1)) >= corpus_size > 0
