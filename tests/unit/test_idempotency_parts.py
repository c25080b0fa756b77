"""The pure parts of idempotent writes: the request fingerprint, receipts, the outbox's position."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from liveboard.protocol import BrokerEvent, Position
from liveboard.tasks.idempotency import answer_response, fingerprint
from liveboard.tasks.publish_order import Outbox, PublishOrder
from liveboard.tasks.receipts import Answer, Receipt


def request(method: str, path: str, **headers: str) -> Any:
    return make_mocked_request(method, path, headers=CIMultiDict(headers))


def test_the_fingerprint_covers_method_path_if_match_and_body_bytes() -> None:
    base = fingerprint(request("POST", "/api/tasks/t1/move"), b'{"toStatus":"done"}')
    assert base == fingerprint(request("POST", "/api/tasks/t1/move"), b'{"toStatus":"done"}')
    others = {
        fingerprint(request("PATCH", "/api/tasks/t1/move"), b'{"toStatus":"done"}'),
        fingerprint(request("POST", "/api/tasks/t2/move"), b'{"toStatus":"done"}'),
        fingerprint(request("POST", "/api/tasks/t1/move?x=1"), b'{"toStatus":"done"}'),
        fingerprint(request("POST", "/api/tasks/t1/move"), b'{"toStatus": "done"}'),
        fingerprint(
            request("POST", "/api/tasks/t1/move", **{"If-Match": '"2"'}), b'{"toStatus":"done"}'
        ),
    }
    assert base not in others
    assert len(others) == 5
    # Not part of the request's identity: the connection it came from.
    assert base == fingerprint(
        request("POST", "/api/tasks/t1/move", **{"X-Connection-Id": "c1"}), b'{"toStatus":"done"}'
    )


def test_a_path_and_a_body_cannot_be_confused() -> None:
    assert fingerprint(request("POST", "/a"), b"b") != fingerprint(request("POST", "/ab"), b"")


def event(room: str, offset: int) -> BrokerEvent:
    return BrokerEvent(
        type="task:created", room=room, offset=offset, epoch="e1", ts=1, user_id="u", data={}
    )


def test_the_outbox_names_its_first_event() -> None:
    outbox = Outbox(PublishOrder())
    assert outbox.first_position() is None
    outbox.add(event("project:p", 7))
    outbox.add(event("workspace:w", 3))
    assert outbox.first_position() == Position(offset=7, epoch="e1")
    outbox.abandon()


async def test_a_receipt_without_a_key_renders_and_names_the_event() -> None:
    receipt = Receipt(lambda value: Answer(201, value, {"ETag": '"1"'}))
    await receipt.settle(None, b'{"id":"t"}', Position(offset=4, epoch="e"))  # type: ignore[arg-type]
    assert receipt.answer == Answer(
        201, b'{"id":"t"}', {"ETag": '"1"', "Liveboard-Offset": "4", "Liveboard-Epoch": "e"}
    )
    quiet = Receipt(lambda _value: Answer(204))
    await quiet.settle(None, None, None)  # type: ignore[arg-type]
    assert quiet.answer == Answer(204)
    response = answer_response(quiet.answer)
    assert (response.status, response.body) == (204, None)
    full = answer_response(receipt.answer)
    assert (full.status, full.body, full.content_type) == (201, b'{"id":"t"}', "application/json")
    assert full.headers["Liveboard-Offset"] == "4"
