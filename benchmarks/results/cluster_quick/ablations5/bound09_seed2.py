"""Session 5: seed 2 of the admission rule change (bound live workflows at 0.9 x peak) against the
session-4 rule and the baselines, production and oversubscribed (OUT.jsonl as argv[1])."""

import dataclasses
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))
import numpy as np

import benchmarks.cluster as C
from saga_sgl.sim import rows as R

V = dataclasses.replace(
    R.SAGA,
    label="saga-bound_at_0.9_peak",
    admission=dataclasses.replace(R.ADMISSION_CONTROL, bound_footprint_frac=0.9),
)
BASE = {"production": R.STICKY, "oversubscribed": R.BOUNDED_HASH}
with open(sys.argv[1], "a") as out:
    for lp in (C.PRODUCTION, C.OVERSUBSCRIBED):
        for scen in ("web-history", "swe"):
            spec, cl, win = C._setup(C.QUICK, lp, scen, 2)
            res = {
                row.label: C._job(C.Job(lp.name, scen, 2, spec, row, cl, win))
                for row in (BASE[lp.name], R.SAGA, V)
            }
            b = res[BASE[lp.name].label]["tct"]
            for lab in (R.SAGA.label, V.label):
                t = res[lab]["tct"]
                ids = sorted(set(b) & set(t))
                line = dict(
                    load=lp.name,
                    scenario=scen,
                    seed=2,
                    row=lab,
                    vs=BASE[lp.name].label,
                    geomean=float(np.exp(np.mean(np.log([b[i] / t[i] for i in ids])))),
                    ratio_of_means=float(np.mean([b[i] for i in ids]) / np.mean([t[i] for i in ids])),
                    tasks_per_min=res[lab]["metrics"]["tasks_per_min"],
                    base_tasks_per_min=res[BASE[lp.name].label]["metrics"]["tasks_per_min"],
                    time_held_s=res[lab]["metrics"]["time_held_s"],
                )
                print(json.dumps(line), flush=True)
                out.write(json.dumps(line) + "\n")
                out.flush()
