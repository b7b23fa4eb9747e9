# ruff: noqa  (ad-hoc research script, kept with its outputs for reproducibility)
"""Ad-hoc ablation driver (session 2, developer E): rows at one load point of the quick benchmark,
both headline scenarios; prints per-row stats and the paired geomean vs a baseline. Run from the repo
root: python benchmarks/results/cluster_quick/ablations/ablate.py LOAD SCENARIOS ROWS [BASELINE].

Ablation driver: rows at one load point, both headline scenarios; prints per-row stats vs sticky."""
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
ROWS['nopre'] = rep(S, label='nopre', preemption=False)
ROWS['nopre_noadm'] = rep(S, label='nopre_noadm', preemption=False, admission=ACS())
ROWS['nopre_paperplace'] = rep(S, label='nopre_paperplace', preemption=False, settings={"placement": {"new_workflow": "least_loaded"}})
ROWS['nopre_lru'] = rep(S, label='nopre_lru', preemption=False, eviction='vllm_prefix', ttl=False, page_size=16)
ROWS['nopre_fcfs'] = rep(S, label='nopre_fcfs', preemption=False, fairness='fcfs')
ROWS['nopre_nosteal'] = rep(S, label='nopre_nosteal', preemption=False, stealing=None)
ROWS['sticky_all'] = rep(S, label='sticky_all', placement='sticky_least_loaded', preemption=False)
extra = {}
exec(Path(__file__).with_name('extra_rows.py').read_text())
ROWS.update(extra)
load = {lp.name: lp for lp in C.LOAD_POINTS}[sys.argv[1]]
scens = sys.argv[2].split(',')
labels = sys.argv[3].split(',')
base = sys.argv[4] if len(sys.argv) > 4 else 'vllm_sticky_least_loaded'
rng = np.random.default_rng(0)
for scen in scens:
    spec, cluster, window = C._setup(C.QUICK, load, scen, 1)
    res = {}
    for lab in [base] + [l for l in labels if l != base]:
        t = time.process_time()
        r = C._job(C.Job(load.name, scen, 1, spec, ROWS[lab], cluster, window))
        res[lab] = r
        m = r['metrics']
        pr = paired_ratio(res[base]['tct'], r['tct'], rng)['ratio'] if lab != base else 1.0
        rom = np.mean(list(res[base]['tct'].values())) / np.mean(list(r['tct'].values()))
        print(f"{load.name} {scen:12s} {lab:28s} cpu={time.process_time()-t:6.1f} n={m['num_tasks']} mean={m['tct_mean_s']:7.1f} gm={m['tct_geomean_s']:7.1f} vsbase={pr:.3f} rom={rom:.3f} tpm={m['tasks_per_min']:.2f} kv={m['kv_in_use']:.2f} pre={m['preemptions']} held={m['held_workflows']} steals={m['steals']} busy={m['gpu_busy']:.2f} rec={m['recomputed_eviction_tokens']/1e6:.1f}/{m['recomputed_routing_tokens']/1e6:.1f}/{m['recomputed_steal_tokens']/1e6:.1f}", flush=True)
