"""Eviction overhead of the saga worker plugin on SGLang's real radix cache, and the ways to make it
fast (issue 14), measured in one run.

What it measures: the cache work the SGLang scheduler does per request (match the prefix and lock
it, allocate the new tokens, evicting on shortage, checkpoint the request into the tree, release),
on a real ``UnifiedRadixCache`` over CPU KV pools, with no model. Rows (``policy/core``):

* ``lru/rust``: stock SGLang, LRU on the Rust tree core (SGLang's default; the baseline);
* ``saga/rust``: option (b) as built: the default saga policy (``reuse_density``) through the
  plugin on SGLang's Rust tree core (match and insert native), victims from the plugin's leaf index
  (``saga_sgl.worker.rust_tree``: a mirror of the tree's shape, victims evicted through the core's
  ``evict_device_leaf``). What a saga worker runs by default;
* ``priority/rust``: option (a): SGLang's Rust core with its ``priority`` policy, each request's
  insert priority a class derived from its hint through the exact policy's key (tier, and the key's
  primary relative to the last use, quantised to one ``decay_s``); inside a class Rust orders by
  last use, and a node keeps the max class of every insert that touched it;
* ``saga/python``: option (c): the same plugin on SGLang's Python tree core (what a saga worker
  runs where the Rust core is unavailable), victims from the leaf index over the native
  ``saga_kernels`` KeyHeap;
* ``saga/python-pyheap``: the same with ``SAGA_KERNELS=python`` (the pure-Python fallback);
* ``saga/python-heap``: the same with the leaf index off (SGLang's per-call heap of every leaf);
* ``lru/python``, ``reuse_time/python``, ``wa_lru/python``: SGLang's LRU on the Python core, and
  the other saga policies (optional rows).

Decisions: every hinted row sees the same requests and the same hints; ``recomputed`` is the
prompt tokens not served from the cache in the measured window (the cost of the eviction
decisions), compared with ``saga/python``, which takes the exact policy's decisions.

Workload: agent workflows that share a 32-token system prompt; each request is the next step of one
workflow and appends 16 tokens to its context (one new radix node). The KV pool holds
``nodes`` x 16 tokens, so once warm the tree holds about ``nodes`` nodes and every request evicts about
one node. ``nodes / steps_resident`` workflows are active, round-robin, so SGLang's eviction heap
(rebuilt from all evictable leaves on every eviction call) holds one leaf per workflow. Hints:
predicted next use 1-30 s, P_reuse 0.3-0.95, a tenth of workflows terminal. The measured window's
requests (tokens, hints, and the ``kv_hints`` envelope SGLang's HTTP side would decode) are built
before the clock starts: only scheduler-side work is timed, the plugin's hint decoding included.

Timing: CPU µs per request of the row's process (``time.process_time``; on a shared machine far
steadier than wall time). Each row runs in its own interpreter, so hooks installed for a saga row
never touch a baseline row. ``--repeat K`` runs every row K times, interleaved, and reports medians
and the median *paired* ratio to ``lru/rust`` (the two runs of one repeat are adjacent in time).
``--breakdown`` also times the plugin's own code (this wraps its entry points and so adds CPU: take
the CPU figures from runs without it).

    python benchmarks/eviction_overhead.py                    # 10k and 50k nodes, 3000 requests each
    python benchmarks/eviction_overhead.py --nodes 50000 --rows lru/rust saga/rust --repeat 3
    python benchmarks/eviction_overhead.py --nodes 10000 --requests 500   # quick

Output: JSON, a markdown table and a PNG plot in ``--out`` (default benchmarks/results/), plus the
table on stdout. Numbers are for the machine named in the output; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

ROWS = (
    "lru/rust",
    "priority/rust",
    "saga/rust",
    "saga/python",
    "saga/python-pyheap",
    "saga/python-heap",
    "lru/python",
    "reuse_time/python",
    "wa_lru/python",
)
DEFAULT_ROWS = ROWS[:6]
SYSTEM_TOKENS = 32
STEP_TOKENS = 16
STEPS_RESIDENT = 10
PRIORITY_CLASSES_PER_TIER = 64
"""Option (a): insert priority = tier * 64 + clamp(32 + floor((primary - last_use) / decay_s), 0, 63)."""


def priority_class(key: Any, last_access_s: float, decay_s: float) -> int:
    """Option (a)'s class of an exact-policy key: its tier, then its primary quantised (higher = kept)."""
    offset = int((key[1] - last_access_s) // decay_s) if key[1] != float("inf") else PRIORITY_CLASSES_PER_TIER
    band = min(max(PRIORITY_CLASSES_PER_TIER // 2 + offset, 0), PRIORITY_CLASSES_PER_TIER - 1)
    return int(key[0]) * PRIORITY_CLASSES_PER_TIER + band


class _PluginTimer:
    """Seconds spent inside the plugin's own code, timed around the outermost plugin call only."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if timer.depth:
                return original(*args, **kwargs)
            timer.depth = 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t0
                timer.depth = 0

        setattr(owner, name, timed)


# --- one row, in a fresh interpreter -------------------------------------------------------------


class _Cache:
    """A real UnifiedRadixCache over CPU pools, driven like SGLang's scheduler drives it."""

    def __init__(self, core: str, eviction_policy: str, kv_tokens: int, max_context: int) -> None:
        import torch
        from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams
        from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
        from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
        from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

        pool = MHATokenToKVPool(
            size=kv_tokens, page_size=1, dtype=torch.bfloat16, head_num=1, head_dim=4, layer_num=1,
            device="cpu", enable_memory_saver=False,
        )  # fmt: skip
        self.allocator = TokenToKVPoolAllocator(
            size=kv_tokens, dtype=torch.bfloat16, device="cpu", kvcache=pool, need_sort=False
        )
        self.req_to_token = ReqToTokenPool(
            size=4, max_context_len=max_context, device="cpu", enable_memory_saver=False
        )
        self.cache = UnifiedRadixCache(
            CacheInitParams(
                disable=False,
                req_to_token_pool=self.req_to_token,
                token_to_kv_pool_allocator=self.allocator,
                page_size=1,
                eviction_policy=eviction_policy,
                tree_components=(ComponentType.FULL,),
                tree_core_backend=core,
            )
        )
        expected = "UnifiedTreeCore"
        if core == "rust":  # a saga policy gets the plugin's saga-rust core (SGLang's Rust core inside)
            expected = "SagaRustTreeCore" if eviction_policy == "saga" else "RustUnifiedTreeCore"
        assert type(self.cache.tree_core).__name__ == expected, type(self.cache.tree_core).__name__
        self.stats = dict.fromkeys(("match_s", "evict_s", "checkpoint_s"), 0.0) | dict.fromkeys(
            ("evicted_tokens", "evict_calls", "cached_tokens", "prompt_tokens", "heap_leaves"), 0
        )
        self._rid = 0

    def serve(self, tokens: list[int], kv_hints: Any = None, priority: int | None = None) -> int:
        """One request; returns its cached prefix length."""
        from array import array

        import torch
        from sglang.srt.managers.schedule_batch import Req
        from sglang.srt.mem_cache.base_prefix_cache import EvictParams, MatchPrefixParams
        from sglang.srt.mem_cache.radix_cache import RadixKey
        from sglang.srt.sampling.sampling_params import SamplingParams

        cache, allocator, stats = self.cache, self.allocator, self.stats
        self._rid += 1
        req = Req(
            rid=f"r{self._rid}",
            origin_input_text="",
            origin_input_ids=array("q", tokens),
            sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
            kv_hints=kv_hints,
            priority=priority,
        )
        self.req_to_token.alloc([req])
        t0 = time.perf_counter()
        match = cache.match_prefix(MatchPrefixParams(key=RadixKey(array("q", tokens))))
        stats["match_s"] += time.perf_counter() - t0
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
            raise RuntimeError(f"cannot allocate {need} tokens")
        prefix = cache.path_device_indices(req.last_node)[:prefix_len].to(torch.int64)
        self.req_to_token.write(
            (req.kv.req_pool_idx, slice(0, len(tokens))), torch.cat([prefix, new.to(torch.int64)])
        )
        req.full_untruncated_fill_ids = array("q", tokens)
        req.extend_end = len(tokens)
        req.kv.kv_committed_len = len(tokens)
        req.kv.cache_protected_len = prefix_len
        req.extra_key = None
        t0 = time.perf_counter()
        cache.checkpoint_into_tree(req, up_to=len(tokens))
        stats["checkpoint_s"] += time.perf_counter() - t0
        cache.unlock(req.lock)
        self.req_to_token.free(req)
        return int(prefix_len)

    def resident(self, tokens: list[int]) -> int:
        from array import array

        from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams
        from sglang.srt.mem_cache.radix_cache import RadixKey

        match = self.cache.match_prefix(MatchPrefixParams(key=RadixKey(array("q", tokens))))
        return int(match.device_prefix_len)


def hint_change_probe() -> dict[str, Any]:
    """Option (a) when a hint changes after insertion: a workflow whose KV was inserted with a high
    class finishes; the only way to tell the Rust core is a later insert with a lower priority,
    and a node keeps the max. The exact policy moves the finished KV to the DEAD tier (first out).
    Returns which context the Rust core evicted."""
    cache = _Cache("rust", "priority", kv_tokens=48, max_context=64)
    kept, idle, fresh = list(range(10, 30)), list(range(40, 60)), list(range(70, 90))
    cache.serve(kept, priority=90)  # its workflow's tool is due back: a high class
    cache.serve(idle, priority=80)  # an ordinary idle workflow
    cache.serve(kept, priority=0)  # the workflow finished: re-inserted with the DEAD class
    cache.serve(fresh, priority=80)  # needs 20 of 8 free: one 20-token context must go
    finished_left, idle_left = cache.resident(kept), cache.resident(idle)
    return {
        "finished_context_resident_tokens": finished_left,
        "idle_context_resident_tokens": idle_left,
        "finished_kv_outlived_idle": finished_left > 0 and idle_left == 0,
    }


def run_row(
    row: str, num_nodes: int, num_requests: int, seed: int, breakdown: bool = False
) -> dict[str, Any]:
    """One row, all its measured requests in one go."""
    steps = row_steps(row, num_nodes, num_requests, seed, breakdown)
    next(steps)  # set-up and warm-up
    try:
        while True:
            steps.send(num_requests)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def run_interleaved(
    rows: list[str], num_nodes: int, num_requests: int, seed: int, block: int
) -> list[dict[str, Any]]:
    """Several rows in this one process: each is set up and warmed up, then their measured requests
    run in alternating blocks of ``block`` requests, each row's CPU time summed over its own blocks.
    Load on a shared machine then falls on every row alike. The plugin's hooks are installed for
    the whole process, so a stock row here also pays their pass-through (a check per hooked call)."""
    if sum(row.split("/")[0] not in ("lru", "priority") for row in rows) > 1 or any("-" in r for r in rows):
        raise SystemExit("--interleave: at most one saga row (one plugin runtime per process), no variants")
    gens = []
    for row in rows:
        gen = row_steps(row, num_nodes, num_requests, seed, False)
        next(gen)
        gens.append(gen)
    results: list[dict[str, Any] | None] = [None] * len(rows)
    while any(r is None for r in results):
        for i, gen in enumerate(gens):
            if results[i] is None:
                try:
                    gen.send(block)
                except StopIteration as done:
                    results[i] = done.value
    return [r | {"interleaved": True} for r in results if r is not None]


def row_steps(
    row: str, num_nodes: int, num_requests: int, seed: int, breakdown: bool
) -> Generator[None, int, dict[str, Any]]:
    """Set up and warm up ``row`` (first ``next``), then serve as many measured requests as each
    ``send`` asks; returns (StopIteration) the row's result once all are served."""
    import random

    from saga_sgl import _cpu_shims

    policy, core = row.split("/")
    core, _, variant = core.partition("-")
    use_leaf_index = variant != "heap"
    if variant == "pyheap":
        os.environ["SAGA_KERNELS"] = "python"
    _cpu_shims.activate()
    from sglang.srt.managers.kv_hints import decode_kv_hints_envelope
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    from saga_sgl.policy import registry
    from saga_sgl.policy.views import CacheEntryView
    from saga_sgl.protocol import ReuseHint, encode_kv_hints

    saga = policy not in ("lru", "priority")
    hinted = policy != "lru"
    timer = _PluginTimer()
    if saga:
        from sglang.srt.plugins.hook_registry import HookRegistry

        from saga_sgl.worker import plugin
        from saga_sgl.worker.evictable import EvictableLeaves
        from saga_sgl.worker.runtime import WorkerRuntime
        from saga_sgl.worker.strategy import SagaEvictionStrategy

        plugin.register()
        HookRegistry.apply_hooks()
    if saga and breakdown:
        # Time the plugin's own code (checkpoint marking, keys, the leaf index, hint decoding).
        for owner, name in [
            (WorkerRuntime, "on_checkpoint"), (WorkerRuntime, "begin_round"),
            (WorkerRuntime, "end_round"), (WorkerRuntime, "hint_of"),
            (SagaEvictionStrategy, "get_priority"), (SagaEvictionStrategy, "sync_leaf"),
            (EvictableLeaves, "pop"), (EvictableLeaves, "sync"),
        ]:  # fmt: skip
            timer.wrap(owner, name)
        from saga_sgl.worker.rust_tree import SagaRustTreeCore

        # The mirror's own bookkeeping (its calls into the Rust core are SGLang's work, not timed).
        for owner, name in [
            (SagaRustTreeCore, "_sync"), (SagaRustTreeCore, "_lock"), (SagaRustTreeCore, "_pop_victim"),
        ]:  # fmt: skip
            timer.wrap(owner, name)
    exact = registry.create_eviction("saga")  # option (a) derives its classes from the exact key
    decay_s = float(getattr(getattr(exact, "settings", None), "decay_s", 60.0))

    set_global_server_args_for_scheduler(ServerArgs(model_path="dummy", page_size=1))
    kv_tokens = num_nodes * STEP_TOKENS + SYSTEM_TOKENS
    num_workflows = max(1, num_nodes // STEPS_RESIDENT)
    max_context = SYSTEM_TOKENS + STEP_TOKENS * (num_requests // num_workflows + STEPS_RESIDENT + 2)
    cache = _Cache(core, "saga" if policy == "saga" else policy, kv_tokens, max_context)
    if saga:
        cache.cache.tree_core.eviction_strategy.use_leaf_index = use_leaf_index

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
    class_s = [0.0]

    def prepare(w: int) -> tuple[list[int], Any, Any]:
        """Workflow ``w``'s next call: its tokens, its hint, and (saga rows) the request's
        ``kv_hints`` envelope as SGLang's HTTP side decodes it (not scheduler work: built before
        the measured window)."""
        contexts[w] = contexts[w] + fresh(STEP_TOKENS)
        hint = envelope = None
        if hinted:
            hint = ReuseHint(
                workflow_id=f"wf{w}",
                step=steps[w],
                reuse_prob=rng.uniform(0.3, 0.95),
                next_use_in_s=rng.uniform(1.0, 30.0),
                terminal=terminal[w],
            )
            if saga:
                envelope = decode_kv_hints_envelope(encode_kv_hints(hint))
        steps[w] += 1
        return contexts[w], hint, envelope

    def serve(call: tuple[list[int], Any, Any]) -> None:
        tokens, hint, kv_hints = call
        priority = None
        if hint is not None and not saga:  # option (a): the class of the exact key this entry gets now
            t0 = time.perf_counter()
            now = time.monotonic()
            view = CacheEntryView(
                entry_id=0, num_tokens=STEP_TOKENS, depth_tokens=len(tokens), last_access_s=now,
                is_terminal=hint.terminal, reuse_prob=hint.reuse_prob,
                next_use_at_s=None if hint.next_use_in_s is None else now + hint.next_use_in_s,
            )  # fmt: skip
            priority = priority_class(exact.key(view, now, 0.0), now, decay_s)
            class_s[0] += time.perf_counter() - t0
        cache.serve(tokens, kv_hints, priority)

    # Warm-up: fill the pool to capacity (about num_nodes nodes), no eviction measured.
    for w in range(num_nodes):
        serve(prepare(w % num_workflows))
    stats = cache.stats
    for key in stats:
        stats[key] = 0 if isinstance(stats[key], int) else 0.0
    timer.seconds = class_s[0] = 0.0
    calls = [prepare((num_nodes + i) % num_workflows) for i in range(num_requests)]  # same order
    total_s = cpu_s = 0.0
    done = 0
    while done < num_requests:
        block = yield
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for call in calls[done : done + block]:
            serve(call)
        total_s += time.perf_counter() - t0
        cpu_s += time.process_time() - cpu0
        done += block
    evicted_nodes = stats["evicted_tokens"] / STEP_TOKENS
    per_req = 1e6 / num_requests
    result: dict[str, Any] = {
        "row": row,
        "nodes": num_nodes,
        "workflows": num_workflows,
        "requests": num_requests,
        "requests_per_s": num_requests / total_s,
        "us_per_request": total_s * per_req,
        "cpu_us_per_request": cpu_s * per_req,
        "match_us_per_request": stats["match_s"] * per_req,
        "evict_us_per_request": stats["evict_s"] * per_req,
        "checkpoint_us_per_request": stats["checkpoint_s"] * per_req,
        "plugin_us_per_request": timer.seconds * per_req if saga and breakdown else None,
        "class_us_per_request": class_s[0] * per_req if policy == "priority" else None,
        "evicted_nodes_per_s": evicted_nodes / total_s,
        "evict_calls": stats["evict_calls"],
        "us_per_evict_call": 1e6 * stats["evict_s"] / max(1, stats["evict_calls"]),
        "us_per_evicted_node": 1e6 * stats["evict_s"] / max(1.0, evicted_nodes),
        "mean_evictable_leaves": stats["heap_leaves"] / max(1, stats["evict_calls"]),
        "evict_share": stats["evict_s"] / total_s,
        "hit_rate": stats["cached_tokens"] / max(1, stats["prompt_tokens"]),
        "recomputed_tokens": stats["prompt_tokens"] - stats["cached_tokens"],
        "hinted": hinted,
    }
    if saga:
        runtime = plugin._STATE.runtime
        assert runtime is not None
        result["hook_failures"] = runtime.metrics.value("hook_failures")
        strategy = cache.cache.tree_core.eviction_strategy
        assert (strategy.leaf_index is not None) is use_leaf_index, "leaf index state differs from the row"
        result["keyheap"] = strategy.leaf_index.victims.backend if strategy.leaf_index is not None else None
    if policy == "priority":
        result["hint_change_probe"] = hint_change_probe()
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
        "| nodes | row | CPU µs/request (median) | vs lru/rust (CPU, paired median) | wall µs/request "
        "| match | evict | checkpoint "
        "| plugin | hit rate | recomputed vs saga/python | µs/evict call | evictable leaves |"
    )
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r["nodes"]: r["cpu_us_per_request"] for r in results if r["row"] == "lru/rust"}
    exact = {r["nodes"]: r["recomputed_tokens"] for r in results if r["row"] == "saga/python"}

    def opt(value: Any, fmt: str = "{:.0f}") -> str:
        return "n/a" if value is None else fmt.format(value)

    for r in results:
        n = r["nodes"]
        ratio = r.get("cpu_vs_lru_rust_paired")
        if ratio is None and n in base:
            ratio = r["cpu_us_per_request"] / base[n]
        recomputed = r["recomputed_tokens"] / exact[n] if n in exact and r["hinted"] and exact[n] else None
        leaves = r["mean_evictable_leaves"] or None
        lines.append(
            f"| {n} | {r['row']} | {r['cpu_us_per_request']:.0f} | {opt(ratio, '{:.2f}x')} | "
            f"{r['us_per_request']:.0f} | {r['match_us_per_request']:.0f} | "
            f"{r['evict_us_per_request']:.0f} | {r['checkpoint_us_per_request']:.0f} | "
            f"{opt(r['plugin_us_per_request'])} | {r['hit_rate']:.3f} | "
            f"{opt(recomputed, '{:.3f}')} | {r['us_per_evict_call']:.0f} | {opt(leaves)} |"
        )
    return "\n".join(lines)


MEDIAN_FIELDS = (
    "cpu_us_per_request", "us_per_request", "match_us_per_request", "evict_us_per_request",
    "checkpoint_us_per_request", "us_per_evict_call", "requests_per_s",
)  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (nodes, row): timing fields are medians over the repeats; the paired ratio is
    the median over repeats of the row's CPU / lru/rust's CPU in the same repeat (adjacent runs)."""
    out = []
    keys = list(dict.fromkeys((r["nodes"], r["row"]) for r in runs))
    for nodes, row in keys:
        mine = [r for r in runs if r["nodes"] == nodes and r["row"] == row]
        merged = dict(mine[0])
        for field in MEDIAN_FIELDS:
            merged[field] = statistics.median(r[field] for r in mine)
        ratios = []
        for r in mine:
            base = next((b for b in runs if b["row"] == "lru/rust" and b["nodes"] == nodes
                         and b["repeat"] == r["repeat"]), None)  # fmt: skip
            if base is not None:
                ratios.append(r["cpu_us_per_request"] / base["cpu_us_per_request"])
        merged["repeats"] = len(mine)
        merged["cpu_vs_lru_rust_paired"] = statistics.median(ratios) if ratios else None
        merged["cpu_us_per_request_runs"] = [r["cpu_us_per_request"] for r in mine]
        out.append(merged)
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["nodes"] for r in results})
    rows = [row for row in ROWS if any(r["row"] == row for r in results)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [
            next((r["cpu_us_per_request"] for r in results if r["row"] == row and r["nodes"] == n), 0)
            for n in sizes
        ]
        ax.bar([j + i * width for j in range(len(sizes))], values, width, label=row)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(sizes))], [f"{n} nodes" for n in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("CPU µs of cache work per request (log; lower is better)")
    ax.set_title("Eviction overhead: saga plugin options vs SGLang's Rust LRU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[10_000, 50_000],
                        help="tree sizes (radix nodes once warm); one run per size and row")
    parser.add_argument("--requests", type=int, default=3000,
                        help="measured requests per row (after warm-up)")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=ROWS,
                        help="rows to run (policy/core; see above)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload and hints")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder for eviction_overhead.{json,md,png}")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every row this many times, interleaved; the table shows medians and "
                             "the median paired CPU ratio to lru/rust (same repeat)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the plugin's own code (wraps its entry points: this adds "
                             "CPU to the saga rows, so compare CPU figures from runs without it)")
    parser.add_argument("--interleave", type=int, default=0, metavar="BLOCK",
                        help="run the rows in ONE process, their measured requests in alternating "
                             "blocks of BLOCK requests (load falls on all rows alike; the stock rows "
                             "then also pass through the plugin's hooks); at most one saga row")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    args = parser.parse_args()

    if args.row:
        if args.interleave:
            rows = args.row.split(",")
            print(json.dumps(run_interleaved(rows, args.nodes[0], args.requests, args.seed, args.interleave)))
        else:
            print(json.dumps(run_row(args.row, args.nodes[0], args.requests, args.seed, args.breakdown)))
        return

    from tqdm import tqdm

    # Repeats interleave the rows (each repeat runs every row once), so paired rows see similar load.
    groups = [",".join(args.rows)] if args.interleave else args.rows
    jobs = [(rep, n, row) for rep in range(args.repeat) for n in args.nodes for row in groups]
    runs = []
    for rep, n, row in tqdm(jobs, desc="eviction_overhead", unit="run"):
        cmd = [sys.executable, __file__, "--row", row, "--nodes", str(n), "--requests", str(args.requests),
               "--seed", str(args.seed), *(["--breakdown"] if args.breakdown else []),
               *(["--interleave", str(args.interleave)] if args.interleave else [])]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"row {row} ({n} nodes) failed:\n{out.stderr[-3000:]}")
        produced = json.loads(out.stdout.strip().splitlines()[-1])
        runs.extend(r | {"repeat": rep} for r in (produced if isinstance(produced, list) else [produced]))
    results = summarise(runs)
    report = {
        "machine": machine(),
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eviction_overhead.json").write_text(json.dumps(report, indent=2, default=str))
    table = markdown(results)
    lines = [table, ""]
    for r in results:
        if "hint_change_probe" in r:
            lines.append(f"Option (a) hint-change probe ({r['nodes']} nodes run): {r['hint_change_probe']}")
    table = "\n".join(lines)
    (args.out / "eviction_overhead.md").write_text(
        f"# Eviction overhead\n\nMachine: {report['machine']}\n\nCommand: `{' '.join(sys.argv)}`\n\n{table}\n"
    )
    plot(results, args.out / "eviction_overhead.png")
    print(table)
    print(f"\nwritten to {args.out}/eviction_overhead.{{json,md,png}}")


if __name__ == "__main__":
    main()
