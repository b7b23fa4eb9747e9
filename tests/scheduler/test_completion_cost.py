"""The scheduler places new workflows by expected completion time in seconds, at the host's rates."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.policy.cost_model import LinearCostModel
from saga_sgl.policy.decisions import PlacementReason
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId
from saga_sgl.scheduler import (
    CallAdmitted,
    CallArrived,
    CallFinished,
    Dispatch,
    SchedulerSettings,
    WorkerLoads,
    WorkflowScheduler,
)

W0, W1 = WorkerId("w0"), WorkerId("w1")


class _Prefixes:
    """The router's prefix index as the scheduler asks it (a lookup table: no decisions)."""

    def __init__(self) -> None:
        self.matches: dict[str, Mapping[WorkerId, int]] = {}

    def prefix_match_tokens(self, call_id: str) -> Mapping[WorkerId, int]:
        return self.matches.get(call_id, {})

    def holds_workflow_kv(self, call_id: str, workflow_id: WorkflowId, worker_id: WorkerId) -> bool:
        return True


def _worker(wid: WorkerId, rate: float | None) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        num_running_reqs=0,
        num_waiting_reqs=0,
        kv_used_tokens=0,
        kv_capacity_tokens=100_000,
        max_running_reqs=8,
        prefill_tokens_per_s=rate,
    )


def _sched(rate: float | None, **settings: object) -> tuple[WorkflowScheduler, ManualClock, _Prefixes]:
    clock = ManualClock()
    prefixes = _Prefixes()
    s = WorkflowScheduler(
        SchedulerSettings(fairness=None, stealing=None, **settings),  # type: ignore[arg-type]
        clock=clock,
        prefix_lookup=prefixes,
    )
    s.handle(WorkerLoads(workers=(_worker(W0, rate), _worker(W1, rate))))
    return s, clock, prefixes


def _arrive(s: WorkflowScheduler, wf: str, tokens: int) -> Dispatch:
    [d] = s.handle(CallArrived(call_id=f"{wf}:0", workflow_id=WorkflowId(wf), prompt_tokens=tokens, step=0))
    assert isinstance(d, Dispatch)
    return d


def test_a_new_workflow_joins_the_worker_holding_its_prefix_while_the_queue_there_costs_less() -> None:
    # CPU-like worker: 1,000 tokens/s of pre-fill measured by the host. A coding agent's 2,000-token
    # prompt shares 1,900 tokens with what w0 holds: 0.1 s to pre-fill there, 2 s on w1.
    s, _, prefixes = _sched(rate=1000.0)
    prefixes.matches["first:0"] = {}
    first = _arrive(s, "first", 2000)
    assert first.reason == PlacementReason.COMPLETION_COST
    home = first.worker_id
    other = W1 if home == W0 else W0
    prefixes.matches["second:0"] = {home: 1900}
    second = _arrive(s, "second", 2000)
    # The first call is still out on ``home`` (about 2 s of pre-fill), yet sharing it costs less
    # than pre-filling 1,900 more tokens elsewhere: the weighted score went to the idle worker.
    assert second.worker_id == home
    weighted, _, wp = _sched(rate=1000.0, policy_config={"placement": {"new_workflow": "admission"}})
    wp.matches["first:0"] = {}
    wfirst = _arrive(weighted, "first", 2000)
    wp.matches["second:0"] = {wfirst.worker_id: 1900}
    assert _arrive(weighted, "second", 2000).worker_id != wfirst.worker_id
    # A third agent whose prompt is cached nowhere goes to the idle worker.
    prefixes.matches["third:0"] = {}
    assert _arrive(s, "third", 2000).worker_id == other


def test_service_estimates_follow_the_calls_and_learn_output_lengths() -> None:
    s, clock, _ = _sched(rate=1000.0)
    d = _arrive(s, "a", 3000)
    [est] = s.service.outstanding(clock.now_s())[d.worker_id]
    decode = LinearCostModel().decode_time_s(
        s.service.output_tokens(s.workflow(WorkflowId("a")).agent_type), 3000
    )
    assert est == pytest.approx(3.0 + decode)  # 3,000 uncached tokens at the measured 1,000 tok/s
    s.handle(CallAdmitted(call_id="a:0", workflow_id=WorkflowId("a"), worker_id=d.worker_id))
    clock.advance(1.0)
    [left] = s.service.outstanding(clock.now_s())[d.worker_id]
    assert left == pytest.approx(est - 1.0)
    s.handle(
        CallFinished(
            call_id="a:0",
            workflow_id=WorkflowId("a"),
            worker_id=d.worker_id,
            prompt_tokens=3000,
            output_tokens=40,
        )
    )
    assert s.service.outstanding(clock.now_s()) == {}
    assert s.service.output_tokens(s.workflow(WorkflowId("a")).agent_type) == 40


def test_without_a_measured_rate_the_cost_model_prices_the_prefill() -> None:
    s, clock, _ = _sched(rate=None)
    d = _arrive(s, "a", 3000)
    [est] = s.service.outstanding(clock.now_s())[d.worker_id]
    cost = LinearCostModel()
    agent = s.workflow(WorkflowId("a")).agent_type
    assert est == pytest.approx(
        cost.prefill_time_s(3000, 0) + cost.decode_time_s(s.service.output_tokens(agent), 3000)
    )


def test_an_unmeasured_worker_is_priced_at_the_slowest_rate_measured_elsewhere() -> None:
    clock = ManualClock()
    s = WorkflowScheduler(
        SchedulerSettings(fairness=None, stealing=None), clock=clock, prefix_lookup=_Prefixes()
    )
    s.handle(WorkerLoads(workers=(_worker(W0, 500.0), _worker(W1, None))))
    d = _arrive(s, "a", 1000)
    [est] = s.service.outstanding(clock.now_s())[d.worker_id]
    agent = s.workflow(WorkflowId("a")).agent_type
    # 1,000 tokens at 500 tok/s on either worker, not at the cost model's GPU rate.
    assert est == pytest.approx(2.0 + LinearCostModel().decode_time_s(s.service.output_tokens(agent), 1000))
