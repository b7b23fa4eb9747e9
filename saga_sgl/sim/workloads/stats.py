"""Statistics of a generated workload, to check it against published numbers (no simulation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saga_sgl.sim.workloads.model import Workload


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    num_tasks: int
    num_calls: int
    calls_per_task_mean: float
    calls_per_task_max: int
    prompt_tokens_mean: float
    output_tokens_mean: float
    final_context_tokens_mean: float
    """Prompt of each task's last call (the "deepest-turn ISL")."""
    context_growth_tokens_per_call: float
    """Median over tasks of (last prompt - first prompt) / (calls - 1)."""
    infinite_cache_hit_ratio: float
    """Token-weighted longest-prefix hit ratio with one unbounded cache, calls in release order
    (Mooncake's "cache ratio"): the upper bound of any policy."""
    tool_latency_p50_s: float
    tool_latency_p99_s: float


def workload_stats(workload: Workload) -> WorkloadStats:
    tasks = workload.tasks
    calls = [len(t.calls) for t in tasks]
    prompts = [c.prompt_tokens for t in tasks for c in t.calls]
    outputs = [c.output_tokens for t in tasks for c in t.calls]
    finals = [t.calls[-1].prompt_tokens for t in tasks]
    growth = [
        (t.calls[-1].prompt_tokens - t.calls[0].prompt_tokens) / (len(t.calls) - 1)
        for t in tasks
        if len(t.calls) > 1
    ]
    lat = [c.tool_latency_s for t in tasks for c in t.calls if c.tool is not None]
    return WorkloadStats(
        num_tasks=len(tasks),
        num_calls=len(prompts),
        calls_per_task_mean=float(np.mean(calls)),
        calls_per_task_max=int(max(calls)),
        prompt_tokens_mean=float(np.mean(prompts)),
        output_tokens_mean=float(np.mean(outputs)),
        final_context_tokens_mean=float(np.mean(finals)),
        context_growth_tokens_per_call=float(np.median(growth)) if growth else 0.0,
        infinite_cache_hit_ratio=infinite_cache_hit_ratio(workload),
        tool_latency_p50_s=float(np.percentile(lat, 50)) if lat else 0.0,
        tool_latency_p99_s=float(np.percentile(lat, 99)) if lat else 0.0,
    )


def infinite_cache_hit_ratio(workload: Workload) -> float:
    """Replay every call in nominal release order (arrival + preceding tool latencies) through one
    unbounded prefix cache; each call's prompt and output are cached after it."""
    events = []
    for t in workload.tasks:
        release = t.arrival_s
        for c in t.calls:
            events.append((release, t.task_id, c.step, c))
            release += c.tool_latency_s
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    root: dict[int, dict] = {}  # type: ignore[type-arg]
    hit = total = 0
    for _, _, _, c in events:
        node = root
        matching = True
        for seg in c.prompt:
            total += seg.num_tokens
            child = node.get(seg.seg_id)
            if child is None:
                matching = False
                child = node[seg.seg_id] = {}
            elif matching:
                hit += seg.num_tokens
            node = child
        node.setdefault(c.output_seg_id, {})
    return hit / total if total else 0.0
