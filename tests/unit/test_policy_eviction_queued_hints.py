"""The scheduler's eviction hints for a workflow whose next call is already waiting (cache_hints)."""

from __future__ import annotations

from saga_sgl.clock import ManualClock
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId, WorkflowState
from saga_sgl.scheduler import (
    CallAdmitted,
    CallArrived,
    CallFinished,
    Dispatch,
    SchedulerSettings,
    ToolStarted,
    WorkerLoads,
    WorkflowScheduler,
)


def _worker(wid: str) -> WorkerView:
    return WorkerView(
        worker_id=WorkerId(wid),
        num_running_reqs=0,
        num_waiting_reqs=0,
        kv_used_tokens=0,
        kv_capacity_tokens=100_000,
        max_running_reqs=100,
    )


def test_a_queued_call_makes_its_workflows_reuse_known_not_predicted() -> None:
    """In its tool gap the workflow's P is a prediction; once its next call is queued at the
    worker the read is known (P = 1, due since the call was queued); once running, no next use."""
    clock = ManualClock()
    s = WorkflowScheduler(SchedulerSettings(), clock=clock)
    s.handle(WorkerLoads(workers=(_worker("w0"), _worker("w1"))))
    wf = WorkflowId("a")
    [d] = s.handle(CallArrived(call_id="a:0", workflow_id=wf, prompt_tokens=1000, step=0))
    assert isinstance(d, Dispatch)
    s.handle(CallAdmitted(call_id="a:0", workflow_id=wf, worker_id=d.worker_id))
    s.handle(
        CallFinished(
            call_id="a:0", workflow_id=wf, worker_id=d.worker_id, prompt_tokens=1000, output_tokens=100
        )
    )
    s.handle(ToolStarted(workflow_id=wf, tool="web"))
    # The gap model's prediction (cold start: P = 1 with no residence time yet); stand in for a
    # learned, unlikely return, which the queued call must override.
    s.workflow(wf).reuse_prob = 0.3
    gap = s.cache_hints(wf)
    assert gap is not None and gap.state is WorkflowState.TOOL_GAP and gap.reuse_prob == 0.3
    clock.advance(40.0)
    [d2] = s.handle(CallArrived(call_id="a:1", workflow_id=wf, prompt_tokens=1200, step=1))
    assert isinstance(d2, Dispatch)
    queued = s.cache_hints(wf)
    assert queued is not None and queued.state is WorkflowState.QUEUED
    assert queued.reuse_prob == 1.0 and queued.next_use_at_s == clock.now_s()
    s.handle(CallAdmitted(call_id="a:1", workflow_id=wf, worker_id=d2.worker_id))
    running = s.cache_hints(wf)
    assert running is not None and running.state is WorkflowState.RUNNING and running.next_use_at_s is None
