"""Side-by-side cluster benchmark: SAGA vs its baselines on identical agent workloads (simulated).

Every configuration row replays the *identical* generated workload (common random numbers: same
tasks, prompts, outputs and tool latencies) on a simulated cluster of SGLang-like workers; every
decision comes from ``saga_sgl.policy`` by registry name (rows in ``saga_sgl.sim.rows``). Several
workload seeds; paired per-task statistics (geomean of TCT ratios over the same task ids, bootstrap
95% CI over tasks, Wilcoxon signed-rank p). Only tasks arriving in the middle 80% of the arrival
window count (warm-up and cool-down dropped); every counted task runs to completion.

Modes:

* ``--quick`` (default): 16 workers = 16 x Llama-3-8B TP1 on A100 profiles, 150 s arrival windows,
  2 seeds (1 for the tenant mix), sections main, kv_pressure, cv_sweep, throughput. About 2-3
  minutes on 2 otherwise idle CPU cores.
* ``--full``: 64 GPUs = the paper's 16 x Llama-3-70B TP4 replicas (A100 profiles), 600 s arrival
  windows, 5 seeds, every section and sweep point. Tens of minutes; run it manually or nightly.

Sections (``--sections``):

* ``main``: every row (round_robin, sglang_cache_aware, vllm_apc_affinity, saga, saga_wa_lru,
  oracle_belady, oracle_infinite_kv) on the SWE-bench-like (``swe``), WebArena-like (``web``) and
  10-tenant (``tenants``) workloads at the cluster's derived KV capacity: TCT geomean/p50/p99, ratio
  to each baseline, SLO attainment (TCT <= 1.5 x isolated TCT) per tenant class, Jain fairness over
  per-tenant mean slowdown, KV hit rate, recomputed prefill tokens, KV utilisation, throughput and
  eviction cost relative to Belady replayed on each row's own per-worker access sequence.
* ``kv_pressure``: the same rows plus every ablation (each SAGA mechanism removed) on ``swe`` with a
  KV budget of ``pressure_kv_tokens`` per replica, the regime where eviction and placement of KV
  matter (at the derived ~400K tokens per replica the 8B cluster is compute-bound first).
* ``ablations``: the ablation rows at the derived capacity (full mode default; quick: opt-in).
* ``cv_sweep``: tool-latency CV 0.5-3 with the mean held at 1.2 s (paper Table 10), KV-pressure cluster.
* ``throughput``: closed-loop saturated load; BFS (SAGA routing, FCFS across workflows), request-level
  BFS (round robin per call), DFS (SAGA routing, at most 4 running requests per worker) and SAGA;
  completed tasks per minute (paper Table 8).

Output (``--out DIR``): ``cluster.json`` (all numbers, the machine and every setting; per row
``<row>.tct_ratio_vs_best_baseline`` = geomean over swe and web of the paired TCT ratio against the
best baseline of each workload, > 1 = faster), ``cluster.md`` (tables) and PNG plots (Agg backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cluster_stats import (
    config_metrics,
    eviction_cost_vs_belady,
    geomean,
    paired_ratio,
    window,
)
from benchmarks._machine import cpu_model
from saga_sgl.sim import rows as R
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.policies import RowSpec
from saga_sgl.sim.run import simulate
from saga_sgl.sim.workloads import Workload, WorkloadSpec, generate

HEADLINE_SCENARIOS = ("swe", "web")
"""The paper's 1.64x is the geomean over SWE-bench and WebArena."""


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    cluster: ClusterSettings
    seeds: tuple[int, ...]
    horizon_s: float
    rates: dict[str, float]
    """Arrival rate per scenario (tasks/min; for ``tenants`` a scale of the paper's 16/8/4)."""
    cv_points: tuple[float, ...]
    sweep_horizon_s: float
    closed_loop_agents: int
    closed_loop_tasks: int
    pressure_kv_tokens: int
    """KV budget per replica of the ``kv_pressure`` section (tokens)."""
    pressure_rate: float
    all_rows_everywhere: bool
    tenant_seeds: int
    """Seeds of the tenant mix (its 100-200-step heavy tasks make it the costliest workload)."""
    """False (quick): the saga_wa_lru and Belady rows run on swe and kv_pressure only, and the
    ablations of kv_pressure on the first seed only."""


QUICK = Mode(
    name="quick",
    cluster=ClusterSettings(num_workers=16, model="llama-3-8b", gpu="a100", tp=1),
    seeds=(1, 2),
    horizon_s=150.0,
    rates={"swe": 48.0, "web": 160.0, "tenants": 0.5},
    cv_points=(0.5, 1.5, 3.0),
    sweep_horizon_s=120.0,
    closed_loop_agents=5,
    closed_loop_tasks=8,
    pressure_kv_tokens=120_000,
    pressure_rate=40.0,
    all_rows_everywhere=False,
    tenant_seeds=1,
)
FULL = Mode(
    name="full",
    cluster=ClusterSettings(num_workers=16, model="llama-3-70b", gpu="a100", tp=4),
    seeds=(1, 2, 3, 4, 5),
    horizon_s=600.0,
    rates={"swe": 24.0, "web": 80.0, "tenants": 0.15},
    cv_points=(0.5, 1.0, 1.5, 2.0, 3.0),
    sweep_horizon_s=300.0,
    closed_loop_agents=8,
    closed_loop_tasks=16,
    pressure_kv_tokens=120_000,
    pressure_rate=20.0,
    all_rows_everywhere=True,
    tenant_seeds=5,
)


def _workload_spec(mode: Mode, scenario: str, seed: int, **kw: Any) -> WorkloadSpec:
    if scenario == "tenants":
        return WorkloadSpec(
            scenario="tenants", seed=seed, horizon_s=mode.horizon_s, rate_scale=mode.rates["tenants"], **kw
        )
    return WorkloadSpec(
        scenario=scenario,
        seed=seed,
        horizon_s=mode.horizon_s,  # type: ignore[arg-type]
        rate_per_min=mode.rates[scenario],
        **kw,
    )


_WORKLOADS: dict[WorkloadSpec, Workload] = {}
"""Each distinct workload, generated once in the parent before the (fork) pool starts: every row of a
section replays the same one, and forked workers read it without pickling."""


def _workload(wspec: WorkloadSpec) -> Workload:
    if wspec not in _WORKLOADS:
        _WORKLOADS[wspec] = generate(wspec)
    return _WORKLOADS[wspec]


def _job(args: tuple[str, WorkloadSpec, RowSpec, ClusterSettings, bool, bool]) -> dict[str, Any]:
    section, wspec, row, cluster, belady, closed = args
    workload = _workload(wspec)
    t0 = time.perf_counter()
    result = simulate(workload, row, cluster, seed=wspec.seed)
    wall = time.perf_counter() - t0
    metrics = config_metrics(result, wspec.horizon_s, cluster.slo_factor, closed)
    if belady:
        metrics["eviction_cost_vs_belady"] = eviction_cost_vs_belady(result)
    tasks = result.tasks if closed else window(result.tasks, wspec.horizon_s)
    return {
        "section": section,
        "scenario": wspec.scenario,
        "seed": wspec.seed,
        "row": row.label,
        "tool_cv": wspec.tool_cv,
        "wall_s": wall,
        "metrics": metrics,
        "tct": {f"{wspec.seed}/{t.task_id}": t.tct_s for t in tasks},
    }


def build_jobs(mode: Mode, sections: set[str]) -> list[tuple[Any, ...]]:
    jobs: list[tuple[Any, ...]] = []
    c = mode.cluster
    if "main" in sections:
        for scenario in ("swe", "web", "tenants"):
            seeds = mode.seeds[: mode.tenant_seeds] if scenario == "tenants" else mode.seeds
            for seed in seeds:
                for row in R.MAIN_ROWS:
                    if scenario != "swe" and not mode.all_rows_everywhere and row in QUICK_SWE_ONLY:
                        continue
                    jobs.append(("main", _workload_spec(mode, scenario, seed), row, c, True, False))
    if "kv_pressure" in sections:
        pc = dataclasses.replace(
            c, worker=dataclasses.replace(c.worker, kv_capacity_tokens=mode.pressure_kv_tokens)
        )
        for i, seed in enumerate(mode.seeds):
            ablations = R.ABLATIONS if i == 0 or mode.all_rows_everywhere else ()
            for row in (*R.MAIN_ROWS, *ablations):
                spec = dataclasses.replace(_workload_spec(mode, "swe", seed), rate_per_min=mode.pressure_rate)
                jobs.append(("kv_pressure", spec, row, pc, True, False))
    if "ablations" in sections:
        for seed in mode.seeds[:1]:
            for row in (R.SAGA, R.VLLM_AFFINITY, *R.ABLATIONS):
                jobs.append(("ablations", _workload_spec(mode, "swe", seed), row, c, False, False))
    if "cv_sweep" in sections:
        # On the KV-pressure cluster: tool-latency variance only matters when KV must be evicted.
        pc = dataclasses.replace(
            c, worker=dataclasses.replace(c.worker, kv_capacity_tokens=mode.pressure_kv_tokens)
        )
        for cv in mode.cv_points:
            for row in (R.VLLM_AFFINITY, R.SAGA):
                spec = dataclasses.replace(
                    _workload_spec(mode, "swe", mode.seeds[0], tool_cv=cv),
                    horizon_s=mode.sweep_horizon_s,
                    rate_per_min=mode.pressure_rate,
                )
                jobs.append(("cv_sweep", spec, row, pc, False, False))
    if "throughput" in sections:
        for row in THROUGHPUT_ROWS:
            spec = WorkloadSpec(
                scenario="swe",
                seed=mode.seeds[0],
                closed_loop_agents=mode.closed_loop_agents * c.num_workers,
                max_tasks=mode.closed_loop_tasks * c.num_workers,
            )
            jobs.append(("throughput", spec, row, c, False, True))
    return jobs


QUICK_SWE_ONLY = (R.SAGA_WA_LRU, R.ORACLE_BELADY)

THROUGHPUT_ROWS = (
    dataclasses.replace(
        R.SAGA,
        label="bfs",
        fairness="fcfs",
        description="breadth-first: SAGA routing, every pending call FCFS across workflows (no AFS)",
    ),
    dataclasses.replace(
        R.ROUND_ROBIN,
        label="bfs_request_level",
        description="request-level breadth-first: every call to the next worker, FCFS, radix LRU",
    ),
    dataclasses.replace(
        R.SAGA,
        label="dfs",
        max_running_requests=4,
        description="depth-first: SAGA routing, at most 4 running requests per worker",
    ),
    dataclasses.replace(R.SAGA, label="saga", description="SAGA (hybrid: AFS order, affinity, stealing)"),
)


def aggregate(results: list[dict[str, Any]], mode: Mode) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    base_labels = [b.label for b in R.BASELINES]
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        if r["section"] == "main":
            name = r["scenario"]
        elif r["section"] == "kv_pressure":
            name = f"{r['scenario']}@kv_pressure"
        else:
            continue
        groups.setdefault(name, {}).setdefault(r["row"], []).append(r)
    scen_out: dict[str, Any] = {}
    for name, by_row in groups.items():
        rows_out: dict[str, Any] = {}
        tct = {label: {k: v for r in runs for k, v in r["tct"].items()} for label, runs in by_row.items()}
        best = min(base_labels, key=lambda b: geomean(list(tct[b].values())) if tct.get(b) else float("inf"))
        for label, runs in by_row.items():
            m = _mean_metrics([r["metrics"] for r in runs])
            m["tct_geomean_s"] = geomean(list(tct[label].values()))
            m["ratios"] = {b: paired_ratio(tct[b], tct[label], rng) for b in base_labels if b in tct}
            if "saga" in tct and label != "saga":
                # > 1: this row is faster than full SAGA on the same tasks (ablations: < 1 = the
                # removed mechanism helped).
                m["ratio_vs_saga"] = paired_ratio(tct["saga"], tct[label], rng)
            m["tct_ratio_vs_best_baseline"] = m["ratios"][best]["ratio"]
            m["best_baseline"] = best
            rows_out[label] = m
        order = [r.label for r in (*R.MAIN_ROWS, *R.ABLATIONS)]
        scen_out[name] = {k: rows_out[k] for k in sorted(rows_out, key=order.index)}
    out["scenarios"] = scen_out
    # Headline: geomean over the two paper workloads of each row's ratio vs the best baseline there.
    head = {}
    for row in R.MAIN_ROWS:
        have = [sc for sc in HEADLINE_SCENARIOS if row.label in scen_out.get(sc, {})]
        if len(have) == len(HEADLINE_SCENARIOS):
            head[row.label] = {
                "tct_ratio_vs_best_baseline": geomean(
                    [scen_out[sc][row.label]["tct_ratio_vs_best_baseline"] for sc in have]
                ),
                "tct_ratio_vs_vllm_apc_affinity": geomean(
                    [scen_out[sc][row.label]["ratios"]["vllm_apc_affinity"]["ratio"] for sc in have]
                ),
            }
    out["headline"] = head
    for key in ("ablations", "cv_sweep", "throughput"):
        sec = [r for r in results if r["section"] == key]
        if not sec:
            continue
        table = {}
        for r in sec:
            name = r["row"] if key != "cv_sweep" else f"cv={r['tool_cv']}/{r['row']}"
            table[name] = {
                "tct_geomean_s": geomean(list(r["tct"].values())),
                "kv_hit_rate": r["metrics"]["kv_hit_rate"],
                "throughput_tasks_per_min": r["metrics"]["throughput_tasks_per_min"],
                "evict_rate": r["metrics"]["recomputed_evicted_tokens"]
                / max(1, r["metrics"]["recomputed_tokens"]),
                "slo_overall": r["metrics"]["slo_attainment"].get("overall"),
            }
        out[key] = table
    return out


def _mean_metrics(ms: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "eviction_cost_vs_belady" in ms[0]:
        pol = sum(m["eviction_cost_vs_belady"]["policy_evicted_recompute_tokens"] for m in ms)
        bel = sum(m["eviction_cost_vs_belady"]["belady_evicted_recompute_tokens"] for m in ms)
        full = sum(m["eviction_cost_vs_belady"]["belady_full_pool_evicted_recompute_tokens"] for m in ms)
        out["eviction_cost_vs_belady"] = {
            "policy_evicted_recompute_tokens": pol,
            "belady_evicted_recompute_tokens": bel,
            "belady_full_pool_evicted_recompute_tokens": full,
            "ratio": pol / bel if bel > 0 else (1.0 if pol == 0 else None),
            "ratio_full_pool": pol / full if full > 0 else (1.0 if pol == 0 else None),
        }
    for k, v in ms[0].items():
        if k == "eviction_cost_vs_belady":
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(np.mean([m[k] for m in ms]))
        elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            keys = set().union(*(m[k].keys() for m in ms))
            out[k] = {kk: float(np.mean([m[k].get(kk, np.nan) for m in ms])) for kk in sorted(keys)}
    return out


def markdown(agg: dict[str, Any], header: dict[str, Any]) -> str:
    lines = [
        f"# Cluster benchmark ({header['mode']})",
        "",
        f"Machine: {header['machine']}",
        "",
        f"Cluster: {header['cluster']}",
        "",
    ]
    lines += [
        "## Headline (geomean over swe + web of the TCT ratio; > 1 = faster than the baseline)",
        "",
        "| row | vs best baseline | vs vllm_apc_affinity |",
        "|---|---|---|",
    ]
    for label, h in agg["headline"].items():
        lines.append(
            f"| {label} | {h['tct_ratio_vs_best_baseline']:.3f} | {h['tct_ratio_vs_vllm_apc_affinity']:.3f} |"
        )
    lines += [
        "",
        "Ratios are geomeans of paired per-task TCT ratios (baseline / row; > 1 = the row is faster) with a "
        "bootstrap 95% CI and a Wilcoxon p. Ablation rows (saga-no_*) run on the first seed only: compare "
        "them through 'ratio vs saga (paired)'. evict/Belady: eviction-caused recompute over Belady's on "
        "the row's own per-worker accesses at the pool the cache really had (nan: Belady needs none).",
    ]
    for scenario, rows in agg["scenarios"].items():
        lines += [
            "",
            f"## {scenario}",
            "",
            "| row | TCT geomean s | p50 | p99 | ratio vs best (CI) [p] | SLO overall | Jain | KV hit | "
            "recomputed Mtok | evict/Belady | KV util | tasks/min | ratio vs saga (paired) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, m in rows.items():
            best = m["ratios"][m["best_baseline"]]
            eb = m.get("eviction_cost_vs_belady", {}).get("ratio")
            eb = float("nan") if eb is None else eb
            lines.append(
                f"| {label} | {m['tct_geomean_s']:.1f} | {m['tct_p50_s']:.1f} | {m['tct_p99_s']:.1f} | "
                f"{best['ratio']:.3f} ({best['ci_low']:.3f}-{best['ci_high']:.3f}) [{best['p_value']:.1e}] | "
                f"{m['slo_attainment'].get('overall', float('nan')):.3f} | {m['jain_fairness']:.3f} | "
                f"{m['kv_hit_rate']:.3f} | {m['recomputed_tokens'] / 1e6:.2f} | {eb:.2f} | "
                f"{m['kv_util_raw']:.2f} | "
                f"{m['throughput_tasks_per_min']:.1f} | {_fmt_ratio(m.get('ratio_vs_saga'))} |"
            )
        slo = {label: m["slo_attainment"] for label, m in rows.items()}
        classes = sorted({c for v in slo.values() for c in v})
        lines += [
            "",
            f"SLO attainment by tenant class ({scenario}):",
            "",
            "| row | " + " | ".join(classes) + " |",
            "|---" * (len(classes) + 1) + "|",
        ]
        for label, v in slo.items():
            lines.append(
                f"| {label} | " + " | ".join(f"{v.get(c, float('nan')):.3f}" for c in classes) + " |"
            )
    for key in ("ablations", "cv_sweep", "throughput"):
        if key not in agg:
            continue
        lines += [
            "",
            f"## {key}",
            "",
            "| row | TCT geomean s | KV hit | evict share | tasks/min | SLO |",
            "|---|---|---|---|---|---|",
        ]
        for label, m in agg[key].items():
            lines.append(
                f"| {label} | {m['tct_geomean_s']:.1f} | {m['kv_hit_rate']:.3f} | {m['evict_rate']:.3f} | "
                f"{m['throughput_tasks_per_min']:.2f} | {m['slo_overall']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _fmt_ratio(r: dict[str, float] | None) -> str:
    if not r:
        return "-"
    return f"{r['ratio']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f})"


def plots(agg: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(agg["scenarios"]), figsize=(5 * len(agg["scenarios"]), 4))
    for ax, (scenario, rows) in zip(np.atleast_1d(axes), agg["scenarios"].items(), strict=False):
        labels = list(rows)
        ax.bar(range(len(labels)), [rows[x]["tct_geomean_s"] for x in labels])
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{scenario}: TCT geomean (s)")
    fig.tight_layout()
    fig.savefig(out / "cluster_tct.png", dpi=110)
    files.append("cluster_tct.png")
    plt.close(fig)
    if "cv_sweep" in agg:
        fig, ax = plt.subplots(figsize=(5, 4))
        for row in ("vllm_apc_affinity", "saga"):
            pts = sorted(
                (float(k.split("/")[0][3:]), v["tct_geomean_s"])
                for k, v in agg["cv_sweep"].items()
                if k.endswith("/" + row)
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=row)
        ax.set_xlabel("tool latency CV (mean 1.2 s)")
        ax.set_ylabel("TCT geomean (s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "cluster_cv_sweep.png", dpi=110)
        files.append("cluster_cv_sweep.png")
        plt.close(fig)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--quick",
        action="store_true",
        help="16 workers (Llama-3-8B TP1, A100 profiles), 150 s arrival windows, 2 seeds (default)",
    )
    g.add_argument("--full", action="store_true", help="64 GPUs (16 x Llama-3-70B TP4), 600 s, 5 seeds")
    p.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="output directory (JSON, markdown, PNG)"
    )
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated subset of main,kv_pressure,ablations,cv_sweep,throughput "
        "(default: quick = all but ablations; full = all)",
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--seeds", type=str, default=None, help="override workload seeds, e.g. 1,2,3")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    p.add_argument(
        "--vidur-dir",
        type=str,
        default=None,
        help="re-derive the GPU cost constants from this Vidur profile folder (default: the constants "
        "shipped in saga_sgl/sim/cost_constants.json, derived from ../shared/data/vidur)",
    )
    args = p.parse_args(argv)
    mode = FULL if args.full else QUICK
    if args.vidur_dir:
        mode = dataclasses.replace(mode, cluster=dataclasses.replace(mode.cluster, vidur_dir=args.vidur_dir))
    if args.seeds:
        mode = dataclasses.replace(mode, seeds=tuple(int(x) for x in args.seeds.split(",")))
    default_sections = "main,kv_pressure,cv_sweep,throughput" + (",ablations" if args.full else "")
    sections = set((args.sections or default_sections).split(","))
    return run_benchmark(mode, sections, args.out, args.jobs, progress=not args.no_progress)


def run_benchmark(mode: Mode, sections: set[str], out: Path, num_procs: int, progress: bool = True) -> int:
    """Run ``sections`` of ``mode`` and write cluster.json, cluster.md and the plots into ``out``."""
    jobs = build_jobs(mode, sections)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Longest first (by calls to simulate) so that two processes finish together instead of one
    # running the biggest workloads alone at the end; results are sorted again below.
    jobs.sort(key=lambda job: -_workload(job[1]).num_calls)
    results: list[dict[str, Any]] = []
    from tqdm import tqdm

    with mp.get_context("fork").Pool(num_procs) if num_procs > 1 else _Serial() as pool:
        it = pool.imap_unordered(_job, jobs)
        for r in tqdm(it, total=len(jobs), disable=not progress, desc="sim runs"):
            results.append(r)
    results.sort(key=lambda r: (r["section"], r["scenario"], r["seed"], r["row"], str(r["tool_cv"])))
    agg = aggregate(results, mode)
    header = {
        "mode": mode.name,
        "machine": _machine(),
        "cluster": dataclasses.asdict(mode.cluster),
        "seeds": mode.seeds,
        "horizon_s": mode.horizon_s,
        "rates": mode.rates,
        "wall_s": time.perf_counter() - t0,
        "rows": {r.label: r.description for r in (*R.MAIN_ROWS, *R.ABLATIONS, *THROUGHPUT_ROWS)},
        "command": " ".join(sys.argv),
    }
    flat: dict[str, Any] = {
        f"{label}.tct_ratio_vs_best_baseline": h["tct_ratio_vs_best_baseline"]
        for label, h in agg["headline"].items()
    }
    for scenario, by_row in agg["scenarios"].items():
        for label, m in by_row.items():
            flat[f"{label}.tct_ratio_vs_best_baseline.{scenario}"] = m["tct_ratio_vs_best_baseline"]
    doc = {
        "header": header,
        **flat,
        "results": agg,
        "runs": [{k: v for k, v in r.items() if k != "tct"} for r in results],
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
