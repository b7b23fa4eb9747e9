"""Agent Fair Share (AFS, Eq. 8): urgency per tenant, proportional dispatch, priority, preemption.

Every epoch (100 ms) [P]:

    AFS_i = weight_i * sum_{t in T_i} work_remain(t) / max(deadline(t) - t_now, min_slack_s)     (Eq. 8)

over tenant i's active (not finished) workflows; work_remain is Eq. 9 (``WorkflowView.remaining_work_s``,
from ``aeg.predict``); deadline(t) = admission + slo_factor (1.5) x expected completion time [P]
(``slo_deadline_s``); an overdue task counts with the floor ``min_slack_s`` (reference repo's epsilon [R]).
Tenant weights default to 1 (the paper has none; the repo uses 3/2/1 classes [R]).

* Capacity share: share_i = AFS_i / sum_j AFS_j [P] (equal shares if every AFS is 0).
* Dispatch order (``order``): stride scheduling over the shares [I]: tenant i's k-th pending call
  (FCFS within the tenant) gets virtual time (k + 1) / share_i; calls go out by virtual time, so
  over any window tenant i gets about share_i of the dispatch slots.
* Inside a tenant [I]: the paper orders only across tenants, so a single-tenant run would be FCFS.
  With ``within_tenant="urgency"`` a tenant's own pending calls go most urgent workflow first (its
  Eq. 8 term, ``FairShareEpoch.urgency``), FCFS among equals; ``"srpt"`` (ours) ranks them by
  1 / (1 + predicted remaining work) instead, least work first; ``"fcfs"`` keeps arrival order.
  Preemption between two workflows of one tenant compares these per-workflow ranks the same way.
* Request priority: round(max_priority * AFS_i / max_j AFS_j), an int for SGLang's ``priority``
  field (larger runs first with SGLang's default ``--schedule-low-priority-values-first`` off).
* Preemption [P]: when a workflow of a tenant with a lower AFS has blocked one of a tenant with a
  higher AFS for more than 500 ms. ``preempt_urgency_ratio`` requires AFS_waiter > ratio x AFS_holder
  (1.0 = strictly higher, the paper; the reference repo uses 2.0 [R]).

``fcfs`` is the baseline: arrival order, no priorities, no preemption. O(F + P log P) per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import FairShareEpoch, Preemption, PreemptionReason
from saga_sgl.policy.settings import require, require_non_negative, require_positive
from saga_sgl.policy.views import (
    BlockingView,
    PendingCallView,
    TenantId,
    TenantView,
    WorkflowId,
    WorkflowState,
    WorkflowView,
)

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import FairnessPolicy


def slo_deadline_s(admitted_at_s: float, expected_completion_s: float, slo_factor: float = 1.5) -> float:
    """SLO deadline: admission + slo_factor x expected task completion time [P]."""
    return admitted_at_s + slo_factor * expected_completion_s


@dataclass(frozen=True, slots=True, kw_only=True)
class AfsSettings:
    """Settings of ``AgentFairShare``."""

    epoch_s: float = 0.1
    """How often hosts call ``epoch`` (seconds) [P]."""
    slo_factor: float = 1.5
    """Deadline = admission + slo_factor x expected completion time [P]."""
    preempt_after_s: float = 0.5
    """A blocked higher-AFS workflow triggers preemption after this long (seconds) [P]."""
    preempt_urgency_ratio: float = 1.0
    """Preempt only if AFS_waiter > ratio x AFS_holder (1.0: strictly higher [P]; repo 2.0 [R])."""
    min_slack_s: float = 0.1
    """Floor of deadline - now in Eq. 8, so overdue work stays finite and maximal (repo epsilon [R]);
    one epoch by default [I]."""
    max_priority: int = 10
    """Largest SGLang ``priority`` handed out (most urgent tenant); least urgent gets 0 [I]."""
    preempt_only_if_it_pays: bool = False
    """Skip a preemption whose holder is expected to finish sooner than its preemption costs it
    (``BlockingView.holder_remaining_s`` <= ``preempt_cost_s``: the waiter would get the worker as
    soon anyway); ours [I]."""
    within_tenant: str = "urgency"
    """Order inside a tenant: ``urgency`` (per-workflow Eq. 8 term, most urgent first), ``srpt``
    (least predicted remaining work first: shortest-remaining-processing-time, which minimises mean
    completion time on a saturated worker; ours, not the paper's) or ``fcfs`` [I]."""

    def __post_init__(self) -> None:
        owner = "AfsSettings"
        require_positive(owner, "epoch_s", self.epoch_s)
        require_positive(owner, "slo_factor", self.slo_factor)
        require_non_negative(owner, "preempt_after_s", self.preempt_after_s)
        require(
            self.preempt_urgency_ratio >= 1.0,
            owner,
            "preempt_urgency_ratio",
            ">= 1",
            self.preempt_urgency_ratio,
        )
        require_positive(owner, "min_slack_s", self.min_slack_s)
        require(self.max_priority >= 0, owner, "max_priority", ">= 0", self.max_priority)
        require(
            self.within_tenant in ("urgency", "srpt", "fcfs"),
            owner,
            "within_tenant",
            "'urgency', 'srpt' or 'fcfs'",
            self.within_tenant,
        )


def task_urgency(wf: WorkflowView, now_s: float, min_slack_s: float) -> float:
    """One task's term of Eq. 8: work_remain / max(deadline - now, min_slack_s)."""
    if wf.state is WorkflowState.FINISHED or wf.remaining_work_s <= 0:
        return 0.0
    slack = wf.deadline_s - now_s
    if math.isinf(slack):
        return 0.0
    return wf.remaining_work_s / max(slack, min_slack_s)


class AgentFairShare:
    """Eq. 8 per tenant each epoch; proportional dispatch order, priorities, 500 ms preemption."""

    name: ClassVar[str] = "afs"

    def __init__(self, settings: AfsSettings | None = None) -> None:
        self.settings = settings or AfsSettings()

    def deadline_s(self, admitted_at_s: float, expected_completion_s: float) -> float:
        """SLO deadline of a workflow admitted at ``admitted_at_s``."""
        return slo_deadline_s(admitted_at_s, expected_completion_s, self.settings.slo_factor)

    def epoch(
        self, workflows: Sequence[WorkflowView], tenants: Sequence[TenantView], now_s: float
    ) -> FairShareEpoch:
        s = self.settings
        weight = {t.tenant_id: t.weight for t in tenants}
        afs: dict[TenantId, float] = {}
        tenant_of: dict[WorkflowId, TenantId] = {}
        urgency: dict[WorkflowId, float] = {}
        floor = s.min_slack_s
        finished = WorkflowState.FINISHED
        srpt = s.within_tenant == "srpt"
        for wf in workflows:
            if wf.state is finished:
                continue
            tid = wf.tenant_id
            tenant_of[wf.workflow_id] = tid
            # task_urgency inlined: this loop runs over every active workflow each 100 ms epoch.
            work, slack = wf.remaining_work_s, wf.deadline_s - now_s
            term = work / (slack if slack > floor else floor) if work > 0 and slack != math.inf else 0.0
            afs[tid] = afs.get(tid, 0.0) + term
            # srpt: the within-tenant rank is 1 / (1 + remaining work); no prediction ranks last.
            urgency[wf.workflow_id] = (1.0 / (1.0 + work) if work > 0 else 0.0) if srpt else term
        for tid in afs:
            afs[tid] *= weight.get(tid, 1.0)
        total = sum(afs.values())
        if total > 0:
            share = {tid: v / total for tid, v in afs.items()}
        else:
            share = {tid: 1.0 / len(afs) for tid in afs} if afs else {}
        top = max(afs.values(), default=0.0)
        priority = {tid: round(s.max_priority * v / top) if top > 0 else 0 for tid, v in afs.items()}
        return FairShareEpoch(
            computed_at_s=now_s,
            afs=afs,
            share=share,
            priority=priority,
            tenant_of=tenant_of,
            urgency=urgency,
        )

    def order(self, pending: Sequence[PendingCallView], epoch: FairShareEpoch) -> list[PendingCallView]:
        by_tenant: dict[TenantId, list[PendingCallView]] = {}
        for call in pending:
            by_tenant.setdefault(call.tenant_id, []).append(call)
        keyed: list[tuple[float, float, str, PendingCallView]] = []
        by_urgency = self.settings.within_tenant != "fcfs" and bool(epoch.urgency)
        urg = epoch.urgency
        for tid, calls in by_tenant.items():
            if by_urgency:
                calls.sort(key=lambda c: (-urg.get(c.workflow_id, 0.0), c.enqueued_at_s, c.call_id))
            else:
                calls.sort(key=lambda c: (c.enqueued_at_s, c.call_id))
            share = epoch.share.get(tid, 0.0)
            for k, call in enumerate(calls):
                # A tenant with no share this epoch (unknown to it) goes after everyone, FCFS.
                virtual = (k + 1) / share if share > 0 else math.inf
                keyed.append((virtual, call.enqueued_at_s, call.call_id, call))
        keyed.sort(key=lambda t: t[:3])
        return [t[3] for t in keyed]

    def preemptions(
        self, blocking: Sequence[BlockingView], epoch: FairShareEpoch, now_s: float
    ) -> list[Preemption]:
        s = self.settings
        out: list[Preemption] = []
        preempted: set[WorkflowId] = set()
        served: set[WorkflowId] = set()
        for b in sorted(blocking, key=lambda b: (b.blocked_since_s, b.waiter, b.holder)):
            if now_s - b.blocked_since_s <= s.preempt_after_s:
                continue
            if b.holder in preempted or b.waiter in served:
                continue
            if (
                s.preempt_only_if_it_pays
                and b.holder_remaining_s is not None
                and b.preempt_cost_s is not None
                and b.holder_remaining_s <= b.preempt_cost_s
            ):
                continue
            t_hi = epoch.tenant_of.get(b.waiter, TenantId(""))
            t_lo = epoch.tenant_of.get(b.holder, TenantId(""))
            if t_hi == t_lo and s.within_tenant != "fcfs":
                hi, lo = epoch.urgency.get(b.waiter, 0.0), epoch.urgency.get(b.holder, 0.0)
            else:
                hi, lo = epoch.afs.get(t_hi, 0.0), epoch.afs.get(t_lo, 0.0)
            if hi > s.preempt_urgency_ratio * lo:
                preempted.add(b.holder)
                served.add(b.waiter)
                out.append(
                    Preemption(
                        preempted=b.holder,
                        beneficiary=b.waiter,
                        worker_id=b.worker_id,
                        reason=PreemptionReason.BLOCKED_TOO_LONG,
                    )
                )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FcfsSettings:
    """fcfs has no constants."""


class FirstComeFirstServed:
    """Baseline: dispatch in arrival order; no priorities, no preemption."""

    name: ClassVar[str] = "fcfs"

    def __init__(self, settings: FcfsSettings | None = None) -> None:
        self.settings = settings or FcfsSettings()

    def epoch(
        self, workflows: Sequence[WorkflowView], tenants: Sequence[TenantView], now_s: float
    ) -> FairShareEpoch:
        return FairShareEpoch(computed_at_s=now_s)

    def order(self, pending: Sequence[PendingCallView], epoch: FairShareEpoch) -> list[PendingCallView]:
        return sorted(pending, key=lambda c: (c.enqueued_at_s, c.call_id))

    def preemptions(
        self, blocking: Sequence[BlockingView], epoch: FairShareEpoch, now_s: float
    ) -> list[Preemption]:
        return []


if TYPE_CHECKING:
    _check: FairnessPolicy = AgentFairShare()
    _check_fcfs: FairnessPolicy = FirstComeFirstServed()
