"""The all-schedulers closed-loop bound (saga_sgl.sim.bounds): its optimum, its per-task work
against the simulator's own isolated TCT, and that simulated rows never beat it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from saga_sgl.sim import rows
from saga_sgl.sim.bounds import (
    CacheablePrefixes,
    ContextBin,
    TaskFloor,
    TaskWork,
    closed_loop_mean_tct_bound,
    context_bins,
    decoded_kv_lengths,
    finite_closed_loop_bound,
    fluid_closed_loop_bound,
    min_prompt_tokens,
    task_floors,
    task_work,
)
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.run import simulate
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads import WorkloadSpec, generate
from saga_sgl.sim.workloads.model import CallSpec, Segment, TaskSpec

SETTINGS = ClusterSettings(num_workers=2, worker=WorkerSettings(kv_capacity_tokens=200_000))


def _c(n: int) -> float:
    """A weight-bound iteration constant: nearly flat in the batch size, like the profiled one."""
    return 0.03 + 0.0004 * n


def test_the_optimum_is_the_best_mix_of_one_or_two_batch_sizes_found_by_brute_force() -> None:
    works = [TaskWork(decode_tokens=3_000, attention_s=4.0, tool_s=60.0), TaskWork(1_000, 1.0, 20.0)]
    agents, replicas, max_batch, co = 24, 2, 32, 0.0002
    # One bin at 1000 KV tokens, 2e-7 s per token: each other sequence adds 0.0002 s.
    kmin = (ContextBin(1_000.0, 1.0),)
    b = closed_loop_mean_tct_bound(
        works, agents, replicas, _c, max_batch, co_batch=kmin, attn_s_per_kv_token=2e-7
    )
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
    more = closed_loop_mean_tct_bound(
        works, agents, 2 * replicas, _c, max_batch, co_batch=kmin, attn_s_per_kv_token=2e-7
    )
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
    specs = [s for s in wl.tasks if s.task_id in ids]
    kmin = (ContextBin(float(min_prompt_tokens(wl.tasks)), 1.0),)
    a = cost.decode_attn_s_per_kv_token
    loose, bound = (
        closed_loop_mean_tct_bound(
            works,
            agents,
            settings.num_workers,
            cost.iteration_constant_s,
            256,
            co_batch=bins,
            attn_s_per_kv_token=a,
        )
        for bins in (kmin, context_bins(specs))
    )
    assert bound.mean_tct_s > loose.mean_tct_s  # the contexts tighten it
    floors = CacheablePrefixes(wl.tasks).floors(
        specs, cost.iteration_constant_s, cost.prefill_attention_s, settings.worker.chunked_prefill_size
    )
    tightest = closed_loop_mean_tct_bound(
        [
            dataclasses.replace(
                w, prefill_gpu_s=floors[s.task_id].gpu_s, prefill_wait_s=floors[s.task_id].wait_s
            )
            for s, w in zip(specs, works, strict=True)
        ],
        agents,
        settings.num_workers,
        cost.iteration_constant_s,
        256,
        co_batch=context_bins(specs),
        attn_s_per_kv_token=a,
    )
    assert tightest.mean_tct_s > bound.mean_tct_s  # and so do the pre-fill floors
    mean = sum(t.tct_s for t in counted) / len(counted)
    assert mean >= tightest.mean_tct_s


def test_with_context_bins_the_lp_finds_the_best_pairing_of_batch_sizes_and_contexts() -> None:
    """Brute force over every split of two context bins across batch sizes 1..3 (a grid of 1/20):
    the LP's optimum is at most the grid's best and within the grid's resolution of it."""
    works = [TaskWork(decode_tokens=2_000, attention_s=3.0, tool_s=30.0)]
    bins = (ContextBin(1_000.0, 0.4), ContextBin(20_000.0, 0.6))
    a, agents, replicas, max_batch = 5e-7, 6, 2, 3

    def c(n: int) -> float:
        return (0.030, 0.031, 0.026)[n - 1]  # not monotone, like the profiled one

    b = closed_loop_mean_tct_bound(
        works, agents, replicas, c, max_batch, co_batch=bins, attn_s_per_kv_token=a
    )
    d, attn, tool = 2_000.0, 3.0, 30.0

    def value(split: list[tuple[float, float, float]]) -> float:
        g = lat = 0.0
        for (kv, share), fr in zip(((x.kv_tokens, x.share) for x in bins), split, strict=True):
            for n, f in zip((1, 2, 3), fr, strict=True):
                g += share * f * d * c(n) / n
                lat += share * f * d * (c(n) + a * (n - 1) * kv)
        return max(agents * (g + attn) / replicas, tool + attn + lat)

    steps = 20
    simplex = [
        (i / steps, j / steps, (steps - i - j) / steps)
        for i in range(steps + 1)
        for j in range(steps + 1 - i)
    ]
    brute = min(value([s1, s2]) for s1 in simplex for s2 in simplex)
    assert b.mean_tct_s <= brute + 1e-9
    assert b.mean_tct_s == pytest.approx(brute, rel=2e-3)
    # The pairing matters: pricing every token at the longer context gives a higher value, at the
    # shorter a lower one.
    hi = closed_loop_mean_tct_bound(
        works, agents, replicas, c, max_batch, co_batch=(ContextBin(20_000.0, 1.0),), attn_s_per_kv_token=a
    )
    lo = closed_loop_mean_tct_bound(
        works, agents, replicas, c, max_batch, co_batch=(ContextBin(1_000.0, 1.0),), attn_s_per_kv_token=a
    )
    assert lo.mean_tct_s < b.mean_tct_s < hi.mean_tct_s
    with pytest.raises(ValueError):
        closed_loop_mean_tct_bound(works, agents, replicas, c, max_batch, co_batch=(ContextBin(0.0, 0.5),))


def test_decoded_kv_lengths_follow_the_worker_pre_fill_emits_the_first_token() -> None:
    wl = generate(WorkloadSpec(scenario="web-history", seed=2, closed_loop_agents=1, max_tasks=2))
    spec = wl.tasks[0]
    expected = sorted(
        call.prompt_tokens + g - 1 for call in spec.calls for g in range(2, call.output_tokens + 1)
    )
    kv = decoded_kv_lengths([spec])
    assert kv.tolist() == expected
    w = task_work(spec, 1.0)
    assert w.decode_tokens == len(expected) and w.attention_s == pytest.approx(sum(expected))
    bins = context_bins([spec], num_bins=8)
    assert sum(b.share for b in bins) == pytest.approx(1.0)
    # Each bin's price is a lower bound of every token in it (bins are equal-count and sorted).
    assert [b.kv_tokens for b in bins] == sorted(b.kv_tokens for b in bins)
    assert bins[0].kv_tokens == expected[0]


def test_no_committed_quick_run_beats_its_bound() -> None:
    """Every closed-loop run of the committed quick run (all rows, production and oversubscribed):
    its counted tasks' mean TCT is at least the tightest bound on them. A bound some row beats is
    wrong; so is a committed ``cluster.json`` whose all-schedulers ratio is below SAGA's measured one."""
    from benchmarks import cluster as bench

    results = Path(bench.__file__).parent / "results" / "cluster_quick"
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines() if line.strip()]
    jobs = {(j.load, j.scenario, j.seed): j for j in bench.build_jobs(bench.QUICK, {"main"})}
    checked = 0
    for r in records:
        job = jobs.get((r["load"], r["scenario"], r["seed"]))
        if r["section"] != "main" or job is None or not job.wspec.closed_loop_agents:
            continue
        ids = {k.split("/", 1)[1] for k in r["tct"]}
        counted = [t for t in bench._workload(job.wspec).tasks if t.task_id in ids]
        bounds = bench.closed_loop_bounds(bench._workload(job.wspec), job.cluster, counted)
        mean = sum(r["tct"].values()) / len(r["tct"])
        assert (
            bounds["none"] <= bounds["k_min"] <= bounds["contexts"] <= bounds["contexts+prefill"] <= mean
        ), (
            r["load"],
            r["scenario"],
            r["row"],
        )
        checked += 1
    assert checked >= 30
    agg = json.loads((results / "cluster.json").read_text())
    for load in ("production", "oversubscribed"):
        ratio = agg["headline"][load]["vllm_sticky_least_loaded"]["ratio_of_means"]
        assert ratio <= agg["bounds"][load]["vllm_sticky_least_loaded"]["all_schedulers"]["ratio_of_means"]


@pytest.mark.parametrize("scenario", ["swe", "web-history"])
def test_prefill_floors_are_below_what_the_simulator_charges(scenario: str) -> None:
    """Each task's floor on its agent's pre-fill wait is at most the pre-fill time the simulator
    charged it (four agents sharing two replicas, so prefixes are shared across tasks), and the
    floors tighten the one-agent bound without passing the isolated TCT."""
    agents = 4
    wl = generate(WorkloadSpec(scenario=scenario, seed=4, closed_loop_agents=agents, max_tasks=agents * 3))
    result = simulate(wl, rows.STICKY, SETTINGS, seed=4)
    cluster = Cluster(wl, build_row(rows.ROUND_ROBIN, seed=0), SETTINGS)
    cost = cluster.cost
    floors = CacheablePrefixes(wl.tasks).floors(
        wl.tasks, cost.iteration_constant_s, cost.prefill_attention_s, SETTINGS.worker.chunked_prefill_size
    )
    done = {t.task_id: t for t in result.tasks}
    assert len(done) >= agents
    assert all(f.gpu_s > 0 and f.wait_s > 0 for f in floors.values())
    for task_id, rec in done.items():
        assert floors[task_id].wait_s <= rec.prefill_s + 1e-9, task_id
    for spec in wl.tasks[:3]:
        w = task_work(spec, cost.decode_attn_s_per_kv_token)
        f = floors[spec.task_id]
        wf = dataclasses.replace(w, prefill_gpu_s=f.gpu_s, prefill_wait_s=f.wait_s)
        plain, tight = (
            closed_loop_mean_tct_bound([x], 1, 1, cost.iteration_constant_s, 256).mean_tct_s for x in (w, wf)
        )
        assert plain < tight <= cluster.isolated_tct_s(spec) + 1e-9


# --- the finite closed loop (finite_closed_loop_bound) ------------------------------------------


def _best_list_schedule(durations: list[float], agents: int, replicas: int) -> float:
    """Brute force: the least mean TCT over every priority order of non-preemptive list schedules
    of tasks that each take ``durations[i]`` on one worker, the closed loop starting task ``i >= N``
    at the ``(i - N + 1)``-th completion."""
    import itertools as it

    m, best = len(durations), math.inf
    for order in it.permutations(range(m)):
        free, ends, todo, total = [0.0] * replicas, [], list(order), 0.0
        while todo:
            w = min(range(replicas), key=lambda j: free[j])
            done = sorted(e for e in ends if e <= free[w])
            ready = [i for i in todo if i < agents + len(done)]
            if not ready:
                free[w] = min(e for e in ends if e > free[w])
                continue
            i = ready[0]
            todo.remove(i)
            end = free[w] + durations[i]
            free[w] = end
            ends.append(end)
            total += end - (0.0 if i < agents else done[i - agents])
        best = min(best, total / m)
    return best


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_the_finite_loop_bound_is_below_every_list_schedule_found_by_brute_force(
    replicas: int, seed: int
) -> None:
    """Tasks of one call each (work = critical path = its duration, no tools): no order of a
    non-preemptive list schedule beats the bound, and on one worker the bound is that optimum's
    value where the shortest-first order is forced (equal durations)."""
    rng = np.random.default_rng(seed)
    durations = [float(x) for x in rng.uniform(1.0, 4.0, size=5)]
    floors = [TaskFloor(d, d) for d in durations]
    b = finite_closed_loop_bound(floors, agents=2, replicas=replicas)
    best = _best_list_schedule(durations, agents=2, replicas=replicas)
    assert b.mean_tct_s <= best + 1e-9
    assert b.mean_tct_s >= max(b.work_only_s, b.path_only_s) - 1e-9
    if replicas == 1:
        # one worker, no tools: the only slack is which task goes first; within 25% of the optimum
        assert b.mean_tct_s >= 0.75 * best
    equal = finite_closed_loop_bound([TaskFloor(2.0, 2.0)] * 4, agents=2, replicas=1)
    # serial on one worker: completions 2, 4, 6, 8; the loop's TCTs sum to the last two: 14 / 4
    assert equal.mean_tct_s == pytest.approx(_best_list_schedule([2.0] * 4, 2, 1)) == pytest.approx(3.5)


def test_task_floors_price_a_full_hit_and_the_cpu_extend_form() -> None:
    """One task of two calls, the second extending the first: its floors are the lone costs of the
    calls (the second pre-fills one token behind the whole prefix, and still pays the attention of
    the whole sequence in the CPU form), and the work floor prices batching's best share."""
    c = lambda n: 0.004 + 0.0004 * n  # noqa: E731
    attn = lambda q, p: 1e-7 * (p + q) ** 2 / 2 + 1e-4 * (p + q)  # noqa: E731
    head, out1 = Segment(1, 100), Segment(2, 4)
    calls = (
        CallSpec(step=0, prompt=(head,), output_tokens=4, output_seg_id=2, tool="t", tool_latency_s=0.5),
        CallSpec(
            step=1, prompt=(head, out1), output_tokens=4, output_seg_id=3, tool=None, tool_latency_s=0.0
        ),
    )
    task = TaskSpec(task_id="t0", tenant="a", tenant_class="a", agent_type="a", arrival_s=0.0, calls=calls)
    a = 1e-5
    f = task_floors([task], c, attn, a, chunk_tokens=128, agents=2)["t0"]
    kv = 3 * 100 + 6 + 3 * 104 + 6
    path = 0.5 + c(100) + attn(100, 0) + c(1) + attn(1, 103) + 6 * c(1) + a * kv
    assert f.path_s == pytest.approx(path)
    share = min(c(n) / n for n in range(1, 128 + 2 + 1))
    work = 101 * share + attn(100, 0) + attn(1, 103) + 6 * (c(2) / 2) + a * kv
    assert f.work_s == pytest.approx(work)
    assert f.work_s < f.path_s


# --- the fluid tightening (fluid_closed_loop_bound) ---------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_the_fluid_bound_lies_between_the_plain_bound_and_every_list_schedule(
    replicas: int, seed: int
) -> None:
    """Each task on one worker at a time: never below the plain floor, never above the best
    non-preemptive list schedule found by brute force (one-call tasks, no tools)."""
    rng = np.random.default_rng(100 + seed)
    durations = [float(x) for x in rng.uniform(1.0, 4.0, size=6)]
    floors = [TaskFloor(d, d) for d in durations]
    plain = finite_closed_loop_bound(floors, agents=3, replicas=replicas).mean_tct_s
    fluid = fluid_closed_loop_bound(floors, agents=3, replicas=replicas)
    assert plain - 1e-9 <= fluid <= _best_list_schedule(durations, agents=3, replicas=replicas) + 1e-9


def test_the_fluid_bound_is_exact_for_equal_tasks_on_two_workers() -> None:
    """Equal tasks of work 1, 3 agents, 2 workers: one task per worker at a time completes 1, 1, 2,
    2, 3, 3, and the loop's TCTs sum to the last three (2 + 3 + 3); the plain floor lets the k-th
    completion come at k / 2 (2 + 2.5 + 3) and misses that a task cannot use both workers."""
    floors = [TaskFloor(1.0, 1.0)] * 6
    best = _best_list_schedule([1.0] * 6, agents=3, replicas=2)
    assert best == pytest.approx(8 / 6)
    assert finite_closed_loop_bound(floors, agents=3, replicas=2).mean_tct_s == pytest.approx(7.5 / 6)
    assert fluid_closed_loop_bound(floors, agents=3, replicas=2) == pytest.approx(best)
    # the live sizing: 10 tasks, 5 agents, 2 workers: 2.1 w, not 2.0 w
    ten = [TaskFloor(2.0, 2.0)] * 10
    assert fluid_closed_loop_bound(ten, agents=5, replicas=2) == pytest.approx(2 * 2.1)
    assert finite_closed_loop_bound(ten, agents=5, replicas=2).mean_tct_s == pytest.approx(2 * 2.0)
