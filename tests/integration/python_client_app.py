"""An app that uses the installed ``liveboard-client`` wheel, and only it (no repository code).

``tests/integration/test_python_client_wheel.py`` copies this file into an empty directory and
runs it with the Python of a fresh virtualenv holding the two wheels and aiohttp/msgspec only;
it also type-checks it there with ``mypy --strict`` (the wheels' ``py.typed``). Arguments: the
server's URL, a service key, alice's and bob's tokens, and a suffix that makes ids unique. It
prints one JSON object of what it saw; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from liveboard.client import (
    ClientClosedError,
    Event,
    LiveboardClient,
    Revoked,
    ServiceClient,
)


async def run(url: str, api_key: str, alice_token: str, bob_token: str, tag: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"modules": sorted(m for m in sys.modules if m.startswith("liveboard"))}
    async with ServiceClient(url, api_key) as service:
        workspace = await service.put_workspace(f"ws_{tag}", "Wheel")
        again = await service.put_workspace(f"ws_{tag}", "Wheel")
        seen["put_workspace_again_same"] = again == workspace
        await service.add_member(workspace.id, "alice", "admin")
        project = await service.put_project(
            workspace.id, f"prj_{tag}", "Board", statuses=["todo", "done"]
        )
        seen["project"] = [project.id, project.statuses]
        async with LiveboardClient(url, alice_token) as alice:
            seen["alice_workspaces"] = [w.id for w in await alice.list_workspaces()]
            seen["alice_projects"] = [p.id for p in await alice.list_projects(workspace.id)]
            member = await alice.add_member(workspace.id, "bob")
            seen["bob_role"] = member.role
            members = await alice.list_members(workspace.id)
            seen["members"] = sorted((m.user_id, m.role) for m in members)
            own = await alice.create_workspace("Alice's own")
            mine = await alice.create_project(own.id, "Mine")
            seen["own_project_in_own_workspace"] = mine.workspace_id == own.id

            room = f"project:{project.id}"
            sub = await alice.subscribe(room)
            await asyncio.wait_for(sub.ready(), 10)
            task = await alice.create_task(project.id, "From the wheel", status="todo")
            created_at = alice.last_position()
            published = await service.publish(room, "wheel:hello", {"n": 1}, idempotency_key=tag)
            repeat = await service.publish(room, "wheel:hello", {"n": 1}, idempotency_key=tag)
            seen["publish_repeat_same"] = repeat == published
            events: list[Event] = []
            while len(events) < 2:
                item = await asyncio.wait_for(sub.get(), 10)
                if isinstance(item, Event):
                    events.append(item)
            seen["events"] = [[e.type, e.offset, e.user_id] for e in events]
            seen["task_event_data_id"] = events[0].data["task"]["id"] == task.id
            seen["custom_data"] = events[1].data
            seen["positions"] = [
                None if created_at is None else created_at.offset,
                published.offset,
            ]
            history = await alice.history(room)
            seen["history"] = [[e.type, e.offset] for e in history.events]
            seen["history_head"] = history.offset

            async with LiveboardClient(url, bob_token) as bob:
                bob_sub = await bob.subscribe(f"workspace:{workspace.id}")
                await asyncio.wait_for(bob_sub.ready(), 10)
                await alice.remove_member(workspace.id, "bob")
                items = []
                async with asyncio.timeout(10):
                    async for item in bob_sub:
                        items.append(type(item).__name__)
                seen["bob_items_end"] = items[-1:]
                seen["bob_revoked"] = isinstance(bob_sub.revoked, Revoked)
                try:
                    await asyncio.wait_for(bob_sub.ready(), 10)
                    seen["ready_after_revoked"] = "returned"
                except ClientClosedError:
                    seen["ready_after_revoked"] = "ClientClosedError"
    server_modules = ("sqlalchemy", "asyncpg", "redis", "liveboard.app", "liveboard.store")
    seen["server_modules_loaded"] = sorted(m for m in server_modules if m in sys.modules)
    return seen


def main() -> None:
    url, api_key, alice_token, bob_token, tag = sys.argv[1:6]
    print(json.dumps(asyncio.run(run(url, api_key, alice_token, bob_token, tag))))


if __name__ == "__main__":
    main()
