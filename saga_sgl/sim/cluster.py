"""The simulated cluster: the router host and its workers on one event loop.

This is the simulator's *host* of the policy core, the counterpart of ``saga_router`` and the
worker plugin. It keeps workflow state, converts simulated entities into the core's views
(``saga_sgl.sim.views``), calls the policies of a ``PolicyBundle`` and applies their decisions:

* a released call is placed by ``bundle.placement``;
* a worker orders its waiting queue by ``bundle.fairness`` (AFS), or keeps SGLang's FCFS arrival
  order when the row has no fairness policy (the engine's own default, not a decision we make);
* a worker evicts in ``bundle.eviction`` key order; the TTL deadline a key reads comes from
  ``bundle.ttl`` (Algorithm 1), the reuse predictions from ``saga_sgl.aeg.predict``;
* every ``epoch_s`` the fairness epoch runs and ``bundle.stealing`` plans steals; a steal re-binds
  the workflow and, if it is in a tool gap, pre-fills its prefix on the thief (SGLang has no live
  KV migration; the rebuild is a prefill-only request, its cost is simulated like any prefill).

Metrics are an observer (``saga_sgl.sim.metrics.Recorder``); ``run()`` returns a ``SimResult``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saga_sgl.policy.decisions import FairShareEpoch
from saga_sgl.policy.views import CacheEntryView, WorkerId, WorkflowId, WorkflowState
from saga_sgl.sim.cost_model import CostSettings, ProfileCostModel
from saga_sgl.sim.derive_cost_constants import derive
from saga_sgl.sim.engine import Engine, Event, EventKind
from saga_sgl.sim.metrics import Recorder, SimResult
from saga_sgl.sim.radix import Node
from saga_sgl.sim.views import ViewBuilder
from saga_sgl.sim.worker import SimCall, SimWorker, WorkerSettings
from saga_sgl.sim.workloads.model import Segment, TaskSpec, Workload

if TYPE_CHECKING:
    from saga_sgl.sim.policies import PolicyBundle


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    """The simulated hardware and the host's own constants."""

    num_workers: int = 16
    """Model replicas (each one SGLang server with ``tp`` GPUs)."""
    model: str = "llama-3-8b"
    gpu: str = "a100"
    tp: int = 1
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    vidur_dir: str | None = None
    """Derive the cost constants from this Vidur profiling folder instead of the shipped
    ``cost_constants.json`` (e.g. ``../shared/data/vidur``)."""
    epoch_s: float = 0.1
    """Period of the AFS epoch and the steal planner (paper: 100 ms)."""
    slo_factor: float = 1.5
    """SLO deadline = slo_factor x expected (isolated) completion time (paper: 1.5)."""
    max_next_use_refreshes: int = 8
    """Re-predictions of one tool gap's end once the previous prediction has passed (bounds events)."""
    max_sim_s: float = 36000.0
    """Safety stop of simulated time; unfinished tasks are reported, never silently dropped."""


class SimTask:
    """Host-side state of one workflow."""

    __slots__ = (
        "admitted_s",
        "aeg",
        "current",
        "deadline_s",
        "finished_s",
        "isolated_s",
        "last_seq",
        "last_seq_tokens",
        "next_step",
        "next_use_refreshes",
        "next_use_s",
        "oracle_next_use_s",
        "queued_since_s",
        "remaining_work_s",
        "reuse_prob",
        "spec",
        "state",
        "times_stolen",
        "tool_end_s",
        "tool_started_s",
        "ttl_deadline_s",
        "view",
        "wid",
        "worker_id",
    )

    def __init__(self, spec: TaskSpec, isolated_s: float) -> None:
        self.spec = spec
        self.wid = WorkflowId(spec.task_id)
        self.next_step = 0
        self.worker_id: WorkerId | None = None
        self.state = WorkflowState.QUEUED
        self.admitted_s = spec.arrival_s
        self.finished_s = -1.0
        self.isolated_s = isolated_s
        self.deadline_s = float("inf")
        self.current: SimCall | None = None
        self.last_seq: tuple[Segment, ...] = ()
        self.last_seq_tokens = 0
        self.queued_since_s: float | None = None
        self.tool_started_s: float | None = None
        self.tool_end_s: float | None = None
        self.times_stolen = 0
        self.reuse_prob: float | None = None
        self.next_use_s: float | None = None
        self.next_use_refreshes = 0
        self.oracle_next_use_s: float | None = None
        self.ttl_deadline_s: float | None = None
        self.remaining_work_s = 0.0
        self.aeg: Any = None
        self.view: Any = None
        """Cached WorkflowView; reset to None whenever a field it reads changes."""

    @property
    def is_finished(self) -> bool:
        return self.state is WorkflowState.FINISHED


class _TaskArrival:
    __slots__ = ("cluster", "task")
    kind = EventKind.TASK_ARRIVAL

    def __init__(self, cluster: Cluster, task: SimTask) -> None:
        self.cluster, self.task = cluster, task

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        return self.cluster.admit_task(self.task, now_s)


class _CallRelease:
    __slots__ = ("cluster", "task")
    kind = EventKind.CALL_RELEASE

    def __init__(self, cluster: Cluster, task: SimTask) -> None:
        self.cluster, self.task = cluster, task

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        return self.cluster.release_call(self.task, now_s)


class _NextUseRefresh:
    """The predicted end of a tool gap has passed; re-predict if the tool is still running."""

    __slots__ = ("cluster", "started_s", "task")
    kind = EventKind.EPOCH

    def __init__(self, cluster: Cluster, task: SimTask, started_s: float) -> None:
        self.cluster, self.task, self.started_s = cluster, task, started_s

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        return self.cluster.refresh_next_use(self.task, self.started_s, now_s)


class _Epoch:
    __slots__ = ("cluster",)
    kind = EventKind.EPOCH

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        return self.cluster.epoch(now_s)


class Cluster:
    """Router host + workers for one configuration row on one workload."""

    def __init__(self, workload: Workload, bundle: PolicyBundle, settings: ClusterSettings) -> None:
        self.workload = workload
        self.bundle = bundle
        self.settings = settings
        self.engine = Engine()
        constants = derive(Path(settings.vidur_dir)) if settings.vidur_dir else None
        self.cost = ProfileCostModel(
            constants=constants,
            model=settings.model,
            gpu=settings.gpu,
            tp=settings.tp,
            settings=settings.cost,
            chunk_size_tokens=settings.worker.chunked_prefill_size,
        )
        wsettings = settings.worker
        if bundle.infinite_kv:
            wsettings = WorkerSettings(**{**_asdict(wsettings), "infinite_kv": True})
        if bundle.page_size is not None:
            wsettings = WorkerSettings(**{**_asdict(wsettings), "page_size": bundle.page_size})
        if bundle.spec.max_running_requests is not None:
            wsettings = WorkerSettings(
                **{**_asdict(wsettings), "max_running_requests": bundle.spec.max_running_requests}
            )
        self.workers = [SimWorker(f"w{i}", self.cost, wsettings, self) for i in range(settings.num_workers)]
        self.by_id = {WorkerId(w.worker_id): w for w in self.workers}
        self._leaves: dict[int, set[tuple[SimWorker, Node]]] = {}
        """Evictable leaves owned by each workflow (by id(task)), to re-key them when its state changes."""
        self.recorder = Recorder(self)
        self.views = ViewBuilder(self)
        self.tasks = [SimTask(t, self.isolated_tct_s(t)) for t in workload.tasks]
        self.active: dict[WorkflowId, SimTask] = {}
        self.fair_epoch = FairShareEpoch(computed_at_s=0.0)
        self._call_seq = 0
        self._pending_closed: dict[str, list[SimTask]] = {}

    # --- reference times ------------------------------------------------------------------------
    def isolated_tct_s(self, spec: TaskSpec) -> float:
        """TCT of the task alone on an idle worker, its own previous KV and shared prefixes warm."""
        total = 0.0
        prev_seq: tuple[Segment, ...] = ()
        for call in spec.calls:
            hit = 0
            for a, b in zip(call.prompt, prev_seq, strict=False):
                if a.seg_id != b.seg_id:
                    break
                hit += a.num_tokens
            if not prev_seq:  # first call: shared head (system prompt etc.) is warm
                hit = call.prompt[0].num_tokens if call.prompt else 0
            new = call.prompt_tokens - hit
            total += self.cost.prefill_time_s(max(new, 1), hit)
            total += self.cost.decode_time_s(max(call.output_tokens - 1, 0), call.prompt_tokens)
            total += call.tool_latency_s
            prev_seq = (*call.prompt, Segment(call.output_seg_id, call.output_tokens))
        return total

    # --- run ------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        closed = self.workload.closed_loop_agents
        if closed > 0:
            for t in self.tasks:
                self._pending_closed.setdefault(t.spec.tenant, []).append(t)
            for queue in self._pending_closed.values():
                for _ in range(min(closed, len(queue))):
                    self.engine.schedule(0.0, _TaskArrival(self, queue.pop(0)))
        else:
            for t in self.tasks:
                self.engine.schedule(t.spec.arrival_s, _TaskArrival(self, t))
        if self.bundle.needs_epoch:
            self.engine.schedule(0.0, _Epoch(self))
        self.engine.run(self.settings.max_sim_s)
        end = self.engine.now_s
        for w in self.workers:
            w.finalize(end)
        return self.recorder.result(end)

    # --- workflow life cycle --------------------------------------------------------------------
    def admit_task(self, task: SimTask, now_s: float) -> list[tuple[float, Event]]:
        task.admitted_s = now_s
        task.deadline_s = now_s + self.settings.slo_factor * task.isolated_s
        self.active[task.wid] = task
        self.bundle.on_admit(self, task, now_s)
        return self.release_call(task, now_s)

    def release_call(self, task: SimTask, now_s: float) -> list[tuple[float, Event]]:
        spec = task.spec.calls[task.next_step]
        self._call_seq += 1
        call = SimCall(
            call_id=f"{task.spec.task_id}:{spec.step}",
            prompt=spec.prompt,
            output_tokens=spec.output_tokens,
            output_seg=Segment(spec.output_seg_id, spec.output_tokens),
            spec=spec,
            host=task,
            released_s=now_s,
        )
        if task.tool_started_s is not None:
            self.bundle.on_tool_end(self, task, now_s)
        task.current = call
        task.state = WorkflowState.QUEUED
        task.view = None
        task.queued_since_s = now_s
        task.tool_started_s = task.tool_end_s = None
        task.ttl_deadline_s = task.next_use_s = task.oracle_next_use_s = None
        if self.bundle.predictions:
            self.refresh_views(task, now_s)
        placement = self.bundle.placement.place(self.views.call(task, call), self.views.workers(now_s), now_s)
        self.recorder.on_placement(task, placement.worker_id, placement.reason)
        task.worker_id = placement.worker_id
        task.view = None
        return list(self.by_id[placement.worker_id].enqueue(call, now_s))

    # --- WorkerHost -----------------------------------------------------------------------------
    @property
    def eviction(self) -> Any:
        return self.bundle.eviction

    def order_queue(self, worker: SimWorker, waiting: list[SimCall], now_s: float) -> list[SimCall]:
        if self.bundle.fairness is None or len(waiting) < 2:
            return waiting
        pending = [self.views.pending(c) for c in waiting]
        by_id = {c.call_id: c for c in waiting}
        return [by_id[p.call_id] for p in self.bundle.fairness.order(pending, self.fair_epoch)]

    def entry_view(self, worker: SimWorker, node: Node, now_s: float) -> CacheEntryView:
        return self.views.entry(node, now_s)

    def on_leaf(self, worker: SimWorker, node: Node, added: bool) -> None:
        if not self.bundle.predictions or node.owner is None:
            return
        leaves = self._leaves.setdefault(id(node.owner), set())
        if added:
            leaves.add((worker, node))
        else:
            leaves.discard((worker, node))

    def refresh_views(self, task: SimTask, now_s: float) -> None:
        """The workflow's predictions changed: its evictable leaves get fresh keys."""
        for worker, node in list(self._leaves.get(id(task), ())):
            if node.owner is task:
                worker.refresh_leaf(node, now_s)
            else:
                self._leaves[id(task)].discard((worker, node))

    def on_evict(self, worker: SimWorker, node: Node, now_s: float) -> None:
        self.recorder.on_evict(worker, node, now_s)

    def on_admit(self, worker: SimWorker, call: SimCall, now_s: float) -> None:
        task = call.host
        if isinstance(task, SimTask) and not call.is_rebuild:
            task.state = WorkflowState.RUNNING
            task.view = None
            task.queued_since_s = None
        self.recorder.on_admit(worker, call, now_s)

    def on_finish(self, worker: SimWorker, call: SimCall, now_s: float) -> list[tuple[float, Event]]:
        self.recorder.on_finish(worker, call, now_s)
        if call.is_rebuild:
            return []
        task: SimTask = call.host
        spec = call.spec
        assert spec is not None
        task.last_seq = (*call.prompt, Segment(spec.output_seg_id, spec.output_tokens))
        task.last_seq_tokens = call.prompt_tokens + spec.output_tokens
        task.current = None
        task.next_step += 1
        if task.next_step >= len(task.spec.calls):
            return self._finish_task(task, now_s)
        task.state = WorkflowState.TOOL_GAP
        task.view = None
        task.tool_started_s = now_s
        task.tool_end_s = now_s + spec.tool_latency_s
        task.oracle_next_use_s = task.tool_end_s
        self.bundle.on_tool_start(self, task, worker, now_s)
        out: list[tuple[float, Event]] = [(task.tool_end_s, _CallRelease(self, task))]
        if self.bundle.predictions:
            self.refresh_views(task, now_s)
            if task.next_use_s is not None and task.next_use_s < task.tool_end_s:
                out.append((max(task.next_use_s, now_s), _NextUseRefresh(self, task, now_s)))
        return out

    def refresh_next_use(self, task: SimTask, started_s: float, now_s: float) -> list[tuple[float, Event]]:
        if task.state is not WorkflowState.TOOL_GAP or task.tool_started_s != started_s:
            return []  # the tool already returned: nothing to re-predict
        if task.next_use_refreshes >= self.settings.max_next_use_refreshes:
            return []
        if not self.bundle.refresh_next_use(self, task, now_s):
            return []
        self.refresh_views(task, now_s)
        assert task.next_use_s is not None and task.tool_end_s is not None
        if task.next_use_s < task.tool_end_s:
            return [(task.next_use_s, _NextUseRefresh(self, task, started_s))]
        return []

    def on_reject(self, worker: SimWorker, call: SimCall, now_s: float) -> list[tuple[float, Event]]:
        """The call can never fit the worker's KV pool: the task fails (not counted in TCT stats)."""
        self.recorder.counters["rejected_tasks"] += 1
        task = call.host
        if not isinstance(task, SimTask) or call.is_rebuild:
            return []
        return self._finish_task(task, now_s, failed=True)

    def _finish_task(self, task: SimTask, now_s: float, failed: bool = False) -> list[tuple[float, Event]]:
        task.state = WorkflowState.FINISHED
        task.view = None
        task.finished_s = now_s
        self.active.pop(task.wid, None)
        if not failed:
            self.recorder.on_task_finished(task, now_s)
        self.bundle.on_task_finished(self, task, now_s)
        if self.bundle.predictions:
            self.refresh_views(task, now_s)
            self._leaves.pop(id(task), None)
        queue = self._pending_closed.get(task.spec.tenant)
        if queue:
            return [(now_s, _TaskArrival(self, queue.pop(0)))]
        return []

    # --- epochs ---------------------------------------------------------------------------------
    def epoch(self, now_s: float) -> list[tuple[float, Event]]:
        out: list[tuple[float, Event]] = []
        flows = self.views.workflows(now_s) if self.active else []
        if self.bundle.fairness is not None and self.bundle.needs_epoch:
            self.fair_epoch = self.bundle.fairness.epoch(flows, self.views.tenants(), now_s)
        if self.bundle.stealing is not None and self.active:
            steals = self.bundle.stealing.plan(self.views.workers(now_s), flows, now_s)
            for steal in steals:
                out.extend(self._apply_steal(steal, now_s))
        if self.active or len(self.engine) > 0:
            out.append((now_s + self.settings.epoch_s, _Epoch(self)))
        return out

    def _apply_steal(self, steal: Any, now_s: float) -> list[tuple[float, Event]]:
        task = self.active.get(steal.workflow_id)
        if task is None or task.worker_id != steal.victim:
            return []  # stale (the paper's acceptance check): the workflow moved or finished
        thief = self.by_id[steal.thief]
        task.times_stolen += 1
        task.view = None
        task.worker_id = WorkerId(steal.thief)
        self.recorder.on_steal(task, steal, now_s)
        if task.state is WorkflowState.QUEUED and task.current is not None:
            victim = self.by_id[steal.victim]
            if victim.remove_waiting(task.current):
                return list(thief.enqueue(task.current, now_s))
            return []
        if task.state is WorkflowState.TOOL_GAP and task.last_seq:
            rebuild = SimCall(
                call_id=f"{task.spec.task_id}:rebuild{task.times_stolen}",
                prompt=task.last_seq,
                output_tokens=0,
                output_seg=None,
                spec=None,
                host=task,
                released_s=now_s,
                is_rebuild=True,
            )
            return list(thief.enqueue(rebuild, now_s))
        return []


def _asdict(settings: WorkerSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
