# ruff: noqa  (ad-hoc research script, kept with its outputs for reproducibility)
"""Paired, multi-seed ablation driver (session 3, developer D).

Runs rows of the quick benchmark (8 x 70B TP4) at the given load points, headline scenarios and
seeds; prints one line per run and, per row, the paired geomean of per-task TCT ratios (baseline /
row) against the load point's strongest baseline (production and paper: sticky least-loaded;
oversubscribed: bounded hash), per (load, scenario, seed). Run from the repo root:

    nice -n 10 .venv/bin/python benchmarks/results/cluster_quick/ablations3/ablate_seeds.py \
        LOADS SCENARIOS SEEDS ROWS > OUT.txt
"""
import dataclasses, sys, time, json
from pathlib import Path
sys.path.insert(0, '.')
import numpy as np
import benchmarks.cluster as C
from benchmarks._cluster_stats import paired_ratio
from saga_sgl.sim import rows as R
from saga_sgl.scheduler.settings import AdmissionControlSettings as ACS

S = R.SAGA
rep = dataclasses.replace
ROWS = {r.label: r for r in (*R.MAIN_ROWS, *R.ABLATIONS)}
extra: dict = {}
exec(Path(__file__).with_name('rows3.py').read_text())
ROWS.update(extra)
BASE = {'production': 'vllm_sticky_least_loaded', 'paper': 'vllm_sticky_least_loaded',
        'oversubscribed': 'vllm_bounded_hash'}
loads = [{lp.name: lp for lp in C.LOAD_POINTS}[x] for x in sys.argv[1].split(',')]
scens = sys.argv[2].split(',')
seeds = [int(x) for x in sys.argv[3].split(',')]
labels = sys.argv[4].split(',')
rng = np.random.default_rng(0)
table: dict = {}
for load in loads:
    base = BASE[load.name]
    for scen in scens:
        for seed in seeds:
            spec, cluster, window = C._setup(C.QUICK, load, scen, seed)
            C._WORKLOADS.clear()
            res = {}
            for lab in [base] + [l for l in labels if l != base]:
                r = C._job(C.Job(load.name, scen, seed, spec, ROWS[lab], cluster, window))
                res[lab] = r
                m = r['metrics']
                pr = paired_ratio(res[base]['tct'], r['tct'], rng)['ratio'] if lab != base else 1.0
                rom = C._ratio_of_means(res[base]['tct'], r['tct'])
                table.setdefault(lab, {})[f"{load.name}/{scen}/{seed}"] = (pr, rom)
                print(f"{load.name} {scen:11s} s{seed} {lab:34s} cpu={r['cpu_s']:5.1f} n={m['num_tasks']} "
                      f"mean={m['tct_mean_s']:7.1f} vsbase={pr:.3f} rom={rom:.3f} tpm={m['tasks_per_min']:.2f} "
                      f"kv={m['kv_in_use']:.2f} pre={m['preemptions']:.0f} held={m['held_workflows']:.0f} "
                      f"busy={m['gpu_busy']:.2f} rec={m['recomputed_eviction_tokens']/1e6:.1f}/"
                      f"{m['recomputed_routing_tokens']/1e6:.1f}/{m['recomputed_steal_tokens']/1e6:.1f} "
                      f"t(held/q/pf/dec/tool)={m.get('time_held_s',0):.0f}/{m.get('time_queued_s',0):.0f}/"
                      f"{m.get('time_prefill_s',0):.0f}/{m.get('time_decode_s',0):.0f}/{m.get('time_tool_s',0):.0f}",
                      flush=True)
print("\nrow: paired geomean vs the load point's strongest baseline, per load/scenario/seed (ratio of means)")
for lab, cells in table.items():
    print(lab, ' '.join(f"{k}={v[0]:.3f}({v[1]:.3f})" for k, v in cells.items()))
print("json", json.dumps(table))
