"""The hub without sockets: ordering, joins, batching of writes and slow consumers."""

from __future__ import annotations

import msgspec
import pytest

from liveboard.protocol import BrokerEvent, SequencedEvent
from liveboard.realtime import hub as hub_module
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.outlet import Outlet, PolledOutlet
from tests.support.fakes import FakeTransport, Recorder, ev


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def hub(recorder: Recorder) -> Hub:
    return Hub(
        Metrics(),
        on_slow_consumer=recorder.slow_consumer,
        on_gap=recorder.gap,
        on_resync=recorder.resync,
    )


def live_subscriber(hub: Hub, name: str, room: str = "project:p1", at: int = 0) -> FakeTransport:
    transport = FakeTransport()
    outlet = PolledOutlet(transport, name, "u", 1000)
    joined = hub.join(room, outlet)
    hub.start_sequence(joined, "e1", at)
    assert hub.take_held(joined, outlet) == []
    hub.complete_join(joined, outlet, at)
    assert outlet in joined.live
    return transport


def test_events_reach_every_subscriber_in_order_once(hub: Hub) -> None:
    a, b = live_subscriber(hub, "a"), live_subscriber(hub, "b")
    hub.deliver([ev(1), ev(2)])
    hub.deliver([ev(2), ev(3)])  # a duplicate from the broker
    assert a.offsets() == b.offsets() == [1, 2, 3]


def test_one_write_per_socket_per_delivery(hub: Hub) -> None:
    a = live_subscriber(hub, "a")
    hub.deliver([ev(1), ev(2), ev(3)])
    assert len(a.writes) == 1
    assert a.offsets() == [1, 2, 3]


def test_the_same_frame_bytes_go_to_every_socket(hub: Hub) -> None:
    transports = [live_subscriber(hub, f"s{i}") for i in range(5)]
    hub.deliver([ev(1)])
    frames = {t.writes[0] for t in transports}
    assert len(frames) == 1
    first = transports[0].writes[0]
    assert all(t.writes[0] is first for t in transports)  # one encode, shared


def test_a_broker_read_is_joined_once_for_every_socket(hub: Hub) -> None:
    transports = [live_subscriber(hub, f"s{i}") for i in range(3)]
    hub.deliver([ev(1), ev(2), ev(3)])
    first = transports[0].writes[0]
    assert all(t.writes == [first] and t.writes[0] is first for t in transports)
    assert transports[2].offsets() == [1, 2, 3]


def test_a_joiner_promoted_during_a_read_gets_each_event_once_in_order(hub: Hub) -> None:
    live = live_subscriber(hub, "live", at=4)
    transport = FakeTransport()
    outlet = PolledOutlet(transport, "joiner", "u", 1000)
    room = hub.join("project:p1", outlet)
    hub.complete_join(room, outlet, 5)  # its history read reached 5; the room released 4
    # 6 waits for 5; 5 releases both (6 is the joiner's first), then it goes live for 7.
    hub.deliver([ev(6), ev(5), ev(7)])
    assert live.offsets() == [5, 6, 7]
    assert transport.offsets() == [6, 7]
    assert outlet in room.live


def test_joiners_promoted_one_after_the_other_keep_their_order(hub: Hub) -> None:
    live = live_subscriber(hub, "live", at=3)
    first, second = FakeTransport(), FakeTransport()
    x, y = PolledOutlet(first, "x", "u", 1000), PolledOutlet(second, "y", "u", 1000)
    room = hub.join("project:p1", x)
    hub.complete_join(room, x, 5)  # x read its history up to 5; the room released 3
    hub.join("project:p1", y)  # y is still reading its own
    hub.deliver([ev(6), ev(4), ev(5), ev(7)])
    assert live.offsets() == [4, 5, 6, 7]
    assert first.offsets() == [6, 7]
    assert [e.offset for e in hub.take_held(room, y)] == [4, 5, 6, 7]


def test_a_failing_callback_does_not_lose_what_was_released(recorder: Recorder) -> None:
    def failing_gap(room: Room) -> None:
        raise RuntimeError("gap handler failed")

    hub = Hub(
        Metrics(),
        on_slow_consumer=recorder.slow_consumer,
        on_gap=failing_gap,
        on_resync=recorder.resync,
    )
    a = live_subscriber(hub, "a")
    with pytest.raises(RuntimeError):
        hub.deliver([ev(1), ev(3)])  # 1 is released, then the hole before 3 is reported
    assert a.offsets() == [1]


def test_a_gap_is_reported_and_filled(hub: Hub, recorder: Recorder) -> None:
    a = live_subscriber(hub, "a")
    hub.deliver([ev(1), ev(3)])
    assert a.offsets() == [1]
    assert recorder.gaps == ["project:p1"]
    room = hub.rooms["project:p1"]
    assert room.sequencer is not None
    assert room.sequencer.missing == (2, 2)
    hub.fill(room, [ev(2)])
    assert a.offsets() == [1, 2, 3]


def test_other_rooms_are_ignored(hub: Hub) -> None:
    a = live_subscriber(hub, "a")
    hub.deliver([ev(1, room="project:other"), ev(1)])
    assert a.offsets() == [1]


def test_events_before_the_position_is_known_are_held_then_released(hub: Hub) -> None:
    transport = FakeTransport()
    outlet = PolledOutlet(transport, "a", "u", 1000)
    room = hub.join("project:p1", outlet)
    hub.deliver([ev(5), ev(6)])  # arrive while the log is being read
    hub.start_sequence(room, "e1", 5)  # the log said: last offset 5
    assert [e.offset for e in hub.take_held(room, outlet)] == [6]
    hub.complete_join(room, outlet, 6)
    hub.deliver([ev(7)])
    assert transport.offsets() == [7]


def test_a_joiner_ahead_of_the_room_skips_what_it_was_sent(hub: Hub) -> None:
    live = live_subscriber(hub, "live", at=3)
    transport = FakeTransport()
    outlet = PolledOutlet(transport, "joiner", "u", 1000)
    room = hub.join("project:p1", outlet)
    # The joiner's history read reached offset 5 while the broker has delivered only 3.
    hub.complete_join(room, outlet, 5)
    assert outlet in room.joining
    hub.deliver([ev(4), ev(5), ev(6)])
    assert live.offsets() == [4, 5, 6]
    assert transport.offsets() == [6]
    assert outlet in room.live


def test_slow_consumer_is_reported_and_gets_nothing_more(hub: Hub, recorder: Recorder) -> None:
    slow, fast = live_subscriber(hub, "slow"), live_subscriber(hub, "fast")
    slow.backlog = 5000
    hub.deliver([ev(1)])
    assert recorder.slow == ["slow"]
    hub.deliver([ev(2)])
    assert slow.offsets() == [1]
    assert fast.offsets() == [1, 2]


def test_epoch_change_asks_for_resync(hub: Hub, recorder: Recorder) -> None:
    live_subscriber(hub, "a")
    hub.deliver([ev(1), ev(1, epoch="e2")])
    assert recorder.resyncs == ["project:p1"]


def test_leave_drops_the_empty_room(hub: Hub) -> None:
    transport = FakeTransport()
    outlet = PolledOutlet(transport, "a", "u", 1000)
    hub.join("project:p1", outlet)
    assert hub.subscription_count() == 1
    assert hub.leave("project:p1", outlet) is True
    assert hub.rooms == {}
    assert hub.leave("project:p1", outlet) is False


def test_send_to_room_reaches_live_subscribers_only(hub: Hub) -> None:
    live = live_subscriber(hub, "a")
    joining = FakeTransport()
    hub.join("project:p1", PolledOutlet(joining, "b", "u", 1000))
    hub.send_to_room("project:p1", b'{"type":"presence:update"}')
    assert live.messages() == [{"type": "presence:update"}]
    assert joining.writes == []


def test_metrics_count_deliveries_and_latency(hub: Hub) -> None:
    live_subscriber(hub, "a")
    live_subscriber(hub, "b")
    a_frames = live_subscriber(hub, "a")
    hub.deliver([ev(1), ev(2)])
    metrics = hub._metrics
    assert metrics.sample("liveboard_messages_sent_total") == 6
    # bytes: what each socket was written, times sockets
    assert metrics.sample("liveboard_bytes_sent_total") == 3 * sum(map(len, a_frames.writes))
    assert metrics.sample("liveboard_delivery_latency_seconds_count") == 2


def test_in_order_events_skip_no_bookkeeping(hub: Hub, recorder: Recorder) -> None:
    """The next event of a room with only live subscribers takes the short way
    (``RoomSequencer.take_next``): it is remembered in ``recent``, counted, and written to the
    open sockets only; a hole still goes through ``offer`` and is reported."""
    a, b = live_subscriber(hub, "a"), live_subscriber(hub, "b")
    room = hub.rooms["project:p1"]
    closed = next(o for o in room.live if o.transport is b)
    closed.closed = True
    hub.deliver([ev(1), ev(2)])
    assert a.offsets() == [1, 2]
    assert b.writes == []
    assert room.recent is not None
    assert [e.offset for e in room.recent] == [1, 2]
    assert room.released == 2
    metrics = hub._metrics
    assert metrics.sample("liveboard_messages_sent_total") == 2  # two frames, one open socket
    assert metrics.sample("liveboard_bytes_sent_total") == sum(map(len, a.writes))
    assert metrics.sample("liveboard_delivery_latency_seconds_count") == 2
    hub.deliver([ev(4)])  # 3 is missing: held, reported
    assert recorder.gaps == ["project:p1"]
    hub.deliver([ev(3), ev(5)])
    assert a.offsets() == [1, 2, 3, 4, 5]
    assert [e.offset for e in room.recent] == [1, 2, 3, 4, 5]


def test_a_watched_workspace_room_is_sequenced_and_reported(recorder: Recorder) -> None:
    seen: list[list[int]] = []
    hub = Hub(
        Metrics(),
        on_slow_consumer=recorder.slow_consumer,
        on_gap=recorder.gap,
        on_resync=recorder.resync,
        on_workspace_events=lambda room, events: seen.append([e.offset for e in events]),
    )
    room = hub.watch("workspace:w1")
    hub.start_sequence(room, "e1", 0)
    hub.deliver(
        [ev(2, room="workspace:w1"), ev(1, room="workspace:w1"), ev(1, room="workspace:w1")]
    )
    # in order, once, although it arrived out of order and twice; one call per event, as each
    # is released (a removal applies before the next event is queued)
    assert seen == [[1], [2]]
    hub.unwatch("workspace:w1")
    assert hub.rooms == {}


# Membership first: a project room's event waits for the workspace offset it names


def removal(offset: int, user: str = "carol") -> BrokerEvent:
    return BrokerEvent(
        type="member:removed",
        room="workspace:w1",
        offset=offset,
        epoch="e1",
        ts=0,
        user_id="owner",
        data={"userId": user},
    )


def dependent(offset: int, workspace_offset: int) -> BrokerEvent:
    return msgspec.structs.replace(ev(offset), workspace_offset=workspace_offset)


def revoking_hub(recorder: Recorder, outlets: dict[str, Outlet]) -> Hub:
    """A hub whose ``member:removed`` takes the user's outlet out of every room, as the node
    does; ``outlets`` maps user ids to their outlet."""
    hub: Hub

    def revoke(room: Room, events: list[SequencedEvent]) -> None:
        for event in events:
            if event.type == "member:removed":
                assert isinstance(event, BrokerEvent)
                outlet = outlets.get(event.data["userId"])
                if outlet is None:
                    continue
                for name in list(hub.rooms):
                    hub.leave(name, outlet)

    hub = Hub(
        Metrics(),
        on_slow_consumer=recorder.slow_consumer,
        on_gap=recorder.gap,
        on_resync=recorder.resync,
        on_workspace_events=revoke,
    )
    return hub


def project_subscriber(hub: Hub, name: str) -> tuple[Outlet, FakeTransport]:
    """A live subscriber of project:p1 whose workspace room (workspace:w1, at 0) is watched."""
    transport = FakeTransport()
    outlet = PolledOutlet(transport, name, name, 1000)
    room = hub.join("project:p1", outlet)
    room.workspace_id = "w1"
    if "workspace:w1" not in hub.rooms:
        hub.start_sequence(hub.watch("workspace:w1"), "e1", 0)
    hub.start_sequence(room, "e1", 0)
    hub.complete_join(room, outlet, 0)
    return outlet, transport


def test_an_event_after_a_removal_it_has_not_seen_waits_for_it(recorder: Recorder) -> None:
    outlets: dict[str, Outlet] = {}
    hub = revoking_hub(recorder, outlets)
    outlets["carol"], carol = project_subscriber(hub, "carol")
    outlets["alice"], alice = project_subscriber(hub, "alice")
    hub.deliver([dependent(1, workspace_offset=0)])
    # the removal (workspace offset 1) is lost or late; the next task event names it
    hub.deliver([dependent(2, workspace_offset=1)])
    assert carol.offsets() == alice.offsets() == [1]
    assert recorder.gaps == ["workspace:w1"]
    assert hub.rooms["workspace:w1"].sequencer is not None
    assert hub.rooms["workspace:w1"].sequencer.missing == (1, 1)
    # the node reads it from the log
    hub.fill(hub.rooms["workspace:w1"], [removal(1)])
    assert alice.offsets() == [1, 2]
    assert carol.offsets() == [1], "an event committed after the removal reached the removed user"


def test_past_the_waiting_bound_the_project_room_reads_the_dropped_event_from_the_log(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "MAX_WAITING", 1)
    outlets: dict[str, Outlet] = {}
    hub = revoking_hub(recorder, outlets)
    outlets["carol"], carol = project_subscriber(hub, "carol")
    outlets["alice"], alice = project_subscriber(hub, "alice")
    hub.deliver([dependent(1, workspace_offset=1), dependent(2, workspace_offset=1)])
    assert [len(hub.rooms["workspace:w1"].waiting)] == [1]
    project = hub.rooms["project:p1"]
    assert project.sequencer is not None
    # 1 waits, 2 was dropped: the room knows both are to come, and asks for them now
    assert project.sequencer.missing == (1, 2), "the dropped event is a hole of its room"
    assert "project:p1" in recorder.gaps
    hub.fill(hub.rooms["workspace:w1"], [removal(1)])
    hub.fill(project, [dependent(2, workspace_offset=0)])  # the node's gap fill, from the log
    assert alice.offsets() == [1, 2]
    assert carol.offsets() == []


def test_a_waiting_event_released_by_a_live_workspace_event(recorder: Recorder) -> None:
    outlets: dict[str, Outlet] = {}
    hub = revoking_hub(recorder, outlets)
    outlets["carol"], carol = project_subscriber(hub, "carol")
    outlets["alice"], alice = project_subscriber(hub, "alice")
    # in one broker read, the dependent event before the removal it depends on
    hub.deliver([dependent(1, workspace_offset=1), removal(1), dependent(2, workspace_offset=1)])
    assert alice.offsets() == [1, 2]
    assert carol.offsets() == []
    assert hub.rooms["workspace:w1"].waiting == []


def test_events_before_the_removal_are_not_held(recorder: Recorder) -> None:
    outlets: dict[str, Outlet] = {}
    hub = revoking_hub(recorder, outlets)
    outlets["carol"], carol = project_subscriber(hub, "carol")
    hub.deliver([removal(1, user="dave")])
    hub.deliver([dependent(1, workspace_offset=1), ev(2)])  # 0: no dependency named
    assert carol.offsets() == [1, 2]
    assert recorder.gaps == []


def test_a_removal_ends_a_ready_joiner_before_later_events_are_queued(
    recorder: Recorder,
) -> None:
    """A joiner of the workspace room that is ahead of the room gets its frames queued per
    outlet; a ``member:removed`` in the same release must stop what follows it."""
    outlets: dict[str, Outlet] = {}
    hub = revoking_hub(recorder, outlets)
    transport = FakeTransport()
    outlets["carol"] = outlet = PolledOutlet(transport, "carol", "carol", 1000)
    room = hub.join("workspace:w1", outlet)
    hub.start_sequence(room, "e1", 0)
    hub.complete_join(room, outlet, 0)  # live at once: the room has released 0
    joiner = FakeTransport()
    outlets["dave"] = late = PolledOutlet(joiner, "dave", "dave", 1000)
    hub.join("workspace:w1", late)
    hub.complete_join(room, late, 1)  # sent up to 1 from the log; the room is at 0
    # 2-4 wait behind a hole, then the log fills it: one release of 1-4
    hub.deliver([ev(2, room="workspace:w1"), removal(3, "dave"), ev(4, room="workspace:w1")])
    hub.fill(room, [ev(1, room="workspace:w1")])
    assert joiner.offsets() == [2, 3], "an event after the removal was queued for the removed"
    assert transport.offsets() == [1, 2, 3, 4]
