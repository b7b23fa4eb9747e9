"""The all-schedulers closed-loop bound (saga_sgl.sim.bounds): its optimum, its per-task work
against the simulator's own isolated TCT, and that simulated rows never beat it."""

from __future__ import annotations

import dataclasses

import pytest

from saga_sgl.sim import rows
from saga_sgl.sim.bounds import TaskWork, closed_loop_mean_tct_bound, min_prompt_tokens, task_work
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.run import simulate
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads import WorkloadSpec, generate

SETTINGS = ClusterSettings(num_workers=2, worker=WorkerSettings(kv_capacity_tokens=200_000))


def _c(n: int) -> float:
    """A weight-bound iteration constant: nearly flat in the batch size, like the profiled one."""
    return 0.03 + 0.0004 * n


def test_the_optimum_is_the_best_mix_of_one_or_two_batch_sizes_found_by_brute_force() -> None:
    works = [TaskWork(decode_tokens=3_000, attention_s=4.0, tool_s=60.0), TaskWork(1_000, 1.0, 20.0)]
    agents, replicas, max_batch, co = 24, 2, 32, 0.0002
    b = closed_loop_mean_tct_bound(works, agents, replicas, _c, max_batch, co_batch_attention_s=co)
    d, a, tool = 2_000.0, 2.5, 40.0

    def value(mix: list[tuple[int, float]]) -> float:
        g = sum(f * (d * _c(n) / n + a) for n, f in mix) * agents / replicas
        lat = tool + sum(f * d * (_c(n) + (n - 1) * co) for n, f in mix) + a
        return max(g, lat)

    brute = min(
        value([(n1, k / 200), (n2, 1 - k / 200)])
        for n1 in range(1, max_batch + 1)
        for n2 in range(1, max_batch + 1)
        for k in range(201)
    )
    assert b.mean_tct_s <= brute + 1e-9
    assert b.mean_tct_s == pytest.approx(brute, rel=1e-3)
    assert b.mean_tct_s == pytest.approx(value(list(b.batch_mix)), rel=1e-9)
    assert sum(f for _, f in b.batch_mix) == pytest.approx(1.0)
    # More replicas can only lower it, and so can dropping the co-batched attention term; one agent
    # alone is its own latency at batch 1.
    more = closed_loop_mean_tct_bound(works, agents, 2 * replicas, _c, max_batch, co_batch_attention_s=co)
    assert more.mean_tct_s <= b.mean_tct_s
    assert closed_loop_mean_tct_bound(works, agents, replicas, _c, max_batch).mean_tct_s <= b.mean_tct_s
    alone = closed_loop_mean_tct_bound(works, 1, 1, _c, max_batch)
    assert alone.batch_mix == ((1, 1.0),) and alone.mean_tct_s == pytest.approx(tool + d * _c(1) + a)
    with pytest.raises(ValueError):
        closed_loop_mean_tct_bound([], agents, replicas, _c, max_batch)


def test_one_agent_on_one_replica_is_the_isolated_tct_without_its_prefill() -> None:
    wl = generate(WorkloadSpec(scenario="swe", seed=3, closed_loop_agents=1, max_tasks=3))
    cluster = Cluster(wl, build_row(rows.ROUND_ROBIN, seed=0), SETTINGS)
    cost = cluster.cost
    for spec in wl.tasks:
        w = task_work(spec, cost.decode_attn_s_per_kv_token)
        bound = closed_loop_mean_tct_bound([w], 1, 1, cost.iteration_constant_s, 256).mean_tct_s
        isolated = cluster.isolated_tct_s(spec)
        prefill_upper = sum(cost.prefill_time_s(c.prompt_tokens, 0) for c in spec.calls)
        assert bound <= isolated
        assert bound >= isolated - prefill_upper - 1e-6


@pytest.mark.parametrize("row", [rows.ROUND_ROBIN, rows.STICKY, rows.SAGA], ids=lambda r: r.label)
def test_no_simulated_row_beats_the_bound_in_a_steady_window(row: RowSpec) -> None:
    agents, per_agent = 6, 8
    wl = generate(
        WorkloadSpec(scenario="web-history", seed=5, closed_loop_agents=agents, max_tasks=agents * per_agent)
    )
    horizon = 1_500.0
    settings = dataclasses.replace(SETTINGS, closed_loop_until_s=horizon)
    result = simulate(wl, row, settings, seed=5)
    lo, hi = 0.2 * horizon, horizon
    counted = [t for t in result.tasks if lo <= t.arrival_s < hi]
    assert len(counted) >= 10
    cost = Cluster(wl, build_row(rows.ROUND_ROBIN, seed=0), settings).cost
    ids = {t.task_id for t in counted}
    works = [task_work(s, cost.decode_attn_s_per_kv_token) for s in wl.tasks if s.task_id in ids]
    co = cost.decode_attn_s_per_kv_token * min_prompt_tokens(wl.tasks)
    assert co > 0
    bound = closed_loop_mean_tct_bound(
        works, agents, settings.num_workers, cost.iteration_constant_s, 256, co_batch_attention_s=co
    )
    mean = sum(t.tct_s for t in counted) / len(counted)
    assert mean >= bound.mean_tct_s
