"""load(w) counts the host's in-flight calls a worker has not reported yet (live admission bursts)."""

from __future__ import annotations

import random

from saga_sgl.policy.placement.admission import AdmissionWeights, admit
from saga_sgl.policy.placement.load import LoadSettings, queue_depth, worker_load
from saga_sgl.policy.views import CallView, WorkerId, WorkerView, WorkflowId


def _view(name: str, *, running: int = 0, waiting: int = 0, inflight: int | None = None) -> WorkerView:
    return WorkerView(
        worker_id=WorkerId(name),
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        kv_used_tokens=0,
        kv_capacity_tokens=2560,
        max_running_reqs=1280,
        num_inflight_reqs=inflight,
    )


def test_queue_depth_is_at_least_the_in_flight_count() -> None:
    assert queue_depth(_view("a", running=1, waiting=2)) == 3
    assert queue_depth(_view("a", running=1, waiting=2, inflight=5)) == 5  # 2 not reported yet
    assert queue_depth(_view("a", running=1, waiting=2, inflight=1)) == 3  # other clients' calls
    settings = LoadSettings()
    assert worker_load(_view("a", inflight=4), settings) > worker_load(_view("b", inflight=0), settings)


def test_a_burst_of_new_workflows_is_spread_before_any_load_report() -> None:
    """Stale reports (both workers empty): admission follows the calls already forwarded."""
    inflight = {"a": 0, "b": 0}
    rng = random.Random(3)
    for i in range(6):
        workers = [_view(n, inflight=k) for n, k in inflight.items()]
        call = CallView(workflow_id=WorkflowId(f"wf{i}"), prompt_tokens=600)
        chosen = admit(call, workers, AdmissionWeights(), LoadSettings(), 0.8, rng)
        inflight[str(chosen.worker_id)] += 1
    assert inflight == {"a": 3, "b": 3}
