"""The reuse horizon follows the residence time of the worker that holds the workflow's context
(``WorkerView.residence_s``, ``SchedulerSettings.residence_horizon``): P(return within
horizon_factor x residence | idle this long), the TTL capped at the residence time; with the
residence unknown (inf) the hints are session 8's (horizon = the predictor's maximum)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from saga_sgl.aeg.predict import ReusePredictorSettings
from saga_sgl.clock import ManualClock
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId
from saga_sgl.scheduler import (
    CacheHints,
    CallArrived,
    CallFinished,
    Dispatch,
    SchedulerSettings,
    ToolStarted,
    WorkerLoads,
    WorkflowScheduler,
)

AGES_S = (0.0, 1.0, 8.0, 40.0, 130.0)
"""Ages of the tool gap at which the hints are read (the re-keys fire at 0.5, 1, 2, ... s)."""


def _worker(residence_s: float, worker_id: str = "w0") -> WorkerView:
    return WorkerView(
        worker_id=WorkerId(worker_id),
        num_running_reqs=0,
        num_waiting_reqs=0,
        kv_used_tokens=0,
        kv_capacity_tokens=1_000_000,
        max_running_reqs=100,
        residence_s=residence_s,
    )


def _hints_over_a_gap(
    residence_s: float,
    *,
    change_at_s: float | None = None,
    changed_to_s: float = math.inf,
    **settings: object,
) -> list[CacheHints]:
    """A bash gap on one worker whose view has ``residence_s``; the hints at ``AGES_S`` (epochs of
    100 ms in between). ``change_at_s``: a new loads poll with ``changed_to_s`` at that age."""
    clock = ManualClock(100.0)
    s = WorkflowScheduler(SchedulerSettings(stealing=None, **settings), clock=clock)  # type: ignore[arg-type]
    s.handle(WorkerLoads(workers=(_worker(residence_s),)))
    wf = WorkflowId("a")
    [d] = [a for a in s.handle(CallArrived(call_id="a:0", workflow_id=wf, step=0, prompt_tokens=2000))
           if isinstance(a, Dispatch)]  # fmt: skip
    s.handle(CallFinished(call_id="a:0", workflow_id=wf, worker_id=d.worker_id, prompt_tokens=2000,
                          output_tokens=100))  # fmt: skip
    s.handle(ToolStarted(workflow_id=wf, tool="bash"))
    start = clock.now_s()
    out = []
    for age in AGES_S:
        while clock.now_s() < start + age - 1e-9:
            clock.advance(s.settings.epoch_s)
            if change_at_s is not None and clock.now_s() >= start + change_at_s - 1e-9:
                s.handle(WorkerLoads(workers=(_worker(changed_to_s),)))
                change_at_s = None
            s.epoch()
        hints = s.cache_hints(wf)
        assert hints is not None
        out.append(hints)
    return out


def test_with_the_residence_unknown_the_hints_are_the_old_ones() -> None:
    unknown = _hints_over_a_gap(math.inf)
    switched_off = _hints_over_a_gap(5.0, residence_horizon=False)
    assert unknown == switched_off
    # Session 8's behaviour: the horizon is the predictor's maximum, P hardly moves with the age.
    assert ReusePredictorSettings().max_horizon_s == 3600.0
    assert min(h.reuse_prob or 0.0 for h in unknown) > 0.99


def test_a_short_residence_lowers_p_for_an_old_gap_and_caps_the_ttl() -> None:
    long_ = _hints_over_a_gap(math.inf)
    short = _hints_over_a_gap(2.0)
    p_long = [h.reuse_prob or 0.0 for h in long_]
    p_short = [h.reuse_prob or 0.0 for h in short]
    assert all(s < lo for s, lo in zip(p_short, p_long, strict=True))
    # The older the gap, the further P falls with a short horizon (the heavy tail: an old gap is
    # unlikely to end within a few seconds), while with the maximum horizon it stays near 1.
    assert p_short[-1] < 0.2 < 0.9 < p_short[0]
    assert p_short == sorted(p_short, reverse=True)
    # The TTL never outlives the cache's residence time (policy.pressure's second rule).
    start = 100.0
    assert all(h.ttl_deadline_s is not None and h.ttl_deadline_s <= start + 2.0 + 1e-9 for h in short)
    assert long_[0].ttl_deadline_s is not None and long_[0].ttl_deadline_s > start + 2.0


def test_p_falls_monotonically_as_the_residence_time_shrinks() -> None:
    old_gap = [_hints_over_a_gap(r)[-1].reuse_prob or 0.0 for r in (math.inf, 300.0, 10.0, 2.0)]
    assert old_gap == sorted(old_gap, reverse=True) and old_gap[0] > old_gap[-1] + 0.5


def test_each_prediction_reads_the_latest_polled_residence_time() -> None:
    """Staleness: a prediction uses the view at its time; a changed residence time reaches the hint
    at the next re-key of the gap, not before."""
    steady = _hints_over_a_gap(2.0)
    relieved = _hints_over_a_gap(2.0, change_at_s=20.0, changed_to_s=math.inf)
    assert relieved[:3] == steady[:3]  # ages 0-8 s: before the change
    # After the change (re-keys at 32 and 128 s), P is the unbounded horizon's again.
    unknown = _hints_over_a_gap(math.inf)
    ttl = relieved[3].ttl_deadline_s  # set at the tool start, with the old residence time
    assert relieved[3:] == [dataclasses.replace(h, ttl_deadline_s=ttl) for h in unknown[3:]]
    assert (relieved[-1].reuse_prob or 0.0) > 0.99 > (steady[-1].reuse_prob or 0.0)


def test_baseline_hints_are_what_the_scheduler_sends_without_the_residence_time() -> None:
    recorded = _hints_over_a_gap(2.0, record_baseline_hints=True)
    live = _hints_over_a_gap(2.0)
    without = _hints_over_a_gap(2.0, residence_horizon=False)
    # Recording the baseline does not change the hints sent ...
    assert [dataclasses.replace(h, baseline=None) for h in recorded] == live
    # ... and the baseline is the record the scheduler would have sent with the option off.
    assert [h.baseline if h.baseline is not None else h for h in recorded] == without
    assert any(h.baseline is not None for h in recorded)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_a_worker_view_refuses_a_residence_time_that_is_not_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="residence_s"):
        _worker(bad)


def test_the_simulator_measures_residence_and_the_benchmark_replays_the_baseline_hints() -> None:
    """A simulated run under KV pressure: the scheduler's hints use the workers' measured residence
    times (P never above the unbounded horizon's, lower for some gaps), the recording keeps the
    baseline next to each hint, and ``eviction_sim.baseline_schedule`` swaps them in and nothing else."""
    from benchmarks.eviction_sim import baseline_schedule
    from saga_sgl.replay.sim_schedule import HintChange, record_schedule
    from saga_sgl.sim import rows
    from saga_sgl.sim.cluster import ClusterSettings
    from saga_sgl.sim.worker import WorkerSettings
    from saga_sgl.sim.workloads import WorkloadSpec, generate

    wl = generate(WorkloadSpec(scenario="swe", seed=3, horizon_s=60.0, rate_per_min=20.0))
    settings = ClusterSettings(num_workers=2, worker=WorkerSettings(kv_capacity_tokens=60_000))
    row = dataclasses.replace(rows.SAGA, record_baseline_hints=True)
    schedule, _ = record_schedule(wl, row, settings, seed=3)
    changes = [e for e in schedule.events if isinstance(e, HintChange) and e.hints is not None]
    paired = [(e.hints, e.hints.baseline) for e in changes if e.hints.baseline is not None]  # type: ignore[union-attr]
    assert paired, "no hint was predicted with a finite residence time"
    # A shorter horizon never raises P(return within it), and lowers it somewhere.
    assert all((h.reuse_prob or 0.0) <= (b.reuse_prob or 0.0) + 1e-12 for h, b in paired)
    assert any((h.reuse_prob or 0.0) < (b.reuse_prob or 0.0) - 1e-3 for h, b in paired)
    base = baseline_schedule(schedule)
    assert len(base.events) == len(schedule.events)
    for old, new in zip(schedule.events, base.events, strict=True):
        if isinstance(old, HintChange) and old.hints is not None and old.hints.baseline is not None:
            assert isinstance(new, HintChange) and new.hints == old.hints.baseline
            assert (new.at_s, new.workflow, new.tool) == (old.at_s, old.workflow, old.tool)
        else:
            assert new is old
