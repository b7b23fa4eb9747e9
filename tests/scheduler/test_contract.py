"""The workflow scheduler's contract: events in, actions out, on an injected clock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.errors import InvalidSettings, NoEligibleWorker, UnknownWorkflow
from saga_sgl.policy.decisions import Placement, PlacementReason, PreemptionReason
from saga_sgl.policy.settings import load_settings
from saga_sgl.policy.views import (
    AgentType,
    CallView,
    PendingCallView,
    TenantId,
    WorkerId,
    WorkerView,
    WorkflowId,
    WorkflowState,
)
from saga_sgl.protocol import ToolFinished as ToolFinishedMsg
from saga_sgl.protocol import ToolStarted as ToolStartedMsg
from saga_sgl.protocol import WorkflowFinished as WorkflowFinishedMsg
from saga_sgl.scheduler import (
    AdmissionControlSettings,
    CallAdmitted,
    CallArrived,
    CallFinished,
    Control,
    Dispatch,
    Hold,
    Preempt,
    Prefill,
    Rebind,
    Release,
    SchedulerSettings,
    ToolFinished,
    ToolStarted,
    WorkerDown,
    WorkerLoads,
    WorkflowFinished,
    WorkflowScheduler,
    WorkflowSubmitted,
)

W0, W1 = WorkerId("w0"), WorkerId("w1")


def _worker(
    wid: str,
    *,
    running: int = 0,
    waiting: int = 0,
    used: int = 0,
    cap: int = 100_000,
    idle: float | None = None,
) -> WorkerView:
    return WorkerView(
        worker_id=WorkerId(wid),
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        kv_used_tokens=used,
        kv_capacity_tokens=cap,
        max_running_reqs=100,
        idle_since_s=idle,
    )


def _sched(n: int = 2, cap: int = 100_000, **settings: object) -> tuple[WorkflowScheduler, ManualClock]:
    clock = ManualClock()
    s = WorkflowScheduler(SchedulerSettings(**settings), clock=clock)  # type: ignore[arg-type]
    s.handle(WorkerLoads(workers=tuple(_worker(f"w{i}", cap=cap) for i in range(n))))
    return s, clock


def _call(wf: str, step: int = 0, tokens: int = 1000) -> CallArrived:
    return CallArrived(call_id=f"{wf}:{step}", workflow_id=WorkflowId(wf), prompt_tokens=tokens, step=step)


def _finish(wf: str, step: int, worker: WorkerId, prompt: int = 1000, out: int = 100) -> CallFinished:
    return CallFinished(
        call_id=f"{wf}:{step}",
        workflow_id=WorkflowId(wf),
        worker_id=worker,
        prompt_tokens=prompt,
        output_tokens=out,
    )


def test_a_new_workflow_is_placed_whole_with_hints_and_routing_key() -> None:
    s, _ = _sched()
    [d] = s.handle(_call("a"))
    assert isinstance(d, Dispatch)
    assert (d.call_id, d.workflow_id, d.reason, d.routing_key) == (
        "a:0",
        "a",
        PlacementReason.COMPLETION_COST,
        "a",
    )
    assert d.hint is not None and d.hint.workflow_id == "a" and d.hint.step == 0
    assert s.workflow(WorkflowId("a")).worker_id == d.worker_id
    assert s.counters["dispatch/completion_cost"] == 1


def test_a_baseline_scheduler_sends_plain_requests_and_no_control_messages() -> None:
    s, _ = _sched(placement="round_robin", fairness="fcfs", stealing=None, predictions=False)
    [d] = s.handle(_call("a"))
    assert isinstance(d, Dispatch) and d.hint is None and d.reason == PlacementReason.ROUND_ROBIN
    assert s.handle(_finish("a", 0, d.worker_id)) == []
    assert s.handle(ToolStarted(workflow_id=WorkflowId("a"), tool="bash")) == []
    assert s.cache_hints(WorkflowId("a")) is None
    assert not s.needs_epoch


def test_tool_gap_life_cycle_emits_the_plugins_control_messages() -> None:
    s, clock = _sched()
    [d] = s.handle(_call("a"))
    s.handle(_finish("a", 0, d.worker_id))
    assert s.workflow(WorkflowId("a")).state is WorkflowState.TOOL_GAP
    [c] = s.handle(ToolStarted(workflow_id=WorkflowId("a"), tool="bash"))
    assert isinstance(c, Control) and c.worker_id == d.worker_id
    assert isinstance(c.message, ToolStartedMsg) and c.message.tool == s.workflow(WorkflowId("a")).tool
    assert c.message.ttl_s > 0 and c.message.next_use_in_s is not None and c.message.next_use_in_s > 0
    hints = s.cache_hints(WorkflowId("a"))
    assert hints is not None and hints.next_use_at_s == pytest.approx(c.message.next_use_in_s)
    clock.advance(2.0)
    [c] = s.handle(ToolFinished(workflow_id=WorkflowId("a"), tool="bash"))
    assert isinstance(c.message, ToolFinishedMsg)
    [d2] = s.handle(_call("a", 1, 1200))
    assert isinstance(d2, Dispatch) and d2.worker_id == d.worker_id
    assert d2.reason == PlacementReason.AFFINITY  # its last call finished there: the KV is there
    s.handle(_finish("a", 1, d2.worker_id, 1200))
    [c] = s.handle(WorkflowFinished(workflow_id=WorkflowId("a")))
    assert isinstance(c.message, WorkflowFinishedMsg) and c.worker_id == d.worker_id
    hints = s.cache_hints(WorkflowId("a"))
    assert hints is not None and hints.is_finished and hints.reuse_prob == 0.0
    assert s.workflow_views() == []


def test_tool_latency_model_learns_from_the_gaps_it_sees() -> None:
    s, clock = _sched()
    [d] = s.handle(_call("a"))
    s.handle(_finish("a", 0, d.worker_id))
    s.handle(ToolStarted(workflow_id=WorkflowId("a"), tool="bash"))
    before = s.latency.mean_s(s.workflow(WorkflowId("a")).tool)  # type: ignore[arg-type]
    clock.advance(60.0)
    s.handle(_call("a", 1))  # the next call ends the gap: a 60 s observation
    assert s.latency.mean_s(s.workflow(WorkflowId("a")).tool) > before  # type: ignore[arg-type]


def test_an_unannounced_tool_gap_gets_the_aegs_tool_at_the_next_epoch() -> None:
    s, clock = _sched()
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("a"), tool_hints=("file", "code", "finish")))
    [d] = s.handle(_call("a"))
    s.handle(_finish("a", 0, d.worker_id))
    clock.advance(0.1)
    controls = [a for a in s.epoch() if isinstance(a, Control)]
    assert [type(c.message) for c in controls] == [ToolStartedMsg]
    assert s.workflow(WorkflowId("a")).tool == "file"


def test_admission_control_holds_and_releases_in_order() -> None:
    adm = AdmissionControlSettings(enabled=True, default_footprint_tokens=600)
    s, clock = _sched(n=2, cap=1000, admission=adm)
    d0 = s.handle(_call("a0"))
    d1 = s.handle(_call("a1"))
    assert {a.worker_id for a in (*d0, *d1) if isinstance(a, Dispatch)} == {W0, W1}
    [h2] = s.handle(_call("a2"))
    [h3] = s.handle(_call("a3"))
    assert isinstance(h2, Hold) and h2.reason == "kv_footprint" and isinstance(h3, Hold)
    assert s.held == ("a2", "a3")
    clock.advance(0.1)
    assert [a for a in s.epoch() if isinstance(a, (Release, Dispatch))] == []  # still no room
    w = d0[0].worker_id  # type: ignore[union-attr]
    s.handle(_finish("a0", 0, w, prompt=500, out=100))  # peak 600: the model learns 600 again
    clock.advance(1.0)
    out = s.handle(WorkflowFinished(workflow_id=WorkflowId("a0")))
    rel = [a for a in out if isinstance(a, (Release, Dispatch))]
    assert [type(a) for a in rel] == [Release, Dispatch]  # oldest held first, only one fits
    assert rel[0].workflow_id == "a2" and rel[0].held_s == pytest.approx(1.1)  # type: ignore[union-attr]
    assert rel[1].worker_id == w and rel[1].call_id == "a2:0"  # type: ignore[union-attr]
    assert s.held == ("a3",)
    assert (s.counters["hold/kv_footprint"], s.counters["hold/queue"], s.counters["release"]) == (1, 1, 1)


def test_admission_control_agents_per_worker_cap() -> None:
    adm = AdmissionControlSettings(enabled=True, max_workflows_per_worker=1)
    s, _ = _sched(n=2, admission=adm)
    s.handle(_call("a"))
    s.handle(_call("b"))
    [h] = s.handle(_call("c"))
    assert isinstance(h, Hold) and h.reason == "agents_per_worker"


def test_the_footprint_model_learns_peak_contexts_per_agent_type() -> None:
    adm = AdmissionControlSettings(enabled=True, default_footprint_tokens=50_000)
    s, _ = _sched(n=1, admission=adm)
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("a"), agent_type=AgentType("coder")))
    s.handle(_call("a"))
    s.handle(_finish("a", 0, W0, prompt=7000, out=1000))
    s.handle(WorkflowFinished(workflow_id=WorkflowId("a")))
    assert s.footprint.predict(AgentType("coder")) == 8000
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("b"), agent_type=AgentType("coder")))
    s.handle(_call("b"))
    assert s.workflow(WorkflowId("b")).predicted_peak_tokens == 8000  # learned, not the final truth


def test_a_worker_going_down_rebinds_its_workflows_at_their_next_call() -> None:
    s, _ = _sched(n=2)
    [d] = s.handle(_call("a"))
    s.handle(_finish("a", 0, d.worker_id))
    s.handle(WorkerDown(worker_id=d.worker_id))
    [d2] = s.handle(_call("a", 1))
    assert isinstance(d2, Dispatch) and d2.worker_id != d.worker_id
    assert d2.reason == PlacementReason.COMPLETION_COST and d2.rebound_from == d.worker_id  # placed anew
    s.handle(WorkerDown(worker_id=d2.worker_id))
    with pytest.raises(NoEligibleWorker):
        s.handle(_call("b"))


def test_epoch_steals_a_tool_gap_workflow_and_prefills_its_context_on_the_thief() -> None:
    clock = ManualClock(10.0)
    s = WorkflowScheduler(SchedulerSettings(placement="consistent_hash"), clock=clock)
    # w0 has a waiting queue: the stolen workflow escapes it (the steal guards' gain).
    loads = [_worker("w0", running=80, waiting=20, used=80_000), _worker("w1", idle=0.0)]
    s.handle(WorkerLoads(workers=tuple(loads)))
    for i in range(40):
        s.handle(_call(f"a{i}"))
    victims = [f"a{i}" for i in range(40) if s.workflow(WorkflowId(f"a{i}")).worker_id == W0]
    assert victims
    wf = victims[0]
    s.handle(_finish(wf, 0, W0, prompt=2000, out=100))
    s.handle(ToolStarted(workflow_id=WorkflowId(wf), tool="web"))
    s.handle(WorkerLoads(workers=tuple(loads)))
    clock.advance(0.1)
    out = s.epoch()
    rebinds = [a for a in out if isinstance(a, Rebind)]
    prefills = [a for a in out if isinstance(a, Prefill)]
    assert rebinds and rebinds[0].workflow_id == wf and rebinds[0].steal.thief == W1
    assert prefills[0].workflow_id == wf and prefills[0].worker_id == W1 and prefills[0].prefix_tokens == 2100
    assert s.workflow(WorkflowId(wf)).worker_id == W1 and s.workflow(WorkflowId(wf)).times_stolen == 1


def test_afs_preempts_a_less_urgent_running_call_inside_a_tenant() -> None:
    s, clock = _sched(n=1)
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("x"), tool_hints=("finish",)))
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("y"), tool_hints=("code",) * 30 + ("finish",)))
    s.handle(_call("x"))
    s.handle(_call("y"))
    clock.advance(0.1)
    assert [a for a in s.epoch() if isinstance(a, Preempt)] == []  # nobody is known to run
    urgency = s.fair_share.urgency
    lo, hi = sorted(("x", "y"), key=lambda w: urgency[WorkflowId(w)])
    assert urgency[WorkflowId(hi)] > urgency[WorkflowId(lo)] > 0
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=WorkflowId(lo), worker_id=W0))
    clock.advance(0.3)
    assert [a for a in s.epoch() if isinstance(a, Preempt)] == []  # blocked 0.4 s <= 0.5 s
    clock.advance(0.2)
    [p] = [a for a in s.epoch() if isinstance(a, Preempt)]
    assert (p.call_id, p.workflow_id, p.beneficiary, p.worker_id) == (f"{lo}:0", lo, hi, W0)
    assert p.reason == PreemptionReason.BLOCKED_TOO_LONG
    assert s.workflow(WorkflowId(lo)).state is WorkflowState.QUEUED
    # AFS orders a worker's queue most urgent workflow first inside the tenant.
    pending = [
        PendingCallView(
            call_id=f"{w}:0", workflow_id=WorkflowId(w), tenant_id=TenantId("default"), enqueued_at_s=t
        )
        for w, t in ((lo, 0.0), (hi, 0.1))
    ]
    assert [p.workflow_id for p in s.order_waiting(pending)] == [hi, lo]


def test_no_preemption_without_call_admitted_events() -> None:
    s, clock = _sched(n=1)
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("short"), tool_hints=("finish",)))
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("long"), tool_hints=("code",) * 30 + ("finish",)))
    s.handle(_call("short"))
    s.handle(_call("long"))
    clock.advance(2.0)
    assert [a for a in s.epoch() if isinstance(a, Preempt)] == []


def test_dispatch_carries_the_tenants_afs_priority() -> None:
    s, clock = _sched(n=1)
    s.handle(
        WorkflowSubmitted(workflow_id=WorkflowId("x"), tenant_id=TenantId("t1"), tool_hints=("code",) * 9)
    )
    s.handle(_call("x"))
    clock.advance(0.1)
    s.epoch()
    assert s.fair_share.priority_of(TenantId("t1")) == 10
    s.handle(_finish("x", 0, W0))
    [d] = [a for a in s.handle(_call("x", 1)) if isinstance(a, Dispatch)]
    assert d.priority == 10 and d.hint is not None and d.hint.urgency == d.urgency > 0


def test_bad_input_is_refused_clearly() -> None:
    s, _ = _sched()
    with pytest.raises(TypeError):
        s.handle("not an event")  # type: ignore[arg-type]
    with pytest.raises(UnknownWorkflow):
        s.handle(_finish("ghost", 0, W0))
    s.handle(WorkflowSubmitted(workflow_id=WorkflowId("a")))
    with pytest.raises(ValueError, match="submitted twice"):
        s.handle(WorkflowSubmitted(workflow_id=WorkflowId("a")))
    with pytest.raises(InvalidSettings):
        load_settings(AdmissionControlSettings, {"kv_threshold": 1.0})
    with pytest.raises(InvalidSettings):
        SchedulerSettings(policy_config={"eviction": {}})
    with pytest.raises(InvalidSettings):
        WorkflowScheduler(SchedulerSettings(policy_config={"placement": {"nope": 1}}), clock=ManualClock())


def test_a_new_workflow_sees_the_predicted_work_bound_to_each_worker() -> None:
    s, _ = _sched(policy_config={"placement": {"load_signal": "bound_work"}})
    seen: list[CallView] = []
    place = s.placement.place

    def spy(call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        seen.append(call)
        return place(call, workers, now_s)

    s.placement.place = spy  # type: ignore[method-assign]
    [d] = s.handle(_call("a"))
    assert isinstance(d, Dispatch) and seen[0].bound_work_s == {}
    s.workflow(WorkflowId("a")).remaining_work_s = 42.0  # what its AEG would predict
    [d2] = s.handle(_call("b"))
    # b sees a's 42 s on a's worker, so it goes to the other one.
    assert seen[1].bound_work_s == {d.worker_id: 42.0}
    assert isinstance(d2, Dispatch) and d2.worker_id != d.worker_id
    s.handle(_finish("a", 0, d.worker_id))
    s.handle(_call("a", step=1))
    assert seen[2].affinity_worker_id == d.worker_id and seen[2].bound_work_s == {}  # bound: not asked


def test_admission_control_can_count_bound_workflows_below_their_peak() -> None:
    # Peak 600 per workflow, pools of 1000: at their peak, one workflow per worker fits (see above).
    # Counted at half their peak until their context grows, two fit per worker.
    adm = AdmissionControlSettings(enabled=True, default_footprint_tokens=600, bound_footprint_frac=0.5)
    s, _ = _sched(n=2, cap=1000, admission=adm)
    placed = [a for wf in ("a0", "a1", "a2") for a in s.handle(_call(wf))]
    assert all(isinstance(a, Dispatch) for a in placed)
    [h] = [a for wf in ("a3", "a4") for a in s.handle(_call(wf))][1:]
    assert isinstance(h, Hold)  # a3 still fits (300 + 600 on one worker); a4 does not
    # A bound workflow whose context outgrew the fraction counts at its context.
    w = placed[0].worker_id  # type: ignore[union-attr]
    s.handle(_finish("a0", 0, w, prompt=800, out=150))
    assert s.workflow(WorkflowId("a0")).context_tokens == 950
    with pytest.raises(InvalidSettings):
        AdmissionControlSettings(enabled=True, bound_footprint_frac=1.5)


def test_least_attained_service_parks_a_long_runner_for_a_held_newcomer() -> None:
    # One worker with room for one workflow (peak 600 of 1000). a0 runs; a1 is held. With
    # park_after_steps=2, a0's third call (2 steps done, a1 has 0) is held instead and a1 runs;
    # a0 comes back, fewest steps first, once a1 ends, on its own worker.
    adm = AdmissionControlSettings(enabled=True, default_footprint_tokens=600, park_after_steps=2)
    s, clock = _sched(n=1, cap=1000, admission=adm)
    assert isinstance(s.handle(_call("a0", 0, tokens=100))[0], Dispatch)
    [held] = s.handle(_call("a1", 0))
    assert isinstance(held, Hold) and held.reason == "kv_footprint"
    s.handle(_finish("a0", 0, W0, prompt=100, out=50))
    assert isinstance(s.handle(_call("a0", 1, tokens=200))[0], Dispatch)  # 1 step ahead: runs on
    s.handle(_finish("a0", 1, W0, prompt=200, out=50))
    clock.advance(1.0)
    out = s.handle(_call("a0", 2, tokens=300))
    assert [type(a) for a in out] == [Hold] and out[0].reason == "park"  # type: ignore[union-attr]
    assert s.held == ("a1", "a0") and s.counters["hold/park"] == 1
    clock.advance(0.1)
    rel = [a for a in s.epoch() if isinstance(a, (Release, Dispatch))]
    assert [(type(a), a.workflow_id) for a in rel] == [(Release, "a1"), (Dispatch, "a1")]
    assert s.held == ("a0",)
    s.handle(_finish("a1", 0, W0, prompt=1000, out=50))
    clock.advance(2.0)
    out = s.handle(WorkflowFinished(workflow_id=WorkflowId("a1")))
    rel = [a for a in out if isinstance(a, (Release, Dispatch))]
    assert [(type(a), a.workflow_id) for a in rel] == [(Release, "a0"), (Dispatch, "a0")]
    assert rel[0].held_s == pytest.approx(2.1)  # type: ignore[union-attr]
    assert rel[1].call_id == "a0:2" and rel[1].worker_id == W0  # type: ignore[union-attr]
    assert s.workflow(WorkflowId("a0")).steps_done == 2  # its record carried on; not admitted anew


def test_an_empty_worker_admits_a_workflow_predicted_larger_than_its_pool() -> None:
    # Issue 13, live sizing: a fresh router predicts the 16,384-token default footprint against
    # 2,560-token pools. Before, every workflow was held for ever; now each empty worker takes one,
    # and the next waits until one ends (nothing else is bound there then).
    s, _ = _sched(n=2, cap=2560, admission=AdmissionControlSettings(enabled=True))
    assert isinstance(s.handle(_call("a", 0, tokens=600))[0], Dispatch)
    assert isinstance(s.handle(_call("b", 0, tokens=600))[0], Dispatch)
    [held] = s.handle(_call("c", 0, tokens=600))
    assert isinstance(held, Hold) and held.reason == "kv_footprint"
    s.handle(_finish("a", 0, W0, prompt=600, out=8))
    out = s.handle(WorkflowFinished(workflow_id=WorkflowId("a")))
    assert [type(a) for a in out if isinstance(a, (Release, Dispatch))] == [Release, Dispatch]


def test_no_parking_by_default_and_while_held_workflows_fit() -> None:
    adm = AdmissionControlSettings(enabled=True, default_footprint_tokens=600)
    s, _ = _sched(n=1, cap=1000, admission=adm)
    s.handle(_call("a0", 0, tokens=100))
    s.handle(_call("a1", 0))
    for step in range(4):
        s.handle(_finish("a0", step, W0, prompt=100 + step, out=10))
        assert isinstance(s.handle(_call("a0", step + 1, tokens=200 + step))[0], Dispatch)
    with pytest.raises(InvalidSettings):
        AdmissionControlSettings(enabled=True, park_after_steps=-1)


def test_parking_waits_until_the_least_served_held_workflow_has_waited_long_enough() -> None:
    adm = AdmissionControlSettings(
        enabled=True, default_footprint_tokens=600, park_after_steps=1, park_after_held_s=10.0
    )
    s, clock = _sched(n=1, cap=1000, admission=adm)
    s.handle(_call("a0", 0, tokens=100))
    s.handle(_call("a1", 0))  # held from t=0
    s.handle(_finish("a0", 0, W0, prompt=100, out=10))
    clock.advance(9.0)
    assert isinstance(s.handle(_call("a0", 1, tokens=200))[0], Dispatch)  # a1 held 9 s < 10 s
    s.handle(_finish("a0", 1, W0, prompt=200, out=10))
    clock.advance(1.0)
    [park] = s.handle(_call("a0", 2, tokens=300))
    assert isinstance(park, Hold) and park.reason == "park"
    with pytest.raises(InvalidSettings):
        AdmissionControlSettings(enabled=True, park_after_held_s=-1.0)
