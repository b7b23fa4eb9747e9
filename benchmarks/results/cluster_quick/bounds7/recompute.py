"""Session 7 (issue 8): the all-schedulers bound (saga_sgl.sim.bounds) recomputed for every
closed-loop run of the committed quick run, with each co-batch pricing; no simulation is run.

    nice -n 10 .venv/bin/python benchmarks/results/cluster_quick/bounds7/recompute.py \
        [RUNS.jsonl] [OUT.jsonl] [--update-runs]

``--update-runs`` rewrites the SAGA runs' ``bound_mean_tct_s`` in RUNS.jsonl with the tightest bound
(``contexts+prefill``, what ``benchmarks/cluster.py`` now records); ``cluster.py --resume --no-run``
then re-aggregates ``cluster.json`` without simulating anything.

Per run: its counted tasks' mean TCT and the bound on their mean per pricing (none / k_min /
contexts). Prints, per load point, the ratio of means vs sticky least-loaded and vs each row
(baseline mean over the SAGA run's counted tasks / the bound on them), per scenario and combined
(geomean over the two scenarios, as ``cluster.json``), and whether any run beats its bound.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import benchmarks.cluster as C  # noqa: E402
from saga_sgl.sim.bounds import closed_loop_mean_tct_bound  # noqa: E402, F401 (documents the source)

HERE = Path(__file__).resolve().parent
BASELINES = ("vllm_sticky_least_loaded", "vllm_bounded_hash")


class _Counted:
    __slots__ = ("task_id",)

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


def main() -> None:
    argv = [a for a in sys.argv[1:] if a != "--update-runs"]
    runs_path = Path(argv[0]) if argv else HERE.parent / "runs.jsonl"
    out_path = Path(argv[1]) if len(argv) > 1 else HERE / "bounds.jsonl"
    records = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
    jobs = {(j.load, j.scenario, j.seed): j for j in C.build_jobs(C.QUICK, {"main"})}
    jobs14 = C.build_jobs(
        C.dataclasses.replace(C.QUICK, loads=(C.PRODUCTION_14,)), {"main"}
    )  # production-14 only if its runs are given
    jobs.update({(j.load, j.scenario, j.seed): j for j in jobs14})
    out = []
    for r in tqdm([r for r in records if r["section"] == "main"], desc="bounds"):
        job = jobs.get((r["load"], r["scenario"], r["seed"]))
        if job is None or not job.wspec.closed_loop_agents:
            continue
        workload = C._workload(job.wspec)
        ids = [k.split("/", 1)[1] for k in r["tct"]]
        bounds = C.closed_loop_bounds(workload, job.cluster, [_Counted(i) for i in ids])
        out.append(
            {
                "load": r["load"],
                "scenario": r["scenario"],
                "seed": r["seed"],
                "row": r["row"],
                "num_tasks": len(ids),
                "tct_mean_s": sum(r["tct"].values()) / len(ids),
                "bound_mean_tct_s": bounds,
                "tct": r["tct"],
            }
        )
    out_path.write_text("".join(json.dumps({k: v for k, v in o.items() if k != "tct"}) + "\n" for o in out))
    beaten = [o for o in out if any(o["tct_mean_s"] < b for b in o["bound_mean_tct_s"].values())]
    print(f"runs: {len(out)}; runs whose mean TCT beats a bound: {len(beaten)}")
    for o in beaten:
        print("  BEATEN", o["load"], o["scenario"], o["row"], o["tct_mean_s"], o["bound_mean_tct_s"])
    by = {(o["load"], o["scenario"], o["row"]): o for o in out}
    for load in sorted({o["load"] for o in out}):
        for baseline in BASELINES:
            print(f"\n{load}: ratio of means vs {baseline} / the bound on SAGA's counted tasks")
            per: dict[str, list[float]] = {}
            for scen in C.HEADLINE_SCENARIOS:
                saga, base = by.get((load, scen, "saga")), by.get((load, scen, baseline))
                if saga is None or base is None:
                    continue
                common = [k for k in saga["tct"] if k in base["tct"]]
                base_mean = sum(base["tct"][k] for k in common) / len(common)
                line = []
                for pricing, b in saga["bound_mean_tct_s"].items():
                    ratio = base_mean / b
                    per.setdefault(pricing, []).append(ratio)
                    line.append(f"{pricing} {ratio:.3f} ({b:.1f} s)")
                saga_ratio = base_mean / (sum(saga["tct"][k] for k in common) / len(common))
                print(f"  {scen}: SAGA measured {saga_ratio:.3f}; bound " + "; ".join(line))
            comb = {p: math.exp(sum(math.log(x) for x in v) / len(v)) for p, v in per.items()}
            print("  combined (geomean of scenarios): " + "; ".join(f"{p} {v:.3f}" for p, v in comb.items()))
    if "--update-runs" in sys.argv:
        tight = {(o["load"], o["scenario"], o["seed"], o["row"]): o["bound_mean_tct_s"] for o in out}
        lines = []
        for r in records:
            b = tight.get((r["load"], r["scenario"], r["seed"], r["row"]))
            if r["section"] == "main" and r["row"] == "saga" and b is not None:
                r["bound_mean_tct_s"] = b["contexts+prefill"]
            lines.append(json.dumps(r) + "\n")
        runs_path.write_text("".join(lines))
        print(f"updated the SAGA runs' bound_mean_tct_s in {runs_path}")


if __name__ == "__main__":
    main()
