"""Age re-keys of a tool gap (``SchedulerSettings.gap_rekey_ages_s``): the scheduler re-predicts a
gap still out at log-spaced ages from its gap distribution's hazard and re-keys the worker's hint,
the wait anchored at the re-key; the simulator carries the updates out as it does any hint."""

from __future__ import annotations

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy import registry
from saga_sgl.policy.views import CacheEntryView, WorkerId, WorkerView, WorkflowId, WorkflowState
from saga_sgl.protocol import ToolStarted as ToolStartedMsg
from saga_sgl.replay.sim_schedule import HintChange, record_schedule
from saga_sgl.scheduler import (
    CacheHints,
    CallArrived,
    CallFinished,
    Control,
    Dispatch,
    SchedulerSettings,
    ToolFinished,
    ToolStarted,
    WorkerLoads,
    WorkflowFinished,
    WorkflowScheduler,
)
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads.model import Segment
from tests.sim._helpers import chain_task, workload

AGES = SchedulerSettings().gap_rekey_ages_s


def _sched(**settings: object) -> tuple[WorkflowScheduler, ManualClock]:
    clock = ManualClock(100.0)
    s = WorkflowScheduler(SchedulerSettings(stealing=None, **settings), clock=clock)  # type: ignore[arg-type]
    worker = WorkerView(
        worker_id=WorkerId("w0"),
        num_running_reqs=0,
        num_waiting_reqs=0,
        kv_used_tokens=0,
        kv_capacity_tokens=1_000_000,
        max_running_reqs=100,
    )
    s.handle(WorkerLoads(workers=(worker,)))
    return s, clock


def _start_gap(s: WorkflowScheduler, wf: str, step: int = 0, tool: str = "bash") -> WorkerId:
    [d] = [a for a in s.handle(CallArrived(call_id=f"{wf}:{step}", workflow_id=WorkflowId(wf), step=step,
                                           prompt_tokens=2000)) if isinstance(a, Dispatch)]  # fmt: skip
    s.handle(
        CallFinished(
            call_id=f"{wf}:{step}", workflow_id=WorkflowId(wf), worker_id=d.worker_id, prompt_tokens=2000,
            output_tokens=100,
        )
    )  # fmt: skip
    s.handle(ToolStarted(workflow_id=WorkflowId(wf), tool=tool))
    return d.worker_id


def _run_epochs(s: WorkflowScheduler, clock: ManualClock, until_s: float) -> list[tuple[float, Control]]:
    """Epochs every epoch_s up to ``until_s``: the tool-started controls they emit, with their time."""
    out = []
    while clock.now_s() < until_s - 1e-9:
        clock.advance(s.settings.epoch_s)
        out += [(clock.now_s(), a) for a in s.epoch() if isinstance(a, Control)]
    return [(t, c) for t, c in out if isinstance(c.message, ToolStartedMsg)]


def test_a_tool_gap_is_re_keyed_at_log_spaced_ages_with_the_wait_anchored_at_the_re_key() -> None:
    s, clock = _sched()
    start = clock.now_s()
    _start_gap(s, "a")
    rekeys = _run_epochs(s, clock, start + 300.0)
    rec = s.workflow(WorkflowId("a"))
    ages = [t - start for t, _ in rekeys]
    # One update at the first epoch past each age (plus overdue re-predictions), and bounded.
    for a in AGES:
        assert any(a <= age < a + s.settings.epoch_s + 1e-9 for age in ages), (a, ages)
    assert len(rekeys) == rec.gap_rekeys <= len(AGES) + s.settings.max_next_use_refreshes
    assert s.counters["gap_rekey/age"] == len(AGES)
    hints = s.cache_hints(WorkflowId("a"))
    assert hints is not None and hints.predicted_at_s == pytest.approx(rekeys[-1][0])
    # Heavy tail (Table 1's code latency): the longer the tool has been out, the longer the
    # expected remaining wait given it returns.
    waits = [c.message.next_use_in_s for _, c in rekeys if c.message.next_use_in_s is not None]  # type: ignore[union-attr]
    assert waits[-1] > 10 * waits[0]


def test_re_keys_stop_when_the_tool_returns_or_the_call_comes_or_the_workflow_ends() -> None:
    s, clock = _sched()
    for wf in ("returns", "calls", "ends"):
        _start_gap(s, wf)
    assert {WorkflowId(c.message.workflow_id) for _, c in _run_epochs(s, clock, clock.now_s() + 0.6)} == {
        "returns",
        "calls",
        "ends",
    }
    s.handle(ToolFinished(workflow_id=WorkflowId("returns"), tool="bash"))
    s.handle(CallArrived(call_id="calls:1", workflow_id=WorkflowId("calls"), step=1, prompt_tokens=2100))
    s.handle(WorkflowFinished(workflow_id=WorkflowId("ends")))
    assert s.cache_hints(WorkflowId("returns")).predicted_at_s is None  # type: ignore[union-attr]
    assert _run_epochs(s, clock, clock.now_s() + 300.0) == []
    # A new gap of the same workflow starts its own re-keys.
    s.handle(
        CallFinished(call_id="calls:1", workflow_id=WorkflowId("calls"), worker_id=WorkerId("w0"),
                     prompt_tokens=2100, output_tokens=50)
    )  # fmt: skip
    s.handle(ToolStarted(workflow_id=WorkflowId("calls"), tool="bash"))
    again = _run_epochs(s, clock, clock.now_s() + 1.05)
    assert {c.message.workflow_id for _, c in again} == {"calls"} and len(again) >= 2


def test_no_re_keys_when_switched_off_and_bad_ages_are_refused() -> None:
    s, clock = _sched(gap_rekey_ages_s=(), max_next_use_refreshes=0)
    _start_gap(s, "a")
    assert _run_epochs(s, clock, clock.now_s() + 300.0) == []
    for bad in ((1.0, 0.5), (0.0, 1.0), (1.0, float("inf")), "1,2"):
        with pytest.raises(InvalidSettings):
            SchedulerSettings(gap_rekey_ages_s=bad)  # type: ignore[arg-type]


def _view(h: CacheHints | None, entry_id: int, last_use_s: float) -> CacheEntryView:
    """The entry view a host builds from a hint record (as ``sim.views.ViewBuilder`` does)."""
    assert h is not None
    return CacheEntryView(
        entry_id=entry_id,
        num_tokens=2100,
        depth_tokens=2100,
        last_access_s=last_use_s,
        workflow_id=WorkflowId(str(entry_id)),
        reuse_prob=h.reuse_prob,
        next_use_at_s=h.next_use_at_s,
        ttl_deadline_s=h.ttl_deadline_s,
        predicted_at_s=h.predicted_at_s,
    )


GAPS = ((0.0, "old", "bash"), (12.0, "short", "read_file"), (29.5, "fresh", "bash"))
"""(start offset, workflow, tool): a code tool out 30 s (Table 1: P50 0.18 s, P95 2.4 s), a file tool
out 18 s (P99 1.2 s: far past the bulk of its distribution) and a code tool that just started."""
NOW = 30.0


def drive_gaps(s: WorkflowScheduler, clock: ManualClock, on_control: object = None) -> dict[str, object]:
    """Run ``GAPS`` to ``NOW`` with epochs; per workflow (its gap start, hints at the tool start).
    ``on_control(time, Control | Dispatch)``, if given, sees every dispatch and control in order."""
    t0 = clock.now_s()
    out: dict[str, object] = {}
    for offset, wf, tool in GAPS:
        for t, c in _run_epochs(s, clock, t0 + offset):
            if on_control is not None:
                on_control(t, c)  # type: ignore[operator]
        start = clock.now_s()
        for a in _start_gap_actions(s, wf, tool):
            if on_control is not None:
                on_control(start, a)  # type: ignore[operator]
        out[wf] = (start, s.cache_hints(WorkflowId(wf)))
    for t, c in _run_epochs(s, clock, t0 + NOW):
        if on_control is not None:
            on_control(t, c)  # type: ignore[operator]
    return out


def _start_gap_actions(s: WorkflowScheduler, wf: str, tool: str) -> list[object]:
    [d] = [a for a in s.handle(CallArrived(call_id=f"{wf}:0", workflow_id=WorkflowId(wf), step=0,
                                           prompt_tokens=2000)) if isinstance(a, Dispatch)]  # fmt: skip
    s.handle(
        CallFinished(call_id=f"{wf}:0", workflow_id=WorkflowId(wf), worker_id=d.worker_id, prompt_tokens=2000,
                     output_tokens=100)
    )  # fmt: skip
    return [d, *s.handle(ToolStarted(workflow_id=WorkflowId(wf), tool=tool))]


def test_a_gap_aged_past_its_tools_distribution_loses_rank_to_a_fresh_one_that_is_due() -> None:
    """The design's claim for a heavy tail: the longer a tool has been out, the longer it is expected
    to stay out. Keyed at its tool start, the file tool's context ranks above the fresh code one (it
    was due 0.1 s after its start, and it is more recent than the old one); re-keyed at its age,
    it loses rank to the fresh one that is due, and the old code context goes first in both."""
    s, clock = _sched()
    gaps = drive_gaps(s, clock)
    now = clock.now_s()
    policy = registry.create_eviction("saga")
    pressure = 1.0  # the TTL tier off: the key decides

    def order(rekeyed: bool) -> list[str]:
        keys = {}
        for i, (wf, (start, at_tool_start)) in enumerate(gaps.items()):  # type: ignore[misc]
            hints = s.cache_hints(WorkflowId(wf)) if rekeyed else at_tool_start
            keys[wf] = policy.key(_view(hints, i, start), now, pressure)
        return sorted(keys, key=keys.__getitem__)

    assert order(rekeyed=False) == ["old", "fresh", "short"]
    assert order(rekeyed=True) == ["old", "short", "fresh"]
    short = s.cache_hints(WorkflowId("short"))
    assert short is not None and short.predicted_at_s is not None  # re-keyed (at its 16 s age)


def test_the_simulator_carries_out_the_re_keys_as_hint_updates() -> None:
    """One scheduler, the simulator as host: the age re-keys reach the workers' eviction views
    (recorded hint changes with ``predicted_at_s`` during tool gaps), at most the bound per gap."""
    tasks = [
        chain_task(f"t{i}", 0.3 * i, [Segment(1, 3000), Segment(1000 + i, 2000)], 6, first_id=100 * (i + 1))
        for i in range(12)
    ]
    schedule, _ = record_schedule(
        workload(*tasks),
        rows.SAGA,
        ClusterSettings(num_workers=2, worker=WorkerSettings(kv_capacity_tokens=30_000)),
    )
    per_gap: dict[WorkflowId, int] = {}
    rekeys = []
    for e in schedule.events:
        if not isinstance(e, HintChange):
            continue
        if e.hints is None or e.hints.state is not WorkflowState.TOOL_GAP:
            per_gap.pop(e.workflow, None)
        elif e.workflow not in per_gap:
            per_gap[e.workflow] = 0
        elif e.hints.predicted_at_s is not None:
            per_gap[e.workflow] += 1
            rekeys.append(e)
            assert per_gap[e.workflow] <= len(AGES) + SchedulerSettings().max_next_use_refreshes
            assert e.hints.predicted_at_s == pytest.approx(e.at_s)
    assert rekeys
