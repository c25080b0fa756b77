"""tools.wait_for_server (`make wait`) against a real HTTP server on a free port."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from tools.wait_for_server import wait_for


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_returns_once_the_server_answers(server_url: str) -> None:
    assert wait_for(f"{server_url}/healthz", seconds=5)


def test_an_error_status_is_not_an_answer(server_url: str) -> None:
    assert not wait_for(f"{server_url}/missing", seconds=0.3, poll_interval=0.05)


def test_gives_up_when_nothing_listens() -> None:
    assert not wait_for(f"http://127.0.0.1:{_closed_port()}/healthz", 0.3, poll_interval=0.05)
