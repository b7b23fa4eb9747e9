"""The simulated cluster: one host of the workflow scheduler, and its workers, on one event loop.

This is the simulator's *host* of ``saga_sgl.scheduler.WorkflowScheduler``, the counterpart of
``saga_router``. It feeds the scheduler the events a router would see (workflow submitted, call
arrived, call admitted into a running batch, call finished with token counts, tool started,
workflow finished) plus worker state (``ViewBuilder`` as the scheduler's ``WorkerSource`` and
``PrefixLookup``), and carries out the actions it returns:

* ``Dispatch``: enqueue the call on the worker; ``Hold``/``Release``: keep the call until released;
* ``Rebind`` + ``Redirect``/``Prefill``: a steal (move a queued call; or a prefill-only request with
  the workflow's last context on the thief: SGLang has no live KV migration);
* ``Control``: the worker plugin's hint record changed (the workflow's cached entries are re-keyed);
* ``Preempt``: the worker retracts the running call, as SGLang does;
* every ``epoch_s`` the scheduler's ``epoch()`` runs (only if the row needs it).

The workers order their waiting queues with ``scheduler.order_waiting`` (the plugin's AFS order) and
evict in the row's eviction-policy key order, from entry views built on ``scheduler.cache_hints``.
The host makes no decision of its own. Metrics are an observer (``saga_sgl.sim.metrics.Recorder``);
``run()`` returns a ``SimResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_sgl.policy.views import (
    AgentType,
    CacheEntryView,
    TenantId,
    WorkerId,
    WorkflowId,
    WorkflowState,
)
from saga_sgl.scheduler import (
    Action,
    CallAdmitted,
    CallArrived,
    CallFinished,
    Control,
    Dispatch,
    Hold,
    Preempt,
    Prefill,
    Rebind,
    Redirect,
    Release,
    ToolStarted,
    WorkflowFinished,
    WorkflowScheduler,
    WorkflowSubmitted,
)
from saga_sgl.sim.cost_model import CostSettings, ProfileCostModel
from saga_sgl.sim.derive_cost_constants import derive
from saga_sgl.sim.engine import Engine, Event, EventKind
from saga_sgl.sim.metrics import Recorder, SimResult
from saga_sgl.sim.policies import RowPolicies
from saga_sgl.sim.radix import Node
from saga_sgl.sim.views import ViewBuilder
from saga_sgl.sim.worker import SimCall, SimWorker, WorkerSettings
from saga_sgl.sim.workloads.model import Segment, TaskSpec, Workload


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
    slo_factor: float = 1.5
    """SLO attainment metric: TCT within slo_factor x the isolated TCT (paper: 1.5). The scheduler's
    own deadlines come from its predictions, never from this."""
    closed_loop_until_s: float = float("inf")
    """Closed loop: a finishing agent starts its next task only before this time; then the cluster
    drains. Tasks of the workload never started are not counted as unfinished."""
    closed_loop_shared: bool = False
    """Closed loop: one pool of ``closed_loop_agents`` for all tenants, tasks taken in workload order
    (a client with that many threads, like ``benchmarks/live.py``'s agent pool) instead of one pool
    per tenant."""
    max_sim_s: float = 36000.0
    """Safety stop of simulated time; unfinished tasks are reported, never silently dropped."""


class SimTask:
    """Host-side state of one simulated agent (its spec and where it truly is; no decisions)."""

    __slots__ = (
        "_isolated",
        "admitted_s",
        "current",
        "finished_s",
        "last_seq",
        "last_seq_tokens",
        "next_step",
        "oracle_next_use_s",
        "spec",
        "state",
        "times_stolen",
        "tool_end_s",
        "wid",
        "worker_id",
    )

    def __init__(self, spec: TaskSpec, isolated: Callable[[TaskSpec], float] | float) -> None:
        self.spec = spec
        self.wid = WorkflowId(spec.task_id)
        self.next_step = 0
        self.worker_id: WorkerId | None = None
        self.state = WorkflowState.QUEUED
        self.admitted_s = spec.arrival_s
        """Arrival time (TCT counts from here, admission-control holds included)."""
        self.finished_s = -1.0
        self._isolated = isolated
        """The isolated TCT, or how to compute it (on first use: most tasks of a closed-loop workload
        are never started, and the reference time is the largest cost of setting up a run)."""
        self.current: SimCall | None = None
        self.last_seq: tuple[Segment, ...] = ()
        self.last_seq_tokens = 0
        self.tool_end_s: float | None = None
        self.times_stolen = 0
        self.oracle_next_use_s: float | None = None

    @property
    def is_finished(self) -> bool:
        return self.state is WorkflowState.FINISHED

    @property
    def isolated_s(self) -> float:
        """TCT of the task alone on an idle replica (``Cluster.isolated_tct_s``)."""
        if not isinstance(self._isolated, float):
            self._isolated = float(self._isolated(self.spec))
        return self._isolated


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


class _Epoch:
    __slots__ = ("cluster",)
    kind = EventKind.EPOCH

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        return self.cluster.epoch(now_s)


class _EngineClock:
    """The scheduler's clock: the event loop's simulated time."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def now_s(self) -> float:
        return self._engine.now_s


class Cluster:
    """Scheduler host + workers for one configuration row on one workload."""

    def __init__(
        self,
        workload: Workload,
        row: RowPolicies,
        settings: ClusterSettings,
        cost_model: ProfileCostModel | None = None,
    ) -> None:
        """``cost_model``: replaces the GPU profile that ``settings`` names (e.g. a CPU-calibrated one,
        ``benchmarks/sim_fidelity.py``)."""
        self.workload = workload
        self.row = row
        self.settings = settings
        self.engine = Engine()
        if cost_model is None:
            constants = derive(Path(settings.vidur_dir)) if settings.vidur_dir else None
            cost_model = ProfileCostModel(
                constants=constants,
                model=settings.model,
                gpu=settings.gpu,
                tp=settings.tp,
                settings=settings.cost,
                chunk_size_tokens=settings.worker.chunked_prefill_size,
            )
        self.cost = cost_model
        spec = row.spec
        wsettings = settings.worker
        if spec.infinite_kv:
            wsettings = WorkerSettings(**{**_asdict(wsettings), "infinite_kv": True})
        if spec.page_size is not None:
            wsettings = WorkerSettings(**{**_asdict(wsettings), "page_size": spec.page_size})
        if spec.max_running_requests is not None:
            wsettings = WorkerSettings(
                **{**_asdict(wsettings), "max_running_requests": spec.max_running_requests}
            )
        self.oracle_next_use = spec.oracle_next_use
        self.workers = [SimWorker(f"w{i}", self.cost, wsettings, self) for i in range(settings.num_workers)]
        self.by_id = {WorkerId(w.worker_id): w for w in self.workers}
        self._leaves: dict[int, set[tuple[SimWorker, Node]]] = {}
        """Evictable leaves owned by each workflow (by id(task)), to re-key them when its hints change."""
        self.recorder = Recorder(self)
        self.views = ViewBuilder(self)
        self.calls: dict[str, SimCall] = {}
        """Calls the scheduler knows by id and has not seen finish (its PrefixLookup resolves them)."""
        self.scheduler = WorkflowScheduler(
            row.scheduler,
            clock=_EngineClock(self.engine),
            cost_model=self.cost,
            worker_source=lambda: self.views.workers(self.engine.now_s),
            prefix_lookup=self.views,
            tenants=self.views.tenants(),
        )
        self._hints = row.scheduler.predictions
        self._wants_prefix = bool(getattr(self.scheduler.placement, "uses_prefix", False))
        self.tasks = [SimTask(t, self.isolated_tct_s) for t in workload.tasks]
        self.active: dict[WorkflowId, SimTask] = {}
        self._pending_closed: dict[str, list[SimTask]] = {}

    @property
    def eviction(self) -> Any:
        return self.row.eviction

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
                self._pending_closed.setdefault(self._loop_of(t), []).append(t)
            for queue in self._pending_closed.values():
                for _ in range(min(closed, len(queue))):
                    self.engine.schedule(0.0, _TaskArrival(self, queue.pop(0)))
        else:
            for t in self.tasks:
                self.engine.schedule(t.spec.arrival_s, _TaskArrival(self, t))
        if self.scheduler.needs_epoch:
            self.engine.schedule(0.0, _Epoch(self))
        self.engine.run(self.settings.max_sim_s)
        end = self.engine.now_s
        for w in self.workers:
            w.finalize(end)
        return self.recorder.result(end)

    # --- events to the scheduler ----------------------------------------------------------------
    def admit_task(self, task: SimTask, now_s: float) -> list[tuple[float, Event]]:
        task.admitted_s = now_s
        self.active[task.wid] = task
        spec = task.spec
        self.scheduler.handle(
            WorkflowSubmitted(
                workflow_id=task.wid, tenant_id=TenantId(spec.tenant), agent_type=AgentType(spec.agent_type)
            )
        )
        return self.release_call(task, now_s)

    def release_call(self, task: SimTask, now_s: float) -> list[tuple[float, Event]]:
        spec = task.spec.calls[task.next_step]
        call = SimCall(
            call_id=f"{task.spec.task_id}:{spec.step}",
            prompt=spec.prompt,
            output_tokens=spec.output_tokens,
            output_seg=Segment(spec.output_seg_id, spec.output_tokens),
            spec=spec,
            host=task,
            released_s=now_s,
        )
        task.current = call
        task.state = WorkflowState.QUEUED
        task.tool_end_s = task.oracle_next_use_s = None
        self.calls[call.call_id] = call
        event = CallArrived(
            call_id=call.call_id,
            workflow_id=task.wid,
            prompt_tokens=call.prompt_tokens,
            step=spec.step,
            prefix=self.views.prefix_ids(call) if self._wants_prefix else (),
        )
        return self.apply(self.scheduler.handle(event), now_s)

    # --- actions from the scheduler -------------------------------------------------------------
    def apply(self, actions: list[Action], now_s: float) -> list[tuple[float, Event]]:
        """Carry out the scheduler's actions in order; return the engine events they cause."""
        out: list[tuple[float, Event]] = []
        for a in actions:
            if isinstance(a, Dispatch):
                call = self.calls[a.call_id]
                task: SimTask = call.host
                task.worker_id = a.worker_id
                call.priority = a.priority
                self.recorder.on_placement(task, a.worker_id, a.reason)
                self._rekey(task, now_s)
                out.extend(self.by_id[a.worker_id].enqueue(call, now_s))
            elif isinstance(a, Control):
                t = self.active.get(WorkflowId(a.message.workflow_id))
                if t is not None:
                    self._rekey(t, now_s)
            elif isinstance(a, Hold):
                self.recorder.counters["held_workflows"] += 1
            elif isinstance(a, Release):
                self.recorder.counters["held_s"] += a.held_s
                held = self.active.get(a.workflow_id)
                if held is not None:
                    self.recorder.on_release(held, a.held_s)
            elif isinstance(a, Rebind):
                t = self.active[a.workflow_id]
                t.times_stolen += 1
                t.worker_id = a.steal.thief
                self.recorder.on_steal(t, a.steal, now_s)
            elif isinstance(a, Redirect):
                call = self.calls[a.call_id]
                if self.by_id[a.from_worker].remove_waiting(call):
                    self.scheduler.redirected(a.call_id, a.to_worker)
                    out.extend(self.by_id[a.to_worker].enqueue(call, now_s))
            elif isinstance(a, Prefill):
                t = self.active[a.workflow_id]
                if t.last_seq:
                    t.times_stolen = max(t.times_stolen, 1)
                    rebuild = SimCall(
                        call_id=f"{t.spec.task_id}:rebuild{t.times_stolen}",
                        prompt=t.last_seq,
                        output_tokens=0,
                        output_seg=None,
                        spec=None,
                        host=t,
                        released_s=now_s,
                        is_rebuild=True,
                    )
                    out.extend(self.by_id[a.worker_id].enqueue(rebuild, now_s))
            elif isinstance(a, Preempt):
                call = self.calls[a.call_id]
                self.recorder.counters["preemptions"] += 1
                out.extend(self.by_id[a.worker_id].retract(call, now_s))
        return out

    # --- WorkerHost -----------------------------------------------------------------------------
    def order_queue(self, worker: SimWorker, waiting: list[SimCall], now_s: float) -> list[SimCall]:
        if len(waiting) < 2 or self.scheduler.fairness is None:
            return waiting
        pending = [self.views.pending(c) for c in waiting]
        by_id = {c.call_id: c for c in waiting}
        return [by_id[p.call_id] for p in self.scheduler.order_waiting(pending)]

    def entry_view(self, worker: SimWorker, node: Node, now_s: float) -> CacheEntryView:
        return self.views.entry(node, now_s)

    def on_leaf(self, worker: SimWorker, node: Node, added: bool) -> None:
        if not self._hints or node.owner is None:
            return
        leaves = self._leaves.setdefault(id(node.owner), set())
        if added:
            leaves.add((worker, node))
        else:
            leaves.discard((worker, node))

    def _rekey(self, task: SimTask, now_s: float) -> None:
        """The workflow's hint record changed: its evictable leaves get fresh keys."""
        if not self._hints:
            return
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
            self.scheduler.handle(
                CallAdmitted(call_id=call.call_id, workflow_id=task.wid, worker_id=WorkerId(worker.worker_id))
            )
        self.recorder.on_admit(worker, call, now_s)

    def on_finish(self, worker: SimWorker, call: SimCall, now_s: float) -> list[tuple[float, Event]]:
        self.recorder.on_finish(worker, call, now_s)
        if call.is_rebuild:
            return []
        task: SimTask = call.host
        spec = call.spec
        assert spec is not None
        self.calls.pop(call.call_id, None)
        task.last_seq = (*call.prompt, Segment(spec.output_seg_id, spec.output_tokens))
        task.last_seq_tokens = call.prompt_tokens + spec.output_tokens
        task.current = None
        task.next_step += 1
        out = self.apply(
            self.scheduler.handle(
                CallFinished(
                    call_id=call.call_id,
                    workflow_id=task.wid,
                    worker_id=WorkerId(worker.worker_id),
                    prompt_tokens=call.prompt_tokens,
                    output_tokens=spec.output_tokens,
                    cached_tokens=call.hit_tokens,
                )
            ),
            now_s,
        )
        if task.next_step >= len(task.spec.calls):
            return out + self._finish_task(task, now_s)
        task.state = WorkflowState.TOOL_GAP
        task.tool_end_s = now_s + spec.tool_latency_s
        task.oracle_next_use_s = task.tool_end_s
        # The agent announces the tool it starts (client event), as a SAGA client does.
        out.extend(
            self.apply(self.scheduler.handle(ToolStarted(workflow_id=task.wid, tool=spec.tool or "")), now_s)
        )
        out.append((task.tool_end_s, _CallRelease(self, task)))
        return out

    def on_reject(self, worker: SimWorker, call: SimCall, now_s: float) -> list[tuple[float, Event]]:
        """The call can never fit the worker's KV pool: the task fails (not counted in TCT stats)."""
        self.recorder.counters["rejected_tasks"] += 1
        task = call.host
        if not isinstance(task, SimTask) or call.is_rebuild:
            return []
        self.calls.pop(call.call_id, None)
        return self._finish_task(task, now_s, failed=True)

    def _finish_task(self, task: SimTask, now_s: float, failed: bool = False) -> list[tuple[float, Event]]:
        task.state = WorkflowState.FINISHED
        task.finished_s = now_s
        self.active.pop(task.wid, None)
        if not failed:
            self.recorder.on_task_finished(task, now_s)
        out = self.apply(self.scheduler.handle(WorkflowFinished(workflow_id=task.wid, failed=failed)), now_s)
        self._rekey(task, now_s)
        self._leaves.pop(id(task), None)
        self.scheduler.forget(task.wid)
        queue = self._pending_closed.get(self._loop_of(task))
        if queue and self._keep_loading(now_s):
            out.append((now_s, _TaskArrival(self, queue.pop(0))))
        return out

    def _loop_of(self, task: SimTask) -> str:
        """The closed-loop pool a task waits in (its tenant's, or the one shared pool)."""
        return "" if self.settings.closed_loop_shared else task.spec.tenant

    def _keep_loading(self, now_s: float) -> bool:
        return now_s < self.settings.closed_loop_until_s

    # --- epochs ---------------------------------------------------------------------------------
    def epoch(self, now_s: float) -> list[tuple[float, Event]]:
        out = self.apply(self.scheduler.epoch(), now_s) if self.active else []
        if self.active or len(self.engine) > 0:
            out.append((now_s + self.scheduler.settings.epoch_s, _Epoch(self)))
        return out


def _asdict(settings: WorkerSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
