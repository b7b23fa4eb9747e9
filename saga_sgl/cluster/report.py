"""The summary of an agent workload run through a router: what a live system can know.

Sources: the client's per-agent results and recorded call graphs (``SagaEndpoint``: prompt, output
and cached tokens per call, from the workers' ``meta_info``), the saga router's Prometheus counters
(steals, admissions, placements, preemptions, SLO), and its dispatch log lines (which worker served
each call). Nothing here is an oracle.

*Recomputed tokens* of a call: prompt tokens the same workflow had already computed in its parent
call's context (prompt + output of the call before it, or the shared prefix of a fork) that the
worker did not find in its cache and computed again. A new workflow's first prompt is not counted.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from saga_sgl.agents.workload import AgentResult
from saga_sgl.frontend.recorder import WorkflowRecord

DISPATCH_LINE = re.compile(r"call (\S+) of (\S+) -> (\S+) \(([^)]*)\)")
"""The saga router's debug line per dispatched call (router/service.py)."""


def recomputed_tokens(record: WorkflowRecord | None) -> int:
    if record is None:
        return 0
    total = 0
    for node in record.nodes.values():
        reusable = 0
        for parent_id, _kind in node.parents:
            parent = record.nodes.get(parent_id)
            if parent is None:
                continue
            if node.shared_prefix_tokens is not None and _kind != "next":
                reusable = max(reusable, node.shared_prefix_tokens)
            else:
                reusable = max(reusable, parent.prompt_tokens + parent.output_tokens)
        total += max(0, min(reusable, node.prompt_tokens) - node.cached_tokens)
    return total


def placements_from_log(log_text: str) -> dict[str, list[tuple[str, str]]]:
    """workflow -> [(worker, reason)] in dispatch order, from the router's debug log."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for m in DISPATCH_LINE.finditer(log_text):
        out[m.group(2)].append((m.group(3), m.group(4)))
    return dict(out)


def metric_delta(before: Mapping[str, float], after: Mapping[str, float], prefix: str) -> dict[str, float]:
    """Per label set: after - before, for every sample whose name starts with ``prefix``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix)}


@dataclass(slots=True)
class RunSummary:
    results: list[AgentResult]
    recomputed: dict[str, int]
    placements: dict[str, list[tuple[str, str]]]
    router_counters: dict[str, float] = field(default_factory=dict)
    admissions_held_peak: int = 0
    wall_s: float = 0.0

    @property
    def ok(self) -> list[AgentResult]:
        return [r for r in self.results if not r.error]

    def tct(self) -> list[float]:
        return [r.duration_s for r in self.ok]

    def cached_ratio(self) -> float:
        prompt = sum(r.prompt_tokens for r in self.results)
        return sum(r.cached_tokens for r in self.results) / prompt if prompt else 0.0

    def counter(self, prefix: str) -> float:
        return sum(v for k, v in self.router_counters.items() if k.startswith(prefix))

    def as_dict(self) -> dict[str, object]:
        tct = self.tct()
        return {
            "agents": len(self.results),
            "failed": len(self.results) - len(self.ok),
            "wall_s": self.wall_s,
            "tct_mean_s": statistics.fmean(tct) if tct else math.nan,
            "tct_p50_s": statistics.median(tct) if tct else math.nan,
            "tct_p90_s": _quantile(tct, 0.9),
            "prompt_tokens": sum(r.prompt_tokens for r in self.results),
            "cached_tokens": sum(r.cached_tokens for r in self.results),
            "cached_token_ratio": self.cached_ratio(),
            "recomputed_tokens": sum(self.recomputed.values()),
            "steals": self.counter("saga_router_steals_total"),
            "preemptions": self.counter("saga_router_preemptions_total"),
            "admissions_held_peak": self.admissions_held_peak,
            "placements": {
                k: v for k, v in self.router_counters.items() if k.startswith("saga_router_placements_total")
            },
        }

    def render(self) -> str:
        d = self.as_dict()
        lines = [
            "| workflow | kind | tenant | TCT s | calls | prompt | cached | recomputed | worker(s) |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.results:
            served = self.placements.get(r.workflow_id, [])
            workers = Counter(w.rsplit(":", 1)[-1] for w, _ in served)
            where = ", ".join(f":{port} x{n}" for port, n in workers.items()) or "?"
            status = f"{r.duration_s:.1f}" if not r.error else "failed"
            lines.append(
                f"| {r.workflow_id} | {r.kind} | {r.tenant_id} | {status} | {r.calls} | {r.prompt_tokens} | "
                f"{r.cached_tokens} | {self.recomputed.get(r.workflow_id, 0)} | {where} |"
            )
        reasons = Counter(reason for served in self.placements.values() for _, reason in served)
        moved = sum(1 for served in self.placements.values() if len({w for w, _ in served}) > 1)
        lines += [
            "",
            f"agents: {d['agents']} ({d['failed']} failed), wall {self.wall_s:.1f} s",
            f"task completion time: mean {d['tct_mean_s']:.2f} s, p50 {d['tct_p50_s']:.2f} s, "
            f"p90 {d['tct_p90_s']:.2f} s",
            f"prompt tokens {d['prompt_tokens']}, served from cache {d['cached_tokens']} "
            f"(cached-token ratio {d['cached_token_ratio']:.1%}), recomputed {d['recomputed_tokens']}",
            f"router: {self.counter('saga_router_steals_total'):.0f} steal(s), "
            f"{self.counter('saga_router_preemptions_total'):.0f} preemption(s), admissions held at most "
            f"{self.admissions_held_peak} at once; {moved} workflow(s) served by more than one worker",
            "dispatch reasons: " + (", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "none logged"),
        ]
        return "\n".join(lines)


def _quantile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]
