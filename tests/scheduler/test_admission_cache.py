"""Admission control's cached sums (the simulator's hot path) equal a fresh computation at every
event and epoch of a run that holds, parks and releases workflows."""

from __future__ import annotations

from collections import Counter
from typing import Any

from saga_sgl.scheduler.workflow_scheduler import WorkflowScheduler
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import build_row
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads.model import Segment
from tests.sim._helpers import chain_task, workload


def _fresh_bound(s: WorkflowScheduler) -> tuple[Counter[Any], Counter[Any]]:
    """The sum as the pre-cache code computed it, from the records' public fields."""
    tokens: Counter[Any] = Counter()
    count: Counter[Any] = Counter()
    shared: Counter[Any] = Counter()
    for rec in s._active.values():
        if rec.worker_id is None:
            continue
        frac = s.settings.admission.bound_footprint_frac
        own = (
            rec.footprint_tokens()
            if frac >= 1.0
            else max(rec.context_tokens, round(frac * rec.predicted_peak_tokens))
        )
        if s.settings.admission.shared_prefix_once and rec.shared_tokens:
            own = max(0, own - rec.shared_tokens)
            shared[rec.worker_id] = max(shared[rec.worker_id], rec.shared_tokens)
        tokens[rec.worker_id] += own
        count[rec.worker_id] += 1
    tokens.update(shared)
    return tokens, count


def test_cached_footprint_and_least_need_equal_a_fresh_computation_throughout_a_run() -> None:
    # Long chains with a 3,000-token shared head on 3 small workers: new workflows are held, long
    # holds park workflows that are ahead (least attained service), finishes release them.
    tasks = [
        chain_task(
            f"t{i}", 0.2 * i, [Segment(1, 3000), Segment(1000 + i, 2000)], 4 + i % 9, first_id=100 * (i + 1)
        )
        for i in range(40)
    ]
    cluster = Cluster(
        workload(*tasks),
        build_row(rows.SAGA, seed=0),
        ClusterSettings(num_workers=3, worker=WorkerSettings(kv_capacity_tokens=30_000)),
    )
    s = cluster.scheduler
    checks = Counter[str]()

    def check() -> None:
        cached = s._bound_footprint()
        assert cached == _fresh_bound(s)
        assert s._bound_footprint() is cached  # nothing changed: the cached pair is reused
        if s._held:
            assert s._least_held_need() == min(s._need_tokens(r) for r in s._held.values())
            checks["held"] += 1
        checks["all"] += 1

    handle, epoch = s.handle, s.epoch

    def spy_handle(event):  # type: ignore[no-untyped-def]
        out = handle(event)
        check()
        return out

    def spy_epoch():  # type: ignore[no-untyped-def]
        out = epoch()
        check()
        return out

    s.handle = spy_handle  # type: ignore[method-assign]
    s.epoch = spy_epoch  # type: ignore[method-assign]
    result = cluster.run()
    assert result.unfinished == 0 and len(result.tasks) == 40
    assert s.counters["hold/kv_footprint"] + s.counters["hold/queue"] > 0, s.counters
    assert s.counters["release"] > 0
    assert checks["held"] > 50 and checks["all"] > checks["held"]
