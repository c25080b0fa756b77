"""Regenerate (or check) the protocol's generated files: `python -m tools.protocol_docs [--check]`.

Two files are generated from ``liveboard.protocol`` and committed, so that a change to a
message shows in review and CI notices one that was not regenerated:

- ``docs/asyncapi.json``: the AsyncAPI 3.0 document (``liveboard.asyncapi.build_document``,
  what ``GET /asyncapi.json`` serves);
- ``clients/js/src/protocol.ts``: the TypeScript declarations generated from it
  (``tools.protocol_ts``).

Without arguments both are written (``make asyncapi``); with ``--check`` nothing is written and
the exit status is 1 when either differs from what would be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from liveboard.asyncapi import build_document
from tools.protocol_ts import typescript

ROOT: Final = Path(__file__).resolve().parents[1]
ASYNCAPI_FILE: Final = ROOT / "docs" / "asyncapi.json"
TYPESCRIPT_FILE: Final = ROOT / "clients" / "js" / "src" / "protocol.ts"
REGENERATE: Final = "make asyncapi (or: .venv/bin/python -m tools.protocol_docs)"


def generated() -> dict[Path, str]:
    """Each generated file's path and the text it should hold."""
    document = build_document()
    return {
        ASYNCAPI_FILE: json.dumps(document, indent=2, ensure_ascii=False) + "\n",
        TYPESCRIPT_FILE: typescript(document),
    }


def stale() -> list[Path]:
    """The generated files whose committed text differs from what would be generated."""
    return [
        path
        for path, text in generated().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"{path.relative_to(ROOT)} is out of date; run {REGENERATE}", file=sys.stderr)
        return 1 if outdated else 0
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
