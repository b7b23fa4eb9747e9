"""Record one simulator run as a fixed schedule of cache accesses and hint changes per worker.

Why: in the simulator the eviction policy changes the timing (a hit shortens a prefill), so every
row reads its own access sequence and a ratio to Belady computed on each row's own sequence has a
different denominator per row (issue 10: the Belady row itself scored 0.72-1.33). Recording the
accesses once, under one fixed placement and schedule, and replaying that same sequence through
every eviction policy and through Belady (``replay.schedule_replay``) gives every row the same
denominator.

What is recorded, in the order the simulator produced it (times are simulated seconds):

* ``Access``: a call (or a steal's prefix rebuild) admitted on a worker: the prompt's segments,
  named by their whole path (parent path, segment: the recorder's identity), the output segment it
  writes, its workflow, its admission time, and its finish time (``inf`` if it never finished). A
  call retracted by a preemption and admitted again is two accesses; the first one is taken to end
  at its own admission (its reservation is freed and its new KV is not kept, as in SGLang).
* ``HintChange``: the scheduler's hint record of a workflow (``WorkflowScheduler.cache_hints``, what
  a live plugin is told) at each moment the simulator re-keys that workflow's entries: a dispatch, a
  control message, the workflow's end. Nothing clairvoyant is recorded; the Belady oracle derives
  next uses from the accesses themselves.

The recording subclass only observes (it calls the parent first and changes nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from saga_sgl.errors import UnknownWorkflow
from saga_sgl.policy.views import WorkflowId, WorkflowState
from saga_sgl.scheduler import Action, CacheHints, Control, Dispatch
from saga_sgl.sim.cluster import Cluster, ClusterSettings, SimTask
from saga_sgl.sim.metrics import SimResult
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.worker import SimCall, SimWorker
from saga_sgl.sim.workloads.model import Workload

SegmentRef = tuple[int, int]
"""(path id, tokens) of one segment; the path id names the segment and everything before it."""


@dataclass(slots=True)
class Access:
    """One admission of a call on a worker."""

    worker: int
    admit_s: float
    workflow: WorkflowId | None
    prompt: tuple[SegmentRef, ...]
    """Segments the call reads, root first (hits are the longest cached prefix)."""
    output: tuple[SegmentRef, ...]
    """Segments the call writes after its prompt (its output; empty for a rebuild)."""
    finish_s: float = math.inf


@dataclass(frozen=True, slots=True)
class HintChange:
    """The scheduler's hint record of ``workflow`` from ``at_s`` on (None: no hints)."""

    at_s: float
    workflow: WorkflowId
    hints: CacheHints | None
    tool: str = ""
    """The workflow's current tool as the scheduler knows it ("" when none): the class of its gap."""
    agent_type: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """The access at ``events[access]`` ended at ``at_s``: its segments are unpinned."""

    at_s: float
    access: int


Event = Access | Finish | HintChange


@dataclass(slots=True)
class Schedule:
    """A simulator run's cache accesses, finishes and hint changes, in the order they happened."""

    events: list[Event]
    num_workers: int = 0
    capacity_tokens: list[int] = field(default_factory=list)
    """Each worker's KV pool in the recorded run (tokens)."""
    label: str = ""

    def accesses(self, worker: int | None = None) -> list[Access]:
        return [e for e in self.events if isinstance(e, Access) and (worker is None or e.worker == worker)]


class _RecordingCluster(Cluster):
    """``Cluster`` that also writes a ``Schedule`` (observes only; the run is unchanged)."""

    def __init__(self, workload: Workload, row: RowSpec, settings: ClusterSettings, seed: int) -> None:
        super().__init__(workload, build_row(row, seed), settings)
        self.schedule = Schedule(
            events=[],
            num_workers=len(self.workers),
            capacity_tokens=[w.capacity_tokens for w in self.workers],
            label=row.label,
        )
        self._worker_index = {id(w): i for i, w in enumerate(self.workers)}
        self._path_ids: dict[tuple[int, int], int] = {}
        self._open: dict[int, int] = {}
        """id(call) -> index of its open access."""
        self._last_hints: dict[WorkflowId, CacheHints | None] = {}

    def _path(self, segments: Sequence[object], start: int = -1) -> tuple[tuple[SegmentRef, ...], int]:
        out: list[SegmentRef] = []
        parent = start
        for seg in segments:
            key = (parent, seg.seg_id)  # type: ignore[attr-defined]
            pid = self._path_ids.get(key)
            if pid is None:
                pid = self._path_ids[key] = len(self._path_ids)
            out.append((pid, seg.num_tokens))  # type: ignore[attr-defined]
            parent = pid
        return tuple(out), parent

    def _note_hints(self, task: SimTask, now_s: float, hints: CacheHints | None) -> None:
        if task.wid in self._last_hints and self._last_hints[task.wid] == hints:
            return
        self._last_hints[task.wid] = hints
        try:
            rec = self.scheduler.workflow(task.wid)
            tool, agent = (str(rec.tool) if rec.tool is not None else ""), str(rec.agent_type)
        except UnknownWorkflow:
            tool = agent = ""
        self.schedule.events.append(HintChange(now_s, task.wid, hints, tool, agent))

    # --- WorkerHost hooks (observe, then defer to the cluster) ----------------------------------
    def on_admit(self, worker: SimWorker, call: SimCall, now_s: float) -> None:
        super().on_admit(worker, call, now_s)
        prev = self._open.pop(id(call), None)
        if prev is not None:  # retracted and admitted again: the first admission ended at its retract
            self._finish(prev, now_s)
        prompt, tail = self._path(call.prompt)
        output: tuple[SegmentRef, ...] = ()
        if call.output_seg is not None and not call.is_rebuild:
            output, _ = self._path((call.output_seg,), tail)
        task = call.host
        access = Access(
            worker=self._worker_index[id(worker)],
            admit_s=now_s,
            workflow=task.wid if isinstance(task, SimTask) else None,
            prompt=prompt,
            output=output,
        )
        self._open[id(call)] = len(self.schedule.events)
        self.schedule.events.append(access)

    def on_finish(self, worker: SimWorker, call: SimCall, now_s: float) -> list:  # type: ignore[type-arg]
        idx = self._open.pop(id(call), None)
        if idx is not None:
            self._finish(idx, now_s)
        out = super().on_finish(worker, call, now_s)
        task = call.host
        if isinstance(task, SimTask) and task.state is WorkflowState.FINISHED:
            self._note_finished(task, now_s)
        return out

    def on_reject(self, worker: SimWorker, call: SimCall, now_s: float) -> list:  # type: ignore[type-arg]
        out = super().on_reject(worker, call, now_s)
        task = call.host
        if isinstance(task, SimTask) and task.state is WorkflowState.FINISHED:
            self._note_finished(task, now_s)
        return out

    def apply(self, actions: list[Action], now_s: float) -> list:  # type: ignore[type-arg]
        out = super().apply(actions, now_s)
        if self.row.scheduler.predictions:
            for a in actions:
                wid: WorkflowId | None = None
                if isinstance(a, Dispatch):
                    call = self.calls.get(a.call_id)
                    wid = call.host.wid if call is not None and isinstance(call.host, SimTask) else None
                elif isinstance(a, Control):
                    wid = WorkflowId(a.message.workflow_id)
                task = self.active.get(wid) if wid is not None else None
                if task is not None:
                    self._note_hints(task, now_s, self.scheduler.cache_hints(task.wid))
        return out

    def _note_finished(self, task: SimTask, now_s: float) -> None:
        # The simulator re-keys a finished workflow's entries once, with the scheduler's last record
        # (state FINISHED); the scheduler forgets it right after, so the record is rebuilt here.
        if self.row.scheduler.predictions:
            last = self._last_hints.get(task.wid)
            ttl = last.ttl_deadline_s if last is not None else None
            self._note_hints(
                task,
                now_s,
                CacheHints(
                    state=WorkflowState.FINISHED,
                    is_finished=True,
                    reuse_prob=0.0,
                    next_use_at_s=None,
                    ttl_deadline_s=ttl,
                ),
            )

    def _finish(self, idx: int, now_s: float) -> None:
        access = self.schedule.events[idx]
        assert isinstance(access, Access)
        access.finish_s = now_s
        self.schedule.events.append(Finish(now_s, idx))


def record_schedule(
    workload: Workload, row: RowSpec, settings: ClusterSettings, seed: int = 0
) -> tuple[Schedule, SimResult]:
    """Simulate ``row`` on ``workload`` once: its ``Schedule`` and the run's ordinary result (the
    same as ``sim.run.simulate`` gives; deterministic)."""
    cluster = _RecordingCluster(workload, row, settings, seed)
    result = cluster.run()
    return cluster.schedule, result
