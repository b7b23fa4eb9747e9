"""Discrete-event simulator of an SGLang-like cluster: a host of the workflow scheduler.

It models mechanisms only: per-worker waiting queue, continuous batching with chunked prefill and
a token budget, KV capacity with a page size, a radix cache at segment granularity, decode
fast-forward between batch changes, and a Vidur-style per-iteration GPU cost model interpolated
from profiles (``cost_model``; constants shipped in ``cost_constants.json``). Every decision
(placement, admission, queue order, steals, preemption, TTLs and hints; baselines included) comes
from one ``saga_sgl.scheduler.WorkflowScheduler`` per run, the same object the router hosts: the
cluster feeds it events and carries out its actions. The workers' eviction order comes from the
row's eviction policy, keyed on the hint record the scheduler's actions set (``rows``, ``policies``).

Use::

    from saga_sgl.sim import rows
    from saga_sgl.sim.cluster import ClusterSettings
    from saga_sgl.sim.run import simulate
    from saga_sgl.sim.workloads import WorkloadSpec, generate

    workload = generate(WorkloadSpec(scenario="swe", seed=1, horizon_s=300, rate_per_min=8))
    result = simulate(workload, rows.SAGA, ClusterSettings(num_workers=16), seed=1)
    print(result.summary())

Workloads can be written to and read from Mooncake-compatible JSONL (``workloads.jsonl``). The
side-by-side benchmark is ``python benchmarks/cluster.py --quick`` (see its ``--help``).

Modules: ``engine`` (event heap), ``worker`` (one replica), ``radix`` (segment prefix cache),
``cluster`` (scheduler host + workers), ``views`` (sim entities -> policy views), ``policies`` /
``rows`` (configuration rows by registry name), ``metrics`` (observer, ``SimResult``),
``cost_model`` / ``derive_cost_constants``, ``rng`` (named seeded streams), ``workloads/``.
"""
