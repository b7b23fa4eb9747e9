"""Micro-benchmark of the policy core's hot decisions (not a test: no pass/fail thresholds).

* Victim selection: a ``VictimIndex`` over 16,384 cached entries, per eviction policy; one decision
  = pop the victim, report one read (the default's recency guard settles its pairs on reads) and
  index a replacement entry (steady state). ``victim-noguard/...``: the default key without its
  recency guard (the guard's own cost is the difference). ``victim-revalidate/...``: the default
  with every candidate's key recomputed at selection (``VictimIndex(revalidate_all=True)``, the
  reference the index's contract shortcut is tested against; the shortcut's gain is the
  difference). The index's KeyHeap is the native
  saga_kernels build when present (``keyheap_backend`` in the output); the default policy runs once
  more on the pure-Python fallback (``victim-pyheap/...``). For comparison, the paper's
  literal WA-LRU selection: Eq. 1 scored over every entry and the argmax taken (O(N)).
* Placement: one ``place`` call over 1,024 workers, per placement policy.
* Stealing: one epoch's ``plan`` over 1,024 workers and 16,384 workflows.
* AFS: one epoch over 32 tenants and 16,384 workflows (the paper reports 3.1 ms mean for 32 tenants).

Reports the median time per decision over repeats, as JSON (stdout, and ``--out``) plus a
markdown table, with the machine and settings that produced it.

    python benchmarks/policy_micro.py [--entries 16384] [--workers 1024] [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import saga_kernels
from tqdm import tqdm

from saga_sgl.policy import registry
from saga_sgl.policy.eviction.wa_lru import WaLruEviction
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import (
    CacheEntryView,
    CallView,
    TenantId,
    TenantView,
    WorkerId,
    WorkerView,
    WorkflowId,
    WorkflowState,
    WorkflowView,
)


def make_entry(rng: random.Random, entry_id: int, now_s: float) -> CacheEntryView:
    size = rng.randint(16, 8192)
    return CacheEntryView(
        entry_id=entry_id,
        num_tokens=size,
        depth_tokens=size + rng.randint(0, 32768),
        last_access_s=now_s - rng.uniform(0, 600),
        workflow_id=WorkflowId(f"wf{rng.randrange(4096)}"),
        is_finished=rng.random() < 0.1,
        reuse_prob=rng.random(),
        next_use_at_s=now_s + rng.expovariate(1 / 5.0),
        ttl_deadline_s=now_s + rng.uniform(-5, 5) if rng.random() < 0.2 else None,
    )


def make_workers(rng: random.Random, n: int) -> list[WorkerView]:
    return [
        WorkerView(
            worker_id=WorkerId(f"w{i:04d}"),
            num_running_reqs=rng.randint(0, 256),
            num_waiting_reqs=rng.randint(0, 32),
            kv_used_tokens=rng.randint(0, 400_000),
            kv_capacity_tokens=400_000,
            idle_since_s=0.0 if rng.random() < 0.05 else None,
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], None], calls: int, repeats: int) -> dict[str, float]:
    """Median (and min/max) seconds per call over ``repeats`` batches of ``calls`` calls."""
    per_call = []
    cpu_per_call = []  # CPU time of this process: far less sensitive to a loaded, shared machine
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls)
        cpu_per_call.append((time.process_time() - c0) / calls)
    return {
        "median_us": statistics.median(per_call) * 1e6,
        "median_cpu_us": statistics.median(cpu_per_call) * 1e6,
        "min_us": min(per_call) * 1e6,
        "max_us": max(per_call) * 1e6,
        "calls_per_repeat": calls,
        "repeats": repeats,
    }


def bench_eviction(
    name: str,
    n: int,
    repeats: int,
    rng: random.Random,
    backend: str | None = None,
    config: dict[str, Any] | None = None,
    revalidate_all: bool = False,
) -> dict[str, float]:
    policy = registry.create_eviction(name, config)
    now = 1000.0
    entries = [make_entry(rng, i, now) for i in range(n)]
    # The pool holds the n entries (the ghost guard's size; other guards ignore it).
    index = VictimIndex(
        policy, backend, revalidate_all=revalidate_all, capacity_tokens=sum(e.num_tokens for e in entries)
    )
    for e in entries:
        index.add(e, now, 0.8)
    calls = 2000
    # Replacement entries are built before the clock starts: a decision is the index's work only.
    fresh = iter([make_entry(rng, n + i, now + (i + 1) * 1e-3) for i in range(calls * repeats)])
    clock = [now]

    def decide() -> None:
        clock[0] += 1e-3
        victim = index.pop(clock[0], 0.8)
        assert victim is not None
        # One read per decision: the recency guard's bookkeeping (the ghost's with its tokens).
        index.note_path((victim.entry_id,), (victim.num_tokens,))
        index.add(next(fresh), clock[0], 0.8)

    return timed(decide, calls, repeats)


def bench_wa_lru_linear_scan(n: int, repeats: int, rng: random.Random) -> dict[str, float]:
    policy = WaLruEviction()
    now = 1000.0
    entries = [make_entry(rng, i, now) for i in range(n)]

    def decide() -> None:
        tau = max(1.0, max(now - e.last_access_s for e in entries))
        size_max = max(1, max(e.num_tokens for e in entries))
        max(entries, key=lambda e: policy.score(e, now, tau, size_max))

    return timed(decide, 5, repeats)


def bench_placement(
    name: str, workers: list[WorkerView], repeats: int, rng: random.Random
) -> dict[str, float]:
    policy = registry.create_placement(name, rng=random.Random(0))
    calls = []
    for i in range(512):
        affinity = workers[rng.randrange(len(workers))].worker_id if rng.random() < 0.8 else None
        calls.append(
            CallView(
                workflow_id=WorkflowId(f"wf{i}"),
                prompt_tokens=4096,
                prefix=tuple(rng.randrange(32000) for _ in range(64)),
                affinity_worker_id=affinity,
                affinity_cached=rng.random() < 0.9,
                predicted_kv_tokens=16_000,
                prefix_match_tokens={workers[rng.randrange(len(workers))].worker_id: 2048},
            )
        )
    k = [0]

    def decide() -> None:
        policy.place(calls[k[0] % len(calls)], workers, float(k[0]))
        k[0] += 1

    return timed(decide, 200, repeats)


def make_workflows(rng: random.Random, n: int, workers: list[WorkerView], tenants: int) -> list[WorkflowView]:
    states = [WorkflowState.QUEUED, WorkflowState.RUNNING, WorkflowState.TOOL_GAP]
    return [
        WorkflowView(
            workflow_id=WorkflowId(f"wf{i}"),
            tenant_id=TenantId(f"t{i % tenants}"),
            worker_id=workers[rng.randrange(len(workers))].worker_id,
            state=rng.choice(states),
            admitted_at_s=rng.uniform(0, 100),
            cached_prefix_tokens=rng.randint(1000, 64000),
            remaining_work_s=rng.uniform(0, 60),
            deadline_s=rng.uniform(100, 400),
            tool_gap_ends_at_s=rng.uniform(100, 110),
        )
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=16_384)
    ap.add_argument("--workers", type=int, default=1_024)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--only", choices=["victim", "all"], default="all", help="victim: only the victim rows")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    results: dict[str, dict[str, float]] = {}
    tasks: list[tuple[str, Callable[[], dict[str, float]]]] = []
    for name in registry.names("eviction"):
        tasks.append(
            (
                f"victim/{name}@{args.entries}",
                lambda name=name: bench_eviction(name, args.entries, args.repeats, rng),
            )
        )
    # The default policy without its recency guard: the guard's own cost is the difference.
    tasks.append(
        (
            f"victim-noguard/{registry.DEFAULT_EVICTION}@{args.entries}",
            lambda: bench_eviction(
                registry.DEFAULT_EVICTION, args.entries, args.repeats, rng, config={"recency_guard": False}
            ),
        )
    )
    # The default policy behind the ghost LRU guard (policy.eviction.ghost) instead of the pairwise one.
    tasks.append(
        (
            f"victim-ghost/{registry.DEFAULT_EVICTION}@{args.entries}",
            lambda: bench_eviction(
                registry.DEFAULT_EVICTION, args.entries, args.repeats, rng, config={"guard_mode": "ghost"}
            ),
        )
    )
    # The default policy recomputing every candidate's key (the index's reference behaviour).
    tasks.append(
        (
            f"victim-revalidate/{registry.DEFAULT_EVICTION}@{args.entries}",
            lambda: bench_eviction(
                registry.DEFAULT_EVICTION, args.entries, args.repeats, rng, revalidate_all=True
            ),
        )
    )
    # The default policy once more on the other KeyHeap backend (saga_kernels: native vs fallback).
    other = "python" if saga_kernels.default_backend() == "native" else None
    if other is not None:
        tasks.append(
            (
                f"victim-pyheap/{registry.DEFAULT_EVICTION}@{args.entries}",
                lambda: bench_eviction(registry.DEFAULT_EVICTION, args.entries, args.repeats, rng, other),
            )
        )
    tasks.append(
        (
            f"victim/wa_lru_linear_scan@{args.entries}",
            lambda: bench_wa_lru_linear_scan(args.entries, args.repeats, rng),
        )
    )
    workers = make_workers(rng, args.workers)
    for name in registry.names("placement") if args.only == "all" else ():
        tasks.append(
            (
                f"place/{name}@{args.workers}",
                lambda name=name: bench_placement(name, workers, args.repeats, rng),
            )
        )
    workflows = make_workflows(rng, args.entries, workers, 32)
    stealer = registry.create_stealing("saga_steal", rng=random.Random(0))
    afs = registry.create_fairness("afs")
    tenants = [TenantView(tenant_id=TenantId(f"t{i}")) for i in range(32)]
    if args.only == "all":
        tasks.append(
            (
                f"steal_plan/saga_steal@{args.workers}w",
                lambda: timed(lambda: stealer.plan(workers, workflows, 100.0), 5, args.repeats),
            )
        )
        tasks.append(
            (
                "afs_epoch/afs@32t",
                lambda: timed(lambda: afs.epoch(workflows, tenants, 100.0), 10, args.repeats),
            )
        )
    for label, run in tqdm(tasks, desc="policy_micro", file=sys.stderr):
        results[label] = run()
    report = {
        "benchmark": "policy_micro",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "keyheap_backend": saga_kernels.default_backend(),
        },
        "settings": {
            "entries": args.entries,
            "workers": args.workers,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print()
    print(
        f"policy_micro on {report['machine']['platform']}, Python {report['machine']['python']}, "
        f"{args.entries} entries, {args.workers} workers, median of {args.repeats} repeats"
    )
    print()
    print("| decision | median us/decision | min | max | median CPU us/decision |")
    print("|---|---:|---:|---:|---:|")
    for label, r in results.items():
        print(
            f"| {label} | {r['median_us']:.1f} | {r['min_us']:.1f} | {r['max_us']:.1f} | "
            f"{r['median_cpu_us']:.1f} |"
        )
    return report


if __name__ == "__main__":
    main()
