"""The house rules of issue 15, checked statically: `python -m tools.house_rules [SRC]`.

liveboard's source is read with `ast`, never imported, so a broken rule is reported even where
importing would fail, and nothing runs. Each check returns one message per offence, naming the
file and line (or the module) that breaks it; an empty list means the rule holds. The rules:

- `protocol_is_pure`: `liveboard.protocol` imports only its own modules, msgspec and the
  standard library.
- `sdk_is_client_only`: the Python SDK (`liveboard.client`) imports from liveboard only
  `liveboard.protocol` and its own modules.
- `aiohttp_websocket_in_transport`: outside `liveboard.realtime.transport` (and
  `AIOHTTP_WS_ALLOWED`), no server module touches aiohttp's WebSocket: its names (`WS_NAMES`), its
  modules (`WS_MODULES`, and every private aiohttp module), or aiohttp's privates (a `_`-name
  imported from aiohttp, or reached as `obj._name` / `getattr(obj, "_name")` when aiohttp's own
  source defines `_name` and liveboard's does not). The SDK is not a server module: it is a
  WebSocket client, and aiohttp's client WebSocket is its transport.
- `transport_knows_no_core`: nothing under `liveboard.realtime.transport` imports the node, the
  hub, the session or the store (`TRANSPORT_FORBIDDEN`).
- `module_sizes`: no module over `MAX_LINES` lines.
- `package_cycles`: no cycle between packages; the nodes and edges are defined at
  `node_of`.
- `environment_reads`: only `CONFIG_MODULES` read the environment (`os.environ`,
  `os.environb`, `os.getenv`, `os.getenvb`, as attributes of `os` or imported from it).

An import counts wherever it is: at the top, in a function, under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final

ROOT: Final = "liveboard"
PROTOCOL: Final = "liveboard.protocol"
SDK: Final = "liveboard.client"
TRANSPORT: Final = "liveboard.realtime.transport"
#: Third-party distributions `liveboard.protocol` may import (besides the standard library).
PROTOCOL_THIRD_PARTY: Final = frozenset({"msgspec"})
#: What `transport` must not import: the modules and packages, with everything below them.
TRANSPORT_FORBIDDEN: Final = (
    "liveboard.realtime.node",
    "liveboard.realtime.hub",
    "liveboard.realtime.session",
    "liveboard.store",
)
#: Server modules outside `transport` allowed to touch aiohttp's WebSocket. Empty on purpose:
#: after issue 15's split the aiohttp entry of a WebSocket (accepting it on aiohttp's path and
#: adapting its `WebSocketResponse` to the `Connection` protocol) is the adapter inside
#: `transport`; `realtime/endpoint.py` routes aiohttp's `GET /ws/connect` through it. A module
#: named here needs a reason beside it.
AIOHTTP_WS_ALLOWED: Final[frozenset[str]] = frozenset()
#: aiohttp's WebSocket names (the `__all__` of its `http_websocket`, `web_ws` and `client_ws`).
WS_NAMES: Final = frozenset(
    {
        "ClientWebSocketResponse",
        "WSCloseCode",
        "WSMessage",
        "WSMsgType",
        "WS_CLOSED_MESSAGE",
        "WS_CLOSING_MESSAGE",
        "WS_KEY",
        "WebSocketError",
        "WebSocketReader",
        "WebSocketReady",
        "WebSocketResponse",
        "WebSocketWriter",
    }
)
#: aiohttp's WebSocket modules (its private modules, `_websocket` among them, are refused too).
WS_MODULES: Final = frozenset({"aiohttp.http_websocket", "aiohttp.web_ws", "aiohttp.client_ws"})
MAX_LINES: Final = 500
#: The modules that may read the environment.
CONFIG_MODULES: Final = frozenset({"liveboard.config", "liveboard.client.config"})
#: What reads the environment, as attributes of `os` or names imported from it.
ENVIRONMENT_NAMES: Final = frozenset({"environ", "environb", "getenv", "getenvb"})
_ATTRIBUTE_FUNCTIONS: Final = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True)
class Import:
    """One imported thing: `module` (absolute), and `name` for `from module import name`."""

    module: str
    name: str | None
    line: int


@dataclass
class Module:
    """One source file of the tree."""

    name: str  # dotted: `liveboard.realtime.node`; a package's `__init__.py` is the package
    path: Path
    is_package: bool
    source: str = field(repr=False)

    @cached_property
    def tree(self) -> ast.Module:
        return ast.parse(self.source, filename=str(self.path))

    @property
    def lines(self) -> int:
        return len(self.source.splitlines())

    @cached_property
    def imports(self) -> list[Import]:
        """Every import of the module, relative ones made absolute."""
        found: list[Import] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                found += [Import(alias.name, None, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(node.module, node.level)
                found += [Import(base, alias.name, node.lineno) for alias in node.names]
        return found

    def _absolute(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        package = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
        base = package[: len(package) - level + 1]
        return ".".join([*base, module] if module else base)


def _once(messages: Iterable[str]) -> list[str]:
    """``messages`` without repeats (``from m import a, b`` is one offence), in order."""
    return list(dict.fromkeys(messages))


def within(name: str, prefix: str) -> bool:
    """Whether the dotted `name` is `prefix` or below it."""
    return name == prefix or name.startswith(prefix + ".")


class SourceTree:
    """The modules of the package `root` under `src` (`src/liveboard/...`)."""

    def __init__(self, src: Path, root: str = ROOT) -> None:
        self.src = src
        self.root = root
        self.modules: dict[str, Module] = {}
        for path in sorted((src / root).rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            source = path.read_text(encoding="utf-8")
            self.modules[".".join(parts)] = Module(".".join(parts), path, is_package, source)

    def where(self, module: Module, line: int | None = None) -> str:
        """`liveboard/realtime/node.py:12`: how a message names a place."""
        place = module.path.relative_to(self.src).as_posix()
        return place if line is None else f"{place}:{line}"

    def target(self, imp: Import) -> str | None:
        """The module of the tree that `imp` reaches, or None if it is outside the tree."""
        candidates = [imp.module] if imp.name is None else [f"{imp.module}.{imp.name}", imp.module]
        for candidate in candidates:
            while candidate:
                if candidate in self.modules:
                    return candidate
                if not within(candidate, self.root):
                    break
                candidate = candidate.rpartition(".")[0]
        return None

    def internal_imports(self, module: Module) -> Iterator[tuple[Import, str]]:
        """Each import of `module` that reaches a module of the tree, with that module."""
        for imp in module.imports:
            target = self.target(imp)
            if target is not None:
                yield imp, target

    def under(self, prefix: str) -> list[Module]:
        return [m for name, m in self.modules.items() if within(name, prefix)]

    def node_of(self, name: str) -> str:
        """The node of the package graph that module `name` belongs to.

        A package is a node: its `__init__` and its own modules, not those of its subpackages,
        which are nodes of their own (`liveboard.realtime.brokers` apart from
        `liveboard.realtime`), so that a subpackage importing its parent's modules while the
        parent imports it is a cycle too. A top-level module (`liveboard/app.py`, `errors.py`)
        is a node of its own: the root package holds the composition root (`app`, `cli`) that
        imports every package and the leaves (`errors`, `events`, `config`) that every package
        imports; taken as one node it would be in a cycle with every package by construction,
        and the check would say nothing. The root `__init__` is the node `liveboard`."""
        module = self.modules[name]
        if module.is_package:
            return name
        parent = name.rpartition(".")[0]
        return name if parent == self.root else parent


# The rules


def protocol_is_pure(tree: SourceTree) -> list[str]:
    modules = tree.under(PROTOCOL)
    if not modules:
        return [f"{PROTOCOL} does not exist: the rule would check nothing"]
    problems = []
    for module in modules:
        for imp in module.imports:
            top = imp.module.partition(".")[0]
            if within(imp.module, tree.root):
                target = tree.target(imp) or imp.module
                if not within(target, PROTOCOL):
                    problems.append(
                        f"{tree.where(module, imp.line)} imports {target}: {PROTOCOL} may import "
                        "nothing from the rest of liveboard"
                    )
            elif top not in sys.stdlib_module_names and top not in PROTOCOL_THIRD_PARTY:
                problems.append(
                    f"{tree.where(module, imp.line)} imports {imp.module}: {PROTOCOL} may import "
                    f"only {', '.join(sorted(PROTOCOL_THIRD_PARTY))} and the standard library"
                )
    return _once(problems)


def sdk_is_client_only(tree: SourceTree) -> list[str]:
    modules = tree.under(SDK)
    if not modules:
        return [f"{SDK} does not exist: the rule would check nothing"]
    return _once(
        f"{tree.where(module, imp.line)} imports {target}: the SDK may import only "
        f"{PROTOCOL} and {SDK}"
        for module in modules
        for imp, target in tree.internal_imports(module)
        if not (within(target, PROTOCOL) or within(target, SDK))
    )


def private_names(root: Path) -> set[str]:
    """The `_`-names (not dunders) that the source under `root` defines: functions, classes,
    variables, attributes of its own objects (`self._x = ...`, `cls._x = ...`) and `__slots__`
    entries. Attributes it sets on other objects (`protocol._x = ...`) are not its own."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if _dotted(node.value) in {"self", "cls"}:
                    names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
    return {n for n in names if _private(n)}


def aiohttp_websocket_in_transport(tree: SourceTree, aiohttp_dir: Path) -> list[str]:
    if not tree.under(TRANSPORT):
        return [f"{TRANSPORT} does not exist: the rule would check nothing"]
    theirs = private_names(aiohttp_dir) - private_names(tree.src / tree.root)
    problems = []
    for module in tree.modules.values():
        if within(module.name, TRANSPORT) or within(module.name, SDK):
            continue
        if module.name in AIOHTTP_WS_ALLOWED:
            continue
        for place, what in _aiohttp_websocket_uses(module, theirs):
            problems.append(
                f"{tree.where(module, place)} uses {what}: only {TRANSPORT} touches aiohttp's "
                "WebSocket and its privates"
            )
    return _once(problems)


def _aiohttp_websocket_uses(module: Module, theirs: set[str]) -> Iterator[tuple[int, str]]:
    aiohttp_names: set[str] = set()  # local names bound to aiohttp or one of its modules
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if within(alias.name, "aiohttp"):
                    if _websocket_module(alias.name):
                        yield node.lineno, f"aiohttp's module {alias.name}"
                    aiohttp_names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if not within(node.module, "aiohttp"):
                continue
            if _websocket_module(node.module):
                yield node.lineno, f"aiohttp's module {node.module}"
                continue
            for alias in node.names:
                if alias.name in WS_NAMES or _private(alias.name):
                    yield node.lineno, f"aiohttp's {alias.name}"
                elif _websocket_module(f"{node.module}.{alias.name}"):
                    yield node.lineno, f"aiohttp's module {node.module}.{alias.name}"
                else:
                    aiohttp_names.add(alias.asname or alias.name)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            if base in aiohttp_names and (node.attr in WS_NAMES or _private(node.attr)):
                yield node.lineno, f"aiohttp's {base}.{node.attr}"
            elif node.attr in theirs and base not in {"self", "cls"}:
                yield node.lineno, f"aiohttp's private attribute {node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in theirs
        ):
            yield node.lineno, f"aiohttp's private attribute {node.args[1].value}"


def _websocket_module(name: str) -> bool:
    return any(within(name, m) for m in WS_MODULES) or any(
        _private(part) for part in name.split(".")
    )


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for an expression made of names and attributes only."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def transport_knows_no_core(tree: SourceTree) -> list[str]:
    modules = tree.under(TRANSPORT)
    if not modules:
        return [f"{TRANSPORT} does not exist: the rule would check nothing"]
    return _once(
        f"{tree.where(module, imp.line)} imports {target}: {TRANSPORT} knows nothing of "
        "the node, the hub, the session or the store"
        for module in modules
        for imp, target in tree.internal_imports(module)
        if any(within(target, forbidden) for forbidden in TRANSPORT_FORBIDDEN)
    )


def module_sizes(tree: SourceTree) -> list[str]:
    return [
        f"{tree.where(module)} has {module.lines} lines (at most {MAX_LINES})"
        for module in tree.modules.values()
        if module.lines > MAX_LINES
    ]


def package_edges(tree: SourceTree) -> dict[str, dict[str, str]]:
    """node → node it imports → the first import that makes the edge (`file:line imports m`)."""
    edges: dict[str, dict[str, str]] = {}
    for module in tree.modules.values():
        source = tree.node_of(module.name)
        for imp, target in tree.internal_imports(module):
            destination = tree.node_of(target)
            if destination != source:
                evidence = f"{tree.where(module, imp.line)} imports {target}"
                edges.setdefault(source, {}).setdefault(destination, evidence)
    return edges


def package_cycles(tree: SourceTree) -> list[str]:
    edges = package_edges(tree)
    problems = []
    for component in _strongly_connected(edges):
        inside = [
            evidence
            for source in component
            for destination, evidence in sorted(edges[source].items())
            if destination in component
        ]
        problems.append(
            f"package cycle among {', '.join(component)}, e.g. "
            f"{' -> '.join(_a_cycle(component, edges))}; the imports that make it: "
            + "; ".join(inside)
        )
    return _once(problems)


def _strongly_connected(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The components of more than one node (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, {})):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _a_cycle(component: Sequence[str], edges: dict[str, dict[str, str]]) -> list[str]:
    """One cycle through the first node of `component`, as a closed path (first == last)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to `start`
        node = queue.pop(0)
        for successor in sorted(edges.get(node, {})):
            if successor == start:
                return [*paths[node], start]
            if successor in members and successor not in paths:
                paths[successor] = [*paths[node], successor]
                queue.append(successor)
    raise AssertionError(f"no cycle through {start} in {component}")  # a component has one


def environment_reads(tree: SourceTree) -> list[str]:
    problems = []
    for module in tree.modules.values():
        if module.name in CONFIG_MODULES:
            continue
        for line, what in _environment_reads(module):
            problems.append(
                f"{tree.where(module, line)} reads the environment ({what}): only "
                f"{' and '.join(sorted(CONFIG_MODULES))} may"
            )
    return _once(problems)


def _environment_reads(module: Module) -> Iterable[tuple[int, str]]:
    os_names: set[str] = set()  # local names bound to the os module
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "os" or (alias.asname is None and within(alias.name, "os")):
                    os_names.add(alias.asname or "os")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and node.level == 0:
            for alias in node.names:
                if alias.name in ENVIRONMENT_NAMES:
                    yield node.lineno, f"from os import {alias.name}"
    for node in ast.walk(module.tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            yield node.lineno, f"{node.value.id}.{node.attr}"


def check(src: Path, aiohttp_dir: Path) -> dict[str, list[str]]:
    """Every rule on the tree under `src`: rule → its messages."""
    tree = SourceTree(src)
    return {
        "protocol_is_pure": protocol_is_pure(tree),
        "sdk_is_client_only": sdk_is_client_only(tree),
        "aiohttp_websocket_in_transport": aiohttp_websocket_in_transport(tree, aiohttp_dir),
        "transport_knows_no_core": transport_knows_no_core(tree),
        "module_sizes": module_sizes(tree),
        "package_cycles": package_cycles(tree),
        "environment_reads": environment_reads(tree),
    }


def installed_aiohttp() -> Path:
    """The directory of the aiohttp installed here (found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("aiohttp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("aiohttp is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("src", nargs="?", type=Path, default=Path("src"))
    args = parser.parse_args(argv)
    broken = 0
    for rule, problems in check(args.src, installed_aiohttp()).items():
        print(f"{rule}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
        broken += bool(problems)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
