"""Work stealing prices the KV pressure a move adds to the thief (issue 13).

Sizes of the live benchmark: 2,560-token pools, coding agents with a 592-token shared system prompt
and browser agents with a 391-token one, ~1,200-token footprints, 6 calls per workflow. Workers
pre-fill 1,000 tokens/s (measured, as the live router requires), so the moved workflow's 900-token
context costs 0.9 s to rebuild and the AND guard's 2x hysteresis asks 1.8 s of wait saved.
"""

from __future__ import annotations

from dataclasses import replace

from factories import make_worker, make_workflow

from saga_sgl.policy.placement.completion_cost import kv_overflow_tokens
from saga_sgl.policy.stealing import Residency, StealSettings, WorkStealing
from saga_sgl.policy.views import AgentType, CallView, WorkerView, WorkflowState, WorkflowView

NOW = 10.0
POOL = 2560
RATE = 1000.0
CODING, BROWSER = AgentType("coding"), AgentType("browser")
HEAD = {CODING: 592, BROWSER: 391}


def _agent(
    wid: str, worker: str, kind: AgentType, *, state: WorkflowState = WorkflowState.TOOL_GAP
) -> WorkflowView:
    wf = make_workflow(
        wid, worker_id=worker, state=state, cached_prefix_tokens=900, tool_gap_ends_at_s=NOW + 60.0
    )
    return replace(
        wf, agent_type=kind, shared_prefix_tokens=HEAD[kind], footprint_tokens=1200, remaining_calls=5.0
    )


def _thief(kv_used: int = 500) -> WorkerView:
    w = make_worker("B", kv_used_tokens=kv_used, kv_capacity_tokens=POOL, idle_since_s=NOW - 1.0)
    return replace(w, prefill_tokens_per_s=RATE)


def _victim(waiting: int) -> WorkerView:
    w = make_worker("A", running=2, waiting=waiting, kv_used_tokens=2400, kv_capacity_tokens=POOL)
    return replace(w, prefill_tokens_per_s=RATE)


def _flows(thief_kind: AgentType) -> list[WorkflowView]:
    """A queued coding agent (the candidate) and two more on A; two agents of ``thief_kind`` on B."""
    return [
        _agent("mover", "A", CODING, state=WorkflowState.QUEUED),
        _agent("c1", "A", CODING, state=WorkflowState.RUNNING),
        _agent("c2", "A", CODING, state=WorkflowState.RUNNING),
        _agent("b1", "B", thief_kind, state=WorkflowState.RUNNING),
        _agent("b2", "B", thief_kind, state=WorkflowState.RUNNING),
    ]


def _plan(waiting: int, thief_kind: AgentType) -> list[str]:
    ws = WorkStealing(StealSettings(require_measured_rate=True))
    return [s.workflow_id for s in ws.plan([_thief(), _victim(waiting)], _flows(thief_kind), NOW)]


def test_price_is_placements_overflow_of_the_thiefs_pool() -> None:
    flows = _flows(BROWSER)
    mover, thief, victim = flows[0], _thief(), _victim(2)
    residency = Residency.of(flows)
    # B holds two browser agents: their own 809 tokens each plus the browser head once.
    resident = residency.without(mover)
    assert resident["B"] == 2 * (1200 - 391) + 391
    assert resident["A"] == 2 * (1200 - 592) + 592  # the mover left out, the coding head kept
    assert residency.head_match(mover, "B") == 0 and residency.head_match(mover, "A") == 592
    # The same overflow function placement prices: the mover's 1,200 tokens push B past its pool.
    call = CallView(
        workflow_id=mover.workflow_id, prompt_tokens=0, predicted_kv_tokens=1200,
        prefix_match_tokens={"B": 0, "A": 592}, resident_kv_tokens=resident,
    )
    over = kv_overflow_tokens(call, thief, [thief, victim])
    assert over == resident["B"] + 1200 - POOL > 0
    assert kv_overflow_tokens(call, victim, [thief, victim]) == 0  # staying fits A
    kv_s = WorkStealing().kv_price_s(mover, thief, victim, [thief, victim], residency, RATE)
    assert kv_s == over * (5.0 - 1.0) / RATE


def test_steal_onto_a_full_pool_without_the_head_is_refused_when_the_wait_saved_is_smaller() -> None:
    # A's queue: 2 waiting behind 2 running = 2.0 s expected wait >= 2 x 0.9 s rebuild: the old rule
    # stole; the 649 tokens it pushes past B's 2,560 pool (two browser agents: 2,009 resident) at each
    # of 4 later calls, 2.6 s, are not paid for.
    assert _plan(2, BROWSER) == []
    ws = WorkStealing(StealSettings(require_measured_rate=True))
    mover, thief, victim = _flows(BROWSER)[0], _thief(), _victim(2)
    assert ws.refusal(mover, 2.0, NOW, RATE) is None  # without the KV price it would be taken
    residency = Residency.of(_flows(BROWSER))
    why = ws.move_refusal(mover, thief, victim, 2.0, NOW, RATE, [thief, victim], residency)
    assert why == "kv_overflow" and ws.kv_refused == {"mover"}


def test_steal_is_still_taken_when_the_victims_wait_is_long() -> None:
    # 8 waiting behind 2 running: 8 s of wait saved pays 1.8 s hysteresis + 2.6 s overflow.
    assert _plan(8, BROWSER) == ["mover"]


def test_a_thief_that_holds_the_head_overflows_less_and_gets_the_workflow() -> None:
    # Same wait (2 s) but B runs coding agents: the mover's head is there, it adds 608 tokens, not
    # 1,200, and B's pool (2 x 608 + 592) has room for them.
    assert _plan(2, CODING) == ["mover"]


def test_revalidate_applies_the_same_price() -> None:
    ws = WorkStealing(StealSettings(require_measured_rate=True))
    steal = ws.plan([_thief(), _victim(8)], _flows(BROWSER), NOW)[0]
    assert ws.revalidate(steal, [_thief(), _victim(8)], _flows(BROWSER), NOW)
    # The victim's queue shrank to 2 by the time the steal is applied: the overflow is no longer paid.
    assert not ws.revalidate(steal, [_thief(), _victim(2)], _flows(BROWSER), NOW)


def test_no_footprint_or_no_later_call_means_no_kv_price() -> None:
    flows = _flows(BROWSER)
    ws, thief, victim = WorkStealing(), _thief(), _victim(2)
    for mover in (replace(flows[0], footprint_tokens=0), replace(flows[0], remaining_calls=1.0)):
        assert ws.kv_price_s(mover, thief, victim, [thief, victim], Residency.of(flows), RATE) == 0.0


def test_the_wait_a_steal_saves_is_priced_at_the_measured_call_time() -> None:
    # Issue 13: the wait estimate used the 2 s GPU default; live CPU calls took about 1.6 s.
    from saga_sgl.clock import ManualClock
    from saga_sgl.policy.views import WorkflowId
    from saga_sgl.scheduler import (
        CallArrived,
        CallFinished,
        SchedulerSettings,
        WorkerLoads,
        WorkflowScheduler,
    )

    ws = WorkStealing()
    victim = _victim(4)  # 4 waiting behind 2 running
    assert ws.queue_delay_s(victim) == 2 * StealSettings().mean_call_s
    ws.observe_call_s(0.8)
    assert ws.queue_delay_s(victim) == 2 * 0.8
    ws.observe_call_s(None)  # nothing measured: the setting again
    assert ws.mean_call_s() == StealSettings().mean_call_s
    # The scheduler measures call durations (dispatch to answer) and hands the mean to its stealer.
    clock = ManualClock()
    s = WorkflowScheduler(SchedulerSettings(), clock=clock)
    s.handle(WorkerLoads(workers=(_thief(), victim)))
    assert s.service.mean_call_s() is None
    [d] = s.handle(CallArrived(call_id="x:0", workflow_id=WorkflowId("x"), prompt_tokens=100, step=0))
    clock.advance(1.25)
    s.handle(CallFinished(call_id="x:0", workflow_id=WorkflowId("x"), worker_id=d.worker_id,  # type: ignore[attr-defined]
                          prompt_tokens=100, output_tokens=8))
    assert s.service.mean_call_s() == 1.25
    clock.advance(0.2)
    s.epoch()
    assert s.stealing is not None and s.stealing.mean_call_s() == 1.25  # type: ignore[attr-defined]
