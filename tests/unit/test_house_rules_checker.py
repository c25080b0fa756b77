"""tools.house_rules on small crafted source trees: a clean one passes every rule, and each way
of breaking a rule is caught with the offending file (and line) named."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tools import house_rules

#: A tree that keeps every rule, with something of each kind the rules allow.
CLEAN: Mapping[str, str] = {
    "liveboard/__init__.py": '__version__ = "0"\n',
    "liveboard/config.py": "import os\nfrom os import environ\n\nA = os.environ.get('A')\n",
    "liveboard/errors.py": "class ApiError(Exception): ...\n",
    # The composition root imports packages that import top-level modules: not a cycle.
    "liveboard/app.py": (
        "from aiohttp import web\n"
        "from liveboard.realtime import node\n"
        "from liveboard import store\n"
        "import os.path\n"
        "PATH = os.path.join('a', 'b')\n"
    ),
    "liveboard/protocol/__init__.py": (
        "from __future__ import annotations\n"
        "import json\n"
        "import msgspec\n"
        "from liveboard.protocol.close import CloseCode\n"
        "from . import close\n"
    ),
    "liveboard/protocol/close.py": "import enum\n\nclass CloseCode(enum.IntEnum):\n    A = 1\n",
    "liveboard/client/__init__.py": (
        "import aiohttp\n"
        "from aiohttp import WSMsgType\n"
        "from liveboard.protocol import CloseCode\n"
        "from liveboard.client import config\n"
        "from .config import URL\n"
        "KIND = aiohttp.WSMsgType.TEXT\n"
    ),
    "liveboard/client/config.py": "import os\n\nURL = os.getenv('URL')\n",
    "liveboard/store/__init__.py": "from liveboard.errors import ApiError\n",
    "liveboard/realtime/__init__.py": "",
    "liveboard/realtime/node.py": (
        "from liveboard.realtime.transport import adapter\n"
        "from liveboard.store import ApiError\n"
        "class Node:\n"
        "    def __init__(self) -> None:\n"
        "        self._loop = None  # a name aiohttp has too, but liveboard's own here\n"
        "    def loop(self, other: 'Node') -> object:\n"
        "        return other._loop\n"
    ),
    "liveboard/realtime/transport/__init__.py": "from liveboard.errors import ApiError\n",
    "liveboard/realtime/transport/adapter.py": (
        "from aiohttp import WSMsgType, web\n"
        "from aiohttp.http_websocket import WebSocketReader\n"
        "def accept(request: web.Request) -> object:\n"
        "    request.protocol._payload_parser = None\n"
        "    return web.WebSocketResponse()\n"
    ),
}

#: aiohttp as the checker sees it: the private names its source defines.
FAKE_AIOHTTP: Mapping[str, str] = {
    "__init__.py": "",
    "web_protocol.py": (
        "class RequestHandler:\n"
        "    __slots__ = ('_payload_parser', '_kwargs')\n"
        "    def __init__(self) -> None:\n"
        "        self._payload_parser = None\n"
        "        self._loop = None\n"
    ),
}


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _only(results: dict[str, list[str]], rule: str) -> list[str]:
    """The messages of ``rule``, after checking that every other rule held."""
    others = {name: problems for name, problems in results.items() if name != rule and problems}
    assert not others, others
    return results[rule]


def test_the_clean_tree_keeps_every_rule(tmp_path: Path) -> None:
    assert house_rules.check(*_paths(tmp_path)) == {
        "protocol_is_pure": [],
        "sdk_is_client_only": [],
        "aiohttp_websocket_in_transport": [],
        "transport_knows_no_core": [],
        "module_sizes": [],
        "package_cycles": [],
        "environment_reads": [],
    }


def _paths(tmp_path: Path, files: Mapping[str, str] = CLEAN) -> tuple[Path, Path]:
    src, aiohttp = tmp_path / "src", tmp_path / "site" / "aiohttp"
    _write(src, files)
    _write(aiohttp, FAKE_AIOHTTP)
    return src, aiohttp


def _run(tmp_path: Path, extra: Mapping[str, str], rule: str) -> list[str]:
    """The messages of ``rule`` on CLEAN with ``extra`` files (added or replaced)."""
    return _only(house_rules.check(*_paths(tmp_path, {**CLEAN, **extra})), rule)


# protocol_is_pure


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("from liveboard.errors import ApiError\n", "liveboard.errors"),
        ("import liveboard.store\n", "liveboard.store"),
        ("from .. import errors\n", "liveboard.errors"),
        ("from liveboard import __version__\n", "imports liveboard:"),
        ("def f() -> None:\n    from liveboard.realtime import node\n", "liveboard.realtime.node"),
        ("import aiohttp\n", "aiohttp"),
        ("from redis.asyncio import Redis\n", "redis.asyncio"),
    ],
)
def test_the_protocol_importing_liveboard_or_a_third_party_is_caught(
    tmp_path: Path, source: str, named: str
) -> None:
    problems = _run(tmp_path, {"liveboard/protocol/bad.py": source}, "protocol_is_pure")
    assert len(problems) == 1
    assert problems[0].startswith("liveboard/protocol/bad.py:")
    assert named in problems[0]


def test_a_missing_protocol_package_is_reported_not_passed(tmp_path: Path) -> None:
    files = {n: t for n, t in CLEAN.items() if not n.startswith("liveboard/protocol/")}
    files["liveboard/client/__init__.py"] = "import aiohttp\n"
    results = house_rules.check(*_paths(tmp_path, files))
    assert results["protocol_is_pure"] == [
        "liveboard.protocol does not exist: the rule would check nothing"
    ]


# sdk_is_client_only


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("from liveboard.realtime import node\n", "liveboard.realtime.node"),
        ("from liveboard import errors\n", "liveboard.errors"),
        ("from ..store import ApiError\n", "liveboard.store"),
        ("import liveboard.config\n", "liveboard.config"),
    ],
)
def test_the_sdk_importing_the_server_is_caught(tmp_path: Path, source: str, named: str) -> None:
    problems = _run(tmp_path, {"liveboard/client/bad.py": source}, "sdk_is_client_only")
    assert problems == [
        f"liveboard/client/bad.py:1 imports {named}: the SDK may import "
        "only liveboard.protocol and liveboard.client"
    ]


# aiohttp_websocket_in_transport


@pytest.mark.parametrize(
    ("source", "line", "what"),
    [
        ("from aiohttp import WSMsgType\n", 1, "aiohttp's WSMsgType"),
        ("from aiohttp.web import WebSocketResponse as R\n", 1, "aiohttp's WebSocketResponse"),
        ("from aiohttp import web\nws = web.WebSocketResponse()\n", 2, "web.WebSocketResponse"),
        ("import aiohttp\nK = aiohttp.WSMsgType.TEXT\n", 2, "aiohttp.WSMsgType"),
        ("import aiohttp.http_websocket\n", 1, "aiohttp's module aiohttp.http_websocket"),
        ("from aiohttp import http_websocket\n", 1, "module aiohttp.http_websocket"),
        ("from aiohttp._websocket.reader import R\n", 1, "module aiohttp._websocket.reader"),
        ("from aiohttp.helpers import _private_helper\n", 1, "aiohttp's _private_helper"),
        ("from aiohttp import web\nH = web._run_app\n", 2, "aiohttp's web._run_app"),
        (
            "def patch(request: object) -> None:\n    request.protocol._payload_parser = 1\n",
            2,
            "aiohttp's private attribute _payload_parser",
        ),
        (
            "def peek(p: object) -> object:\n    return getattr(p, '_payload_parser', None)\n",
            2,
            "aiohttp's private attribute _payload_parser",
        ),
        ("def opts(server: object) -> object:\n    return server._kwargs\n", 2, "_kwargs"),
    ],
)
def test_a_server_module_touching_aiohttps_websocket_is_caught(
    tmp_path: Path, source: str, line: int, what: str
) -> None:
    problems = _run(
        tmp_path, {"liveboard/realtime/endpoint.py": source}, "aiohttp_websocket_in_transport"
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"liveboard/realtime/endpoint.py:{line} uses ")
    assert what in problems[0]


def test_a_missing_transport_package_is_reported_not_passed(tmp_path: Path) -> None:
    files = {n: t for n, t in CLEAN.items() if "/transport/" not in n}
    files["liveboard/realtime/node.py"] = "from liveboard.store import ApiError\n"
    results = house_rules.check(*_paths(tmp_path, files))
    missing = "liveboard.realtime.transport does not exist: the rule would check nothing"
    assert results["aiohttp_websocket_in_transport"] == [missing]
    assert results["transport_knows_no_core"] == [missing]


# transport_knows_no_core


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("from liveboard.realtime.node import Node\n", "liveboard.realtime.node"),
        ("from liveboard.realtime import hub\n", "liveboard.realtime.hub"),
        ("from .. import session\n", "liveboard.realtime.session"),
        ("import liveboard.store\n", "liveboard.store"),
        ("from liveboard.store.eventlog import x\n", "liveboard.store.eventlog"),
    ],
)
def test_the_transport_importing_the_core_is_caught(
    tmp_path: Path, source: str, named: str
) -> None:
    extra = {
        "liveboard/realtime/transport/bad.py": source,
        "liveboard/realtime/hub.py": "",
        "liveboard/realtime/session.py": "",
        "liveboard/store/eventlog.py": "x = 1\n",
    }
    results = house_rules.check(*_paths(tmp_path, {**CLEAN, **extra}))
    assert results["transport_knows_no_core"] == [
        f"liveboard/realtime/transport/bad.py:1 imports {named}: liveboard.realtime.transport "
        "knows nothing of the node, the hub, the session or the store"
    ]


# module_sizes


def test_a_module_over_500_lines_is_caught_and_one_of_500_is_not(tmp_path: Path) -> None:
    extra = {"liveboard/big.py": "x = 1\n" * 501, "liveboard/fits.py": "x = 1\n" * 500}
    problems = _run(tmp_path, extra, "module_sizes")
    assert problems == ["liveboard/big.py has 501 lines (at most 500)"]


# package_cycles


def test_a_cycle_between_two_packages_is_caught_with_the_imports_that_make_it(
    tmp_path: Path,
) -> None:
    extra = {
        "liveboard/tasks/__init__.py": "",
        "liveboard/tasks/service.py": "from liveboard.store import ApiError\n",
        "liveboard/store/records.py": "\n\nfrom liveboard.tasks import service\n",
    }
    problems = _run(tmp_path, extra, "package_cycles")
    assert problems == [
        "package cycle among liveboard.store, liveboard.tasks, e.g. liveboard.store -> "
        "liveboard.tasks -> liveboard.store; the imports that make it: "
        "liveboard/store/records.py:3 imports liveboard.tasks.service; "
        "liveboard/tasks/service.py:1 imports liveboard.store"
    ]


def test_a_cycle_through_a_top_level_module_and_a_lazy_import_is_caught(tmp_path: Path) -> None:
    extra = {
        "liveboard/rest.py": "from liveboard.realtime import node\n",
        "liveboard/realtime/endpoint.py": "def f() -> None:\n    from liveboard import rest\n",
    }
    problems = _run(tmp_path, extra, "package_cycles")
    assert len(problems) == 1
    assert problems[0].startswith("package cycle among liveboard.realtime, liveboard.rest, e.g.")
    assert "liveboard/realtime/endpoint.py:2 imports liveboard.rest" in problems[0]
    assert "liveboard/rest.py:1 imports liveboard.realtime.node" in problems[0]


def test_a_subpackage_and_its_parent_importing_each_other_is_a_cycle(tmp_path: Path) -> None:
    extra = {"liveboard/realtime/transport/back.py": "from liveboard.realtime import node\n"}
    results = house_rules.check(*_paths(tmp_path, {**CLEAN, **extra}))
    assert len(results["package_cycles"]) == 1
    assert results["package_cycles"][0].startswith(
        "package cycle among liveboard.realtime, liveboard.realtime.transport"
    )


# environment_reads


@pytest.mark.parametrize(
    ("source", "line", "what"),
    [
        ("import os\nA = os.environ['A']\n", 2, "os.environ"),
        ("import os\nA = os.getenv('A')\n", 2, "os.getenv"),
        ("import os\nA = os.environb.get(b'A')\n", 2, "os.environb"),
        ("import os as system\nA = system.environ.get('A')\n", 2, "system.environ"),
        ("import os.path\nA = os.environ.get('A')\n", 2, "os.environ"),
        ("from os import environ\n", 1, "from os import environ"),
        ("from os import getenv as read\n", 1, "from os import getenv"),
        ("def f() -> object:\n    import os\n    return os.getenvb(b'A')\n", 3, "os.getenvb"),
    ],
)
def test_reading_the_environment_outside_config_is_caught(
    tmp_path: Path, source: str, line: int, what: str
) -> None:
    problems = _run(tmp_path, {"liveboard/client/tail.py": source}, "environment_reads")
    assert problems == [
        f"liveboard/client/tail.py:{line} reads the environment ({what}): only "
        "liveboard.client.config and liveboard.config may"
    ]
