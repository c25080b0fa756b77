"""The transport seam, stricter than the house rules (``tools/house_rules.py``, which keep
aiohttp's WebSocket inside ``realtime/transport/`` and the core out of it): transport/ imports
nothing of liveboard but itself and the error body, and inside it only the aiohttp adapter
(``aiohttp_ws``) touches aiohttp's WebSocket or the private attribute it wraps."""

from __future__ import annotations

import ast
from pathlib import Path

import liveboard

SRC = Path(liveboard.__file__).parent
TRANSPORT = SRC / "realtime" / "transport"
ADAPTER = TRANSPORT / "aiohttp_ws.py"
#: What transport/ may import of liveboard besides itself: the error body (pure, no imports).
TRANSPORT_MAY_IMPORT = ("liveboard.realtime.transport", "liveboard.errors")
#: aiohttp's WebSocket, as the server sees it, and the private attribute the adapter wraps.
WEBSOCKET_NAMES = frozenset({"WSMsgType", "WSMessage", "WebSocketResponse", "_payload_parser"})


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _websocket_names(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name) and node.id in WEBSOCKET_NAMES:
            found.add(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in WEBSOCKET_NAMES:
            found.add(node.attr)
        elif isinstance(node, ast.alias) and node.name.rpartition(".")[2] in WEBSOCKET_NAMES:
            found.add(node.name)
        elif isinstance(node, ast.Constant) and node.value in WEBSOCKET_NAMES:
            found.add(str(node.value))  # getattr(protocol, "_payload_parser")
    return found


def test_transport_imports_nothing_of_the_core() -> None:
    modules = sorted(TRANSPORT.glob("*.py"))
    assert ADAPTER in modules
    for path in modules:
        core = {
            name
            for name in _imports(path)
            if name.startswith("liveboard") and not name.startswith(TRANSPORT_MAY_IMPORT)
        }
        assert not core, f"{path.relative_to(SRC)} imports {sorted(core)}"


def test_only_the_adapter_touches_aiohttps_websocket() -> None:
    server = [p for p in SRC.rglob("*.py") if "client" not in p.relative_to(SRC).parts]
    touching = {str(p.relative_to(SRC)): names for p in server if (names := _websocket_names(p))}
    assert set(touching) == {str(ADAPTER.relative_to(SRC))}, touching
