"""Workload files: JSON Lines in a Mooncake-compatible superset.

One line per LLM call, sorted by task arrival then step. Mooncake's fields come first and keep their
meaning, so SGLang ``bench_serving --dataset-name mooncake`` can replay the file against a real
cluster: ``timestamp`` (ms; for step > 0 the earliest possible release: task arrival plus the tool
latencies before it, i.e. zero inference time), ``input_length``, ``output_length``, ``hash_ids``
(chained ids of 512-token prefix blocks: equal id <=> equal prefix up to the end of that block).

Our additions: ``task_id, tenant, tenant_class, agent_type, task_arrival_s, step, num_steps,
tool, tool_latency_s, parent`` (previous step or null), ``output_seg_id`` and ``segments``
(``[[seg_id, num_tokens], ...]``, the exact prompt, from which ``hash_ids`` derive). A plain Mooncake
file (no ``task_id``) loads as one single-call task per line, its blocks as 512-token segments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from saga_sgl.sim.workloads.model import CallSpec, Segment, TaskSpec, Workload

BLOCK_TOKENS = 512
"""Mooncake's prefix-block size."""


class _BlockHasher:
    """Chained block ids: the id of block i identifies the prompt's content up to the end of block i."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int, int], int] = {}

    def hash_ids(self, prompt: Iterable[Segment]) -> list[int]:
        out: list[int] = []
        prev = -1
        pos = 0  # tokens consumed
        boundary = BLOCK_TOKENS
        segs = list(prompt)
        total = sum(s.num_tokens for s in segs)
        seg_end = 0
        i = 0
        while pos < total:
            end = min(boundary, total)
            # Find the segment containing token end-1 and the offset within it.
            while seg_end < end:
                seg_end += segs[i].num_tokens
                i += 1
            seg = segs[i - 1]
            offset = end - (seg_end - seg.num_tokens)
            key = (prev, seg.seg_id, offset)
            bid = self._ids.get(key)
            if bid is None:
                bid = self._ids[key] = len(self._ids)
            out.append(bid)
            prev = bid
            pos = end
            boundary += BLOCK_TOKENS
        return out


def iter_records(workload: Workload) -> Iterator[dict[str, Any]]:
    hasher = _BlockHasher()
    for task in workload.tasks:
        release = task.arrival_s
        for call in task.calls:
            yield {
                "timestamp": round(release * 1000),
                "input_length": call.prompt_tokens,
                "output_length": call.output_tokens,
                "hash_ids": hasher.hash_ids(call.prompt),
                "task_id": task.task_id,
                "tenant": task.tenant,
                "tenant_class": task.tenant_class,
                "agent_type": task.agent_type,
                "task_arrival_s": task.arrival_s,
                "step": call.step,
                "num_steps": len(task.calls),
                "tool": call.tool,
                "tool_latency_s": call.tool_latency_s,
                "parent": call.step - 1 if call.step > 0 else None,
                "output_seg_id": call.output_seg_id,
                "segments": [[s.seg_id, s.num_tokens] for s in call.prompt],
            }
            release += call.tool_latency_s


def write_jsonl(workload: Workload, path: Path) -> None:
    """Write ``workload`` to ``path`` (one call per line)."""
    with path.open("w") as fh:
        header = {
            "_workload": workload.name,
            "closed_loop_agents": workload.closed_loop_agents,
            "meta": workload.meta,
        }
        fh.write(json.dumps(header, separators=(",", ":")) + "\n")
        for rec in iter_records(workload):
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


def read_jsonl(path: Path) -> Workload:
    """Read a file written by ``write_jsonl``, or a plain Mooncake trace."""
    name, closed, meta = path.stem, 0, {}
    by_task: dict[str, list[dict[str, Any]]] = {}
    plain: list[dict[str, Any]] = []
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if "_workload" in rec:
                name, closed, meta = rec["_workload"], int(rec["closed_loop_agents"]), rec["meta"]
            elif "task_id" in rec:
                by_task.setdefault(rec["task_id"], []).append(rec)
            else:
                plain.append(rec)
    tasks = [_task_from_records(recs) for recs in by_task.values()]
    tasks += [_task_from_mooncake(i, rec) for i, rec in enumerate(plain)]
    tasks.sort(key=lambda t: (t.arrival_s, t.task_id))
    return Workload(tasks=tuple(tasks), name=name, closed_loop_agents=closed, meta=meta)


def _task_from_records(recs: list[dict[str, Any]]) -> TaskSpec:
    recs.sort(key=lambda r: r["step"])
    first = recs[0]
    calls = tuple(
        CallSpec(
            step=r["step"],
            prompt=tuple(Segment(int(a), int(b)) for a, b in r["segments"]),
            output_tokens=int(r["output_length"]),
            output_seg_id=int(r["output_seg_id"]),
            tool=r["tool"],
            tool_latency_s=float(r["tool_latency_s"]),
        )
        for r in recs
    )
    return TaskSpec(
        task_id=first["task_id"],
        tenant=first["tenant"],
        tenant_class=first["tenant_class"],
        agent_type=first["agent_type"],
        arrival_s=float(first["task_arrival_s"]),
        calls=calls,
    )


def _task_from_mooncake(i: int, rec: dict[str, Any]) -> TaskSpec:
    n_in = int(rec["input_length"])
    blocks = list(rec["hash_ids"])
    segs = []
    for j, h in enumerate(blocks):
        size = min(BLOCK_TOKENS, n_in - j * BLOCK_TOKENS)
        if size <= 0:
            break
        # Mooncake ids are small ints; offset them so they never collide with output ids below.
        segs.append(Segment(int(h) + 1, size))
    call = CallSpec(
        step=0,
        prompt=tuple(segs),
        output_tokens=int(rec["output_length"]),
        output_seg_id=-(i + 1),
        tool=None,
        tool_latency_s=0.0,
    )
    return TaskSpec(
        task_id=f"mc-{i}",
        tenant="mooncake",
        tenant_class="mooncake",
        agent_type="mooncake",
        arrival_s=float(rec["timestamp"]) / 1000,
        calls=(call,),
    )
