"""The workflow scheduler (``saga_sgl.scheduler``), hosted live: every policy of ``--policy`` runs in it.

``saga`` is the full scheduler (SAGA placement, Agent Fair Share, work stealing, tool-aware TTLs,
predictions in kv_hints; admission control when ``--scheduler-config`` enables it). The baselines
are the same scheduler with a baseline placement policy and nothing else: no fairness, no stealing,
no predictions, no body fields added, which is what sglang-router does.

This module translates: router facts -> scheduler events, scheduler actions -> router work. It
decides nothing. A call the scheduler holds (admission control) waits on a future until the
``Dispatch`` for it comes out of a later ``handle`` or ``epoch``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from saga_sgl.errors import InvalidSettings, MalformedMessage, NoEligibleWorker, UnknownWorkflow
from saga_sgl.policy import registry
from saga_sgl.policy.interfaces import CostModel
from saga_sgl.policy.settings import load_settings
from saga_sgl.policy.views import AgentType, TenantId, WorkerId, WorkerView, WorkflowId
from saga_sgl.protocol import (
    AegSubmission,
    ClientEvent,
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    aeg_from_submission,
    encode_kv_hints,
)
from saga_sgl.scheduler import actions as act
from saga_sgl.scheduler import events as ev
from saga_sgl.scheduler.settings import AdmissionControlSettings, SchedulerSettings
from saga_sgl.scheduler.workflow_scheduler import WorkflowScheduler

from .router_config import BASELINE_POLICIES, SAGA_POLICY, UNSUPPORTED_POLICIES
from .scheduling import Call, Dispatch

if TYPE_CHECKING:
    from .service import RouterService

log = logging.getLogger(__name__)

MAX_FINISHED_KEPT = 10_000
"""Finished workflows remembered (then forgotten by the scheduler too): bounded memory."""


LIVE_MAX_PREEMPTIONS_PER_CALL = 1
"""The scheduler's per-call preemption bound in the router (``SchedulerSettings``)."""


def scheduler_settings(policy: str, config: Mapping[str, Any]) -> SchedulerSettings:
    """The scheduler settings of a ``--policy`` (plus ``--scheduler-config`` for saga)."""
    if policy in UNSUPPORTED_POLICIES:
        raise InvalidSettings(f"--policy {policy}: {UNSUPPORTED_POLICIES[policy]}")
    config = dict(config)
    if isinstance(config.get("admission"), Mapping):
        config["admission"] = load_settings(AdmissionControlSettings, config["admission"])
    if policy == SAGA_POLICY:
        # An abort loses a call's decode so far: preempt each call once at most (unless configured).
        config.setdefault("max_preemptions_per_call", LIVE_MAX_PREEMPTIONS_PER_CALL)
        # Live workers may be CPUs: no steal until a pre-fill rate is measured (not the GPU default).
        given = config.get("policy_config") or {}
        if isinstance(given, Mapping) and isinstance(given.get("stealing", {}), Mapping):
            stealing = {"require_measured_rate": True, **given.get("stealing", {})}
            config["policy_config"] = {**given, "stealing": stealing}
        return load_settings(SchedulerSettings, config)
    if policy in BASELINE_POLICIES:
        base: dict[str, Any] = {
            "placement": policy,
            "fairness": None,
            "stealing": None,
            "predictions": False,
            "ttl": False,
            "preemption": False,
        }
        base.update(config)
        return load_settings(SchedulerSettings, base)
    known = ", ".join([SAGA_POLICY, *BASELINE_POLICIES])
    raise InvalidSettings(f"--policy {policy}: unknown (known: {known})")


class SchedulerHost:
    """The router's side of ``WorkflowScheduler``: events in, actions carried out."""

    def __init__(self, service: RouterService, settings: SchedulerSettings, name: str,
                 cost_model: CostModel | None = None) -> None:
        self.name = name
        self._service = service
        self._is_baseline = name != SAGA_POLICY
        # The baselines place on the router's own in-flight counts, as sglang-router does: polling
        # /v1/loads for them costs each worker ~1.6 ms of CPU per poll, 3% of a core at 20 Hz.
        self.needs_worker_loads = not self._is_baseline
        self.scheduler = WorkflowScheduler(
            settings,
            clock=service.clock,
            worker_source=service.worker_views,
            prefix_lookup=self,
            cost_model=cost_model,
        )
        self._wants_prefix = settings.placement == "cache_aware"
        self._calls: dict[str, Call] = {}
        self._matches: dict[str, Mapping[WorkerId, int]] = {}
        self._held: dict[str, asyncio.Future[act.Dispatch]] = {}
        self._finished: OrderedDict[WorkflowId, None] = OrderedDict()

    # -- PrefixLookup (asked by the scheduler while it places a call) ------------------------------

    def prefix_match_tokens(self, call_id: str) -> Mapping[WorkerId, int]:
        found = self._matches.get(call_id)
        if found is None:
            call = self._calls.get(call_id)
            found = self._service.prefix_matches(call.prompt_ids) if call is not None else {}
            self._matches[call_id] = found
        return found

    def holds_workflow_kv(self, call_id: str, workflow_id: WorkflowId, worker_id: WorkerId) -> bool:
        """cached(w*, s): the worker holds the workflow's last prompt.

        Evidence, in order: the worker's prefix index matches at least the last prompt (not the
        whole last context: the output's KV events trail the answer); else, the router's own
        bookkeeping (the last answer came from there, or a pre-fill there finished) as long as the
        worker has published no KV events since. SGLang 0.5.23 publishes them only when its
        scheduler goes idle, so a busy worker's index lags by seconds; only events stamped after
        the KV was placed can show that it was evicted.
        """
        matched = self.prefix_match_tokens(call_id).get(worker_id, 0)
        last = self._service.contexts.get(workflow_id)
        if last is None:
            return matched > 0
        if matched >= last.prompt_tokens:
            return True
        placed = last.placed.get(str(worker_id))
        if placed is None:
            return False
        published = self._service.prefixes.published_at(worker_id)
        if published is None or published < placed:
            return True
        log.info("workflow %s: %s holds %d of its last %d prompt tokens (KV events published since): "
                 "evicted, not cached there", workflow_id, worker_id, matched, last.prompt_tokens)
        return False

    # -- SchedulingHost ------------------------------------------------------------------------------

    async def dispatch(self, call: Call) -> Dispatch:
        if not any(r.worker_id not in call.tried for r in self._service.registry.routable()):
            raise NoEligibleWorker("no healthy worker left for this call")
        ident = call.identity
        self._calls[call.call_id] = call
        arrived = ev.CallArrived(
            call_id=call.call_id,
            workflow_id=call.workflow_id,
            prompt_tokens=call.prompt_tokens,
            step=ident.step,
            prefix=tuple(call.prompt_ids) if self._wants_prefix else (),
            tenant_id=TenantId(ident.tenant_id) if ident.tenant_id else None,
            agent_type=AgentType(ident.agent_type) if ident.agent_type else None,
            max_output_tokens=call.max_output_tokens,
        )
        try:
            mine = self._apply(self.scheduler.handle(arrived), call.call_id)
        except NoEligibleWorker:
            self._calls.pop(call.call_id, None)
            raise
        finally:
            self._matches.pop(call.call_id, None)
        if mine is None:
            future: asyncio.Future[act.Dispatch] = asyncio.get_running_loop().create_future()
            self._held[call.call_id] = future
            log.info("workflow %s held by admission control (call %s)", call.workflow_id, call.call_id)
            try:
                mine = await future
            finally:
                self._held.pop(call.call_id, None)
        return self._to_dispatch(call, mine)

    def _to_dispatch(self, call: Call, d: act.Dispatch) -> Dispatch:
        if self._is_baseline:
            return Dispatch(worker=d.worker_id, reason=str(d.reason))
        rid = call.rid or call.call_id
        fields: dict[str, Any] = {"rid": rid, "routing_key": d.routing_key or call.identity.workflow_id,
                                  "priority": d.priority}
        if d.hint is not None:
            fields["kv_hints"] = encode_kv_hints(d.hint, message_id=rid)
        if d.rebound_from is not None:
            log.info("workflow %s moves from %s to %s (%s)", call.workflow_id, d.rebound_from, d.worker_id,
                     d.reason)
        return Dispatch(worker=d.worker_id, reason=str(d.reason), fields=fields)

    def finished(
        self, call: Call, worker: WorkerId, meta: Mapping[str, Any] | None, ok: bool, now_s: float
    ) -> None:
        self._calls.pop(call.call_id, None)
        if ok:
            meta = meta or {}
            event: ev.Event = ev.CallFinished(
                call_id=call.call_id,
                workflow_id=call.workflow_id,
                worker_id=worker,
                prompt_tokens=int(meta.get("prompt_tokens") or call.prompt_tokens),
                output_tokens=int(meta.get("completion_tokens") or 0),
                cached_tokens=int(meta.get("cached_tokens") or 0),
            )
        else:
            event = ev.CallFailed(call_id=call.call_id, workflow_id=call.workflow_id, worker_id=worker)
        self._apply(self.scheduler.handle(event))
        if call.identity.is_own:
            # A request without a workflow is a workflow of one call: it ends with its answer.
            self._finish(call.workflow_id, failed=not ok)

    def client_event(self, event: ClientEvent, now_s: float) -> None:
        wf = WorkflowId(event.workflow_id)
        if isinstance(event, AegSubmission):
            # The first submission registers the workflow with its graph (tier-1 AEG); later
            # revisions of a known workflow are accepted but the scheduler keeps its first graph.
            if not self.knows(event.workflow_id):
                try:
                    aeg = aeg_from_submission(event) if event.nodes else None
                except MalformedMessage:
                    raise
                except ValueError as exc:
                    raise MalformedMessage(f"submitted graph is not a valid AEG: {exc}") from exc
                self.scheduler.handle(
                    ev.WorkflowSubmitted(
                        workflow_id=wf,
                        tenant_id=TenantId(event.tenant_id or "default"),
                        agent_type=AgentType(event.agent_type) if event.agent_type else None,
                        aeg=aeg,
                    )
                )
            return
        if not self.knows(event.workflow_id):
            raise UnknownWorkflow(event.workflow_id)
        if isinstance(event, ClientToolStarted):
            self._apply(self.scheduler.handle(ev.ToolStarted(workflow_id=wf, tool=event.tool)))
        elif isinstance(event, ClientToolFinished):
            self._apply(self.scheduler.handle(ev.ToolFinished(workflow_id=wf, tool=event.tool)))
        elif isinstance(event, ClientWorkflowFinished):
            self._finish(wf, failed=not event.ok)

    def _finish(self, wf: WorkflowId, *, failed: bool) -> None:
        try:
            record = self.scheduler.workflow(wf)
        except UnknownWorkflow:
            return
        tenant = str(record.tenant_id)
        admitted = record.admitted_s
        deadline = record.deadline_s
        self._apply(self.scheduler.handle(ev.WorkflowFinished(workflow_id=wf, failed=failed)))
        now = self._service.clock.now_s()
        if admitted is not None and not failed:
            self._service.count("task_seconds", tenant, now - admitted)
            if deadline != float("inf"):
                self._service.count("slo_met" if now <= deadline else "slo_missed", tenant)
        self._finished[wf] = None
        while len(self._finished) > MAX_FINISHED_KEPT:
            old, _ = self._finished.popitem(last=False)
            self.scheduler.forget(old)
        self._service.contexts.pop(wf, None)

    def worker_up(self, worker: WorkerId, now_s: float) -> None:
        self._apply(self.scheduler.handle(ev.WorkerUp(worker_id=worker)))

    def worker_down(self, worker: WorkerId, now_s: float) -> None:
        self._apply(self.scheduler.handle(ev.WorkerDown(worker_id=worker)))

    def call_admitted(
        self, call_id: str, workflow_id: WorkflowId, worker: WorkerId, preemptible: bool
    ) -> None:
        # Only preemption reads who runs; the baselines have none.
        if not self._is_baseline and call_id in self._calls:
            self.scheduler.handle(ev.CallAdmitted(call_id=call_id, workflow_id=workflow_id, worker_id=worker,
                                                  preemptible=preemptible))

    def observe_loads(self, workers: Sequence[WorkerView], now_s: float) -> None:
        self._apply(self.scheduler.handle(ev.WorkerLoads(workers=tuple(workers))))

    def epoch(self, now_s: float) -> None:
        if not self.scheduler.needs_epoch:
            return
        self._apply(self.scheduler.epoch())
        for tenant, urgency in self.scheduler.fair_share.afs.items():
            self._service.count("afs", str(tenant), float(urgency))

    def queue_depth(self) -> int:
        return len(self._held)

    def held(self) -> int:
        return len(self.scheduler.held)

    def knows(self, workflow_id: str) -> bool:
        try:
            self.scheduler.workflow(WorkflowId(workflow_id))
        except UnknownWorkflow:
            return False
        return True

    # -- actions -----------------------------------------------------------------------------------------

    def _apply(self, actions: Sequence[act.Action], waiting_for: str | None = None) -> act.Dispatch | None:
        """Carry out ``actions`` in order; return the Dispatch of ``waiting_for`` if among them."""
        mine: act.Dispatch | None = None
        service = self._service
        for a in actions:
            if isinstance(a, act.Dispatch):
                if a.call_id == waiting_for:
                    mine = a
                else:
                    future = self._held.get(a.call_id)
                    if future is not None and not future.done():
                        future.set_result(a)
            elif isinstance(a, act.Hold):
                log.info("hold %s: %s", a.workflow_id, a.reason)
            elif isinstance(a, act.Release):
                log.info("release %s after %.3f s held", a.workflow_id, a.held_s)
            elif isinstance(a, act.Rebind):
                s = a.steal
                service.count("steal")
                log.info("steal %s: %s -> %s (%s, %d tokens to rebuild)", a.workflow_id, s.victim, s.thief,
                         s.trigger, s.rebuild_tokens)
            elif isinstance(a, act.Prefill):
                context = service.contexts.get(a.workflow_id)
                if context is not None:
                    service.prefill(a.worker_id, a.workflow_id, context.tokens[: a.prefix_tokens])
                else:
                    log.info("pre-fill of %s skipped: the router holds no context for it", a.workflow_id)
            elif isinstance(a, act.Control):
                service.send_control(a.worker_id, a.message)
            elif isinstance(a, act.Redirect):
                # Calls are forwarded the moment they are dispatched: SGLang cannot move a waiting one.
                log.debug("redirect of %s not possible: already forwarded to %s", a.call_id, a.from_worker)
            elif isinstance(a, act.Preempt):
                service.preempt(a.call_id, a.worker_id, a.beneficiary, self._why_preempt(a))
        return mine

    def _why_preempt(self, a: act.Preempt) -> str:
        """AFS's reason in numbers, for the log: who waited behind whom, at which urgency."""
        epoch = self.scheduler.fair_share

        def urgency(wf: WorkflowId) -> str:
            tenant = epoch.tenant_of.get(wf)
            return (f"tenant {tenant} AFS {epoch.afs.get(tenant, 0.0):.3g}, "
                    f"workflow urgency {epoch.urgency.get(wf, 0.0):.3g}") if tenant is not None else "unknown"

        return (f"{a.reason}: {a.beneficiary} ({urgency(a.beneficiary)}) waited behind {a.workflow_id} "
                f"({urgency(a.workflow_id)}) past the preemption delay")


COST_MODEL_KEY = "cost_model"
"""``--scheduler-config`` key: coefficients of the scheduler's ``linear`` cost model (what a call
costs before the router has measured the workers' pre-fill rate, and every decode estimate).
Default: the GPU fit (Llama-3-8B on an H100); CPU workers are 10-20x slower and decode-vs-prefill
weighted differently, so a CPU cluster passes its calibration (``benchmarks/live.py`` does)."""


def make_host(service: RouterService) -> SchedulerHost:
    config = service.config
    extra = _policy_config(config)
    cost = extra.pop(COST_MODEL_KEY, None)
    if cost is not None and not isinstance(cost, Mapping):
        raise InvalidSettings(f"--scheduler-config {COST_MODEL_KEY}: expected an object, got {cost!r}")
    settings = scheduler_settings(config.policy, extra)
    model = registry.create_cost_model("linear", cost) if cost is not None else None
    return SchedulerHost(service, settings, config.policy, cost_model=model)


def _policy_config(config: Any) -> dict[str, Any]:
    """``--scheduler-config`` plus the cache-aware flags, in the scheduler's settings shape."""
    extra = dict(config.scheduler_config)
    if config.policy == "cache_aware":
        policy_config = dict(extra.get("policy_config") or {})
        placement = dict(policy_config.get("placement") or {})
        placement.setdefault("cache_threshold", config.cache_threshold)
        placement.setdefault("balance_abs_threshold", config.balance_abs_threshold)
        placement.setdefault("balance_rel_threshold", config.balance_rel_threshold)
        placement.setdefault("eviction_interval_s", config.eviction_interval_secs)
        placement.setdefault("max_tree_size", config.max_tree_size)
        policy_config["placement"] = placement
        extra["policy_config"] = policy_config
    if config.policy == SAGA_POLICY:
        extra.setdefault("epoch_s", config.epoch_interval_secs)
    return extra
