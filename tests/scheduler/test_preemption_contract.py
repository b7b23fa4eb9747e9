"""The scheduler -> host contract of preemption, as the live router carries it out.

The router learns who runs from ``CallAdmitted`` (inferred from ``/v1/loads``, with ``preemptible``
False for a streamed call), carries out ``Preempt`` by aborting the call and re-sending it to the same
worker, and reports the re-sent call's answer as the call's ``CallFinished``.
"""

from __future__ import annotations

from saga_sgl.clock import ManualClock
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId, WorkflowState
from saga_sgl.scheduler import (
    CallAdmitted,
    CallArrived,
    CallFinished,
    Preempt,
    SchedulerSettings,
    WorkerLoads,
    WorkflowScheduler,
    WorkflowSubmitted,
)

W0 = WorkerId("w0")
SHORT, LONG = WorkflowId("short"), WorkflowId("long")


def _scheduler(**settings: object) -> tuple[WorkflowScheduler, ManualClock]:
    settings.setdefault("max_preemptions_per_call", 1)  # the live router's setting
    clock = ManualClock()
    s = WorkflowScheduler(SchedulerSettings(**settings), clock=clock)  # type: ignore[arg-type]
    view = WorkerView(worker_id=W0, num_running_reqs=0, num_waiting_reqs=0, kv_used_tokens=0,
                      kv_capacity_tokens=100_000, max_running_reqs=1)
    s.handle(WorkerLoads(workers=(view,)))
    # Two workflows of one tenant with different urgency (their AEGs differ in remaining work).
    s.handle(WorkflowSubmitted(workflow_id=SHORT, tool_hints=("finish",)))
    s.handle(WorkflowSubmitted(workflow_id=LONG, tool_hints=("code",) * 30 + ("finish",)))
    for wf in (SHORT, LONG):
        s.handle(CallArrived(call_id=f"{wf}:0", workflow_id=wf, prompt_tokens=500, step=0))
    clock.advance(0.1)
    s.epoch()
    return s, clock


def _urgency_order(s: WorkflowScheduler) -> tuple[WorkflowId, WorkflowId]:
    urgency = s.fair_share.urgency
    lo, hi = sorted((SHORT, LONG), key=lambda w: urgency[w])
    assert urgency[hi] > urgency[lo] > 0
    return lo, hi


def _finished(wf: WorkflowId, output_tokens: int) -> CallFinished:
    return CallFinished(call_id=f"{wf}:0", workflow_id=wf, worker_id=W0, prompt_tokens=500,
                        output_tokens=output_tokens)


def _preempts(s: WorkflowScheduler) -> list[Preempt]:
    return [a for a in s.epoch() if isinstance(a, Preempt)]


def test_a_running_streamed_call_is_never_preempted() -> None:
    s, clock = _scheduler()
    lo, _ = _urgency_order(s)
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0, preemptible=False))
    for _ in range(10):
        clock.advance(0.5)
        assert _preempts(s) == []
    assert s.workflow(lo).state is WorkflowState.RUNNING


def test_a_preempted_call_waits_at_its_worker_under_its_own_id_and_its_answer_finishes_it() -> None:
    s, clock = _scheduler()
    lo, hi = _urgency_order(s)
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
    clock.advance(0.6)
    [p] = _preempts(s)
    assert (p.call_id, p.worker_id, p.beneficiary) == (f"{lo}:0", W0, hi)
    rec = s.workflow(lo)
    # Back in the worker's waiting queue in the bookkeeping: same call, same worker (the router
    # re-sends it there), counted once.
    assert (rec.state, rec.call_id, rec.call_worker, rec.call_preemptions) == (
        WorkflowState.QUEUED, f"{lo}:0", W0, 1
    )
    # The beneficiary runs and finishes; the re-sent call runs and its answer finishes the step.
    s.handle(CallAdmitted(call_id=f"{hi}:0", workflow_id=hi, worker_id=W0))
    s.handle(_finished(hi, 5))
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
    s.handle(_finished(lo, 50))
    assert rec.state is WorkflowState.TOOL_GAP and rec.steps_done == 1 and rec.call_id is None


def test_a_call_is_preempted_at_most_max_preemptions_per_call_times() -> None:
    for cap in (1, 2, None):
        s, clock = _scheduler(max_preemptions_per_call=cap)
        lo, _ = _urgency_order(s)
        applied = 0
        for _ in range(6):
            # The victim is seen running again (re-sent); the beneficiary keeps waiting behind it.
            s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
            clock.advance(0.6)
            applied += len(_preempts(s))
        # None (the simulator's default: its retract keeps a call's progress): every time.
        assert applied == (cap if cap is not None else 6)
        assert s.workflow(lo).call_preemptions == applied


def test_a_new_call_of_the_workflow_starts_with_a_fresh_bound() -> None:
    s, clock = _scheduler()
    lo, _ = _urgency_order(s)
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
    clock.advance(0.6)
    assert len(_preempts(s)) == 1
    s.handle(_finished(lo, 5))
    s.handle(CallArrived(call_id=f"{lo}:1", workflow_id=lo, prompt_tokens=600, step=1))
    assert s.workflow(lo).call_preemptions == 0


def test_preemption_off_plans_none() -> None:
    s, clock = _scheduler(preemption=False)
    lo, _ = _urgency_order(s)
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
    clock.advance(2.0)
    assert _preempts(s) == []


def test_with_preempt_only_if_it_pays_a_call_about_to_finish_is_not_preempted() -> None:
    # The worker pre-fills 100 tokens/s (measured): re-prefilling the holder's 500-token prompt
    # costs 5 s, more than its call has left (its estimate: 5 s of pre-fill + decode, half of it
    # elapsed): no preemption. The paper's rule preempts it.
    def run(pays: bool, placement: str = "completion_cost") -> list[Preempt]:
        clock = ManualClock()
        config = {"fairness": {"preempt_only_if_it_pays": pays}, "placement": {"new_workflow": placement}}
        s = WorkflowScheduler(SchedulerSettings(policy_config=config), clock=clock)
        view = WorkerView(worker_id=W0, num_running_reqs=0, num_waiting_reqs=0, kv_used_tokens=0,
                          kv_capacity_tokens=100_000, max_running_reqs=1, prefill_tokens_per_s=100.0)
        s.handle(WorkerLoads(workers=(view,)))
        s.handle(WorkflowSubmitted(workflow_id=SHORT, tool_hints=("finish",)))
        s.handle(WorkflowSubmitted(workflow_id=LONG, tool_hints=("code",) * 30 + ("finish",)))
        for wf in (SHORT, LONG):
            s.handle(CallArrived(call_id=f"{wf}:0", workflow_id=wf, prompt_tokens=500, step=0))
        clock.advance(0.1)
        s.epoch()
        lo, _ = _urgency_order(s)
        s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
        remaining = s.service.remaining_s(f"{lo}:0", clock.now_s())
        assert remaining is not None and remaining < 5.0 + 2.0  # pre-fill 5 s + a short decode
        clock.advance(2.6)
        return _preempts(s)

    assert len(run(pays=False)) == 1
    assert run(pays=True) == []
    assert run(pays=True, placement="admission") == []  # the estimates do not need the placement


def test_preempt_only_if_blocked_spares_a_holder_whose_worker_has_room_for_the_waiter() -> None:
    """With ``preempt_only_if_blocked`` a waiter counts as blocked only while its worker has no slot
    or KV for it: one free slot and room -> no preemption; the worker reports its KV full -> the
    same pair preempts."""
    s, clock = _scheduler(preempt_only_if_blocked=True)
    lo, hi = _urgency_order(s)
    s.handle(CallAdmitted(call_id=f"{lo}:0", workflow_id=lo, worker_id=W0))
    # The running-request cap (1) is reached by the scheduler's own count: blocked, preempts.
    clock.advance(0.6)
    assert [p.beneficiary for p in _preempts(s)] == [hi]
    s2, clock2 = _scheduler(preempt_only_if_blocked=True)
    roomy = WorkerView(worker_id=W0, num_running_reqs=1, num_waiting_reqs=1, kv_used_tokens=1_000,
                       kv_capacity_tokens=100_000, max_running_reqs=4)
    s2.handle(WorkerLoads(workers=(roomy,)))
    lo2, _ = _urgency_order(s2)
    s2.handle(CallAdmitted(call_id=f"{lo2}:0", workflow_id=lo2, worker_id=W0))
    for _ in range(4):
        clock2.advance(0.6)
        assert _preempts(s2) == []  # a free slot and 99K free tokens for a 500-token prompt
    full = WorkerView(worker_id=W0, num_running_reqs=1, num_waiting_reqs=1, kv_used_tokens=99_800,
                      kv_capacity_tokens=100_000, max_running_reqs=4)
    s2.handle(WorkerLoads(workers=(full,)))
    clock2.advance(0.6)
    assert len(_preempts(s2)) == 1
