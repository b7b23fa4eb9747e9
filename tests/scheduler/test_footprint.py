"""Admission control's predicted footprints: the mean peak per agent type, shared heads counted once."""

from __future__ import annotations

from collections.abc import Mapping

from saga_sgl.clock import ManualClock
from saga_sgl.policy.views import AgentType, TenantId, WorkerId, WorkerView, WorkflowId
from saga_sgl.scheduler import (
    AdmissionControlSettings,
    CallArrived,
    Dispatch,
    Hold,
    SchedulerSettings,
    WorkerLoads,
    WorkflowScheduler,
    WorkflowSubmitted,
)
from saga_sgl.scheduler.footprint import FootprintModel

CODER = AgentType("coder")


def test_the_footprint_is_the_mean_peak_then_a_slow_ema() -> None:
    m = FootprintModel(alpha=0.1, default_tokens=16_384)
    assert m.predict(CODER) == 16_384
    peaks = [10_000, 50_000, 30_000, 10_000]
    for p in peaks:
        m.observe(CODER, p)
    # A plain EMA of weight 0.1 would stand at 0.9^3 x 10K + ... = 17,290 after these four; the
    # running mean is the mean (the first finishes weigh as much as the last ones).
    assert m.predict(CODER) == sum(peaks) // len(peaks)
    for _ in range(200):
        m.observe(CODER, 20_000)
    assert m.predict(CODER) == 20_000  # past 1/alpha finishes it follows the workload again
    assert m.predict(AgentType("browser")) == 20_000  # unseen type: the overall model


class _Prefixes:
    """The host's prefix index as the scheduler asks it (a lookup table: no decisions)."""

    def __init__(self, matches: Mapping[WorkerId, int]) -> None:
        self._matches = matches

    def prefix_match_tokens(self, call_id: str) -> Mapping[WorkerId, int]:
        return self._matches

    def holds_workflow_kv(self, call_id: str, workflow_id: WorkflowId, worker_id: WorkerId) -> bool:
        return True


def _admitted(shared_once: bool) -> list[object]:
    w0 = WorkerId("w0")
    adm = AdmissionControlSettings(
        enabled=True, default_footprint_tokens=30_000, shared_prefix_once=shared_once
    )
    s = WorkflowScheduler(
        SchedulerSettings(admission=adm, fairness=None, stealing=None),
        clock=ManualClock(),
        prefix_lookup=_Prefixes({w0: 10_000}),  # every first prompt: a 10K system prompt cached on w0
    )
    view = WorkerView(
        worker_id=w0, num_running_reqs=0, num_waiting_reqs=0, kv_used_tokens=0, kv_capacity_tokens=100_000
    )
    s.handle(WorkerLoads(workers=(view,)))
    out: list[object] = []
    for i in range(4):
        wf = WorkflowId(f"a{i}")
        s.handle(WorkflowSubmitted(workflow_id=wf, tenant_id=TenantId("t"), agent_type=CODER))
        [act] = s.handle(CallArrived(call_id=f"{wf}:0", workflow_id=wf, prompt_tokens=12_000, step=0))
        out.append(act)
    return out


def test_a_shared_system_prompt_counts_once_per_worker_when_asked() -> None:
    # Predicted peaks of 30K in a 100K pool: three fit, the fourth is held (120K).
    plain = _admitted(False)
    assert [type(a) for a in plain] == [Dispatch, Dispatch, Dispatch, Hold]
    # Their 10K system prompt is one copy in the radix cache: 3 x 20K + 10K = 70K, and the fourth's
    # 20K still fits.
    once = _admitted(True)
    assert [type(a) for a in once] == [Dispatch] * 4
