"""Side-by-side cluster benchmark: SAGA vs its baselines on identical agent workloads (simulated).

Every configuration row replays the *identical* generated workload (common random numbers: same
tasks, prompts, outputs and tool latencies) on a simulated cluster of SGLang-like workers; every
decision comes from ``saga_sgl.policy`` by registry name (rows in ``saga_sgl.sim.rows``). Several
workload seeds; paired per-task statistics.

Modes:

* ``--quick``: 16 workers (Llama-3-8B, TP1, A100 profiles), short horizons, 2 seeds, small sweeps;
  at most ~3 minutes on 2 CPU cores.
* ``--full``: 64 GPUs as the paper's 16 x Llama-3-70B TP4 replicas (A100 profiles), 600 s horizons,
  5 seeds, every sweep point. Tens of minutes.

Sections: ``main`` (every row on the SWE-bench-like, WebArena-like and 10-tenant workloads: TCT
geomean/p50/p99, ratio to each baseline with bootstrap CI and Wilcoxon p, SLO attainment per tenant
class, Jain fairness, KV hit rate, recomputed tokens, KV utilisation, throughput, eviction cost vs
Belady), ``ablations`` (each SAGA mechanism removed), ``cv_sweep`` (tool-latency CV, mean 1.2 s) and
``throughput`` (closed-loop saturated load: BFS / DFS / SAGA order).

Output (``--out DIR``): ``cluster.json`` (all numbers, machine and settings; per row
``<row>.tct_ratio_vs_best_baseline``), ``cluster.md`` (tables) and PNG plots.
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
from saga_sgl.sim import rows as R
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.policies import RowSpec
from saga_sgl.sim.run import simulate
from saga_sgl.sim.workloads import WorkloadSpec, generate

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


QUICK = Mode(
    name="quick",
    cluster=ClusterSettings(num_workers=16, model="llama-3-8b", gpu="a100", tp=1),
    seeds=(1, 2),
    horizon_s=180.0,
    rates={"swe": 48.0, "web": 160.0, "tenants": 0.25},
    cv_points=(0.5, 1.0, 2.0, 3.0),
    sweep_horizon_s=120.0,
    closed_loop_agents=6,
    closed_loop_tasks=10,
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


def _job(args: tuple[str, WorkloadSpec, RowSpec, ClusterSettings, bool, bool]) -> dict[str, Any]:
    section, wspec, row, cluster, belady, closed = args
    workload = generate(wspec)
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
            for seed in mode.seeds:
                for row in R.MAIN_ROWS:
                    jobs.append(("main", _workload_spec(mode, scenario, seed), row, c, True, False))
    if "ablations" in sections:
        for seed in mode.seeds[:1]:
            for row in (R.SAGA, R.VLLM_AFFINITY, *R.ABLATIONS):
                jobs.append(("ablations", _workload_spec(mode, "swe", seed), row, c, False, False))
    if "cv_sweep" in sections:
        for cv in mode.cv_points:
            for row in (R.VLLM_AFFINITY, R.SAGA):
                spec = dataclasses.replace(
                    _workload_spec(mode, "swe", mode.seeds[0], tool_cv=cv), horizon_s=mode.sweep_horizon_s
                )
                jobs.append(("cv_sweep", spec, row, c, False, False))
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


THROUGHPUT_ROWS = (
    dataclasses.replace(R.ROUND_ROBIN, label="bfs", description="breadth-first: every call anywhere, FCFS"),
    dataclasses.replace(
        R.SAGA,
        label="dfs",
        max_running_requests=4,
        description="depth-first: SAGA routing with at most 4 running requests per worker",
    ),
    dataclasses.replace(R.SAGA, label="saga", description="SAGA"),
)


def aggregate(results: list[dict[str, Any]], mode: Mode) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    main = [r for r in results if r["section"] == "main"]
    base_labels = [b.label for b in R.BASELINES]
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in main:
        per.setdefault((r["scenario"], r["row"]), []).append(r)
    scen_out: dict[str, Any] = {}
    for scenario in ("swe", "web", "tenants"):
        rows_out: dict[str, Any] = {}
        tct = {
            label: {k: v for r in per.get((scenario, label), []) for k, v in r["tct"].items()}
            for label in [row.label for row in R.MAIN_ROWS]
        }
        best = min(base_labels, key=lambda b: geomean(list(tct[b].values())) if tct[b] else float("inf"))
        for row in R.MAIN_ROWS:
            runs = per.get((scenario, row.label), [])
            if not runs:
                continue
            m = _mean_metrics([r["metrics"] for r in runs])
            m["tct_geomean_s"] = geomean(list(tct[row.label].values()))
            m["ratios"] = {b: paired_ratio(tct[b], tct[row.label], rng) for b in base_labels}
            m["tct_ratio_vs_best_baseline"] = m["ratios"][best]["ratio"]
            m["best_baseline"] = best
            rows_out[row.label] = m
        scen_out[scenario] = rows_out
    out["scenarios"] = scen_out
    # Headline: geomean over the two paper workloads of SAGA's ratio vs the best baseline of each.
    head = {}
    for row in R.MAIN_ROWS:
        ratios = [
            scen_out[s][row.label]["tct_ratio_vs_best_baseline"]
            for s in HEADLINE_SCENARIOS
            if row.label in scen_out.get(s, {})
        ]
        if ratios:
            head[row.label] = {
                "tct_ratio_vs_best_baseline": geomean(ratios),
                "tct_ratio_vs_vllm_apc_affinity": geomean(
                    [
                        scen_out[s][row.label]["ratios"]["vllm_apc_affinity"]["ratio"]
                        for s in HEADLINE_SCENARIOS
                    ]
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
    for k, v in ms[0].items():
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
    for scenario, rows in agg["scenarios"].items():
        lines += [
            "",
            f"## {scenario}",
            "",
            "| row | TCT geomean s | p50 | p99 | ratio vs best (CI) [p] | SLO overall | Jain | KV hit | "
            "recomputed Mtok | evict/Belady | KV util | tasks/min |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, m in rows.items():
            best = m["ratios"][m["best_baseline"]]
            eb = m.get("eviction_cost_vs_belady", {}).get("ratio", float("nan"))
            lines.append(
                f"| {label} | {m['tct_geomean_s']:.1f} | {m['tct_p50_s']:.1f} | {m['tct_p99_s']:.1f} | "
                f"{best['ratio']:.3f} ({best['ci_low']:.3f}-{best['ci_high']:.3f}) [{best['p_value']:.1e}] | "
                f"{m['slo_attainment'].get('overall', float('nan')):.3f} | {m['jain_fairness']:.3f} | "
                f"{m['kv_hit_rate']:.3f} | {m['recomputed_tokens'] / 1e6:.2f} | {eb:.2f} | "
                f"{m['kv_util_raw']:.2f} | "
                f"{m['throughput_tasks_per_min']:.1f} |"
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
    g.add_argument("--quick", action="store_true", help="16 workers, short horizons, 2 seeds (default)")
    g.add_argument("--full", action="store_true", help="64 GPUs (16 x Llama-3-70B TP4), 600 s, 5 seeds")
    p.add_argument(
        "--out", type=Path, default=Path("bench-out"), help="output directory (JSON, markdown, PNG)"
    )
    p.add_argument(
        "--sections",
        default="main,ablations,cv_sweep,throughput",
        help="comma-separated subset of main,ablations,cv_sweep,throughput",
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--seeds", type=str, default=None, help="override workload seeds, e.g. 1,2,3")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    args = p.parse_args(argv)
    mode = FULL if args.full else QUICK
    if args.seeds:
        mode = dataclasses.replace(mode, seeds=tuple(int(x) for x in args.seeds.split(",")))
    sections = set(args.sections.split(","))
    jobs = build_jobs(mode, sections)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    from tqdm import tqdm

    with mp.get_context("fork").Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        it = pool.imap_unordered(_job, jobs)
        for r in tqdm(it, total=len(jobs), disable=args.no_progress, desc="sim runs"):
            results.append(r)
    results.sort(key=lambda r: (r["section"], r["scenario"], r["seed"], r["row"], str(r["tool_cv"])))
    agg = aggregate(results, mode)
    header = {
        "mode": mode.name,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "cluster": dataclasses.asdict(mode.cluster),
        "seeds": mode.seeds,
        "horizon_s": mode.horizon_s,
        "rates": mode.rates,
        "wall_s": time.perf_counter() - t0,
        "rows": {r.label: r.description for r in (*R.MAIN_ROWS, *R.ABLATIONS, *THROUGHPUT_ROWS)},
        "command": " ".join(sys.argv),
    }
    flat = {
        f"{label}.tct_ratio_vs_best_baseline": h["tct_ratio_vs_best_baseline"]
        for label, h in agg["headline"].items()
    }
    doc = {
        "header": header,
        **flat,
        "results": agg,
        "runs": [{k: v for k, v in r.items() if k != "tct"} for r in results],
    }
    (args.out / "cluster.json").write_text(json.dumps(doc, indent=1, default=str))
    (args.out / "cluster.md").write_text(markdown(agg, header))
    header["plots"] = plots(agg, args.out)
    print(markdown(agg, header))
    print(f"wall {header['wall_s']:.1f} s; wrote {args.out}/cluster.json, cluster.md, {header['plots']}")
    return 0


class _Serial:
    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Any, jobs: list[Any]) -> Any:
        return map(fn, jobs)


if __name__ == "__main__":
    raise SystemExit(main())
