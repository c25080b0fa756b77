"""The Python SDK's API reference is generated from its types (`make docs-python`, pdoc).

Generated here into a temporary directory, so the reference cannot rot: every name the SDK
exports has its entry, methods carry their signatures, and every module of the two client
distributions has its page.
"""

from __future__ import annotations

from pathlib import Path

import liveboard.client
from tools.api_docs import build, module_names


def test_the_reference_documents_every_exported_name_and_module(tmp_path: Path) -> None:
    pages = build(tmp_path)
    written = {p.relative_to(tmp_path).with_suffix("").as_posix().replace("/", ".") for p in pages}
    assert set(module_names()) <= written
    assert "liveboard.client.service" in written
    package = (tmp_path / "liveboard" / "client.html").read_text()
    for name in liveboard.client.__all__:
        assert f'id="{name}"' in package, name
    for method in (
        "Subscription.ready",
        "LiveboardClient.subscribe",
        "LiveboardClient.history",
        "LiveboardClient.list_projects",
        "LiveboardClient.add_member",
        "ServiceClient.publish",
        "ServiceClient.put_workspace",
    ):
        assert f'id="{method}"' in package, method
    # Signatures come from the annotations: the reference shows the types, not just names.
    service = (tmp_path / "liveboard" / "client" / "service.html").read_text()
    assert "idempotency_key" in service
    assert "Published" in service
