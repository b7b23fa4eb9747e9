"""The workflow scheduler: events in, actions out (see the package docstring for the contract).

One object per cluster. It keeps a record per workflow (state, binding, tool gap, predictions),
feeds the models (tool-latency EMA, pattern inference, footprint EMA, service ledger), asks the
policy core for every decision (placement, fairness, stealing, preemption, TTL) and turns each
decision into actions. No I/O; time comes from the injected clock.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga_sgl.aeg.build import from_tool_hints, step_id_of
from saga_sgl.aeg.gaps import GapModel
from saga_sgl.aeg.graph import AEG
from saga_sgl.aeg.inference import InferenceSettings, ObservedStep, PatternInference
from saga_sgl.aeg.predict import (
    NextUsePredictor,
    ReusePrediction,
    ReusePredictor,
    WorkSettings,
    expected_completion_s,
    expected_queue_delay_s,
    remaining_work_s,
    reuse_probability,
)
from saga_sgl.aeg.tool_latency import ToolLatencyModel, ToolLatencySettings, tool_type_of
from saga_sgl.clock import Clock
from saga_sgl.errors import InvalidGraph, UnknownWorkflow
from saga_sgl.policy import registry
from saga_sgl.policy.decisions import FairShareEpoch
from saga_sgl.policy.interfaces import CostModel, FairnessPolicy, PlacementPolicy, StealPolicy
from saga_sgl.policy.placement.completion_cost import Residency
from saga_sgl.policy.service_ledger import ServiceLedger
from saga_sgl.policy.settings import load_settings
from saga_sgl.policy.views import (
    AgentType,
    BlockingView,
    CallView,
    PendingCallView,
    StepId,
    TenantId,
    TenantView,
    ToolType,
    WorkerId,
    WorkerView,
    WorkflowId,
    WorkflowState,
    WorkflowView,
)
from saga_sgl.protocol import ReuseHint
from saga_sgl.protocol import ToolFinished as ToolFinishedMsg
from saga_sgl.protocol import ToolStarted as ToolStartedMsg
from saga_sgl.protocol import WorkflowFinished as WorkflowFinishedMsg
from saga_sgl.scheduler.actions import (
    Action,
    Control,
    Dispatch,
    Hold,
    Preempt,
    Prefill,
    Rebind,
    Redirect,
    Release,
)
from saga_sgl.scheduler.events import (
    CallAdmitted,
    CallArrived,
    CallFailed,
    CallFinished,
    Event,
    ToolFinished,
    ToolStarted,
    WorkerDown,
    WorkerLoads,
    WorkerUp,
    WorkflowFinished,
    WorkflowSubmitted,
)
from saga_sgl.scheduler.footprint import FootprintModel
from saga_sgl.scheduler.ports import PrefixLookup, WorkerSource
from saga_sgl.scheduler.service_time import ServiceTimes, price_rate
from saga_sgl.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

_WORK = WorkSettings(max_depth=16)
"""Eq. 9 walk depth: 16 steps ahead is beyond any TTL or epoch horizon [I]."""
_MEAN_CALL_OUTPUT_TOKENS = 200
"""Output tokens of a typical call, for the expected queueing delay before the next use [I]."""
_OUTPUT_EMA_ALPHA = 0.1
"""Weight of one finished call in the learned output length per agent type (completion cost) [I]."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheHints:
    """What the scheduler has told the worker about one workflow's KV (the plugin's hint record):
    the simulator's eviction views read it, as the plugin reads kv_hints and control messages."""

    state: WorkflowState
    is_finished: bool
    reuse_prob: float | None
    next_use_at_s: float | None
    """Absolute predicted next use: tool gap end, or the queueing time of a waiting call."""
    ttl_deadline_s: float | None
    predicted_at_s: float | None = None
    """When the gap's current prediction was made, if after the tool start (an age re-key or a
    re-prediction of an overdue gap): the prediction is conditional on the age then, so the wait
    runs from it (``CacheEntryView.predicted_at_s``). None: made at the tool start (the last use)."""
    baseline: CacheHints | None = None
    """Benchmarks only (``SchedulerSettings.record_baseline_hints``): the record this scheduler
    would have sent without the workers' residence times (horizon = the predictor's maximum, TTL
    uncapped), predicted at the same instants from the same gap model; None: not recorded, or the
    same as this record. A paired ablation on one recorded schedule."""


class WorkflowRecord:
    """The scheduler's state of one workflow (read-only for hosts)."""

    __slots__ = (
        "_context_tokens",
        "_predicted_peak_tokens",
        "_shared_tokens",
        "_worker_id",
        "admitted_s",
        "aeg",
        "agent_type",
        "baseline_hint",
        "call_id",
        "call_preemptible",
        "call_preemptions",
        "call_worker",
        "deadline_s",
        "explicit_aeg",
        "gap_credited_s",
        "gap_rekeys",
        "held_call",
        "held_since_s",
        "kv_worker",
        "next_use_at_s",
        "next_use_refreshes",
        "observed",
        "parked",
        "predicted_at_s",
        "queued_since_s",
        "remaining_work_s",
        "reuse_next_use_at_s",
        "reuse_prob",
        "running",
        "state",
        "steps_done",
        "tenant_id",
        "times_stolen",
        "tool",
        "tool_started_s",
        "ttl_deadline_s",
        "view",
        "workflow_id",
    )

    def __init__(self, workflow_id: WorkflowId, tenant_id: TenantId, agent_type: AgentType) -> None:
        self.workflow_id = workflow_id
        self.tenant_id = tenant_id
        self.agent_type = agent_type
        self.state = WorkflowState.QUEUED
        self.admitted_s: float | None = None
        """None until admitted (a held or not yet arrived workflow)."""
        self._worker_id: WorkerId | None = None
        self.kv_worker: WorkerId | None = None
        """Worker where its last call finished (where its KV is, as far as bookkeeping knows)."""
        self.call_id: str | None = None
        self.call_worker: WorkerId | None = None
        self.call_preemptible = True
        """The host can retract the current call (see ``CallAdmitted.preemptible``)."""
        self.call_preemptions = 0
        """Times the current call was preempted (bounded by ``max_preemptions_per_call``)."""
        self.running = False
        self.held_call: CallArrived | None = None
        self.held_since_s: float | None = None
        self.queued_since_s: float | None = None
        self.steps_done = 0
        self._context_tokens = 0
        self.observed: list[ObservedStep] = []
        self.tool: ToolType | None = None
        self.tool_started_s: float | None = None
        self.reuse_prob: float | None = None
        self.next_use_at_s: float | None = None
        self.next_use_refreshes = 0
        self.predicted_at_s: float | None = None
        """When the current gap prediction was made, if after the tool start (``CacheHints``)."""
        self.gap_rekeys = 0
        """Hint updates sent during the current tool gap after its tool start (age re-keys and
        overdue re-predictions; bounded, see ``SchedulerSettings.gap_rekey_ages_s``)."""
        self.gap_credited_s = 0.0
        """Age up to which the current gap's idle time is already credited to the gap model."""
        self.reuse_next_use_at_s: float | None = None
        """Expected next read of the KV given it comes (``ReusePredictor``): the eviction hint."""
        self.baseline_hint: tuple[float, float, float | None] | None = None
        """(P, next use, TTL deadline) without the residence time (``CacheHints.baseline``)."""
        self.ttl_deadline_s: float | None = None
        self.remaining_work_s = 0.0
        self.deadline_s = math.inf
        self.times_stolen = 0
        self.explicit_aeg: AEG | None = None
        self.aeg: AEG | None = None
        self._predicted_peak_tokens = 0
        self.view: WorkflowView | None = None
        self.parked = False
        """Admitted, then held at a later call by least-attained-service admission (not live)."""
        self._shared_tokens = 0

    # The inputs of the admission footprint (``WorkflowScheduler._bound_footprint``): every write
    # bumps ``footprint_generation`` so the scheduler can reuse the sum while none changed.
    footprint_generation = 0

    @property
    def worker_id(self) -> WorkerId | None:
        """Binding (w*_s)."""
        return self._worker_id

    @worker_id.setter
    def worker_id(self, value: WorkerId | None) -> None:
        self._worker_id = value
        WorkflowRecord.footprint_generation += 1

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @context_tokens.setter
    def context_tokens(self, value: int) -> None:
        self._context_tokens = value
        WorkflowRecord.footprint_generation += 1

    @property
    def predicted_peak_tokens(self) -> int:
        return self._predicted_peak_tokens

    @predicted_peak_tokens.setter
    def predicted_peak_tokens(self, value: int) -> None:
        self._predicted_peak_tokens = value
        WorkflowRecord.footprint_generation += 1

    @property
    def shared_tokens(self) -> int:
        """Head of its first prompt already cached on some worker at its first call (shared with
        other workflows, e.g. the system prompt)."""
        return self._shared_tokens

    @shared_tokens.setter
    def shared_tokens(self, value: int) -> None:
        self._shared_tokens = value
        WorkflowRecord.footprint_generation += 1

    @property
    def is_live(self) -> bool:
        return self.admitted_s is not None and self.state is not WorkflowState.FINISHED

    def footprint_tokens(self) -> int:
        """Predicted peak KV of this workflow (admission control)."""
        return max(self._context_tokens, self._predicted_peak_tokens)


def _out_of_room(worker: WorkerView | None, running: int, prompt_tokens: int) -> bool:
    """Whether a queued call of ``prompt_tokens`` lacks a running slot or KV on ``worker``, which
    runs at least ``running`` calls (the scheduler's own count); unknown worker: yes."""
    if worker is None:
        return True
    if max(worker.num_running_reqs, running) >= worker.max_running_reqs:
        return True
    return worker.kv_capacity_tokens - worker.kv_used_tokens < prompt_tokens


def _slowest_rate(workers: Sequence[WorkerView]) -> float | None:
    """The slowest pre-fill rate a host measured on any worker (None: none measured yet)."""
    return min((w.prefill_tokens_per_s for w in workers if w.prefill_tokens_per_s), default=None)


class WorkflowScheduler:
    """Host-neutral workflow scheduler. ``handle(event)`` and ``epoch()`` return actions."""

    def __init__(
        self,
        settings: SchedulerSettings | None = None,
        *,
        clock: Clock,
        cost_model: CostModel | None = None,
        worker_source: WorkerSource | None = None,
        prefix_lookup: PrefixLookup | None = None,
        tenants: Sequence[TenantView] = (),
    ) -> None:
        s = self.settings = settings or SchedulerSettings()
        self.clock = clock
        self.cost: CostModel = cost_model or registry.create_cost_model("linear")
        self._worker_source = worker_source
        self._prefix_lookup = prefix_lookup
        rng = random.Random(s.seed)
        cfg = s.policy_config
        self.placement: PlacementPolicy = registry.create_placement(
            s.placement, cfg.get("placement"), rng=rng
        )
        self.fairness: FairnessPolicy | None = (
            registry.create_fairness(s.fairness, cfg.get("fairness")) if s.fairness else None
        )
        self.stealing: StealPolicy | None = (
            registry.create_stealing(s.stealing, cfg.get("stealing"), rng=rng) if s.stealing else None
        )
        self.latency = ToolLatencyModel(load_settings(ToolLatencySettings, s.tool_latency))
        self.next_use = NextUsePredictor(self.latency)
        # The eviction hints: the same gap model and predictor as the trace-replay hint path
        # (saga_sgl/replay/driver.py), learned from this scheduler's own tool gaps.
        self.gaps = GapModel(self.latency)
        self.reuse = ReusePredictor(self.gaps)
        self.ttl: Any = None
        if s.predictions and s.ttl:
            from saga_sgl.policy.eviction.ttl import ToolAwareTtl, TtlSettings

            self.ttl = ToolAwareTtl(self.latency, load_settings(TtlSettings, cfg.get("ttl")))
        self.inference = PatternInference(load_settings(InferenceSettings, cfg.get("inference")))
        adm = s.admission
        self.footprint = FootprintModel(
            alpha=adm.footprint_ema_alpha, default_tokens=adm.default_footprint_tokens
        )
        self.ledger = ServiceLedger()
        self.service = ServiceTimes(
            self.cost, default_output_tokens=_MEAN_CALL_OUTPUT_TOKENS, alpha=_OUTPUT_EMA_ALPHA
        )
        """Service-second estimates of the calls in flight (placement by completion cost)."""
        self._tenants: dict[TenantId, TenantView] = {t.tenant_id: t for t in tenants}
        self._flows: dict[WorkflowId, WorkflowRecord] = {}
        self._active: dict[WorkflowId, WorkflowRecord] = {}
        self._held: dict[WorkflowId, WorkflowRecord] = {}
        self._workers: dict[WorkerId, WorkerView] = {}
        self._down: set[WorkerId] = set()
        self._idle_since: dict[WorkerId, float | None] = {}
        self._inflight: Counter[WorkerId] = Counter()
        self._calls: dict[str, WorkflowRecord] = {}
        self._waiting_since: dict[str, float] = {}
        """Dispatched calls not yet seen running (needs CallAdmitted), by call id."""
        self._refresh_heap: list[tuple[float, int, WorkflowId, float, bool]] = []
        """Gap re-prediction timers: (when, seq, workflow, its gap's start, by age?). By age: the
        next of ``gap_rekey_ages_s``; else the predicted gap end (re-predicted if it passes)."""
        self._unannounced: set[WorkflowId] = set()
        """Workflows in a tool gap whose tool the client has not announced (yet)."""
        self._refresh_seq = 0
        self._epoch = FairShareEpoch(computed_at_s=clock.now_s())
        self._views_at: float | None = None
        self._views: list[WorkerView] = []
        self.counters: Counter[str] = Counter()
        """Decisions by kind and reason (``dispatch/<reason>``, ``hold/<reason>``, ``steal``, ...)."""
        self._wants_matches = self.placement.name == "saga"
        self._wants_costs = bool(getattr(self.placement, "uses_completion_cost", False))
        """Fill CallView's seconds fields for new workflows (placement by completion cost)."""
        fairness_settings = getattr(self.fairness, "settings", None)
        self._tracks_service = self._wants_costs or bool(
            getattr(fairness_settings, "preempt_only_if_it_pays", False)
        )
        """Keep per-call service estimates (completion cost, or preemption only when it pays)."""
        self._shared_by_type: dict[AgentType, int] = {}
        self._held_views: dict[WorkflowId, tuple[CallArrived | None, float, PendingCallView]] = {}
        self._held_peaks: tuple[int, dict[AgentType, tuple[int, bool]]] | None = None
        self._bound_cache: tuple[int, tuple[Counter[WorkerId], Counter[WorkerId]]] | None = None
        """Shared prompt head of the last new workflow of each agent type (``shared_prefix_once``)."""

    # --- public queries -------------------------------------------------------------------------
    @property
    def needs_epoch(self) -> bool:
        """Whether ``epoch()`` can do anything (baselines without AFS/stealing/admission: no)."""
        s = self.settings
        has_afs = self.fairness is not None and self.fairness.name != "fcfs"
        return has_afs or self.stealing is not None or s.admission.enabled or s.predictions

    @property
    def fair_share(self) -> FairShareEpoch:
        """The latest AFS epoch."""
        return self._epoch

    @property
    def held(self) -> tuple[WorkflowId, ...]:
        """Workflows admission control holds, oldest first."""
        return tuple(self._held)

    def workflow(self, workflow_id: WorkflowId) -> WorkflowRecord:
        """The record of a known workflow; ``UnknownWorkflow`` otherwise."""
        try:
            return self._flows[workflow_id]
        except KeyError:
            raise UnknownWorkflow(f"unknown workflow {workflow_id!r}") from None

    def workflow_views(self) -> list[WorkflowView]:
        """Views of the admitted, unfinished workflows (what AFS and the stealer see)."""
        out = []
        for rec in self._active.values():
            v = rec.view
            if v is None:
                v = rec.view = self._view_of(rec)
            out.append(v)
        return out

    def cache_hints(self, workflow_id: WorkflowId) -> CacheHints | None:
        """The worker-side hint record of a workflow (None when predictions are off or unknown)."""
        rec = self._flows.get(workflow_id)
        if rec is None or not self.settings.predictions:
            return None
        finished = rec.state is WorkflowState.FINISHED
        prob = 0.0 if finished else rec.reuse_prob
        predicted_at = None
        if rec.state is WorkflowState.TOOL_GAP:
            next_use = rec.reuse_next_use_at_s if rec.reuse_next_use_at_s is not None else rec.next_use_at_s
            predicted_at = rec.predicted_at_s
        elif rec.state is WorkflowState.QUEUED:
            # Its next call is already waiting (at a worker, or held by admission with its prompt):
            # the reuse is known, not predicted; the tool gap's P no longer applies.
            next_use, prob = rec.queued_since_s, 1.0
        else:
            next_use = None
        hints = CacheHints(
            state=rec.state,
            is_finished=finished,
            reuse_prob=prob,
            next_use_at_s=next_use,
            ttl_deadline_s=rec.ttl_deadline_s,
            predicted_at_s=predicted_at,
        )
        base = rec.baseline_hint
        if base is None or rec.state is not WorkflowState.TOOL_GAP:
            return hints
        baseline = dataclasses.replace(
            hints,
            reuse_prob=base[0],
            next_use_at_s=base[1] if rec.reuse_next_use_at_s is not None else next_use,
            ttl_deadline_s=base[2],
        )
        return hints if baseline == hints else dataclasses.replace(hints, baseline=baseline)

    def order_waiting(self, pending: Sequence[PendingCallView]) -> list[PendingCallView]:
        """A worker's waiting-queue order under the latest AFS epoch (the plugin's ``calc_priority``
        side; the simulator's workers ask this). FCFS when the row has no fairness policy."""
        if self.fairness is None or len(pending) < 2:
            return list(pending)
        return self.fairness.order(pending, self._epoch)

    # --- events ---------------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Apply one observed event; return the actions it implies, in order."""
        now = self.clock.now_s()
        if isinstance(event, CallArrived):
            return self._on_call(event, now)
        if isinstance(event, CallFinished):
            return self._on_call_finished(event, now)
        if isinstance(event, ToolStarted):
            return self._on_tool_started(event, now)
        if isinstance(event, ToolFinished):
            return self._on_tool_finished(event, now)
        if isinstance(event, CallAdmitted):
            self._on_admitted(event, now)
            return []
        if isinstance(event, WorkflowSubmitted):
            self._submit(event)
            return []
        if isinstance(event, WorkflowFinished):
            return self._on_workflow_finished(event, now)
        if isinstance(event, CallFailed):
            return self._on_call_failed(event, now)
        if isinstance(event, WorkerLoads):
            self._on_loads(event, now)
            return []
        if isinstance(event, WorkerUp):
            self._down.discard(event.worker_id)
            self._views_at = None
            return self._release_held(now)
        if isinstance(event, WorkerDown):
            self._down.add(event.worker_id)
            self._views_at = None
            return []
        raise TypeError(f"WorkflowScheduler.handle: not an event: {event!r}")

    def _submit(self, ev: WorkflowSubmitted) -> WorkflowRecord:
        if ev.workflow_id in self._flows:
            raise ValueError(f"workflow {ev.workflow_id!r} submitted twice")
        agent = ev.agent_type or AgentType(ev.tenant_id)
        rec = WorkflowRecord(ev.workflow_id, ev.tenant_id, agent)
        if ev.aeg is not None:
            rec.explicit_aeg = ev.aeg
        elif ev.tool_hints:
            rec.explicit_aeg = from_tool_hints(list(ev.tool_hints), agent_type=agent)
        if ev.predicted_kv_tokens is not None:
            rec.predicted_peak_tokens = max(0, ev.predicted_kv_tokens)
        self._flows[ev.workflow_id] = rec
        self._tenants.setdefault(ev.tenant_id, TenantView(tenant_id=ev.tenant_id))
        return rec

    def _on_call(self, ev: CallArrived, now: float) -> list[Action]:
        rec = self._flows.get(ev.workflow_id)
        if rec is None:
            rec = self._submit(
                WorkflowSubmitted(
                    workflow_id=ev.workflow_id,
                    tenant_id=ev.tenant_id or TenantId("default"),
                    agent_type=ev.agent_type,
                )
            )
        if rec.state is WorkflowState.FINISHED:
            raise ValueError(f"call {ev.call_id!r} of finished workflow {ev.workflow_id!r}")
        if rec.admitted_s is not None and self._should_park(rec, now):
            return self._park(rec, ev, now)
        if rec.admitted_s is None:
            if ev.workflow_id in self._held:
                raise ValueError(f"workflow {ev.workflow_id!r} already has a held call")
            if self.settings.admission.enabled:
                workers = self._worker_views(now)
                reason = self._hold_reason(rec, workers) if not self._held else "queue"
                if reason is not None:
                    rec.held_call, rec.held_since_s = ev, now
                    rec.queued_since_s = now
                    self._held[rec.workflow_id] = rec
                    self._active_changed()
                    self.counters[f"hold/{reason}"] += 1
                    log.debug("hold %s: %s", rec.workflow_id, reason)
                    return [Hold(workflow_id=rec.workflow_id, call_id=ev.call_id, reason=reason)]
            self._admit(rec, now)
        return self._dispatch(rec, ev, now)

    def _admit(self, rec: WorkflowRecord, now: float) -> None:
        rec.admitted_s = now
        self._active[rec.workflow_id] = rec
        self._active_changed()
        if self.settings.predictions:
            if rec.predicted_peak_tokens <= 0:
                rec.predicted_peak_tokens = self.footprint.predict(rec.agent_type)
            rec.aeg = rec.explicit_aeg or self.inference.infer(rec.agent_type)
            if rec.aeg is not None:
                expected = expected_completion_s(rec.aeg, None, 0, self.cost, self.latency, settings=_WORK)
                rec.deadline_s = now + self.settings.slo_factor * expected
                rec.remaining_work_s = remaining_work_s(rec.aeg, None, 0, self.cost, settings=_WORK)
        self.ledger.admit(rec.workflow_id, rec.tenant_id, rec.remaining_work_s)

    def _dispatch(self, rec: WorkflowRecord, ev: CallArrived, now: float) -> list[Action]:
        out: list[Action] = []
        if rec.state is WorkflowState.TOOL_GAP:
            self._observe_gap(rec, now)
            self._end_tool(rec, now)
        rec.state = WorkflowState.QUEUED
        rec.queued_since_s = now
        rec.ttl_deadline_s = rec.next_use_at_s = rec.reuse_next_use_at_s = rec.predicted_at_s = None
        rec.baseline_hint = None
        rec.view = None
        workers = self._worker_views(now)
        if rec.worker_id is None and self.settings.admission.enabled:
            workers = [w for w in workers if self._has_room(w, rec)] or workers
        call = self._call_view(rec, ev, workers, now)
        placement = self.placement.place(call, workers, now)
        wid = placement.worker_id
        if self._tracks_service:
            estimate = self._estimate_s(rec, ev, call, wid, workers)
            self.service.dispatched(ev.call_id, wid, estimate, ev.prompt_tokens, now)
        moved = rec.worker_id if rec.worker_id is not None and rec.worker_id != wid else None
        if call.affinity_worker_id is None and rec.steps_done == 0 and call.prefix_match_tokens:
            rec.shared_tokens = min(ev.prompt_tokens, max(call.prefix_match_tokens.values()))
            self._shared_by_type[rec.agent_type] = rec.shared_tokens
        rec.worker_id = wid
        rec.call_id, rec.call_worker, rec.running = ev.call_id, wid, False
        rec.call_preemptible, rec.call_preemptions = True, 0
        self._calls[ev.call_id] = rec
        self._waiting_since[ev.call_id] = now
        self._inflight[wid] += 1
        self._views_at = None
        self.counters[f"dispatch/{placement.reason}"] += 1
        tid = rec.tenant_id
        priority = self._epoch.priority_of(tid) if self.fairness is not None else 0
        urgency = self._epoch.urgency.get(rec.workflow_id, 0.0)
        hint = None
        if self.settings.predictions:
            hint = ReuseHint(
                workflow_id=rec.workflow_id,
                step=ev.step if ev.step is not None else rec.steps_done,
                tenant_id=tid,
                agent_type=rec.agent_type,
                urgency=urgency,
            )
        out.append(
            Dispatch(
                call_id=ev.call_id,
                workflow_id=rec.workflow_id,
                worker_id=wid,
                reason=placement.reason,
                priority=priority,
                urgency=urgency,
                hint=hint,
                routing_key=rec.workflow_id,
                rebound_from=moved,
            )
        )
        return out

    def _estimate_s(
        self,
        rec: WorkflowRecord,
        ev: CallArrived,
        call: CallView,
        wid: WorkerId,
        workers: Sequence[WorkerView],
    ) -> float:
        """Expected service seconds of the call just placed on ``wid`` (its pre-fill and decode)."""
        prefill = call.uncached_prefill_s.get(wid)
        if prefill is None:
            # A bound workflow: on the worker that holds its last context only the new part is new.
            cached = rec.context_tokens if rec.kv_worker == wid else 0
            cached = min(cached, ev.prompt_tokens)
            prefill = self.service.prefill_s(None, ev.prompt_tokens - cached, cached, price_rate(workers))
        cap = ev.max_output_tokens
        decode = call.decode_s or self.service.decode_s(rec.agent_type, ev.prompt_tokens, cap)
        return prefill + decode

    def _call_view(
        self, rec: WorkflowRecord, ev: CallArrived, workers: Sequence[WorkerView], now: float
    ) -> CallView:
        affinity = rec.worker_id if rec.worker_id not in self._down else None
        cached = False
        if affinity is not None:
            if self._prefix_lookup is not None:
                cached = self._prefix_lookup.holds_workflow_kv(ev.call_id, rec.workflow_id, affinity)
            else:
                cached = rec.kv_worker == affinity
        matches: Mapping[WorkerId, int] = {}
        if self._wants_matches and affinity is None and self._prefix_lookup is not None:
            matches = self._prefix_lookup.prefix_match_tokens(ev.call_id)
        prefill_s: dict[WorkerId, float] = {}
        outstanding: Mapping[WorkerId, tuple[float, ...]] = {}
        decode_s = 0.0
        resident: Mapping[WorkerId, int] = {}
        remaining_calls, reprefill_s = 1.0, 0.0
        if self._wants_costs and affinity is None:
            rate = price_rate(workers)
            for w in workers:
                if w.is_healthy:
                    hit = min(matches.get(w.worker_id, 0), ev.prompt_tokens)
                    prefill_s[w.worker_id] = self.service.prefill_s(None, ev.prompt_tokens - hit, hit, rate)
            outstanding = self.service.outstanding(now)
            decode_s = self.service.decode_s(rec.agent_type, ev.prompt_tokens, ev.max_output_tokens)
            resident = self._resident_kv()
            remaining_calls = max(1.0, self.service.expected_calls(rec.agent_type) - rec.steps_done)
            reprefill_s = self.service.reprefill_s_per_token(rate)
        return CallView(
            workflow_id=rec.workflow_id,
            prompt_tokens=ev.prompt_tokens,
            prefix=ev.prefix,
            step_id=step_id_of(ev.step) if ev.step is not None else None,
            tenant_id=rec.tenant_id,
            affinity_worker_id=affinity,
            affinity_cached=cached,
            predicted_kv_tokens=rec.predicted_peak_tokens if self.settings.predictions else 0,
            prefix_match_tokens=matches,
            bound_work_s=self._bound_work() if self._wants_matches and affinity is None else {},
            bound_kv_tokens=(
                dict(self._bound_footprint()[0]) if self._wants_matches and affinity is None else {}
            ),
            uncached_prefill_s=prefill_s,
            outstanding_s=outstanding,
            decode_s=decode_s,
            resident_kv_tokens=resident,
            remaining_calls=remaining_calls,
            reprefill_s_per_token=reprefill_s,
        )

    def _resident_kv(self) -> dict[WorkerId, int]:
        """KV the live workflows bound to each worker will hold at their predicted peak
        (placement's ``Residency``, the rule the steal's KV price uses too: the prompt head they
        share, what a first call found cached, once per worker and agent type)."""
        residency = Residency()
        for rec in self._active.values():
            if rec.worker_id is not None:
                residency.add(rec.worker_id, rec.agent_type, rec.footprint_tokens(), rec.shared_tokens)
        return residency.tokens()

    def _bound_work(self) -> dict[WorkerId, float]:
        """Predicted remaining work of the live workflows bound to each worker (1 s for one with no
        prediction yet, so that the count still shows)."""
        out: dict[WorkerId, float] = {}
        for rec in self._active.values():
            if rec.worker_id is not None:
                out[rec.worker_id] = out.get(rec.worker_id, 0.0) + (rec.remaining_work_s or 1.0)
        return out

    def _on_admitted(self, ev: CallAdmitted, now: float) -> None:
        rec = self._calls.get(ev.call_id)
        if rec is None:
            return
        self.service.started(ev.call_id, now)
        self._waiting_since.pop(ev.call_id, None)
        rec.running = True
        rec.call_preemptible = ev.preemptible
        rec.state = WorkflowState.RUNNING
        rec.queued_since_s = None
        rec.view = None

    def _on_call_finished(self, ev: CallFinished, now: float) -> list[Action]:
        rec = self._calls.pop(ev.call_id, None)
        if rec is None:
            raise UnknownWorkflow(f"finished call {ev.call_id!r} was never dispatched")
        self._waiting_since.pop(ev.call_id, None)
        self._inflight[ev.worker_id] -= 1
        self._views_at = None
        self.service.finished(ev.call_id, now)
        self.service.observe_output(rec.agent_type, ev.output_tokens)
        new_tokens = max(0, ev.prompt_tokens - rec.context_tokens)
        cached = min(ev.cached_tokens, ev.prompt_tokens)
        gpu_s = self.cost.prefill_time_s(max(ev.prompt_tokens - cached, 0), cached)
        gpu_s += self.cost.decode_time_s(ev.output_tokens, ev.prompt_tokens)
        self.ledger.observe_service(rec.workflow_id, gpu_s)
        if rec.observed and rec.observed[-1].observation_tokens == 0 and rec.steps_done > 0:
            last = rec.observed[-1]
            rec.observed[-1] = ObservedStep(
                tool=last.tool,
                prompt_tokens=last.prompt_tokens,
                output_tokens=last.output_tokens,
                observation_tokens=max(0, new_tokens),
            )
        rec.observed.append(ObservedStep(tool=None, prompt_tokens=new_tokens, output_tokens=ev.output_tokens))
        rec.context_tokens = ev.prompt_tokens + ev.output_tokens
        rec.steps_done += 1
        rec.kv_worker = ev.worker_id
        rec.call_id = rec.call_worker = None
        rec.running = False
        rec.state = WorkflowState.TOOL_GAP
        rec.tool, rec.tool_started_s = None, now
        rec.reuse_prob = rec.next_use_at_s = rec.ttl_deadline_s = rec.reuse_next_use_at_s = None
        rec.baseline_hint = None
        self._new_gap(rec)
        if self.settings.predictions:
            self._unannounced.add(rec.workflow_id)
        rec.queued_since_s = None
        rec.view = None
        return []

    def _on_call_failed(self, ev: CallFailed, now: float) -> list[Action]:
        rec = self._calls.pop(ev.call_id, None)
        if rec is None:
            return []
        self._waiting_since.pop(ev.call_id, None)
        self._inflight[ev.worker_id] -= 1
        self._views_at = None
        self.service.done(ev.call_id)
        rec.call_id = rec.call_worker = None
        rec.running = False
        rec.state = WorkflowState.TOOL_GAP
        rec.tool, rec.tool_started_s = None, now
        self._new_gap(rec)
        rec.view = None
        return []

    def _on_tool_started(self, ev: ToolStarted, now: float) -> list[Action]:
        rec = self.workflow(ev.workflow_id)
        if rec.state is not WorkflowState.TOOL_GAP:
            return []  # a late or duplicate event: the next call already arrived
        tool = tool_type_of(ev.tool)
        if rec.observed:
            last = rec.observed[-1]
            rec.observed[-1] = ObservedStep(
                tool=tool,
                prompt_tokens=last.prompt_tokens,
                output_tokens=last.output_tokens,
                observation_tokens=last.observation_tokens,
            )
        return self._predict_gap(rec, tool, now)

    def _predict_gap(self, rec: WorkflowRecord, tool: ToolType, now: float) -> list[Action]:
        """A tool gap began (or its tool became known): predictions and the worker's hint update."""
        rec.tool = tool
        rec.view = None
        if not self.settings.predictions:
            return []
        worker = self._worker(rec.worker_id, now)
        step = self._step(rec)
        context = rec.context_tokens
        self._predict_reuse(rec, now)
        delay = 0.0
        pressure = 0.0
        if worker is not None:
            mean_call = self.cost.decode_time_s(_MEAN_CALL_OUTPUT_TOKENS, context)
            delay = expected_queue_delay_s(worker.num_waiting_reqs, worker.num_running_reqs, mean_call)
            pressure = min(1.0, max(0, worker.kv_used_tokens) / worker.kv_capacity_tokens)
        started = rec.tool_started_s if rec.tool_started_s is not None else now
        rec.next_use_at_s = self.next_use.next_use_at_s(tool, started, now, delay)
        rec.next_use_refreshes = 0
        # A late announcement is predicted at its age, like a re-key; at the tool start: None.
        rec.predicted_at_s = now if now > started else None
        self._push_refresh(rec)
        self._push_age_rekey(rec, now)
        if self.ttl is not None:
            # A TTL never outlives the cache's residence time (policy.pressure's second rule).
            rec.ttl_deadline_s = self.ttl.deadline_s(tool, now, pressure, self._residence_s(rec, now))
            if rec.baseline_hint is not None:
                base_ttl = self.ttl.deadline_s(tool, now, pressure)
                rec.baseline_hint = (rec.baseline_hint[0], rec.baseline_hint[1], base_ttl)
        if rec.aeg is not None and step is not None and self.fairness is not None:
            rec.remaining_work_s = remaining_work_s(rec.aeg, step, context, self.cost, settings=_WORK)
            self.ledger.observe_expected(
                rec.workflow_id, rec.remaining_work_s + self.ledger.consumed_s(rec.workflow_id)
            )
        return self._tool_started_control(rec, now)

    def _tool_started_control(self, rec: WorkflowRecord, now: float) -> list[Action]:
        wid = rec.kv_worker or rec.worker_id
        if wid is None or rec.tool is None:
            return []
        ttl = max(0.0, rec.ttl_deadline_s - now) if rec.ttl_deadline_s is not None else 0.0
        at = rec.reuse_next_use_at_s if rec.reuse_next_use_at_s is not None else rec.next_use_at_s
        nxt = max(0.0, at - now) if at is not None else None
        msg = ToolStartedMsg(
            workflow_id=rec.workflow_id,
            tool=rec.tool,
            ttl_s=ttl,
            next_use_in_s=nxt,
            reuse_prob=rec.reuse_prob,
        )
        return [Control(worker_id=wid, message=msg)]

    def _gap_class(self, rec: WorkflowRecord) -> tuple[str, str, int]:
        """(agent type, tool, step) of the current tool gap: the gap model's class keys."""
        return rec.agent_type or "", rec.tool or "", max(0, rec.steps_done - 1)

    def _observe_gap(self, rec: WorkflowRecord, now: float) -> None:
        """The workflow's next call arrived: its tool gap (since its last call ended) is a sample."""
        if not self.settings.predictions or rec.tool_started_s is None:
            return
        agent_type, tool, step = self._gap_class(rec)
        self.gaps.observe_idle(
            rec.gap_credited_s,
            max(rec.gap_credited_s, now - rec.tool_started_s),
            True,
            agent_type=agent_type,
            tool=tool,
            step=step,
            workflow_id=rec.workflow_id,
        )

    def _predict_reuse(self, rec: WorkflowRecord, now: float) -> None:
        """Eviction hints of a workflow in a tool gap: P(reuse within the horizon) and the expected
        next read (``ReusePredictor``, as the trace-replay hint path), times the AEG's overlap of the
        next call with the cached context when the workflow's AEG is known."""
        started = rec.tool_started_s if rec.tool_started_s is not None else now
        agent_type, tool, step_index = self._gap_class(rec)
        residence = self._residence_s(rec, now)

        def predict(residence_s: float) -> ReusePrediction:
            return self.reuse.predict(
                idle_since_s=started,
                now_s=now,
                residence_s=residence_s,
                agent_type=agent_type,
                tool=tool,
                step=step_index,
                workflow_id=rec.workflow_id,
            )

        pred = predict(residence)
        step = self._step(rec)
        overlap = 1.0
        if rec.aeg is not None and step is not None:
            overlap = reuse_probability(rec.aeg, step, rec.context_tokens)
        rec.reuse_prob = pred.reuse_prob * overlap
        rec.reuse_next_use_at_s = pred.next_use_at_s
        if self.settings.record_baseline_hints:
            base = predict(math.inf) if math.isfinite(residence) else pred
            old_ttl = rec.baseline_hint[2] if rec.baseline_hint is not None else rec.ttl_deadline_s
            rec.baseline_hint = (base.reuse_prob * overlap, base.next_use_at_s, old_ttl)

    def _residence_s(self, rec: WorkflowRecord, now: float) -> float:
        """Residence time of the cache that holds the workflow's context (where its last call ran),
        from that worker's latest view; inf when unknown or with ``residence_horizon`` off.

        Staleness: the router's view is its last ``/v1/loads`` poll (50 ms by default), the
        simulator's is current. The worker averages its eviction rate over a minute
        (``PressureSettings.residence_window_s``), so a poll period is noise against it; the value
        is read at each prediction (tool start, age re-keys, overdue re-predictions), so a hint is
        at most one re-key interval behind a change of the cache's pressure."""
        if not self.settings.residence_horizon:
            return math.inf
        worker = self._worker(rec.kv_worker or rec.worker_id, now)
        return worker.residence_s if worker is not None else math.inf

    def _step(self, rec: WorkflowRecord) -> StepId | None:
        """AEG step of the workflow's last finished call, if its AEG has that step."""
        if rec.aeg is None or rec.steps_done == 0:
            return None
        sid = step_id_of(rec.steps_done - 1)
        try:
            rec.aeg.step(sid)
        except InvalidGraph:
            return None  # the workflow outran its (inferred) chain: no prediction
        return sid

    def _end_tool(self, rec: WorkflowRecord, now: float) -> None:
        if rec.tool is not None and rec.tool_started_s is not None:
            self.latency.observe(rec.tool, now - rec.tool_started_s)
        rec.tool_started_s = None

    def _on_tool_finished(self, ev: ToolFinished, now: float) -> list[Action]:
        rec = self.workflow(ev.workflow_id)
        if rec.state is not WorkflowState.TOOL_GAP:
            return []
        if rec.tool is None and ev.tool:
            rec.tool = tool_type_of(ev.tool)
        self._end_tool(rec, now)
        rec.next_use_at_s = rec.reuse_next_use_at_s = now
        rec.ttl_deadline_s = rec.predicted_at_s = rec.baseline_hint = None  # known, not predicted
        rec.view = None
        wid = rec.kv_worker or rec.worker_id
        if not self.settings.predictions or wid is None:
            return []
        return [Control(worker_id=wid, message=ToolFinishedMsg(workflow_id=rec.workflow_id, tool=ev.tool))]

    def _on_workflow_finished(self, ev: WorkflowFinished, now: float) -> list[Action]:
        rec = self.workflow(ev.workflow_id)
        if rec.state is WorkflowState.FINISHED:
            return []
        out: list[Action] = []
        if rec.workflow_id in self._held:
            del self._held[rec.workflow_id]
            self._held_views.pop(rec.workflow_id, None)
            self._active_changed()
        if rec.call_id is not None:
            self._calls.pop(rec.call_id, None)
            self._waiting_since.pop(rec.call_id, None)
            self.service.done(rec.call_id)
            if rec.call_worker is not None:
                self._inflight[rec.call_worker] -= 1
        if (
            rec.state is WorkflowState.TOOL_GAP
            and rec.tool_started_s is not None
            and self.settings.predictions
        ):
            self._credit_gap(rec, now)  # the gap ended without a call: censored exposure only
        rec.state = WorkflowState.FINISHED
        rec.reuse_prob = 0.0
        rec.next_use_at_s = rec.ttl_deadline_s = rec.reuse_next_use_at_s = rec.predicted_at_s = None
        rec.baseline_hint = None
        rec.view = None
        self._active.pop(rec.workflow_id, None)
        self._active_changed()
        if rec.admitted_s is not None:
            self.ledger.finish(rec.workflow_id)
        if not ev.failed and rec.observed:
            self.inference.observe_task(rec.agent_type, rec.observed)
            self.footprint.observe(rec.agent_type, rec.context_tokens)
            self.service.observe_calls(rec.agent_type, rec.steps_done)
        rec.observed = []
        rec.aeg = rec.explicit_aeg = None
        wid = rec.kv_worker or rec.worker_id
        if self.settings.predictions and wid is not None:
            out.append(Control(worker_id=wid, message=WorkflowFinishedMsg(workflow_id=rec.workflow_id)))
        self._views_at = None
        out.extend(self._release_held(now))
        return out

    def forget(self, workflow_id: WorkflowId) -> None:
        """Drop a finished workflow's record (bounded memory for long-running hosts)."""
        rec = self._flows.get(workflow_id)
        if rec is not None and rec.state is WorkflowState.FINISHED:
            del self._flows[workflow_id]

    # --- workers --------------------------------------------------------------------------------
    def _on_loads(self, ev: WorkerLoads, now: float) -> None:
        fresh: dict[WorkerId, WorkerView] = {}
        for w in ev.workers:
            idle = w.idle_since_s
            if idle is None and w.num_waiting_reqs == 0:
                prev = self._idle_since.get(w.worker_id)
                idle = prev if prev is not None else now
            self._idle_since[w.worker_id] = idle if w.num_waiting_reqs == 0 else None
            fresh[w.worker_id] = w
        self._workers = fresh
        self._views_at = None

    def _worker_views(self, now: float) -> list[WorkerView]:
        if self._views_at == now:
            return self._views
        raw = list(self._worker_source()) if self._worker_source is not None else list(self._workers.values())
        views: list[WorkerView] = []
        for w in raw:
            healthy = w.is_healthy and w.worker_id not in self._down
            inflight = w.num_inflight_reqs
            idle = w.idle_since_s
            if self._worker_source is None:
                idle = self._idle_since.get(w.worker_id, idle)
            if inflight is None or not healthy or idle != w.idle_since_s:
                w = WorkerView(
                    worker_id=w.worker_id,
                    num_running_reqs=w.num_running_reqs,
                    num_waiting_reqs=w.num_waiting_reqs,
                    kv_used_tokens=w.kv_used_tokens,
                    kv_capacity_tokens=w.kv_capacity_tokens,
                    max_running_reqs=w.max_running_reqs,
                    num_inflight_reqs=inflight
                    if inflight is not None
                    else max(0, self._inflight[w.worker_id]),
                    idle_since_s=idle,
                    is_healthy=healthy,
                    prefill_tokens_per_s=w.prefill_tokens_per_s,
                    residence_s=w.residence_s,
                )
            views.append(w)
        self._views, self._views_at = views, now
        return views

    def _worker(self, worker_id: WorkerId | None, now: float) -> WorkerView | None:
        if worker_id is None:
            return None
        for w in self._worker_views(now):
            if w.worker_id == worker_id:
                return w
        return None

    # --- admission control ----------------------------------------------------------------------
    def _bound_footprint(self) -> tuple[Counter[WorkerId], Counter[WorkerId]]:
        """Predicted KV of the live workflows bound to each worker, and their count. With
        ``shared_prefix_once`` a shared prompt head counts once per worker (its largest).
        Reused while no input changed (records bump ``footprint_generation``, and so does every
        change of ``_active``): the sum is read several times per event and per epoch."""
        key = WorkflowRecord.footprint_generation
        if self._bound_cache is not None and self._bound_cache[0] == key:
            return self._bound_cache[1]
        tokens: Counter[WorkerId] = Counter()
        count: Counter[WorkerId] = Counter()
        adm = self.settings.admission
        frac = adm.bound_footprint_frac
        once = adm.shared_prefix_once
        shared: Counter[WorkerId] = Counter()
        for rec in self._active.values():
            wid = rec._worker_id
            if wid is not None:
                ctx, peak = rec._context_tokens, rec._predicted_peak_tokens
                own = (ctx if ctx > peak else peak) if frac >= 1.0 else max(ctx, round(frac * peak))
                head = rec._shared_tokens
                if once and head:
                    own = max(0, own - head)
                    if head > shared[wid]:
                        shared[wid] = head
                tokens[wid] += own
                count[wid] += 1
        tokens.update(shared)
        pair = (tokens, count)
        self._bound_cache = (key, pair)
        return pair

    def _active_changed(self) -> None:
        """``_active`` or ``_held`` gained or lost a workflow (invalidates the cached sums)."""
        WorkflowRecord.footprint_generation += 1

    def _least_held_need(self) -> int:
        """``min(_need_tokens(rec) for rec in _held)``, without a call per held workflow: the
        smallest predicted peak per agent type (cached while no record or membership changed),
        then ``_need_tokens``'s rule once per type (it is monotone in the peak)."""
        key = WorkflowRecord.footprint_generation
        if self._held_peaks is None or self._held_peaks[0] != key:
            # Per agent type: the smallest own predicted peak (0 = none) and whether some held
            # workflow of the type has none (the type's learned footprint stands in for it).
            peaks: dict[AgentType, tuple[int, bool]] = {}
            for rec in self._held.values():
                t, peak = rec.agent_type, rec._predicted_peak_tokens
                least, unknown = peaks.get(t, (0, False))
                if peak > 0:
                    peaks[t] = (peak if least == 0 or peak < least else least, unknown)
                else:
                    peaks[t] = (least, True)
            self._held_peaks = (key, peaks)
        else:
            peaks = self._held_peaks[1]
        once = self.settings.admission.shared_prefix_once
        best = 1 << 62
        for t, (least, unknown) in peaks.items():
            candidates = ([least] if least > 0 else []) + ([self.footprint.predict(t)] if unknown else [])
            for need in candidates:
                if once:
                    need = max(1, need - self._shared_by_type.get(t, 0))
                best = min(best, need)
        return best

    def _need_tokens(self, rec: WorkflowRecord) -> int:
        """Predicted peak KV a new workflow adds to a worker that already holds its shared head
        (``shared_prefix_once``: the head's size learned from the last workflow of its type)."""
        need = rec.predicted_peak_tokens or self.footprint.predict(rec.agent_type)
        if self.settings.admission.shared_prefix_once:
            need = max(1, need - self._shared_by_type.get(rec.agent_type, 0))
        return need

    def _has_room(self, w: WorkerView, rec: WorkflowRecord, bound: Any = None) -> bool:
        return self._room_reason(w, rec, bound) is None

    def _room_reason(self, w: WorkerView, rec: WorkflowRecord, bound: Any = None) -> str | None:
        if not w.is_healthy:
            return "unhealthy"
        bound = bound if bound is not None else self._bound_footprint()
        return self._fit_reason(w, self._need_tokens(rec), bound)

    def _fit_reason(self, w: WorkerView, need: int, bound: Any) -> str | None:
        """Why a workflow predicted to need ``need`` tokens cannot start on ``w`` now (None: it
        can), given the admitted workflows' footprint per worker (``_bound_footprint``)."""
        adm = self.settings.admission
        tokens, count = bound
        if adm.max_workflows_per_worker and count[w.worker_id] >= adm.max_workflows_per_worker:
            return "agents_per_worker"
        room = adm.kv_threshold_frac * w.kv_capacity_tokens
        if count[w.worker_id] == 0 and need > room:
            return None  # larger than the pool itself: waiting never makes it fit, an empty worker runs it
        if tokens[w.worker_id] + need > room:
            return "kv_footprint"
        return None

    def _hold_reason(self, rec: WorkflowRecord, workers: Sequence[WorkerView]) -> str | None:
        if rec.predicted_peak_tokens <= 0:
            rec.predicted_peak_tokens = self.footprint.predict(rec.agent_type)
        bound = self._bound_footprint()
        reasons = [self._room_reason(w, rec, bound) for w in workers]
        if not reasons or all(r == "unhealthy" for r in reasons):
            return None  # no healthy worker: placement raises NoEligibleWorker, not a hold
        if any(r is None for r in reasons):
            return None
        return "agents_per_worker" if "agents_per_worker" in reasons else "kv_footprint"

    def _any_room(self, now: float) -> bool:
        """Whether some held workflow could be admitted now (the smallest predicted footprint
        fits a healthy worker), or no worker is healthy (then release and let placement raise).
        A necessary condition of ``_hold_reason(head) is None``, cheap to check each epoch."""
        healthy = [w for w in self._worker_views(now) if w.is_healthy and w.worker_id not in self._down]
        if not healthy:
            return True
        need = self._least_held_need()
        bound = self._bound_footprint()
        return any(self._fit_reason(w, need, bound) is None for w in healthy)

    def _should_park(self, rec: WorkflowRecord, now: float) -> bool:
        """Least attained service: park ``rec`` at this call when a held workflow with at least
        ``park_after_steps`` fewer steps done, held ``park_after_held_s`` or longer, fits nowhere."""
        adm = self.settings.admission
        if not adm.park_after_steps or not self._held or not adm.enabled:
            return False
        least = min(self._held.values(), key=lambda h: (h.steps_done, h.held_since_s or now))
        if now - (least.held_since_s if least.held_since_s is not None else now) < adm.park_after_held_s:
            return False
        return rec.steps_done >= least.steps_done + adm.park_after_steps and not self._any_room(now)

    def _park(self, rec: WorkflowRecord, ev: CallArrived, now: float) -> list[Action]:
        if rec.state is WorkflowState.TOOL_GAP:
            self._end_tool(rec, now)
        self._active.pop(rec.workflow_id, None)
        self._active_changed()
        rec.parked = True
        rec.state = WorkflowState.QUEUED
        rec.held_call, rec.held_since_s = ev, now
        rec.queued_since_s = now
        rec.view = None
        self._held[rec.workflow_id] = rec
        self._active_changed()
        self._views_at = None
        self.counters["hold/park"] += 1
        log.debug("park %s after %d steps", rec.workflow_id, rec.steps_done)
        return [Hold(workflow_id=rec.workflow_id, call_id=ev.call_id, reason="park")]

    def _resume(self, rec: WorkflowRecord, workers: Sequence[WorkerView]) -> None:
        """A parked workflow is live again; it leaves its worker (and its cached KV) only if that
        worker has no room for its footprint now."""
        rec.parked = False
        self._active[rec.workflow_id] = rec
        self._active_changed()
        bound = self._bound_footprint()
        home = next((w for w in workers if w.worker_id == rec.worker_id), None)
        if home is None or not self._has_room(home, rec, bound):
            rec.worker_id = None

    def _held_view(self, rec: WorkflowRecord, now: float) -> PendingCallView:
        """The held call as AFS orders it; kept while the same call is held since the same time
        (the held queue is re-ordered every epoch in which something might fit)."""
        cached = self._held_views.get(rec.workflow_id)
        if cached is not None and cached[0] is rec.held_call and cached[1] == rec.held_since_s:
            return cached[2]
        view = PendingCallView(
            call_id=rec.held_call.call_id if rec.held_call else rec.workflow_id,
            workflow_id=rec.workflow_id,
            tenant_id=rec.tenant_id,
            enqueued_at_s=rec.held_since_s if rec.held_since_s is not None else now,
        )
        if rec.held_since_s is not None:
            self._held_views[rec.workflow_id] = (rec.held_call, rec.held_since_s, view)
        return view

    def _release_held(self, now: float) -> list[Action]:
        if not self._held:
            return []
        if not self._any_room(now):
            return []  # nothing held fits anywhere: skip ordering the (long) held queue
        out: list[Action] = []
        pending = [self._held_view(rec, now) for rec in self._held.values()]
        order = self.order_waiting(pending) if self.fairness is not None else pending
        if self.settings.admission.park_after_steps:
            # Least attained service first (stable: the AFS order breaks ties).
            order = sorted(order, key=lambda p: self._held[p.workflow_id].steps_done)
        for p in order:
            rec = self._held[p.workflow_id]
            workers = self._worker_views(now)
            if self._hold_reason(rec, workers) is not None:
                break  # head of the line does not fit yet: keep the order
            del self._held[rec.workflow_id]
            self._held_views.pop(rec.workflow_id, None)
            self._active_changed()
            ev = rec.held_call
            assert ev is not None
            rec.held_call = None
            held_s = now - rec.held_since_s if rec.held_since_s is not None else 0.0
            self.counters["release"] += 1
            out.append(Release(workflow_id=rec.workflow_id, held_s=held_s))
            if rec.parked:
                self._resume(rec, workers)
            else:
                self._admit(rec, now)
            out.extend(self._dispatch(rec, ev, now))
        return out

    # --- epoch ----------------------------------------------------------------------------------
    def epoch(self) -> list[Action]:
        """The 100 ms tick: AFS, next-use re-predictions, steals, preemptions, held releases."""
        now = self.clock.now_s()
        out: list[Action] = []
        flows = self.workflow_views() if self._active else []
        if self.fairness is not None and self.fairness.name != "fcfs":
            self._epoch = self.fairness.epoch(flows, list(self._tenants.values()), now)
        if self.settings.predictions:
            out.extend(self._refresh_gaps(now))
        if self.stealing is not None and self._active:
            out.extend(self._steal(flows, now))
        if self.settings.preemption and self.fairness is not None and self._waiting_since:
            out.extend(self._preempt(now))
        out.extend(self._release_held(now))
        return out

    def _new_gap(self, rec: WorkflowRecord) -> None:
        """A tool gap begins (its call ended): fresh re-key bookkeeping."""
        rec.predicted_at_s = None
        rec.gap_rekeys = 0
        rec.gap_credited_s = 0.0
        if self.settings.predictions:
            self.counters["tool_gaps"] += 1

    def _push_refresh(self, rec: WorkflowRecord) -> None:
        """Arm the check of the predicted gap end (re-predicted if it passes with the tool out)."""
        if rec.next_use_at_s is None or rec.tool_started_s is None:
            return
        self._refresh_seq += 1
        heapq.heappush(
            self._refresh_heap,
            (rec.next_use_at_s, self._refresh_seq, rec.workflow_id, rec.tool_started_s, False),
        )

    def _push_age_rekey(self, rec: WorkflowRecord, now: float) -> None:
        """Arm the gap's next age re-key: the first of ``gap_rekey_ages_s`` past its current age."""
        start = rec.tool_started_s
        if start is None:
            return
        age = now - start
        for a in self.settings.gap_rekey_ages_s:
            if a > age:
                self._refresh_seq += 1
                heapq.heappush(
                    self._refresh_heap, (start + a, self._refresh_seq, rec.workflow_id, start, True)
                )
                return

    def _credit_gap(self, rec: WorkflowRecord, now: float) -> None:
        """Credit the open gap's idle time so far to the gap model (censored: no return yet), so
        gaps still out lower the hazard at their ages before they end (survival estimate)."""
        assert rec.tool_started_s is not None
        age = now - rec.tool_started_s
        if age <= rec.gap_credited_s:
            return
        agent_type, tool, step = self._gap_class(rec)
        self.gaps.observe_idle(
            rec.gap_credited_s,
            age,
            False,
            agent_type=agent_type,
            tool=tool,
            step=step,
            workflow_id=rec.workflow_id,
        )
        rec.gap_credited_s = age

    def _refresh_gaps(self, now: float) -> list[Action]:
        """Re-predict tool gaps still out and re-key their workers' hints (the plugin and the simulator
        re-key as on any hint update):

        * at the ages ``gap_rekey_ages_s``: P(return within the horizon | idle this long) and the
          expected wait given a return, from the gap distribution's hazard (``ReusePredictor``), the
          wait anchored at the re-key (an LHD-style remaining-lifetime view). With heavy tails an
          old gap's outlook only gets worse, so it loses rank to a fresh gap that is due;
        * when the predicted gap end passes with the tool out: the latency conditional on the time
          elapsed (heavy tails), at most ``max_next_use_refreshes`` times per gap;
        * gaps with no announced tool: the AEG's."""
        out: list[Action] = []
        heap = self._refresh_heap
        while heap and heap[0][0] <= now:
            at, _, wid, gap_start, by_age = heapq.heappop(heap)
            rec = self._flows.get(wid)
            if rec is None or rec.state is not WorkflowState.TOOL_GAP or rec.tool_started_s != gap_start:
                continue  # the gap ended (its tool returned, the next call came, the workflow ended)
            if rec.tool is None:
                continue
            if by_age:
                # The eviction hint only: the gap-end point estimate (stealing's input) is the
                # overdue path's, so the re-keys change no placement or steal decision.
                self._push_age_rekey(rec, now)
                self._credit_gap(rec, now)
            else:
                if rec.next_use_at_s != at or rec.next_use_refreshes >= self.settings.max_next_use_refreshes:
                    continue
                worker = self._worker(rec.worker_id, now)
                delay = 0.0
                if worker is not None:
                    mean_call = self.cost.decode_time_s(_MEAN_CALL_OUTPUT_TOKENS, rec.context_tokens)
                    delay = expected_queue_delay_s(
                        worker.num_waiting_reqs, worker.num_running_reqs, mean_call
                    )
                new = self.next_use.next_use_at_s(rec.tool, gap_start, now, delay)
                if new <= at:
                    continue
                rec.next_use_at_s = new
                rec.next_use_refreshes += 1
                self._push_refresh(rec)
            self._predict_reuse(rec, now)  # the gap has aged: P and the expected read move too
            rec.predicted_at_s = now
            rec.gap_rekeys += 1
            self.counters["gap_rekey/age" if by_age else "gap_rekey/overdue"] += 1
            rec.view = None
            out.extend(self._tool_started_control(rec, now))
        # Gaps whose tool was never announced (no client events) by the next epoch: the AEG's tool.
        if self._unannounced:
            for wid in list(self._unannounced):
                rec = self._flows.get(wid)
                if rec is None or rec.state is not WorkflowState.TOOL_GAP or rec.tool is not None:
                    self._unannounced.discard(wid)
                    continue
                if rec.tool_started_s is None or rec.tool_started_s >= now:
                    continue
                self._unannounced.discard(wid)
                step = self._step(rec)
                predicted = rec.aeg.step(step).tool if rec.aeg is not None and step is not None else None
                if predicted is not None:
                    out.extend(self._predict_gap(rec, predicted, now))
        return out

    def _steal(self, flows: list[WorkflowView], now: float) -> list[Action]:
        assert self.stealing is not None
        out: list[Action] = []
        workers = self._worker_views(now)
        revalidate = getattr(self.stealing, "revalidate", None)
        observe = getattr(self.stealing, "observe_call_s", None)
        if observe is not None:
            observe(self.service.mean_call_s())  # the wait estimate at the measured call time
        for steal in self.stealing.plan(workers, flows, now):
            rec = self._active.get(steal.workflow_id)
            if rec is None or rec.worker_id != steal.victim:
                continue
            if revalidate is not None and not revalidate(steal, workers, flows, now):
                self.counters["steal_rejected"] += 1
                continue
            rec.times_stolen += 1
            rec.worker_id = steal.thief
            rec.view = None
            self.counters["steal"] += 1
            out.append(Rebind(workflow_id=rec.workflow_id, steal=steal))
            if (
                rec.state is WorkflowState.QUEUED
                and rec.call_id is not None
                and rec.call_worker == steal.victim
            ):
                out.append(
                    Redirect(
                        call_id=rec.call_id,
                        workflow_id=rec.workflow_id,
                        from_worker=steal.victim,
                        to_worker=steal.thief,
                    )
                )
            elif rec.state is WorkflowState.TOOL_GAP and rec.context_tokens > 0:
                out.append(
                    Prefill(
                        workflow_id=rec.workflow_id,
                        worker_id=steal.thief,
                        prefix_tokens=rec.context_tokens,
                        reason="steal_rebuild",
                    )
                )
        return out

    def redirected(self, call_id: str, to_worker: WorkerId) -> None:
        """The host moved a queued call (a ``Redirect`` it could carry out): bookkeeping follows."""
        rec = self._calls.get(call_id)
        if rec is None or rec.call_worker is None:
            return
        self._inflight[rec.call_worker] -= 1
        self._inflight[to_worker] += 1
        self.service.moved(call_id, to_worker)
        rec.call_worker = to_worker
        self._views_at = None

    def _preempt(self, now: float) -> list[Action]:
        """AFS's 500 ms rule over who blocks whom, known only from ``CallAdmitted`` events.

        The preempted call goes back to its worker's waiting queue in the bookkeeping (same call id,
        same worker, waiting since now): the host retracts it there and it runs again later; if it
        finished before the host could retract it, the host reports ``CallFinished`` as usual.
        """
        assert self.fairness is not None
        after = float(getattr(getattr(self.fairness, "settings", None), "preempt_after_s", 0.5))
        urg = self._epoch.urgency
        bound = self.settings.max_preemptions_per_call
        cap = math.inf if bound is None else bound
        running: dict[WorkerId, list[WorkflowRecord]] = {}
        runs_on: Counter[WorkerId] = Counter()  # every running call, preemptible or not
        for rec in self._active.values():
            if not rec.running or rec.call_worker is None:
                continue
            runs_on[rec.call_worker] += 1
            # Only calls the host can retract, and each at most ``cap`` times (no preemption loop).
            if rec.call_preemptible and rec.call_preemptions < cap:
                running.setdefault(rec.call_worker, []).append(rec)
        blocking: list[BlockingView] = []
        waiter_of: dict[WorkerId, tuple[float, WorkflowRecord]] = {}
        for call_id, since in self._waiting_since.items():
            waiting = self._calls.get(call_id)
            if waiting is None or waiting.call_worker is None or now - since <= after:
                continue
            key = -urg.get(waiting.workflow_id, 0.0)
            cur = waiter_of.get(waiting.call_worker)
            if cur is None or (key, since) < (-urg.get(cur[1].workflow_id, 0.0), cur[0]):
                waiter_of[waiting.call_worker] = (since, waiting)
        for wid, (since, waiter) in waiter_of.items():
            holders = running.get(wid)
            if not holders:
                continue
            view = self._worker(wid, now)
            if self.settings.preempt_only_if_blocked:
                need = self.service.prompt_tokens(waiter.call_id or "")
                if not _out_of_room(view, runs_on[wid], need):
                    continue
            holder = min(holders, key=lambda r: (urg.get(r.workflow_id, 0.0), r.workflow_id))
            remaining = cost = None
            if holder.call_id is not None and self._tracks_service:
                # What the preemption would save and cost, in seconds (the service estimates).
                remaining = self.service.remaining_s(holder.call_id, now)
                tokens = self.service.prompt_tokens(holder.call_id)
                cost = self.service.prefill_s(view, tokens, 0, _slowest_rate(self._worker_views(now)))
            blocking.append(
                BlockingView(
                    holder=holder.workflow_id,
                    waiter=waiter.workflow_id,
                    worker_id=wid,
                    blocked_since_s=since,
                    holder_remaining_s=remaining,
                    preempt_cost_s=cost,
                )
            )
        out: list[Action] = []
        for p in self.fairness.preemptions(blocking, self._epoch, now)[
            : self.settings.max_preemptions_per_epoch
        ]:
            victim = self._active.get(p.preempted)
            if (
                victim is None
                or not victim.running
                or victim.call_id is None
                or victim.call_worker != p.worker_id
            ):
                continue
            victim.running = False
            victim.call_preemptions += 1
            victim.state = WorkflowState.QUEUED
            victim.queued_since_s = now
            victim.view = None
            self._waiting_since[victim.call_id] = now
            self.service.requeued(victim.call_id)
            self.counters["preempt"] += 1
            out.append(
                Preempt(
                    call_id=victim.call_id,
                    workflow_id=victim.workflow_id,
                    worker_id=p.worker_id,
                    beneficiary=p.beneficiary,
                    reason=p.reason,
                )
            )
        return out

    # --- views ----------------------------------------------------------------------------------
    def _view_of(self, rec: WorkflowRecord) -> WorkflowView:
        gap = rec.state is WorkflowState.TOOL_GAP
        return WorkflowView(
            workflow_id=rec.workflow_id,
            tenant_id=rec.tenant_id,
            worker_id=rec.worker_id,
            state=rec.state,
            admitted_at_s=rec.admitted_s if rec.admitted_s is not None else 0.0,
            # What a move costs: its context is cached on its worker only (a queued call too).
            cached_prefix_tokens=rec.context_tokens if gap or rec.state is WorkflowState.QUEUED else 0,
            remaining_work_s=rec.remaining_work_s,
            deadline_s=rec.deadline_s,
            queued_since_s=rec.queued_since_s if rec.state is WorkflowState.QUEUED else None,
            tool_gap_ends_at_s=rec.next_use_at_s if gap else None,
            times_stolen=rec.times_stolen,
            call_at_worker=rec.call_worker is not None
            and (rec.running or not self.settings.redirect_waiting_calls),
            # What a move adds to the thief's pool (the steal's KV-pressure price, issue 13).
            agent_type=rec.agent_type,
            shared_prefix_tokens=rec.shared_tokens,
            footprint_tokens=rec.footprint_tokens(),
            remaining_calls=max(1.0, self.service.expected_calls(rec.agent_type) - rec.steps_done),
        )
