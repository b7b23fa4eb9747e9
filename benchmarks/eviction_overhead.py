"""Eviction overhead of the saga worker plugin on SGLang's real radix cache.

What it measures: the cache work the SGLang scheduler does per request (match the prefix and lock
it, allocate the new tokens, evicting on shortage, checkpoint the request into the tree, release),
on a real ``UnifiedRadixCache`` over CPU KV pools, with no model. Rows:

* ``lru/rust``: stock SGLang, LRU on the Rust tree core (SGLang's default; the baseline);
* ``lru/python``: SGLang's LRUStrategy on the Python tree core (isolates the core's cost);
* ``reuse_time/python``, ``wa_lru/python``: our policies through the plugin (hooks installed through
  SGLang's HookRegistry, hinted requests, the Python tree core the plugin selects), victims popped
  from the plugin's persistent leaf index;
* ``reuse_time/python-heap``: the same with the leaf index off, i.e. SGLang's per-call heap of all
  evictable leaves ordered by our keys (isolates what the index buys).

Workload: agent workflows that share a 32-token system prompt; each request is the next step of one
workflow and appends 16 tokens to its context (one new radix node). The KV pool holds
``nodes`` x 16 tokens, so once warm the tree holds about ``nodes`` nodes and every request evicts about
one node. ``nodes / steps_resident`` workflows are active, round-robin, so SGLang's eviction heap
(rebuilt from all evictable leaves on every eviction call) holds one leaf per workflow. Hints (saga
rows): predicted next use 1-30 s, P_reuse 0.3-0.95, a tenth of workflows terminal.

Each row runs in its own interpreter, so hooks installed for a saga row never touch a baseline row.

    python benchmarks/eviction_overhead.py                    # 10k and 50k nodes, 3000 requests each
    python benchmarks/eviction_overhead.py --nodes 10000 --requests 500   # quick

Output: JSON, a markdown table and a PNG plot in ``--out`` (default benchmarks/results/), plus the
table on stdout. Numbers are for the machine named in the output; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROWS = ("lru/rust", "lru/python", "reuse_time/python", "wa_lru/python", "reuse_time/python-heap")
SYSTEM_TOKENS = 32
STEP_TOKENS = 16
STEPS_RESIDENT = 10


# --- one row, in a fresh interpreter -------------------------------------------------------------


def run_row(row: str, num_nodes: int, num_requests: int, seed: int) -> dict[str, Any]:
    import random
    from array import array

    from saga_sgl import _cpu_shims

    _cpu_shims.activate()
    import torch
    from sglang.srt.managers.kv_hints import decode_kv_hints_envelope
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams, MatchPrefixParams
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.mem_cache.radix_cache import RadixKey
    from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache
    from sglang.srt.sampling.sampling_params import SamplingParams
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    from saga_sgl.protocol import ReuseHint, encode_kv_hints

    policy, core = row.split("/")
    use_leaf_index = not core.endswith("-heap")
    core = core.removesuffix("-heap")
    saga = policy != "lru"
    if saga:
        from sglang.srt.plugins.hook_registry import HookRegistry

        from saga_sgl.worker import plugin

        plugin.register()
        HookRegistry.apply_hooks()

    set_global_server_args_for_scheduler(ServerArgs(model_path="dummy", page_size=1))
    kv_tokens = num_nodes * STEP_TOKENS + SYSTEM_TOKENS
    num_workflows = max(1, num_nodes // STEPS_RESIDENT)
    max_context = SYSTEM_TOKENS + STEP_TOKENS * (num_requests // num_workflows + STEPS_RESIDENT + 2)
    pool = MHATokenToKVPool(
        size=kv_tokens, page_size=1, dtype=torch.bfloat16, head_num=1, head_dim=4, layer_num=1,
        device="cpu", enable_memory_saver=False,
    )  # fmt: skip
    allocator = TokenToKVPoolAllocator(
        size=kv_tokens, dtype=torch.bfloat16, device="cpu", kvcache=pool, need_sort=False
    )
    req_to_token = ReqToTokenPool(
        size=4, max_context_len=max_context, device="cpu", enable_memory_saver=False
    )
    cache = UnifiedRadixCache(
        CacheInitParams(
            disable=False,
            req_to_token_pool=req_to_token,
            token_to_kv_pool_allocator=allocator,
            page_size=1,
            eviction_policy="saga" if policy == "reuse_time" else policy,
            tree_components=(ComponentType.FULL,),
            tree_core_backend=core,
        )
    )
    expected_core = "RustUnifiedTreeCore" if core == "rust" else "UnifiedTreeCore"
    assert type(cache.tree_core).__name__ == expected_core, type(cache.tree_core).__name__
    if saga:
        cache.tree_core.eviction_strategy.use_leaf_index = use_leaf_index

    rng = random.Random(seed)
    next_token = [1_000_000]

    def fresh(n: int) -> list[int]:
        start = next_token[0]
        next_token[0] += n
        return list(range(start, start + n))

    system = fresh(SYSTEM_TOKENS)
    contexts = [list(system) for _ in range(num_workflows)]
    steps = [0] * num_workflows
    terminal = [rng.random() < 0.1 for _ in range(num_workflows)]
    stats = {
        "evict_s": 0.0,
        "evicted_tokens": 0,
        "evict_calls": 0,
        "cached_tokens": 0,
        "prompt_tokens": 0,
        "heap_leaves": 0,
    }

    def serve(w: int) -> None:
        contexts[w] = contexts[w] + fresh(STEP_TOKENS)
        tokens = contexts[w]
        kv_hints = None
        if saga:
            hint = ReuseHint(
                workflow_id=f"wf{w}",
                step=steps[w],
                reuse_prob=rng.uniform(0.3, 0.95),
                next_use_in_s=rng.uniform(1.0, 30.0),
                terminal=terminal[w],
            )
            kv_hints = decode_kv_hints_envelope(encode_kv_hints(hint))
        steps[w] += 1
        req = Req(
            rid=f"wf{w}:{steps[w]}",
            origin_input_text="",
            origin_input_ids=array("q", tokens),
            sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
            kv_hints=kv_hints,
        )
        req_to_token.alloc([req])
        match = cache.match_prefix(MatchPrefixParams(key=RadixKey(array("q", tokens))))
        prefix_len = match.device_prefix_len
        stats["cached_tokens"] += prefix_len
        stats["prompt_tokens"] += len(tokens)
        req.lock = cache.lock(match.last_device_node)
        req.last_node = match.last_device_node
        need = len(tokens) - prefix_len
        shortage = need - allocator.available_size()
        if shortage > 0:
            stats["heap_leaves"] += len(getattr(cache.tree_core, "evictable_device_leaves", ()))
            t0 = time.perf_counter()
            result = cache.evict(EvictParams(num_tokens=shortage))
            stats["evict_s"] += time.perf_counter() - t0
            stats["evicted_tokens"] += result.num_tokens_evicted
            stats["evict_calls"] += 1
        new = allocator.alloc(need)
        if new is None:
            raise RuntimeError(f"{row}: cannot allocate {need} tokens")
        prefix = cache.path_device_indices(req.last_node)[:prefix_len].to(torch.int64)
        req_to_token.write(
            (req.kv.req_pool_idx, slice(0, len(tokens))), torch.cat([prefix, new.to(torch.int64)])
        )
        req.full_untruncated_fill_ids = array("q", tokens)
        req.extend_end = len(tokens)
        req.kv.kv_committed_len = len(tokens)
        req.kv.cache_protected_len = prefix_len
        req.extra_key = None
        cache.checkpoint_into_tree(req, up_to=len(tokens))
        cache.unlock(req.lock)
        req_to_token.free(req)

    # Warm-up: fill the pool to capacity (about num_nodes nodes), no eviction measured.
    order = [w % num_workflows for w in range(num_nodes)]
    for w in order:
        serve(w)
    for key in stats:
        stats[key] = 0 if isinstance(stats[key], int) else 0.0
    t0 = time.perf_counter()
    for i in range(num_requests):
        serve((num_nodes + i) % num_workflows)
    total_s = time.perf_counter() - t0
    evicted_nodes = stats["evicted_tokens"] / STEP_TOKENS
    result: dict[str, Any] = {
        "row": row,
        "nodes": num_nodes,
        "workflows": num_workflows,
        "requests": num_requests,
        "requests_per_s": num_requests / total_s,
        "inserts_per_s": num_requests / total_s,
        "evicted_nodes_per_s": evicted_nodes / total_s,
        "us_per_request": 1e6 * total_s / num_requests,
        "evict_calls": stats["evict_calls"],
        "us_per_evict_call": 1e6 * stats["evict_s"] / max(1, stats["evict_calls"]),
        "us_per_evicted_node": 1e6 * stats["evict_s"] / max(1.0, evicted_nodes),
        "mean_evictable_leaves": stats["heap_leaves"] / max(1, stats["evict_calls"]),
        "evict_share": stats["evict_s"] / total_s,
        "hit_rate": stats["cached_tokens"] / max(1, stats["prompt_tokens"]),
    }
    if saga:
        runtime = plugin._STATE.runtime
        assert runtime is not None
        result["hook_failures"] = runtime.metrics.value("hook_failures")
        strategy = cache.tree_core.eviction_strategy
        assert (strategy.leaf_index is not None) is use_leaf_index, "leaf index state differs from the row"
    return result


# --- driver -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._machine import cpu_model

    cpu = cpu_model()
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sglang": version("sglang"),
        "torch": version("torch"),
        "note": "cache work only (no model); a shared machine: compare ratios within one run",
    }


def markdown(results: list[dict[str, Any]]) -> str:
    header = (
        "| nodes | row | req/s | µs/request | hit rate | evict calls | evictable leaves | µs/evict call "
        "| µs/evicted node | µs/request vs lru/rust |"
    )
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r["nodes"]: r["us_per_request"] for r in results if r["row"] == "lru/rust"}
    for r in results:
        ratio = r["us_per_request"] / base[r["nodes"]] if r["nodes"] in base else float("nan")
        leaves = f"{r['mean_evictable_leaves']:.0f}" if r["mean_evictable_leaves"] else "n/a"
        lines.append(
            f"| {r['nodes']} | {r['row']} | {r['requests_per_s']:.0f} | {r['us_per_request']:.0f} | "
            f"{r['hit_rate']:.2f} | {r['evict_calls']} | {leaves} | {r['us_per_evict_call']:.0f} | "
            f"{r['us_per_evicted_node']:.1f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["nodes"] for r in results})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ROWS)
    for i, row in enumerate(ROWS):
        values = [
            next((r["us_per_request"] for r in results if r["row"] == row and r["nodes"] == n), 0)
            for n in sizes
        ]
        ax.bar([j + i * width for j in range(len(sizes))], values, width, label=row)
    ax.set_xticks([j + width * (len(ROWS) - 1) / 2 for j in range(len(sizes))], [f"{n} nodes" for n in sizes])
    ax.set_ylabel("µs of cache work per request (lower is better)")
    ax.set_title("Eviction overhead: saga plugin vs SGLang LRU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    args = parser.parse_args()

    if args.row:
        print(json.dumps(run_row(args.row, args.nodes[0], args.requests, args.seed)))
        return

    from tqdm import tqdm

    results = []
    jobs = [(n, row) for n in args.nodes for row in args.rows]
    for n, row in tqdm(jobs, desc="eviction_overhead", unit="row"):
        cmd = [sys.executable, __file__, "--row", row, "--nodes", str(n), "--requests", str(args.requests),
               "--seed", str(args.seed)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"row {row} ({n} nodes) failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eviction_overhead.json").write_text(json.dumps(report, indent=2, default=str))
    table = markdown(results)
    (args.out / "eviction_overhead.md").write_text(
        f"# Eviction overhead\n\nMachine: {report['machine']}\n\n{table}\n"
    )
    plot(results, args.out / "eviction_overhead.png")
    print(table)
    print(f"\nwritten to {args.out}/eviction_overhead.{{json,md,png}}")


if __name__ == "__main__":
    main()
