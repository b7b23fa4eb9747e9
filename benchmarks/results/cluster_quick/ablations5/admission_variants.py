"""Session 5 ablation driver (issue 8, item 3): admission-control threshold variants of the SAGA row
at the production and oversubscribed points, paired against the committed quick run's baselines
(same workloads and seeds: the baseline runs are deterministic, so their per-task TCTs are reused).

    nice -n 10 .venv/bin/python benchmarks/results/cluster_quick/ablations5/admission_variants.py OUT.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import benchmarks.cluster as C  # noqa: E402
from saga_sgl.sim import rows as R  # noqa: E402
from saga_sgl.sim.policies import RowSpec  # noqa: E402


def _admission_variant(label: str, **admission: Any) -> RowSpec:
    """The SAGA row with these admission-control settings changed."""
    return dataclasses.replace(
        R.SAGA, label=label, admission=dataclasses.replace(R.ADMISSION_CONTROL, **admission)
    )


VARIANTS = {
    "saga-admission_1.1x": _admission_variant("saga-admission_1.1x", kv_threshold_frac=1.1),
    "saga-admission_1.2x": _admission_variant("saga-admission_1.2x", kv_threshold_frac=1.2),
    "saga-bound_at_0.9_peak": _admission_variant("saga-bound_at_0.9_peak", bound_footprint_frac=0.9),
    "saga-bound_at_0.8_peak": _admission_variant("saga-bound_at_0.8_peak", bound_footprint_frac=0.8),
}
for cap in (6, 8):
    for order in ("srpt", "urgency"):
        label = f"saga-{order}_running_cap{cap}"
        VARIANTS[label] = dataclasses.replace(
            R.SAGA,
            label=label,
            max_running_requests=cap,
            settings=R._saga_settings({"fairness": {"within_tenant": order}}),
        )
"""SRPT-like ordering needs calls to wait: each worker runs at most ``cap`` calls (SGLang's
``--max-running-requests``) and the waiting ones are ordered (and may preempt) by least predicted
remaining work (``srpt``: the AEG's remaining work from pattern inference, never the true length)
or by Eq. 8 urgency (AFS's default)."""
KEPT = ("tasks_per_min", "held_workflows", "preemptions", "time_held_s")
BASE = {"production": "vllm_sticky_least_loaded", "oversubscribed": "vllm_bounded_hash"}


def main() -> None:
    out = Path(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(VARIANTS)
    loads = sys.argv[3].split(",") if len(sys.argv) > 3 else ["production", "oversubscribed"]
    committed = [json.loads(x) for x in (ROOT / "benchmarks/results/cluster_quick/runs.jsonl").open()]
    base = {(r["load"], r["scenario"], r["row"]): r for r in committed}
    for load in [lp for lp in (C.PRODUCTION, C.OVERSUBSCRIBED) if lp.name in loads]:
        for scen in ("web-history", "swe"):
            spec, cluster, window = C._setup(C.QUICK, load, scen, 1)
            for name in names:
                r = C._job(C.Job(load.name, scen, 1, spec, VARIANTS[name], cluster, window))
                b = base[(load.name, scen, BASE[load.name])]["tct"]
                ids = sorted(set(b) & set(r["tct"]))
                ratios = [b[i] / r["tct"][i] for i in ids]
                line = {
                    "load": load.name,
                    "scenario": scen,
                    "row": name,
                    "vs": BASE[load.name],
                    "geomean": float(np.exp(np.mean(np.log(ratios)))),
                    "ratio_of_means": float(
                        np.mean([b[i] for i in ids]) / np.mean([r["tct"][i] for i in ids])
                    ),
                    "p90_s": float(np.percentile([r["tct"][i] for i in ids], 90)),
                    "base_p90_s": float(np.percentile([b[i] for i in ids], 90)),
                    "cpu_s": r["cpu_s"],
                    **{
                        k: r["metrics"][k]
                        for k in ("tasks_per_min", "held_workflows", "preemptions", "time_held_s")
                    },
                }
                print(json.dumps(line), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
