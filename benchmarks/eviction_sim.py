"""Simulator eviction cost against Belady on the agent workloads under KV pressure.

Runs the cluster simulator (saga_sgl.sim) on the agent scenarios (``swe``, ``web-history``) with a
small KV pool per worker, for an LRU baseline (vLLM APC + affinity), SAGA (default eviction key),
SAGA without TTL protection, SAGA with WA-LRU, and SAGA routing with clairvoyant Belady eviction
(an oracle, labelled). For each run: the row's eviction-caused recompute (tokens recomputed on a
worker that had computed them before) over Belady's on that worker's own access sequence
(``benchmarks/_cluster_stats.eviction_cost_vs_belady``): ``ratio`` gives Belady the pool the cache
really had (capacity minus running requests' reservations; not a strict bound, a row can go below
1), ``ratio_full_pool`` the whole pool (a strict lower bound, favours the oracle). Every row's
access sequence differs (routing and timing follow its decisions), so compare ratios, not tokens.

    python benchmarks/eviction_sim.py                       # 4 workers x 90K tokens, seeds 7 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._cluster_stats import eviction_cost_vs_belady
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.run import simulate
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads import WorkloadSpec, generate

_ABLATIONS = {r.label: r for r in rows.ABLATIONS}
ROWS = (rows.VLLM_AFFINITY, rows.SAGA, _ABLATIONS["saga-no_ttl"], rows.SAGA_WA_LRU, rows.ORACLE_BELADY)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kv-tokens", type=int, default=90_000, help="KV pool per worker, tokens (KV pressure)")
    ap.add_argument("--workers", type=int, default=4, help="simulated workers")
    ap.add_argument("--scenarios", nargs="+", default=["swe", "web-history"], help="agent workload scenarios")
    ap.add_argument("--horizon-s", type=float, default=180.0, help="arrival window of the workload, seconds")
    ap.add_argument("--rate-per-min", type=float, default=20.0, help="task arrivals per minute")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8], help="workload and simulator seeds")
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "eviction_sim.json"),
        help="JSON output (a markdown table is written next to it)",
    )
    args = ap.parse_args(argv)
    if args.kv_tokens <= 0 or args.workers <= 0 or args.horizon_s <= 0 or args.rate_per_min <= 0:
        ap.error("--kv-tokens, --workers, --horizon-s and --rate-per-min must be > 0")
    settings = ClusterSettings(
        num_workers=args.workers, worker=WorkerSettings(kv_capacity_tokens=args.kv_tokens)
    )
    t0 = time.perf_counter()
    out: list[dict[str, Any]] = []
    jobs = [(sc, seed) for sc in args.scenarios for seed in args.seeds]
    bar = tqdm(total=len(jobs) * len(ROWS), desc="eviction_sim", file=sys.stderr)
    for sc, seed in jobs:
        wl = generate(
            WorkloadSpec(scenario=sc, seed=seed, horizon_s=args.horizon_s, rate_per_min=args.rate_per_min)
        )
        for row in ROWS:
            bar.set_postfix_str(f"{sc} seed {seed} {row.label}")
            r = simulate(wl, row, settings, seed=seed)
            q = eviction_cost_vs_belady(r)
            out.append({"scenario": sc, "seed": seed, "row": row.label, **q})
            bar.update()
    bar.close()
    report = {
        "benchmark": "eviction_sim",
        "command": "python benchmarks/eviction_sim.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
        "runs": out,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Simulator eviction cost vs Belady (agent workloads, KV pressure)",
        "",
        f"Command: `{report['command']}`; {args.workers} workers x {args.kv_tokens:,} KV tokens. "
        f"Wall time {report['wall_s']:.0f} s (2-core shared VM, other jobs running).",
        "",
        "| scenario | seed | row | evict recompute | Belady (effective pool) | ratio | ratio full pool |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for o in out:
        ratio = "n/a" if o["ratio"] is None else f"{o['ratio']:.3f}"
        full = "n/a" if o["ratio_full_pool"] is None else f"{o['ratio_full_pool']:.3f}"
        lines.append(
            f"| {o['scenario']} | {o['seed']} | {o['row']} | {o['policy_evicted_recompute_tokens']:,.0f} | "
            f"{o['belady_evicted_recompute_tokens']:,.0f} | {ratio} | {full} |"
        )
    md = "\n".join(lines) + "\n"
    path.with_suffix(".md").write_text(md)
    print(md)
    return report


if __name__ == "__main__":
    main()
