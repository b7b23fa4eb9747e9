"""The baseline rows run exactly the registry's policy objects with default settings, and behave by
their documented rules in small scripted scenarios."""

from __future__ import annotations

import dataclasses

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.policy import registry
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.eviction.vllm_prefix import VllmPrefixEviction
from saga_sgl.policy.placement.cache_aware import CacheAwarePlacement, CacheAwareSettings
from saga_sgl.policy.placement.consistent_hash import ConsistentHashPlacement
from saga_sgl.policy.placement.round_robin import RoundRobinPlacement
from saga_sgl.scheduler import WorkflowScheduler
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import build_row
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads.model import Segment
from tests.sim._helpers import chain_task, workload


@pytest.mark.parametrize(
    ("row", "placement_cls", "eviction_cls"),
    [
        (rows.ROUND_ROBIN, RoundRobinPlacement, LruEviction),
        (rows.CACHE_AWARE, CacheAwarePlacement, LruEviction),
        (rows.VLLM_AFFINITY, ConsistentHashPlacement, VllmPrefixEviction),
    ],
    ids=lambda x: getattr(x, "label", getattr(x, "__name__", "")),
)
def test_baseline_rows_use_registry_objects_with_default_settings(row, placement_cls, eviction_cls) -> None:  # type: ignore[no-untyped-def]
    assert not row.settings, "a baseline row must not override its policies' settings"
    built = build_row(row, seed=0)
    sched = WorkflowScheduler(built.scheduler, clock=ManualClock())
    assert type(sched.placement) is placement_cls
    assert type(built.eviction) is eviction_cls
    assert sched.placement.settings == registry.load(row.placement)  # type: ignore[attr-defined]
    assert built.eviction.settings == registry.load(row.eviction)  # type: ignore[attr-defined]
    assert sched.fairness is not None and sched.fairness.name == "fcfs"
    assert sched.stealing is None and sched.ttl is None and not row.predictions
    assert not sched.settings.admission.enabled
    assert registry.get(row.placement).is_baseline


def test_cache_aware_defaults_are_sglang_routers() -> None:
    sched = WorkflowScheduler(build_row(rows.CACHE_AWARE, seed=0).scheduler, clock=ManualClock())
    s = sched.placement.settings  # type: ignore[attr-defined]
    assert s == CacheAwareSettings()
    assert (s.cache_threshold, s.balance_abs_threshold, s.balance_rel_threshold) == (0.3, 64, 1.5)


def _run(wl, row, num_workers=4, kv=0):  # type: ignore[no-untyped-def]
    cluster = Cluster(
        wl,
        build_row(row, seed=0),
        ClusterSettings(num_workers=num_workers, worker=WorkerSettings(kv_capacity_tokens=kv)),
    )
    result = cluster.run()
    return cluster, result


def test_round_robin_cycles_calls_over_workers() -> None:
    tasks = [
        chain_task(f"t{i}", i * 10.0, [Segment(1000 + i, 500)], 1, first_id=100 * (i + 1)) for i in range(8)
    ]
    cluster, result = _run(workload(*tasks), rows.ROUND_ROBIN)
    order = [t.worker_id for t in sorted(cluster.tasks, key=lambda t: t.spec.arrival_s)]
    assert order == ["w0", "w1", "w2", "w3", "w0", "w1", "w2", "w3"]
    assert result.placements == {"round_robin": 8}


def test_consistent_hash_keeps_every_call_of_a_workflow_on_one_worker() -> None:
    tasks = [
        chain_task(f"t{i}", i * 0.5, [Segment(1, 2000), Segment(1000 + i, 300)], 6, first_id=100 * (i + 1))
        for i in range(12)
    ]
    _, result = _run(workload(*tasks), rows.VLLM_AFFINITY)
    for i in range(12):
        holders = {
            w for w, trace in enumerate(result.worker_traces) if any((1000 + i, 300) in acc for acc in trace)
        }
        assert len(holders) == 1, f"t{i} ran on {holders}"
    assert result.placements == {"consistent_hash": 72}
    # Session affinity: after the first call, every call hits its own previous context.
    assert result.summary()["kv_hit_rate"] > 0.85


def test_cache_aware_follows_a_shared_prefix_above_the_threshold() -> None:
    # 6 tasks whose prompt is 80% a shared system prompt (match rate 0.8 > 0.3) and loads far below the
    # imbalance thresholds (64 in flight): every one follows the cache to the first task's worker.
    shared = [
        chain_task(f"s{i}", 1.0 + i, [Segment(1, 4000), Segment(2000 + i, 1000)], 1, first_id=100 * (i + 1))
        for i in range(6)
    ]
    cluster, result = _run(workload(*shared), rows.CACHE_AWARE)
    assert {t.worker_id for t in cluster.tasks} == {cluster.tasks[0].worker_id}
    assert result.placements.get("cache_match") == 5
    # Distinct prompts (match rate 0 <= 0.3) go to the first worker with the fewest requests in
    # flight: one after another (each done before the next) they all land on w0, as measured on the
    # sglang-router 0.3.2 binary; sent together, the in-flight counts spread them out.
    lone = [
        chain_task(f"u{i}", 1.0 + i, [Segment(3000 + i, 1000)], 1, first_id=100 * (i + 1)) for i in range(4)
    ]
    cluster, result = _run(workload(*lone), rows.CACHE_AWARE)
    assert [t.worker_id for t in cluster.tasks] == ["w0"] * 4
    assert result.placements == {"cache_min_load": 4}
    burst = [
        chain_task(f"v{i}", 1.0 + 1e-4 * i, [Segment(4000 + i, 1000)], 1, first_id=100 * (i + 1))
        for i in range(4)
    ]
    cluster, result = _run(workload(*burst), rows.CACHE_AWARE)
    assert sorted(t.worker_id for t in cluster.tasks) == ["w0", "w1", "w2", "w3"]


def test_vllm_row_evicts_least_recently_released_tail_first() -> None:
    # One worker with room for little more than two contexts. A is released first, then B; when C
    # needs room, vLLM's free queue gives up A's blocks tail-first, before any of B's.
    def task(name: str, t0: float, seg: int) -> object:
        return chain_task(name, t0, [Segment(seg, 3000)], 1, first_id=seg * 10, output_tokens=16)

    wl = workload(task("A", 0.0, 11), task("B", 5.0, 12), task("C", 10.0, 13))  # type: ignore[arg-type]
    row = dataclasses.replace(rows.VLLM_AFFINITY)
    cluster = Cluster(
        wl,
        build_row(row, seed=0),
        ClusterSettings(num_workers=1, worker=WorkerSettings(kv_capacity_tokens=7000, page_size=16)),
    )
    evicted: list[int] = []
    orig = cluster.recorder.on_evict
    cluster.recorder.on_evict = lambda w, node, now: (evicted.append(node.seg_id), orig(w, node, now))  # type: ignore[method-assign]
    cluster.run()
    # A's output block (the tail, seg 110) goes before A's prompt (seg 11); B is untouched.
    assert evicted[:2] == [110, 11]
    assert 12 not in evicted and 120 not in evicted


def test_every_ablation_row_builds_and_the_new_options_reach_the_policies() -> None:
    built = {
        row.label: WorkflowScheduler(build_row(row, seed=0).scheduler, clock=ManualClock())
        for row in rows.ABLATIONS
    }
    assert built["saga-bound_work_placement"].placement.settings.load_signal == "bound_work"  # type: ignore[attr-defined]
    assert built["saga-srpt_within_tenant"].fairness.settings.within_tenant == "srpt"  # type: ignore[union-attr]
    default = WorkflowScheduler(build_row(rows.SAGA, seed=0).scheduler, clock=ManualClock())
    assert default.placement.settings.load_signal == "instant"  # type: ignore[attr-defined]
    assert default.fairness.settings.within_tenant == "urgency"  # type: ignore[union-attr]
