"""Side-by-side cluster benchmark: SAGA vs the strongest baselines on identical agent workloads (simulated).

Every configuration row replays the *identical* generated workload (common random numbers: same
tasks, prompts, outputs and tool latencies) on a simulated cluster of SGLang-like workers, each
row's decisions made by one ``saga_sgl.scheduler.WorkflowScheduler`` (rows in ``saga_sgl.sim.rows``).
Paired per-task statistics over the same task ids: geomean of TCT ratios with a bootstrap 95% CI and
a Wilcoxon p, and the ratio of mean TCTs (the paper's metric).

The replica is the paper's: Llama-3-70B, TP4 on A100-80GB, its KV pool from the memory arithmetic
of the cost model (about 400K tokens). ``--quick`` (default) runs 8 replicas, ``--full`` 16.

Load points, in agents per replica:

* ``paper``: the paper's open-loop Poisson arrivals, 8 tasks/min on 16 replicas (scaled per replica);
  about 2 concurrent agents per replica: the cluster is mostly idle.
* ``production`` (the headline): closed loop, 12 agents per replica. Issue 8 asks for "about 12
  per replica, about 70% KV in use"; both hold here when "KV in use" is the KV the live agents hold.
  An agent holds its current context for its whole task (running, or cached through a tool gap):
  25.9K (swe) / 22.5K (web-history) tokens on average over time (each call's context weighted by its
  decode and tool time), so 12 agents hold 78% / 67% of the replica's 399K-token pool. The KV
  *pinned by running requests* (the tables' "KV in use") is lower, 38-47% (steady state, sticky
  least-loaded and SAGA, seeds 1-3), and reaches 70% at no load before the baselines thrash (at 20
  per replica sticky's throughput falls to 0.37x SAGA's, its KV in use 48-62%). ``production-14``
  (14 per replica: 79-91% of the pool held) runs on request (``--loads production-14``); see
  ``benchmarks/results/cluster_quick/README.md``.
* ``oversubscribed``: closed loop, 32 agents per replica; KV and compute saturated.

Windows: counted tasks start (closed loop) or arrive (open loop) in [W0, W0 + W) with W = 4 x and
W0 = 1 x the median task time of the scenario (warm-up excluded); closed-loop agents stop starting
tasks at W0 + W and the cluster drains. The unit is the median isolated TCT, times
``LoadPoint.load_x_isolated`` at the production points (2: their median TCT is 1.6-2.1x the isolated
one), so an agent runs about four tasks in the window and the throughput counts a steady state.

Scenarios: ``swe`` (SWE-bench-like coding agent) and ``web-history`` (browser agent with a growing
history, BrowserGym style) are the headline pair; the web agent without history (WebArena's own
harness) re-sends only a system prompt and the current page, so its KV has almost no reuse across
calls for any scheduler to exploit: it runs in ``--full`` as the low-reuse control.

Reported per load point, scenario and row: mean / geomean / p99 TCT, paired geomean and ratio of
means against every baseline, headroom (TCT / TCT alone, ratio of means), KV in use (time-averaged
tokens pinned by running requests / pool), evicted tokens, recomputed prefill tokens split into
eviction / routing (computed on another worker only) / steal rebuilds, completed tasks per minute
in the window, workflows held by admission control, SLO attainment (TCT <= 1.5 x alone). Closed-loop
throughput per load point: SAGA's completed tasks/min (sum over the headline scenarios) against the
baseline that completed the most. Each run's CPU seconds are recorded (``runs[].cpu_s``, total in
``header.sim_cpu_s``): on a shared machine they, not the wall time, say what the run costs.

Output (``--out DIR``): ``cluster.json`` with ``saga.tct_ratio_vs_best_baseline`` (production, paired
geomean over the headline scenarios, against the baseline closest to SAGA) and
``headline.<load point>.<baseline>.{geomean,ratio_of_means}``; ``throughput.<load point>``;
``bounds.<load point>.<baseline>.{saga_no_wait,alone}.{geomean,ratio_of_means}`` (labelled ceilings
from SAGA's own runs: its tasks with zero hold/queue/pre-fill time, and alone on an idle replica) and,
closed loop, ``bounds.<load point>.<baseline>.all_schedulers.ratio_of_means`` (the lowest mean TCT any
scheduler can reach with these agents on these replicas: ``saga_sgl.sim.bounds``, co-batched
sequences at their own KV lengths and pre-fill floors; ``closed_loop_bounds`` gives every pricing);
``cluster.md``; ``cluster_tct.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cluster_stats import geomean, paired_ratio, slo_by_class
from benchmarks._machine import cpu_model
from saga_sgl.sim import rows as R
from saga_sgl.sim.bounds import (
    CacheablePrefixes,
    ContextBin,
    closed_loop_mean_tct_bound,
    context_bins,
    min_prompt_tokens,
    task_work,
)
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.run import simulate
from saga_sgl.sim.workloads import Workload, WorkloadSpec, generate

PER_TASK_KEYS = ("tct", "tct_no_wait", "tct_alone")
"""Per-task maps of a run (in ``runs.jsonl``, not in ``cluster.json``'s run list)."""
TIME_PARTS = ("held", "queued", "prefill", "decode", "tool")
"""Where a task's time goes (``saga_sgl.sim.metrics.TaskRecord``), mean seconds per counted task."""
HEADLINE_SCENARIOS = ("swe", "web-history")
TARGET_BASELINE = {"paper": "vllm_apc_prefix_affinity"}
"""The baseline a load point's target names where it is not the closest one (issue 8: paper point
>= 1.64x vs prefix affinity); the ceilings table shows both."""
"""The paper's headline is the geomean over SWE-bench and WebArena; our web headline keeps history."""


@dataclasses.dataclass(frozen=True)
class LoadPoint:
    name: str
    agents_per_replica: int = 0
    """Closed loop: concurrent agents per replica (0 = open loop)."""
    rate_per_replica_per_min: float = 0.0
    """Open loop: Poisson task arrivals per replica per minute."""
    load_x_isolated: float = 1.0
    """How much longer a median task takes at this load than alone (measured: sticky least-loaded's
    median TCT over the isolated median). Warm-up and window are multiples of the median task time
    *at this load*, so a closed-loop agent runs about ``window_factor`` tasks in the window."""


# Production's median TCT is 1.6-2.1x the isolated one (sticky least-loaded, seeds 1-3, swe and
# web-history). With 4 x the isolated median as the window, an agent finished only about two tasks
# in it: completions per window moved by 1-7 tasks of about 150 (up to 2%) between rows with the
# same per-task TCT, and the warm-up ended before the first wave of tasks had finished
# (benchmarks/results/cluster_quick/ablations6). Oversubscribed tasks take 3-13x their isolated
# time: 4x that is beyond quick mode's CPU budget, and SAGA's throughput gap there (about 1.9x) is
# far above the window's granularity, so it keeps the isolated unit.


PAPER = LoadPoint("paper", rate_per_replica_per_min=8.0 / 16)
PRODUCTION = LoadPoint("production", agents_per_replica=12, load_x_isolated=2.0)
PRODUCTION_14 = LoadPoint("production-14", agents_per_replica=14, load_x_isolated=2.0)
OVERSUBSCRIBED = LoadPoint("oversubscribed", agents_per_replica=32)
LOAD_POINTS = (PAPER, PRODUCTION, OVERSUBSCRIBED)
"""The modes' points. ``PRODUCTION_14`` runs only on request: it adds about 140 CPU-s to quick mode
(past its 3-minute budget) and about a fifth to full mode (past its 30 minutes)."""
ALL_LOAD_POINTS = (PAPER, PRODUCTION, PRODUCTION_14, OVERSUBSCRIBED)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    cluster: ClusterSettings
    seeds: tuple[int, ...]
    scenarios: tuple[str, ...]
    loads: tuple[LoadPoint, ...]
    rows: tuple[RowSpec, ...]
    ablations: tuple[RowSpec, ...]
    """Run at the production point on the first scenario and seed (section ``ablations``)."""
    window_factor: float = 4.0
    warmup_factor: float = 1.0


REPLICA = ClusterSettings(model="llama-3-70b", gpu="a100", tp=4)
QUICK = Mode(
    name="quick",
    cluster=dataclasses.replace(REPLICA, num_workers=8),
    seeds=(1,),
    scenarios=HEADLINE_SCENARIOS,
    loads=LOAD_POINTS,
    rows=(*R.BASELINES, R.SAGA, R.ABLATIONS[0]),
    ablations=R.ABLATIONS[1:],
)
FULL = Mode(
    name="full",
    cluster=dataclasses.replace(REPLICA, num_workers=16),
    seeds=(1, 2, 3),
    scenarios=(*HEADLINE_SCENARIOS, "web"),
    loads=LOAD_POINTS,
    rows=(*R.MAIN_ROWS, R.ABLATIONS[0]),
    ablations=R.ABLATIONS[1:],
)


def median_task_s(mode: Mode, scenario: str, seed: int) -> float:
    """Median isolated TCT (alone on an idle replica) of the scenario's tasks: the window unit."""
    scen: Any = scenario  # validated by WorkloadSpec
    wl = generate(WorkloadSpec(scenario=scen, seed=seed, horizon_s=3600.0, rate_per_min=2.0))
    cluster = Cluster(wl, build_row(R.ROUND_ROBIN, seed), mode.cluster)
    return float(statistics.median(t.isolated_s for t in cluster.tasks))


@dataclasses.dataclass(frozen=True)
class Job:
    load: str
    scenario: str
    seed: int
    wspec: WorkloadSpec
    row: RowSpec
    cluster: ClusterSettings
    window: tuple[float, float]
    section: str = "main"


_WORKLOADS: dict[WorkloadSpec, Workload] = {}
"""Each distinct workload, generated once in the parent before the (fork) pool starts."""


def _workload(wspec: WorkloadSpec) -> Workload:
    if wspec not in _WORKLOADS:
        _WORKLOADS[wspec] = generate(wspec)
    return _WORKLOADS[wspec]


def _setup(
    mode: Mode, load: LoadPoint, scenario: str, seed: int
) -> tuple[WorkloadSpec, ClusterSettings, tuple[float, float]]:
    median = median_task_s(mode, scenario, seed)
    unit = median * load.load_x_isolated
    w0, w = mode.warmup_factor * unit, mode.window_factor * unit
    n = mode.cluster.num_workers
    scen: Any = scenario  # validated by WorkloadSpec
    if load.agents_per_replica:
        agents = load.agents_per_replica * n
        # Enough tasks that no agent runs dry before W0 + W (tasks shorter than a third of the median
        # are rare; the cluster only slows them down).
        per_agent = math.ceil((w0 + w) / (median / 3)) + 1
        spec = WorkloadSpec(scenario=scen, seed=seed, closed_loop_agents=agents, max_tasks=agents * per_agent)
        return spec, dataclasses.replace(mode.cluster, closed_loop_until_s=w0 + w), (w0, w0 + w)
    rate = load.rate_per_replica_per_min * n
    spec = WorkloadSpec(scenario=scen, seed=seed, horizon_s=w0 + w, rate_per_min=rate)
    return spec, mode.cluster, (w0, w0 + w)


def build_jobs(mode: Mode, sections: set[str]) -> list[Job]:
    jobs: list[Job] = []
    for scenario in mode.scenarios:
        for seed in mode.seeds:
            for load in mode.loads:
                spec, cluster, window = _setup(mode, load, scenario, seed)
                if "main" in sections:
                    jobs += [Job(load.name, scenario, seed, spec, row, cluster, window) for row in mode.rows]
                if (
                    "ablations" in sections
                    and load.name == PRODUCTION.name
                    and scenario == mode.scenarios[0]
                    and seed == mode.seeds[0]
                ):
                    jobs += [
                        Job(load.name, scenario, seed, spec, row, cluster, window, "ablations")
                        for row in mode.ablations
                    ]
    return jobs


def _job(job: Job) -> dict[str, Any]:
    workload = _workload(job.wspec)
    t0, c0 = time.perf_counter(), time.process_time()
    result = simulate(workload, job.row, job.cluster, seed=job.seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lo, hi = job.window
    counted = [t for t in result.tasks if lo <= t.arrival_s < hi]
    c = result.counters
    s = result.summary()
    tct = [t.tct_s for t in counted]
    alone = [t.isolated_s for t in counted]
    finished_in_window = sum(1 for t in result.tasks if lo <= t.finished_s < hi)
    started_in_window = (
        sum(1 for t in workload.tasks if lo <= t.arrival_s < hi) if not job.wspec.closed_loop_agents else None
    )
    metrics = {
        "num_tasks": len(counted),
        "unfinished": result.unfinished,
        "tct_mean_s": float(np.mean(tct)) if tct else math.nan,
        "tct_geomean_s": geomean(tct),
        "tct_p50_s": float(np.percentile(tct, 50)) if tct else math.nan,
        "tct_p99_s": float(np.percentile(tct, 99)) if tct else math.nan,
        "tct_over_alone": float(np.mean(tct) / np.mean(alone)) if tct else math.nan,
        "slo_attainment": slo_by_class(counted, job.cluster.slo_factor).get("overall", math.nan),
        "kv_in_use": s["kv_util_active"],
        "kv_occupied": s["kv_util_raw"],
        "kv_hit_rate": s["kv_hit_rate"],
        "evicted_tokens": s["evicted_tokens"],
        "recomputed_eviction_tokens": s["recomputed_evicted_tokens"],
        "recomputed_routing_tokens": s["recomputed_elsewhere_tokens"],
        "recomputed_steal_tokens": s["rebuild_tokens"],
        "tasks_per_min": finished_in_window / (hi - lo) * 60,
        "arrivals_per_min": None if started_in_window is None else started_in_window / (hi - lo) * 60,
        "held_workflows": c.get("held_workflows", 0),
        "preemptions": c.get("preemptions", 0),
        "steals": s["steals"],
        "placements": s["placements"],
        "gpu_busy": s["gpu_busy_frac"],
        **{f"time_{k}_s": _mean_of(counted, f"{k}_s") for k in TIME_PARTS},
    }
    return {
        "section": job.section,
        "load": job.load,
        "scenario": job.scenario,
        "seed": job.seed,
        "row": job.row.label,
        "wall_s": wall,
        "cpu_s": cpu,
        "window_s": [lo, hi],
        "metrics": metrics,
        "tct": {f"{job.seed}/{t.task_id}": t.tct_s for t in counted},
        # For the labelled bounds (``bounds``): the same tasks with no hold, queue or pre-fill time
        # (decode + tool as measured in this run), and alone on an idle replica.
        "tct_no_wait": {f"{job.seed}/{t.task_id}": t.decode_s + t.tool_s for t in counted},
        "tct_alone": {f"{job.seed}/{t.task_id}": t.isolated_s for t in counted},
        **(
            {"bound_mean_tct_s": _closed_loop_bound(workload, job, counted)}
            if job.row.label == "saga"
            else {}
        ),
    }


BOUND_PRICINGS = ("none", "k_min", "contexts", "k_min+prefill", "contexts+prefill")
"""How ``saga_sgl.sim.bounds`` prices the other sequences of a batch (not at all, each at the
workload's shortest prompt, or at the decoded tokens' own KV lengths), and whether it adds the
floor on each call's pre-fill (``+prefill``). The last is the tightest: the headline."""


_PREFIXES: dict[int, tuple[Workload, CacheablePrefixes]] = {}
"""Each workload's prefix trie, built once (the bounds of all rows of a cell share it)."""


def closed_loop_bounds(
    workload: Workload, cluster_settings: ClusterSettings, counted: list[Any]
) -> dict[str, float]:
    """The all-schedulers lower bound on the mean TCT of the tasks ``counted`` (anything with a
    ``task_id``), per co-batch pricing (``saga_sgl.sim.bounds``; an oracle: it reads the tasks'
    true calls). Closed loop only (empty for open-loop arrivals)."""
    if not workload.closed_loop_agents or not counted:
        return {}
    cost = Cluster(workload, build_row(R.ROUND_ROBIN, 0), cluster_settings).cost
    a = cost.decode_attn_s_per_kv_token
    ids = {t.task_id for t in counted}
    specs = [t for t in workload.tasks if t.task_id in ids]
    works = [task_work(t, a) for t in specs]
    prefixes = _PREFIXES.get(id(workload))
    if prefixes is None or prefixes[0] is not workload:
        prefixes = _PREFIXES[id(workload)] = (workload, CacheablePrefixes(workload.tasks))
    floors = prefixes[1].floors(
        specs,
        cost.iteration_constant_s,
        cost.prefill_attention_s,
        cluster_settings.worker.chunked_prefill_size,
    )
    with_prefill = [
        dataclasses.replace(w, prefill_gpu_s=floors[t.task_id].gpu_s, prefill_wait_s=floors[t.task_id].wait_s)
        for t, w in zip(specs, works, strict=True)
    ]
    per_tenant: dict[str, int] = {}
    for t in workload.tasks:
        per_tenant[t.tenant] = per_tenant.get(t.tenant, 0) + 1
    pools = [len(workload.tasks)] if cluster_settings.closed_loop_shared else list(per_tenant.values())
    agents = sum(min(workload.closed_loop_agents, n) for n in pools)
    co_batch = {
        "none": (ContextBin(0.0, 1.0),),
        "k_min": (ContextBin(float(min_prompt_tokens(workload.tasks)), 1.0),),
        "contexts": context_bins(specs),
    }
    co_batch["k_min+prefill"] = co_batch["k_min"]
    co_batch["contexts+prefill"] = co_batch["contexts"]
    return {
        pricing: closed_loop_mean_tct_bound(
            with_prefill if pricing.endswith("+prefill") else works,
            agents,
            cluster_settings.num_workers,
            cost.iteration_constant_s,
            cluster_settings.worker.max_running_requests,
            co_batch=bins,
            attn_s_per_kv_token=a,
        ).mean_tct_s
        for pricing, bins in co_batch.items()
    }


def _closed_loop_bound(workload: Workload, job: Job, counted: list[Any]) -> float | None:
    """The tightest all-schedulers bound (co-batched sequences at their own KV lengths, pre-fill floors);
    None without scipy (its LP solver; in the test extras and a dependency of SGLang)."""
    try:
        return closed_loop_bounds(workload, job.cluster, counted).get("contexts+prefill")
    except ImportError as e:
        print(f"all-schedulers bound skipped: {e}", file=sys.stderr)
        return None


def _mean_of(tasks: list[Any], attr: str) -> float:
    return float(np.mean([getattr(t, attr) for t in tasks])) if tasks else math.nan


def _ratio_of_means(base: dict[str, float], ours: dict[str, float]) -> float:
    ids = sorted(set(base) & set(ours))
    if not ids:
        return math.nan
    return float(np.mean([base[i] for i in ids]) / np.mean([ours[i] for i in ids]))


def aggregate(results: list[dict[str, Any]], mode: Mode) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    base_labels = [b.label for b in R.BASELINES if b in mode.rows]
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        groups.setdefault((r["load"], r["scenario"]), {}).setdefault(r["row"], []).append(r)
    points: dict[str, dict[str, Any]] = {}
    cell_bounds: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]] = {}
    for (load, scenario), by_row in groups.items():
        tct = {label: {k: v for r in runs for k, v in r["tct"].items()} for label, runs in by_row.items()}
        rows_out: dict[str, Any] = {}
        for label, runs in by_row.items():
            m = {k: _mean([r["metrics"][k] for r in runs]) for k in runs[0]["metrics"] if k != "placements"}
            m["placements"] = runs[0]["metrics"]["placements"]
            m["vs"] = {
                b: {
                    **paired_ratio(tct[b], tct[label], rng),
                    "ratio_of_means": _ratio_of_means(tct[b], tct[label]),
                }
                for b in base_labels
                if b in tct and b != label
            }
            rows_out[label] = m
        saga = rows_out.get("saga")
        if saga and saga["vs"]:
            best = min(saga["vs"], key=lambda b: saga["vs"][b]["ratio"])
            for m in rows_out.values():
                m["best_baseline"] = best
        order = [r.label for r in (*mode.rows, *mode.ablations)]
        points.setdefault(load, {})[scenario] = {k: rows_out[k] for k in sorted(rows_out, key=order.index)}
        if "saga" in by_row:
            cell_bounds.setdefault(load, {})[scenario] = _bounds_of(by_row["saga"], tct, base_labels)
    headline: dict[str, dict[str, dict[str, float]]] = {}
    for load, by_scen in points.items():
        have = [sc for sc in HEADLINE_SCENARIOS if "saga" in by_scen.get(sc, {})]
        if not have:
            continue
        headline[load] = {
            b: {
                "geomean": geomean([by_scen[sc]["saga"]["vs"][b]["ratio"] for sc in have]),
                "ratio_of_means": geomean([by_scen[sc]["saga"]["vs"][b]["ratio_of_means"] for sc in have]),
            }
            for b in base_labels
            if all(b in by_scen[sc]["saga"]["vs"] for sc in have)
        }
    bounds: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for load, by_scen in cell_bounds.items():
        have = [sc for sc in HEADLINE_SCENARIOS if sc in by_scen]
        if not have:
            continue
        bounds[load] = {
            b: {
                kind: {
                    stat: geomean([by_scen[sc][b][kind][stat] for sc in have])
                    for stat in by_scen[have[0]][b][kind]
                }
                for kind in (*BOUND_KINDS, "all_schedulers")
                if all(kind in by_scen[sc][b] for sc in have)
            }
            for b in base_labels
            if all(b in by_scen[sc] for sc in have)
        }
    return {
        "points": points,
        "headline": headline,
        "throughput": throughput(points, base_labels),
        "bounds": bounds,
        "bounds_by_scenario": cell_bounds,
    }


BOUND_KINDS = {
    "saga_no_wait": "tct_no_wait",
    "alone": "tct_alone",
}
"""Labelled bounds (oracles, not rows a live system can reach), from the SAGA row's own run:
``saga_no_wait`` = each task's TCT with its hold, queue and pre-fill time removed (its decode and
tool time as measured in that run, so at the concurrency SAGA ran it); ``alone`` = each task alone
on an idle replica (no other task shares it: no scheduler can do better). Closed-loop points add
``all_schedulers`` (ratio of means only): the mean TCT no scheduler can beat given the replicas'
capacity and each agent's latency (``saga_sgl.sim.bounds``, its assumptions there)."""


def _bounds_of(
    saga_runs: list[dict[str, Any]], tct: dict[str, dict[str, float]], base_labels: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Paired geomean and ratio of means of each baseline's TCT over the bound's TCT, same tasks."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for b in base_labels:
        if b not in tct:
            continue
        out[b] = {}
        for kind, key in BOUND_KINDS.items():
            ours = {k: v for r in saga_runs for k, v in r.get(key, {}).items()}
            ids = sorted(set(tct[b]) & set(ours))
            out[b][kind] = {
                "geomean": geomean([tct[b][i] / ours[i] for i in ids]) if ids else math.nan,
                "ratio_of_means": _ratio_of_means(tct[b], ours),
            }
        # All schedulers (closed loop): the bound is on the mean TCT of SAGA's counted tasks, so
        # only a ratio of means (a per-task geomean can trade long tasks for short ones).
        bounds = [r.get("bound_mean_tct_s") for r in saga_runs]
        if bounds and all(isinstance(x, (int, float)) for x in bounds):
            ours_ids = [k for r in saga_runs for k in r["tct"] if k in tct[b]]
            base_mean = float(np.mean([tct[b][i] for i in ours_ids])) if ours_ids else math.nan
            out[b]["all_schedulers"] = {"ratio_of_means": base_mean / float(np.mean(bounds))}
    return out


def throughput(points: dict[str, Any], base_labels: list[str]) -> dict[str, dict[str, Any]]:
    """Completed tasks per minute in the window, summed over the headline scenarios: SAGA against the
    baseline with the highest throughput at each load point (closed loop: the agents' pace)."""
    out: dict[str, dict[str, Any]] = {}
    for load, by_scen in points.items():
        have = [sc for sc in HEADLINE_SCENARIOS if "saga" in by_scen.get(sc, {})]
        if not have:
            continue
        per_row = {
            label: sum(by_scen[sc][label]["tasks_per_min"] for sc in have)
            for label in [*base_labels, "saga"]
            if all(label in by_scen[sc] for sc in have)
        }
        bases = {b: v for b, v in per_row.items() if b != "saga"}
        if not bases:
            continue
        best = max(bases, key=lambda b: bases[b])
        out[load] = {
            "saga_tasks_per_min": per_row["saga"],
            "best_baseline": best,
            "best_baseline_tasks_per_min": bases[best],
            "ratio": per_row["saga"] / bases[best] if bases[best] > 0 else math.nan,
        }
    return out


def _mean(xs: list[Any]) -> Any:
    vals = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return float(np.mean(vals)) if vals else None


def markdown(agg: dict[str, Any], header: dict[str, Any]) -> str:
    lines = [
        f"# Cluster benchmark ({header['mode']})",
        "",
        f"Machine: {header['machine']}. Wall time {header['wall_s']:.0f} s (this invocation; the runs "
        f"reported took {header.get('runs_wall_s', 0.0):.0f} s of wall in all) with {header['jobs']} "
        "processes "
        f"({header['sim_cpu_s']:.0f} s of CPU in the simulations, {header['setup_cpu_s']:.0f} s in the "
        f"serial set-up: about {header['free_cores_wall_s'] / 60:.1f} min on {header['jobs']} free cores).",
        "",
        f"Cluster: {header['replicas']} x {header['replica']}; seeds {header['seeds']}.",
        "",
        *(
            [f"**Partial report: {header['runs_missing']} runs missing** (`--resume` completes it).", ""]
            if header.get("runs_missing")
            else []
        ),
        "## Headline: SAGA vs each baseline (geomean over swe + web-history; > 1 = SAGA faster)",
        "",
        "| load point | baseline | paired geomean | ratio of mean TCTs |",
        "|---|---|---|---|",
    ]
    for load, by_b in agg["headline"].items():
        for b, h in sorted(by_b.items(), key=lambda kv: kv[1]["geomean"]):
            lines.append(f"| {load} | {b} | {h['geomean']:.3f} | {h['ratio_of_means']:.3f} |")
    lines += [
        "",
        "## Ceilings: labelled bounds from SAGA's own runs (oracles, not rows a live system can reach)",
        "",
        "Against each load point's closest baseline, and at the paper point also the paper's baseline "
        "(paired geomean / ratio of means). 'zero hold/queue/"
        "prefill': SAGA's tasks with only their decode and tool time as measured in the same run (at the "
        "concurrency SAGA ran them). 'alone': the same tasks alone on an idle replica; no scheduler "
        "can beat it. 'all schedulers' (closed loop, ratio of mean TCTs only): the baseline's mean TCT "
        "over the lowest mean TCT any scheduler can reach with these agents on these replicas "
        "(capacity vs each agent's latency under the simulator's cost model, co-batched sequences at "
        "their own KV lengths, pre-fill at its floor, queueing counted as zero: saga_sgl/sim/bounds.py).",
        "",
        "| load point | baseline | SAGA measured | bound: SAGA with zero hold/queue/prefill | bound: alone | "
        "bound: all schedulers (means) |",
        "|---|---|---|---|---|---|",
    ]
    for load, by_b in agg.get("bounds", {}).items():
        head = agg["headline"].get(load, {})
        if not head:
            continue
        best = min(head, key=lambda b: head[b]["geomean"])
        for base in dict.fromkeys([best, TARGET_BASELINE.get(load, best)]):
            if base not in by_b or base not in head:
                continue
            bd, h = by_b[base], head[base]
            lines.append(
                f"| {load} | {base} | {h['geomean']:.3f} / {h['ratio_of_means']:.3f} | "
                f"{bd['saga_no_wait']['geomean']:.3f} / {bd['saga_no_wait']['ratio_of_means']:.3f} | "
                f"{bd['alone']['geomean']:.3f} / {bd['alone']['ratio_of_means']:.3f} | "
                + (f"{bd['all_schedulers']['ratio_of_means']:.3f} |" if "all_schedulers" in bd else "- |")
            )
    lines += [
        "",
        "## Throughput: completed tasks/min in the window (sum over swe + web-history)",
        "",
        "| load point | SAGA | best baseline (by throughput) | its tasks/min | SAGA / it |",
        "|---|---|---|---|---|",
    ]
    for load, t in agg.get("throughput", {}).items():
        lines.append(
            f"| {load} | {t['saga_tasks_per_min']:.1f} | {t['best_baseline']} | "
            f"{t['best_baseline_tasks_per_min']:.1f} | {t['ratio']:.3f} |"
        )
    lines += [
        "",
        "## Where the time goes: mean seconds per task (held by admission control / queued at the worker "
        "(incl. work lost to preemption) / prefill / decode / tool)",
        "",
        "| load point | scenario | row | held | queued | prefill | decode | tool | TCT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for load, by_scen in agg["points"].items():
        for scenario, rows in by_scen.items():
            best = rows.get("saga", {}).get("best_baseline")
            for label in [x for x in ("saga", best) if x in rows]:
                m = rows[label]
                parts = " | ".join(f"{m.get(f'time_{k}_s') or 0.0:.1f}" for k in TIME_PARTS)
                lines.append(f"| {load} | {scenario} | {label} | {parts} | {m['tct_mean_s']:.1f} |")
    lines += [
        "",
        "Per point: 'vs best' is the paired geomean of per-task TCT ratios (baseline / row) against the "
        "baseline closest to SAGA there, with a bootstrap 95% CI; 'means' is the ratio of mean TCTs over "
        "the same tasks. 'alone' = mean TCT / mean TCT of the same tasks alone on an idle replica. KV in "
        "use: time-averaged tokens pinned by running requests / pool. Recomputed prefill (Mtok): evict = "
        "computed on this worker before, route = computed only on another worker, steal = prefix rebuilds.",
    ]
    for load, by_scen in agg["points"].items():
        for scenario, rows in by_scen.items():
            lines += [
                "",
                f"## {load} / {scenario}",
                "",
                "| row | TCT mean s | geomean | p99 | vs best (CI) | means | alone | KV in use | "
                "evicted Mtok | recompute evict/route/steal | tasks/min | held | SLO |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for label, m in rows.items():
                best = m.get("best_baseline")
                v = m["vs"].get(best) if best else None
                vs = f"{v['ratio']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})" if v else "-"
                means = f"{v['ratio_of_means']:.3f}" if v else "-"
                lines.append(
                    f"| {label} | {m['tct_mean_s']:.1f} | {m['tct_geomean_s']:.1f} | {m['tct_p99_s']:.1f} | "
                    f"{vs} | {means} | {m['tct_over_alone']:.2f} | {m['kv_in_use']:.2f} | "
                    f"{m['evicted_tokens'] / 1e6:.1f} | "
                    f"{m['recomputed_eviction_tokens'] / 1e6:.1f}/{m['recomputed_routing_tokens'] / 1e6:.1f}/"
                    f"{m['recomputed_steal_tokens'] / 1e6:.1f} | {m['tasks_per_min']:.1f} | "
                    f"{m['held_workflows']:.0f} | {m['slo_attainment']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def plots(agg: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(load, sc, rows) for load, by_scen in agg["points"].items() for sc, rows in by_scen.items()]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 4), squeeze=False)
    for ax, (load, sc, rows) in zip(axes[0], cells, strict=True):
        labels = list(rows)
        ax.bar(range(len(labels)), [rows[x]["tct_mean_s"] for x in labels],
               color=["tab:orange" if x.startswith("saga") else "tab:blue" for x in labels])  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, rotation=70, ha="right", fontsize=6)
        ax.set_title(f"{load} / {sc}: mean TCT (s)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cluster_tct.png", dpi=110)
    plt.close(fig)
    return ["cluster_tct.png"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="8 replicas, 1 seed, swe + web-history (default)")
    g.add_argument(
        "--full", action="store_true", help="16 replicas, 3 seeds, + web, oracle rows and ablations"
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="output directory (JSON, markdown, PNG)"
    )
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated subset of main,ablations (default: quick = main; full = main,ablations)",
    )
    p.add_argument(
        "--loads",
        default=None,
        help="comma-separated load points: paper, production, production-14, oversubscribed "
        "(default: paper,production,oversubscribed)",
    )
    p.add_argument("--scenarios", default=None, help="comma-separated scenarios (default: the mode's)")
    p.add_argument(
        "--rows", default=None, help="comma-separated row labels (default: the mode's; see saga_sgl.sim.rows)"
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--seeds", type=str, default=None, help="override workload seeds, e.g. 1,2,3")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in OUT/runs.jsonl (each run is appended there as it finishes) and run "
        "only the missing ones: a run cut off on a busy machine goes on where it stopped",
    )
    p.add_argument(
        "--no-run",
        action="store_true",
        help="with --resume: run nothing, only aggregate what OUT/runs.jsonl holds (a partial report, "
        "labelled as such, when runs are missing)",
    )
    args = p.parse_args(argv)
    if args.no_run and not args.resume:
        p.error("--no-run needs --resume (it reports what OUT/runs.jsonl holds)")
    mode = FULL if args.full else QUICK
    if args.seeds:
        mode = dataclasses.replace(mode, seeds=tuple(int(x) for x in args.seeds.split(",")))
    if args.loads:
        by_name = {lp.name: lp for lp in ALL_LOAD_POINTS}
        unknown = [x for x in args.loads.split(",") if x not in by_name]
        if unknown:
            p.error(f"unknown load point(s) {unknown}; known: {sorted(by_name)}")
        mode = dataclasses.replace(mode, loads=tuple(by_name[x] for x in args.loads.split(",")))
    if args.scenarios:
        mode = dataclasses.replace(mode, scenarios=tuple(args.scenarios.split(",")))
    if args.rows:
        known = {r.label: r for r in (*R.MAIN_ROWS, *R.ABLATIONS)}
        unknown = [x for x in args.rows.split(",") if x not in known]
        if unknown:
            p.error(f"unknown row(s) {unknown}; known: {sorted(known)}")
        mode = dataclasses.replace(mode, rows=tuple(known[x] for x in args.rows.split(",")))
    sections = set((args.sections or ("main,ablations" if args.full else "main")).split(","))
    bad = sections - {"main", "ablations"}
    if bad:
        p.error(f"unknown section(s) {sorted(bad)}; known: main, ablations")
    return run_benchmark(
        mode,
        sections,
        args.out,
        args.jobs,
        progress=not args.no_progress,
        resume=args.resume,
        run=not args.no_run,
    )


def _key(section: str, load: str, scenario: str, seed: int, row: str) -> str:
    return f"{section}/{load}/{scenario}/{seed}/{row}"


def _load_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Runs already done (``runs.jsonl``); a torn last line (the process was killed) is dropped."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            print(f"{path}:{n}: torn line dropped (the run will be repeated)", file=sys.stderr)
            continue
        done[_key(r["section"], r["load"], r["scenario"], r["seed"], r["row"])] = r
    return done


def run_benchmark(
    mode: Mode,
    sections: set[str],
    out: Path,
    num_procs: int,
    progress: bool = True,
    resume: bool = False,
    run: bool = True,
) -> int:
    """Run ``sections`` of ``mode``; write cluster.json, cluster.md and the plot into ``out``. Each run
    is appended to ``out/runs.jsonl`` as it finishes; ``resume`` keeps the runs already there."""
    t0, c0 = time.perf_counter(), time.process_time()
    jobs = build_jobs(mode, sections)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "runs.jsonl"
    done = _load_runs(log_path) if resume else {}
    # Rewritten with the good runs only, so that a torn last line does not swallow the next one.
    log_path.write_text("".join(json.dumps(r, default=str) + "\n" for r in done.values()))
    wanted = {_key(j.section, j.load, j.scenario, j.seed, j.row.label) for j in jobs}
    results = [r for k, r in done.items() if k in wanted]
    jobs = [j for j in jobs if _key(j.section, j.load, j.scenario, j.seed, j.row.label) not in done]
    if not run:
        jobs = []
    # One seed after the other (a run cut off still has whole seeds), longest first inside a seed so
    # that the processes finish together; results are sorted again below.
    jobs.sort(key=lambda j: (j.seed, -(j.wspec.closed_loop_agents * 40 or _workload(j.wspec).num_calls / 10)))
    for j in jobs:
        _workload(j.wspec)
    setup_cpu = time.process_time() - c0
    missing = len(wanted) - len(results) - len(jobs)
    from tqdm import tqdm

    with (
        mp.get_context("fork").Pool(num_procs) if num_procs > 1 else _Serial() as pool,
        log_path.open("a") as log_file,
    ):
        for r in tqdm(
            pool.imap_unordered(_job, jobs), total=len(jobs), disable=not progress, desc="sim runs"
        ):
            results.append(r)
            log_file.write(json.dumps(r, default=str) + "\n")
            log_file.flush()
    if missing:
        print(f"partial report: {missing} of {len(wanted)} runs missing (--no-run)", file=sys.stderr)
    results.sort(key=lambda r: (r["section"], r["load"], r["scenario"], r["seed"], r["row"]))
    agg = aggregate(results, mode)
    header = {
        "mode": mode.name,
        "machine": _machine(),
        "jobs": num_procs,
        "replicas": mode.cluster.num_workers,
        "replica": f"{mode.cluster.model} TP{mode.cluster.tp} on {mode.cluster.gpu}",
        "cluster": dataclasses.asdict(mode.cluster),
        "seeds": list(mode.seeds),
        "scenarios": list(mode.scenarios),
        "loads": [dataclasses.asdict(lp) for lp in mode.loads],
        "window": {
            "warmup_x_median_task": mode.warmup_factor,
            "window_x_median_task": mode.window_factor,
            "median_task_x_isolated": {lp.name: lp.load_x_isolated for lp in mode.loads},
        },
        "wall_s": time.perf_counter() - t0,
        "runs_wall_s": sum(r["wall_s"] for r in results),
        "runs_missing": missing,
        "sim_cpu_s": sum(r["cpu_s"] for r in results),
        "setup_cpu_s": setup_cpu,
        # What this invocation would take on ``num_procs`` free cores: the serial set-up (windows,
        # workloads) plus the runs' CPU spread over the processes (the longest run as the floor).
        "free_cores_wall_s": setup_cpu
        + max(
            sum(r["cpu_s"] for r in results) / num_procs,
            max((r["cpu_s"] for r in results), default=0.0),
        ),
        "rows": {r.label: r.description for r in (*mode.rows, *mode.ablations)},
        "command": " ".join(sys.argv),
    }
    flat: dict[str, Any] = {}
    prod = agg["headline"].get("production")
    if prod:
        best = min(prod, key=lambda b: prod[b]["geomean"])
        flat["saga.tct_ratio_vs_best_baseline"] = prod[best]["geomean"]
        flat["saga.best_baseline"] = best
    flat["headline"] = agg["headline"]
    flat["throughput"] = agg["throughput"]
    flat["bounds"] = agg["bounds"]
    doc = {
        "header": header,
        **flat,
        "results": agg["points"],
        "runs": [{k: v for k, v in r.items() if k not in PER_TASK_KEYS} for r in results],
    }
    (out / "cluster.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "cluster.md").write_text(markdown(agg, header))
    header["plots"] = plots(agg, out)
    print(markdown(agg, header))
    print(f"wall {header['wall_s']:.1f} s; wrote {out}/cluster.json, cluster.md, {header['plots']}")
    return 0


def _machine() -> str:
    return f"{platform.node()}: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


class _Serial:
    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Any, jobs: list[Any]) -> Any:
        return map(fn, jobs)


if __name__ == "__main__":
    raise SystemExit(main())
