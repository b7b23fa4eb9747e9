"""The metrics observer and the result of one simulation run.

Definitions (workloads-and-cost-model.md section 3.3), computed once here:

* TCT = finish of the last call - arrival of the task (tool time included).
* isolated TCT = the task alone on an idle worker with its own KV and the shared system prompt warm
  (``Cluster.isolated_tct_s``); slowdown = TCT / isolated TCT; the SLO deadline is 1.5 x isolated.
* KV hit rate = sum of cached prefix tokens / sum of prompt tokens (token-weighted, per call).
* Recomputed prefill tokens = prompt - cached, split into ``new`` (never computed anywhere before),
  ``evicted`` (was computed on this same worker before: an eviction cost it) and ``elsewhere``
  (computed on another worker only: a routing cost).
* KV memory utilisation: time-averaged occupied tokens / capacity (``raw``) and the part pinned by
  running requests (``active``).
* Where a task's time goes (``TaskRecord``): ``held_s`` in the scheduler's admission hold,
  ``queued_s`` from a call's release to its (last) admission into a batch minus the hold (worker
  queue, steal redirects, and work lost to preemption), ``prefill_s`` from admission to the first
  token, ``decode_s`` from the first token to the finish; the rest of the TCT (``tool_s``) is tool
  time, the same on every row of a workload.

The recorder also keeps each worker's access trace (prompt + output segments per call) so that
Belady can be replayed on exactly the sequence the policy saw (``eviction_cost_vs_belady``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saga_sgl.sim.radix import Node
from saga_sgl.sim.worker import SimCall, SimWorker

if TYPE_CHECKING:
    from saga_sgl.sim.cluster import Cluster, SimTask


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_id: str
    tenant: str
    tenant_class: str
    arrival_s: float
    finished_s: float
    tct_s: float
    isolated_s: float
    num_calls: int
    held_s: float = 0.0
    queued_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def tool_s(self) -> float:
        return self.tct_s - self.held_s - self.queued_s - self.prefill_s - self.decode_s

    @property
    def slowdown(self) -> float:
        return self.tct_s / self.isolated_s if self.isolated_s > 0 else 1.0


@dataclass(slots=True)
class SimResult:
    """Everything one run produced. ``tasks`` holds finished tasks only; ``unfinished`` counts tasks
    that started and did not finish (including ``rejected_tasks``: a call longer than the whole KV
    pool, which SGLang rejects)."""

    tasks: list[TaskRecord]
    unfinished: int
    end_s: float
    counters: dict[str, float]
    placements: dict[str, int]
    worker_traces: list[list[tuple[tuple[int, int], ...]]] = field(repr=False)
    worker_capacity_tokens: list[int] = field(repr=False)
    worker_output_tokens: list[int] = field(repr=False)
    worker_mean_private_tokens: list[float] = field(repr=False, default_factory=list)
    """Time-averaged tokens each worker held outside its tree for running requests (reservations)."""
    num_events: int = 0

    def summary(self) -> dict[str, Any]:
        c = self.counters
        prompt = c["prompt_tokens"] or 1
        return {
            "num_tasks": len(self.tasks),
            "unfinished": self.unfinished,
            "rejected_tasks": c.get("rejected_tasks", 0),
            "end_s": self.end_s,
            "kv_hit_rate": c["hit_tokens"] / prompt,
            "recomputed_tokens": c["recomputed_tokens"],
            "recomputed_evicted_tokens": c["recomputed_evicted"],
            "recomputed_elsewhere_tokens": c["recomputed_elsewhere"],
            "recomputed_new_tokens": c["recomputed_new"],
            "kv_util_raw": c["kv_util_raw"],
            "kv_util_active": c["kv_util_active"],
            "gpu_busy_frac": c["busy_frac"],
            "evicted_tokens": c["evicted_tokens"],
            "steals": c["steals"],
            "rebuild_tokens": c["rebuild_tokens"],
            "placements": dict(self.placements),
            "num_events": self.num_events,
        }


class Recorder:
    """Observer the cluster and workers call; never changes the simulation."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        n = len(cluster.workers)
        # Segments are identified by their whole path (prefix): after observation masking the same
        # segment sits behind another prefix, and recomputing it there is context management, not an
        # eviction. Path ids come from (parent path id, segment id).
        self._path_ids: dict[tuple[int, int], int] = {}
        self._seen_any: set[int] = set()
        self._seen_on: list[set[int]] = [set() for _ in range(n)]
        self._index = {id(w): i for i, w in enumerate(cluster.workers)}
        self.counters: dict[str, float] = defaultdict(float)
        self.placements: Counter[str] = Counter()
        self.tasks: list[TaskRecord] = []
        self.traces: list[list[tuple[tuple[int, int], ...]]] = [[] for _ in range(n)]
        self.output_tokens = [0] * n
        self._times: dict[int, list[float]] = {}
        """Per task (by id of its host object): held, queued, prefill, decode seconds so far."""

    def _task_times(self, task: object) -> list[float]:
        t = self._times.get(id(task))
        if t is None:
            t = self._times[id(task)] = [0.0, 0.0, 0.0, 0.0]
        return t

    def on_release(self, task: object, held_s: float) -> None:
        """Admission control released the task's workflow after ``held_s``."""
        self._task_times(task)[0] += held_s

    def _path_id(self, parent: int, seg_id: int) -> int:
        pid = self._path_ids.get((parent, seg_id))
        if pid is None:
            pid = self._path_ids[(parent, seg_id)] = len(self._path_ids)
        return pid

    def on_placement(self, task: SimTask, worker_id: str, reason: str) -> None:
        self.placements[str(reason)] += 1

    def on_admit(self, worker: SimWorker, call: SimCall, now_s: float) -> None:
        i = self._index[id(worker)]
        seen_here = self._seen_on[i]
        c = self.counters
        if call.is_rebuild:
            # A rebuild's segments count as computed here only once it has finished (on_finish).
            c["rebuild_tokens"] += call.new_tokens
            return
        else:
            c["calls"] += 1
            c["prompt_tokens"] += call.prompt_tokens
            c["hit_tokens"] += call.hit_tokens
            c["recomputed_tokens"] += call.new_tokens
        pos = 0
        prev = -1
        for seg in call.prompt:
            key = self._path_id(prev, seg.seg_id)
            if pos >= call.hit_tokens:
                if key in seen_here:
                    c["recomputed_evicted"] += seg.num_tokens
                elif key in self._seen_any:
                    c["recomputed_elsewhere"] += seg.num_tokens
                else:
                    c["recomputed_new"] += seg.num_tokens
            seen_here.add(key)
            self._seen_any.add(key)
            pos += seg.num_tokens
            prev = key
        if True:
            chain = tuple((s.seg_id, s.num_tokens) for s in call.prompt)
            if call.output_seg is not None:
                chain += ((call.output_seg.seg_id, call.output_seg.num_tokens),)
                self.output_tokens[i] += call.output_seg.num_tokens
            self.traces[i].append(chain)

    def on_finish(self, worker: SimWorker, call: SimCall, now_s: float) -> None:
        if call.is_rebuild:
            i = self._index[id(worker)]
            prev = -1
            for seg in call.prompt:
                prev = self._path_id(prev, seg.seg_id)
                self._seen_on[i].add(prev)
                self._seen_any.add(prev)
            return
        t = self._task_times(call.host)
        first = call.first_token_s if call.first_token_s >= 0 else now_s
        t[1] += call.admitted_s - call.released_s
        t[2] += first - call.admitted_s
        t[3] += now_s - first
        if call.output_seg is not None and not call.is_rebuild:
            i = self._index[id(worker)]
            prev = -1
            for seg in call.prompt:
                prev = self._path_id(prev, seg.seg_id)
            key = self._path_id(prev, call.output_seg.seg_id)
            self._seen_on[i].add(key)
            self._seen_any.add(key)
            self.counters["output_tokens"] += call.output_tokens

    def on_evict(self, worker: SimWorker, node: Node, now_s: float) -> None:
        self.counters["evicted_tokens"] += node.num_tokens
        self.counters["evictions"] += 1

    def on_steal(self, task: SimTask, steal: Any, now_s: float) -> None:
        self.counters["steals"] += 1

    def on_task_finished(self, task: SimTask, now_s: float) -> None:
        spec = task.spec
        held, queued, prefill, decode = self._times.pop(id(task), (0.0, 0.0, 0.0, 0.0))
        self.tasks.append(
            TaskRecord(
                task_id=spec.task_id,
                tenant=spec.tenant,
                tenant_class=spec.tenant_class,
                arrival_s=task.admitted_s,
                finished_s=now_s,
                tct_s=now_s - task.admitted_s,
                isolated_s=task.isolated_s,
                num_calls=len(spec.calls),
                held_s=held,
                queued_s=queued - held,
                prefill_s=prefill,
                decode_s=decode,
            )
        )

    def result(self, end_s: float) -> SimResult:
        workers = self._cluster.workers
        c = self.counters
        span = max(end_s, 1e-9)
        c["kv_util_raw"] = sum(w.used_token_s for w in workers) / (
            span * sum(w.nominal_capacity_tokens for w in workers)
        )
        c["kv_util_active"] = sum(w.active_token_s for w in workers) / (
            span * sum(w.nominal_capacity_tokens for w in workers)
        )
        c["busy_frac"] = sum(w.busy_s for w in workers) / (span * len(workers))
        for key in (
            "recomputed_evicted",
            "recomputed_elsewhere",
            "recomputed_new",
            "steals",
            "rebuild_tokens",
            "evicted_tokens",
            "hit_tokens",
            "prompt_tokens",
            "recomputed_tokens",
        ):
            c.setdefault(key, 0)
        return SimResult(
            tasks=self.tasks,
            unfinished=len(self._cluster.active) + int(c.get("rejected_tasks", 0)),
            end_s=end_s,
            counters=dict(c),
            placements=dict(self.placements),
            worker_traces=self.traces,
            worker_capacity_tokens=[w.capacity_tokens for w in workers],
            worker_output_tokens=self.output_tokens,
            worker_mean_private_tokens=[w.private_token_s / span for w in workers],
            num_events=self._cluster.engine.num_events,
        )
