"""Session 7 probe (issue 8): closed-loop throughput at a load point, several seeds and rows, with each
run's per-task start/finish times kept so the throughput can be counted over different windows.

    nice -n 10 .venv/bin/python benchmarks/results/cluster_quick/ablations6/throughput_probe.py \
        OUT.jsonl [rows] [seeds] [load] [scenarios] [window_factor]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import benchmarks.cluster as C  # noqa: E402
from saga_sgl.sim import rows as R  # noqa: E402
from saga_sgl.sim.run import simulate  # noqa: E402

ROWS = {r.label: r for r in (*R.MAIN_ROWS, *R.ABLATIONS)}
for frac in (1.1, 1.15):
    ROWS[f"saga-admission_{frac}x"] = dataclasses.replace(
        R.SAGA,
        label=f"saga-admission_{frac}x",
        admission=dataclasses.replace(R.ADMISSION_CONTROL, kv_threshold_frac=frac),
    )



def main() -> None:
    out = Path(sys.argv[1])
    rows = (sys.argv[2] if len(sys.argv) > 2 else "vllm_sticky_least_loaded,saga").split(",")
    seeds = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "1,2").split(",")]
    name, _, agents = (sys.argv[4] if len(sys.argv) > 4 else "production").partition("@")
    load = next(lp for lp in C.LOAD_POINTS if lp.name == name)
    if agents:  # "production@20": the production point at 20 agents per replica
        load = dataclasses.replace(load, agents_per_replica=int(agents))
    scens = (sys.argv[5] if len(sys.argv) > 5 else "swe,web-history").split(",")
    wf = float(sys.argv[6]) if len(sys.argv) > 6 else C.QUICK.window_factor
    mode = dataclasses.replace(C.QUICK, window_factor=wf)
    with out.open("a") as f:
        for scen in scens:
            for seed in seeds:
                spec, cluster, window = C._setup(mode, load, scen, seed)
                wl = C._workload(spec)
                for label in rows:
                    t0 = time.process_time()
                    res = simulate(wl, ROWS[label], cluster, seed=seed)
                    rec = {
                        "load": load.name, "agents_per_replica": load.agents_per_replica,
                        "scenario": scen, "seed": seed, "row": label,
                        "window_factor": wf, "window": window, "cpu_s": time.process_time() - t0,
                        "counters": {k: v for k, v in res.counters.items() if isinstance(v, (int, float))},
                        "placements": res.placements,
                        "summary": {k: v for k, v in res.summary().items() if isinstance(v, (int, float))},
                        "tasks": [[t.task_id, t.arrival_s, t.finished_s, t.held_s, t.queued_s,
                                   t.prefill_s, t.decode_s, t.isolated_s] for t in res.tasks],
                    }
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    lo, hi = window
                    fin = sum(1 for t in res.tasks if lo <= t.finished_s < hi)
                    print(scen, seed, label, f"fin={fin}", f"cpu={rec['cpu_s']:.1f}", flush=True)


if __name__ == "__main__":
    main()
