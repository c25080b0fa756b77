"""The Python SDK's API reference, from its types and docstrings: `python -m tools.api_docs OUT`.

pdoc (requirements-docs.lock) reads ``liveboard.client`` and ``liveboard.protocol`` as they
are, signatures and annotations included, and writes HTML into OUT: one page per module and a
search index. Nothing is written twice: the reference is what the code says. Docstrings are
reStructuredText (``code``, ``::`` blocks). `make docs-python` writes build/api/python/.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

#: The modules documented: the two distributions the client wheels hold (tools/dist_python.py).
MODULES = ("liveboard.client", "liveboard.protocol")


def module_names() -> list[str]:
    """``MODULES`` and every module under them (pdoc would otherwise list only what a
    package's ``__all__`` names, and the guarantees are stated in the modules' docstrings)."""
    names = []
    for name in MODULES:
        package = importlib.import_module(name)
        names.append(name)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{name}.")]
    return names


def build(out_dir: Path) -> list[Path]:
    """Write the reference into ``out_dir``; return the HTML files written."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(
        docformat="restructuredtext",
        footer_text="liveboard-client · liveboard-protocol",
        show_source=False,
    )
    pdoc.pdoc(*module_names(), output_directory=out_dir)
    return sorted(out_dir.rglob("*.html"))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args[0]) if args else Path("build/api/python")
    pages = build(out_dir)
    print(f"{len(pages)} pages in {out_dir}/ (open {out_dir / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
