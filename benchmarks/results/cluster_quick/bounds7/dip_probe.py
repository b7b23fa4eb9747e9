"""Session 7 probe (issue 8): how much of the all-schedulers bound comes from the dip of the
profiled iteration constant c(n) at 21-34 sequences. The "no-dip" rows replace c by its upper
monotone envelope max_{m<=n} c(m): NOT a valid bound (the dip is the cost model's and a scheduler
may use it), only a measure of what the dip is worth. Output: dip_probe.txt.

    nice -n 10 .venv/bin/python benchmarks/results/cluster_quick/bounds7/dip_probe.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import benchmarks.cluster as C  # noqa: E402
from saga_sgl.sim import bounds as B  # noqa: E402
from saga_sgl.sim import rows as R  # noqa: E402
from saga_sgl.sim.cluster import Cluster  # noqa: E402
from saga_sgl.sim.policies import build_row  # noqa: E402

RUNS = Path(__file__).resolve().parent.parent / "runs.jsonl"


def upper_monotone(c: Callable[[int], float]) -> Callable[[int], float]:
    memo: dict[int, float] = {}

    def f(n: int) -> float:
        if n not in memo:
            memo[n] = max(c(m) for m in range(1, n + 1))
        return memo[n]

    return f


def main() -> None:
    recs = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    jobs = {(j.load, j.scenario, j.seed): j for j in C.build_jobs(C.QUICK, {"main"})}
    by = {(x["load"], x["scenario"], x["row"]): x for x in recs if x["section"] == "main"}
    for load in ("production", "oversubscribed"):
        for scen in C.HEADLINE_SCENARIOS:
            saga, sticky = by[(load, scen, "saga")], by[(load, scen, "vllm_sticky_least_loaded")]
            job = jobs[(load, scen, 1)]
            wl = C._workload(job.wspec)
            ids = {k.split("/", 1)[1] for k in saga["tct"]}
            specs = [t for t in wl.tasks if t.task_id in ids]
            cost = Cluster(wl, build_row(R.ROUND_ROBIN, 0), job.cluster).cost
            a = cost.decode_attn_s_per_kv_token
            fl = B.CacheablePrefixes(wl.tasks).floors(
                specs,
                cost.iteration_constant_s,
                cost.prefill_attention_s,
                job.cluster.worker.chunked_prefill_size,
            )
            works = [
                dataclasses.replace(
                    B.task_work(t, a), prefill_gpu_s=fl[t.task_id].gpu_s, prefill_wait_s=fl[t.task_id].wait_s
                )
                for t in specs
            ]
            common = [k for k in saga["tct"] if k in sticky["tct"]]
            base = sum(sticky["tct"][k] for k in common) / len(common)
            for name, c in (
                ("profile", cost.iteration_constant_s),
                ("no-dip (not valid)", upper_monotone(cost.iteration_constant_s)),
            ):
                b = B.closed_loop_mean_tct_bound(
                    works,
                    wl.closed_loop_agents,
                    job.cluster.num_workers,
                    c,
                    job.cluster.worker.max_running_requests,
                    co_batch=B.context_bins(specs),
                    attn_s_per_kv_token=a,
                )
                top = sorted(b.batch_mix, key=lambda x: -x[1])[:4]
                print(
                    f"{load} {scen} {name}: bound {b.mean_tct_s:.1f} s, "
                    f"sticky / bound {base / b.mean_tct_s:.3f}, "
                    f"largest batch-size shares {[(n, round(f, 2)) for n, f in top]}"
                )


if __name__ == "__main__":
    main()
