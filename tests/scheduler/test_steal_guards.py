"""Steal guards: no steal of a workflow whose call is already at a worker, none into a tool gap too
short to pre-fill, none without a queueing gain that beats the rebuild (with a margin), and no
ping-pong. Policy-level cases on hand-made views; scheduler-level cases through events, as the
router hosts it (SGLang cannot take a forwarded request back)."""

from __future__ import annotations

import dataclasses

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.stealing import StealSettings, WorkStealing
from saga_sgl.policy.views import TenantId, WorkerId, WorkerView, WorkflowId, WorkflowState, WorkflowView
from saga_sgl.scheduler import (
    CallAdmitted,
    CallArrived,
    CallFinished,
    Dispatch,
    Prefill,
    Rebind,
    Redirect,
    SchedulerSettings,
    ToolStarted,
    WorkerLoads,
    WorkflowScheduler,
    WorkflowSubmitted,
)

NOW = 10.0
HOT, COLD = WorkerId("hot"), WorkerId("cold")


def worker(
    wid: WorkerId, *, running: int = 0, waiting: int = 0, used: int = 0, idle: bool = False
) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        kv_used_tokens=used,
        kv_capacity_tokens=100_000,
        max_running_reqs=100,
        idle_since_s=0.0 if idle else None,
    )


def gap_workflow(
    name: str, *, tokens: int, gap_left_s: float | None, at_worker: bool = False
) -> WorkflowView:
    return WorkflowView(
        workflow_id=WorkflowId(name),
        tenant_id=TenantId("t"),
        worker_id=HOT,
        state=WorkflowState.TOOL_GAP,
        admitted_at_s=0.0,
        cached_prefix_tokens=tokens,
        tool_gap_ends_at_s=None if gap_left_s is None else NOW + gap_left_s,
        call_at_worker=at_worker,
    )


COLD_IDLE = worker(COLD, idle=True)
QUEUE = worker(HOT, running=50, waiting=50, used=90_000)
"""Victim with a waiting queue: 50/50 x mean_call_s (2 s) = 2 s of expected wait to escape."""
NO_QUEUE = worker(HOT, running=90, waiting=0, used=90_000)
"""Victim as loaded (ratio trigger) but with an empty waiting queue: a returning call starts at once."""


def test_gap_guard_needs_the_rest_of_the_gap_to_cover_the_prefill_with_a_margin() -> None:
    ws = WorkStealing()  # 45,000 tokens/s: 9,000 tokens take 0.2 s; margin 1.5 -> 0.3 s of gap needed
    for left, stolen in ((0.29, False), (0.31, True), (None, False)):
        wf = gap_workflow("wf", tokens=9_000, gap_left_s=left)
        steals = ws.plan([COLD_IDLE, QUEUE], [wf], NOW)
        assert bool(steals) is stolen, left
        assert ws.refusal(wf, 2.0, NOW) == (None if stolen else "gap_too_short")


def test_no_steal_without_a_queue_to_escape_however_unbalanced_the_load() -> None:
    ws = WorkStealing()
    wf = gap_workflow("wf", tokens=100, gap_left_s=10.0)
    assert ws.plan([COLD_IDLE, NO_QUEUE], [wf], NOW) == []
    assert ws.refusal(wf, 0.0, NOW) == "no_gain"
    assert [s.workflow_id for s in ws.plan([COLD_IDLE, QUEUE], [wf], NOW)] == ["wf"]


def test_the_gain_must_beat_the_rebuild_by_the_hysteresis_margin() -> None:
    ws = WorkStealing()  # min_gain_ratio 2: a 2 s gain pays for at most 1 s of rebuild (45,000 tokens)
    assert ws.plan([COLD_IDLE, QUEUE], [gap_workflow("big", tokens=46_000, gap_left_s=60.0)], NOW) == []
    ok = ws.plan([COLD_IDLE, QUEUE], [gap_workflow("fits", tokens=44_000, gap_left_s=60.0)], NOW)
    assert [s.workflow_id for s in ok] == ["fits"]
    # A cheap workflow behind an unaffordable one is still found on the same victim.
    mixed = [
        gap_workflow("big", tokens=46_000, gap_left_s=60.0),
        gap_workflow("small", tokens=500, gap_left_s=60.0),
    ]
    assert [s.workflow_id for s in ws.plan([COLD_IDLE, QUEUE], mixed, NOW)] == ["small"]
    # The thief's own queue counts against the gain.
    queued_thief = worker(COLD, running=10, waiting=10)  # lightly loaded, but as long a wait (2 s)
    assert WorkStealing(StealSettings(guard="or")).plan([queued_thief, QUEUE], mixed, NOW) == []


def test_a_call_already_at_a_worker_is_never_stolen() -> None:
    ws = WorkStealing()
    wf = gap_workflow("wf", tokens=100, gap_left_s=10.0, at_worker=True)
    assert ws.plan([COLD_IDLE, QUEUE], [wf], NOW) == []
    assert ws.refusal(wf, 100.0, NOW) == "call_at_worker"


def test_settings_validate_the_guards() -> None:
    with pytest.raises(InvalidSettings, match="gap_margin"):
        StealSettings(gap_margin=0.9)
    with pytest.raises(InvalidSettings, match="min_gain_ratio"):
        StealSettings(min_gain_ratio=0.5)
    with pytest.raises(InvalidSettings, match="mean_call_s"):
        StealSettings(mean_call_s=0.0)


# --- through the scheduler -----------------------------------------------------------------------


def _scheduler(**settings: object) -> tuple[WorkflowScheduler, ManualClock]:
    clock = ManualClock(NOW)
    s = WorkflowScheduler(
        SchedulerSettings(placement="consistent_hash", **settings),  # type: ignore[arg-type]
        clock=clock,
    )
    return s, clock


def _loads(s: WorkflowScheduler, hot: WorkerView, cold: WorkerView) -> None:
    s.handle(WorkerLoads(workers=(hot, cold)))


def _first_call_done_tool_started(
    s: WorkflowScheduler, wf: str, prompt_tokens: int, output_tokens: int
) -> None:
    """The workflow's first call finished on HOT (nothing cached) and its web tool started."""
    s.handle(
        CallFinished(
            call_id=f"{wf}:0",
            workflow_id=WorkflowId(wf),
            worker_id=HOT,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            cached_tokens=0,
        )
    )
    s.handle(ToolStarted(workflow_id=WorkflowId(wf), tool="web"))


def _dispatch_to_hot(s: WorkflowScheduler, n: int) -> list[str]:
    """Calls of new workflows until ``n`` of them are bound to ``hot`` (consistent hash)."""
    on_hot: list[str] = []
    i = 0
    while len(on_hot) < n:
        name = f"wf{i}"
        [d] = [
            a
            for a in s.handle(
                CallArrived(call_id=f"{name}:0", workflow_id=WorkflowId(name), prompt_tokens=500, step=0)
            )
            if isinstance(a, Dispatch)
        ]
        if d.worker_id == HOT:
            on_hot.append(name)
        i += 1
    return on_hot


def test_router_scheduler_never_steals_a_workflow_whose_call_was_forwarded() -> None:
    """The run.sh defect: 7 of 8 steals took workflows whose first call SGLang was already running
    (0 tokens to rebuild); they ran on the victim while bound to a thief without their context."""
    s, clock = _scheduler()
    _loads(s, QUEUE, COLD_IDLE)
    on_hot = _dispatch_to_hot(s, 3)
    for _ in range(5):
        clock.advance(0.1)
        _loads(s, QUEUE, COLD_IDLE)
        assert [a for a in s.epoch() if isinstance(a, Rebind | Redirect)] == []
    assert all(s.workflow(WorkflowId(w)).worker_id == HOT for w in on_hot)
    assert s.counters["steal"] == 0


def test_a_host_that_can_redirect_steals_a_waiting_call_but_never_a_running_one() -> None:
    s, clock = _scheduler(redirect_waiting_calls=True)
    _loads(s, QUEUE, COLD_IDLE)
    running, waiting = _dispatch_to_hot(s, 2)
    s.handle(CallAdmitted(call_id=f"{running}:0", workflow_id=WorkflowId(running), worker_id=HOT))
    clock.advance(0.1)
    _loads(s, QUEUE, COLD_IDLE)
    out = s.epoch()
    moved = [a for a in out if isinstance(a, Redirect)]
    assert [(a.workflow_id, a.to_worker) for a in moved] == [(waiting, COLD)]
    assert s.workflow(WorkflowId(running)).worker_id == HOT


def test_tool_gap_steal_through_the_scheduler_and_no_steal_back() -> None:
    s, clock = _scheduler()
    _loads(s, QUEUE, COLD_IDLE)
    [wf] = _dispatch_to_hot(s, 1)
    _first_call_done_tool_started(s, wf, prompt_tokens=500, output_tokens=50)  # seconds-long predicted gap
    clock.advance(0.1)
    _loads(s, QUEUE, COLD_IDLE)
    out = s.epoch()
    assert [a.workflow_id for a in out if isinstance(a, Rebind)] == [wf]
    assert [(a.worker_id, a.prefix_tokens) for a in out if isinstance(a, Prefill)] == [(COLD, 550)]
    # The load flips (the old victim idles, the thief queues): the workflow is not stolen back.
    for _ in range(5):
        clock.advance(0.1)
        s.handle(
            WorkerLoads(workers=(worker(HOT, idle=True), worker(COLD, running=50, waiting=50, used=90_000)))
        )
        assert [a for a in s.epoch() if isinstance(a, Rebind)] == []
    assert s.workflow(WorkflowId(wf)).worker_id == COLD and s.counters["steal"] == 1


def test_no_tool_gap_steal_while_the_victims_queue_is_empty() -> None:
    s, clock = _scheduler()
    _loads(s, NO_QUEUE, COLD_IDLE)
    [wf] = _dispatch_to_hot(s, 1)
    _first_call_done_tool_started(s, wf, prompt_tokens=500, output_tokens=50)
    for _ in range(5):
        clock.advance(0.1)
        _loads(s, NO_QUEUE, COLD_IDLE)
        assert [a for a in s.epoch() if isinstance(a, Rebind)] == []


def test_the_gap_guard_uses_the_measured_prefill_rate_not_the_gpu_default() -> None:
    """Live run.sh: a CPU worker pre-filled ~2,400 tokens/s, not the H100 default's 45,000; with the
    default, two of three steals left a call waiting for its pre-fill. A measured rate decides."""
    wf = gap_workflow("wf", tokens=900, gap_left_s=0.4)  # 20 ms at 45,000/s; 0.375 s at 2,400/s
    ws = WorkStealing()
    assert [s.workflow_id for s in ws.plan([COLD_IDLE, QUEUE], [wf], NOW)] == ["wf"]
    slow_thief = dataclasses.replace(COLD_IDLE, prefill_tokens_per_s=2_400.0)
    assert ws.plan([slow_thief, QUEUE], [wf], NOW) == []  # 0.4 s < 1.5 x 0.375 s
    assert ws.rebuild_rate([slow_thief, dataclasses.replace(QUEUE, prefill_tokens_per_s=9_000.0)]) == 2_400.0
    # The scheduler passes the host's measurement through to the policy.
    s, clock = _scheduler()
    _loads(s, QUEUE, slow_thief)
    [name] = _dispatch_to_hot(s, 1)
    _first_call_done_tool_started(s, name, prompt_tokens=800, output_tokens=100)
    rec = s.workflow(WorkflowId(name))
    assert rec.next_use_at_s is not None
    rec.next_use_at_s = clock.now_s() + 0.4  # the gap's predicted end, pinned for the test
    rec.view = None
    clock.advance(0.1)
    _loads(s, QUEUE, slow_thief)
    assert [a for a in s.epoch() if isinstance(a, Rebind)] == []


def test_a_thief_that_cannot_keep_the_context_until_the_return_is_not_used() -> None:
    """The pre-filled context must fit the thief under the TTL's soft-pressure threshold (0.7 of its
    pool by default), or it is evicted before the workflow comes back: the pre-fill is wasted."""
    ws = WorkStealing()
    wf = gap_workflow("wf", tokens=10_000, gap_left_s=60.0)
    roomy = dataclasses.replace(COLD_IDLE, kv_used_tokens=50_000)  # 60,000 of 100,000 with the context
    full = dataclasses.replace(COLD_IDLE, kv_used_tokens=65_000)  # 75,000 > 70,000
    assert ws.thief_refusal(wf, roomy) is None and ws.thief_refusal(wf, full) == "thief_kv_full"
    assert [s.workflow_id for s in ws.plan([roomy, QUEUE], [wf], NOW)] == ["wf"]
    assert ws.plan([full, QUEUE], [wf], NOW) == []
    # A smaller context of the same victim still fits the nearly full thief.
    small = gap_workflow("small", tokens=1_000, gap_left_s=60.0)
    assert [s.workflow_id for s in ws.plan([full, QUEUE], [wf, small], NOW)] == ["small"]
    # Revalidation sees a thief that filled up since the plan.
    [steal] = ws.plan([roomy, QUEUE], [wf], NOW)
    assert ws.revalidate(steal, [roomy, QUEUE], [wf], NOW)
    assert not ws.revalidate(steal, [full, QUEUE], [wf], NOW)
    # A stricter setting refuses the roomy thief too.
    assert WorkStealing(StealSettings(max_thief_kv_frac=0.5)).plan([roomy, QUEUE], [wf], NOW) == []
    with pytest.raises(InvalidSettings):
        StealSettings(max_thief_kv_frac=0.0)


def test_no_steal_until_a_prefill_rate_is_measured_when_the_host_requires_one() -> None:
    """The live router: the 45,000 tokens/s GPU default would judge a CPU worker's re-prefill ~100x
    too cheap, so it takes no steal before some worker's pre-fill rate is measured."""
    ws = WorkStealing(StealSettings(require_measured_rate=True))
    wf = gap_workflow("wf", tokens=900, gap_left_s=5.0)
    assert ws.rebuild_rate([COLD_IDLE, QUEUE]) is None
    assert ws.plan([COLD_IDLE, QUEUE], [wf], NOW) == []
    measured = dataclasses.replace(QUEUE, prefill_tokens_per_s=2_400.0)
    assert [s.workflow_id for s in ws.plan([COLD_IDLE, measured], [wf], NOW)] == ["wf"]
    # The simulator's default keeps the cost model's rate.
    assert [s.workflow_id for s in WorkStealing().plan([COLD_IDLE, QUEUE], [wf], NOW)] == ["wf"]


def test_the_scheduler_prices_the_kv_a_steal_adds_to_the_thiefs_pool() -> None:
    """Issue 13: live, steals moved agents onto the worker of the other prompt head. A workflow in a
    tool gap on a queued victim is stolen onto an idle thief with room, and not onto one whose pool
    its predicted footprint would overflow at each later call (the views carry what the price
    needs: agent type, shared head, footprint, expected calls left)."""

    def run(pool: int) -> tuple[WorkflowScheduler, str, list[Rebind]]:
        hot = dataclasses.replace(QUEUE, kv_capacity_tokens=pool, kv_used_tokens=int(0.9 * pool),
                                  prefill_tokens_per_s=1_000.0)
        cold = dataclasses.replace(COLD_IDLE, kv_capacity_tokens=pool, prefill_tokens_per_s=1_000.0)
        s, clock = _scheduler()
        _loads(s, hot, cold)
        on_hot: str | None = None
        on_cold = 0
        i = 0
        while on_hot is None or on_cold < 2:  # one workflow bound to hot, two to cold
            name = f"wf{i}"
            i += 1
            s.handle(WorkflowSubmitted(workflow_id=WorkflowId(name), predicted_kv_tokens=1_200))
            [d] = [
                a
                for a in s.handle(
                    CallArrived(call_id=f"{name}:0", workflow_id=WorkflowId(name), prompt_tokens=500, step=0)
                )
                if isinstance(a, Dispatch)
            ]
            if d.worker_id == HOT and on_hot is None:
                on_hot = name
            elif d.worker_id == COLD:
                on_cold += 1
        _first_call_done_tool_started(s, on_hot, prompt_tokens=500, output_tokens=50)
        clock.advance(0.1)
        _loads(s, hot, cold)
        return s, on_hot, [a for a in s.epoch() if isinstance(a, Rebind)]

    s, wf, rebinds = run(100_000)
    assert [a.workflow_id for a in rebinds] == [wf]  # 2 s of wait saved > 2 x 0.55 s rebuild
    # 2,560-token pools: cold's two bound workflows (2 x 1,200) plus this one's 1,200 overflow it by
    # 1,040 tokens at each of 2 later calls (2.1 s at 1,000 tokens/s); staying on hot overflows nothing.
    s, wf, rebinds = run(2_560)
    assert rebinds == [] and s.counters["steal"] == 0
    view = next(v for v in s.workflow_views() if v.workflow_id == wf)
    rec = s.workflow(WorkflowId(wf))
    assert view.agent_type == rec.agent_type and view.footprint_tokens == 1_200
    assert view.remaining_calls == max(1.0, s.service.expected_calls(rec.agent_type) - 1)
