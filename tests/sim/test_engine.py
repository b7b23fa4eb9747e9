"""The event heap's total order: (time_s, kind_rank, seq), and follow-up events."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from saga_sgl.sim.engine import Engine, Event, EventKind


class _Rec:
    def __init__(
        self, log: list[str], name: str, kind: EventKind, follow: list[tuple[float, Event]] | None = None
    ):
        self.log, self.name, self.kind, self.follow = log, name, kind, follow or []

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        self.log.append(f"{self.name}@{now_s}")
        return self.follow


def test_simultaneous_events_run_in_kind_order_then_creation_order() -> None:
    log: list[str] = []
    eng = Engine()
    # Scheduled deliberately in reverse of the documented tie order.
    eng.schedule(1.0, _Rec(log, "epoch", EventKind.EPOCH))
    eng.schedule(1.0, _Rec(log, "dispatch", EventKind.DISPATCH))
    eng.schedule(1.0, _Rec(log, "release", EventKind.CALL_RELEASE))
    eng.schedule(1.0, _Rec(log, "arrival-a", EventKind.TASK_ARRIVAL))
    eng.schedule(1.0, _Rec(log, "arrival-b", EventKind.TASK_ARRIVAL))
    eng.schedule(1.0, _Rec(log, "step", EventKind.WORKER_STEP))
    eng.schedule(0.5, _Rec(log, "early-epoch", EventKind.EPOCH))
    eng.run()
    assert log == [
        "early-epoch@0.5",
        "step@1.0",
        "arrival-a@1.0",
        "arrival-b@1.0",
        "release@1.0",
        "dispatch@1.0",
        "epoch@1.0",
    ]


def test_kind_ranks_are_pinned() -> None:
    assert [k.name for k in sorted(EventKind)] == [
        "WORKER_STEP",
        "TASK_ARRIVAL",
        "CALL_RELEASE",
        "DISPATCH",
        "EPOCH",
    ]


def test_follow_ups_are_scheduled_and_can_tie_with_pending_events() -> None:
    log: list[str] = []
    eng = Engine()
    child = _Rec(log, "child-step", EventKind.WORKER_STEP)
    eng.schedule(2.0, _Rec(log, "pending-arrival", EventKind.TASK_ARRIVAL))
    eng.schedule(1.0, _Rec(log, "parent", EventKind.EPOCH, [(2.0, child)]))
    end = eng.run()
    # The follow-up was created later but has the smaller kind rank, so it runs first at t=2.
    assert log == ["parent@1.0", "child-step@2.0", "pending-arrival@2.0"]
    assert end == 2.0
    assert eng.num_events == 3


def test_cannot_schedule_in_the_past_and_until_stops() -> None:
    log: list[str] = []
    eng = Engine()
    eng.schedule(1.0, _Rec(log, "a", EventKind.EPOCH))
    eng.schedule(5.0, _Rec(log, "b", EventKind.EPOCH))
    eng.run(until_s=2.0)
    assert log == ["a@1.0"] and len(eng) == 1
    with pytest.raises(ValueError):
        eng.schedule(0.5, _Rec(log, "c", EventKind.EPOCH))
