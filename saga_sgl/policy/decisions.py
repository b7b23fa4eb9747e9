"""Outputs of the policy core: small frozen values, each with a Reason.

Reason values are StrEnums used verbatim as metric labels and log fields, so their set is small and
fixed. Hosts apply decisions; they never re-derive them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple

from saga_sgl.policy.views import TenantId, WorkerId, WorkflowId


class Tier(IntEnum):
    """Protection tier: the first element of every eviction key (smaller = evicted first)."""

    DEAD = 0
    """KV of a finished or terminal workflow: evicted before anything else."""
    ORDINARY = 1
    """Ordinary candidates, ordered by the policy's primary quantity."""
    PROTECTED = 2
    """A live tool-aware TTL: evicted only if nothing else can be."""


class EvictionKey(NamedTuple):
    """The key an eviction policy returns. Smaller keys are evicted first.

    Compare as a plain tuple: (tier, primary, tiebreak, entry_id). ``primary`` is the policy's main
    quantity (last access time for LRU, negated predicted next use for reuse_time, negated score for
    WA-LRU); ``tiebreak`` is the policy's secondary order (negated depth: deeper first);
    ``entry_id`` makes the order total and deterministic.
    """

    tier: int
    primary: float
    tiebreak: float
    entry_id: int


class PlacementReason(StrEnum):
    """Why a call went to a worker."""

    AFFINITY = "affinity"
    """Eq. 7 first branch: the workflow's worker holds its KV and is below theta."""
    LEAST_LOADED = "least_loaded"
    """Eq. 7 second branch: affinity worker overloaded, missing or without the KV."""
    ADMISSION = "admission"
    """A new workflow placed whole by the multi-criteria admission score."""
    COMPLETION_COST = "completion_cost"
    """A new workflow placed whole where its call's expected completion time (seconds) is least."""
    ROUND_ROBIN = "round_robin"
    """Round-robin baseline."""
    CACHE_MATCH = "cache_match"
    """cache_aware baseline: prefix match rate above cache_threshold."""
    CACHE_MIN_LOAD = "cache_min_load"
    """cache_aware baseline: match rate at or below the threshold, the first healthy worker with the
    fewest in-flight requests (sglang-router 0.3.2)."""
    CACHE_IMBALANCED = "cache_imbalanced"
    """cache_aware baseline: loads imbalanced, least-loaded worker."""
    CONSISTENT_HASH = "consistent_hash"
    """consistent_hash baseline: the ring's owner of the routing key."""
    CONSISTENT_HASH_FAILOVER = "consistent_hash_failover"
    """consistent_hash baseline: the owner is unhealthy, next healthy worker on the ring."""
    BOUNDED_HASH = "bounded_hash"
    """bounded_hash baseline: the ring owner of the routing key is below the load bound."""
    BOUNDED_HASH_FORWARD = "bounded_hash_forward"
    """bounded_hash baseline: the owner is full or unhealthy; the next worker clockwise below the bound."""
    PREFIX_MATCH = "prefix_match"
    """prefix_affinity baseline: match rate at or above the threshold, a replica with the longest match."""
    PREFIX_SMALLEST_TREE = "prefix_smallest_tree"
    """prefix_affinity baseline: low match rate, a replica with the least prefix-cache text."""
    PREFIX_IMBALANCED = "prefix_imbalanced"
    """prefix_affinity baseline: queue lengths imbalanced (or no prefix data), power of two choices."""
    STICKY = "sticky"
    """sticky_least_loaded baseline: the session's worker, bound at its first call."""
    STICKY_LEAST_LOADED = "sticky_least_loaded"
    """sticky_least_loaded baseline: a new (or orphaned) session bound to the least-loaded worker."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Send the call (and, for a new workflow, bind the workflow) to ``worker_id``."""

    worker_id: WorkerId
    """Chosen worker."""
    reason: PlacementReason
    """Why."""


class StealTrigger(StrEnum):
    """Which condition started a steal."""

    IDLE = "idle"
    """The thief's queue has been empty for at least the idle threshold (100 ms)."""
    LOAD_RATIO = "load_ratio"
    """max/min load ratio above R_max (2.0)."""
    IDLE_AND_RATIO = "idle_and_ratio"
    """Both at once (the paper's thrashing guard requires this in ``guard=and`` mode)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Steal:
    """Re-bind ``workflow_id`` from ``victim`` to ``thief``.

    SGLang has no live KV migration: the host re-binds the workflow and, during its tool gap,
    pre-fills ``rebuild_tokens`` of its prefix on the thief (a ``max_new_tokens=0`` request).
    """

    workflow_id: WorkflowId
    """The stolen workflow."""
    victim: WorkerId
    """Overloaded worker it leaves."""
    thief: WorkerId
    """Underloaded worker it moves to."""
    rebuild_tokens: int
    """Prefix tokens to re-prefill on the thief (the steal's cost)."""
    trigger: StealTrigger
    """Condition that started the steal."""


class PreemptionReason(StrEnum):
    """Why AFS preempts."""

    BLOCKED_TOO_LONG = "blocked_too_long"
    """A low-AFS workflow blocked a high-AFS one for longer than the preemption threshold (500 ms)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Preemption:
    """Preempt ``preempted`` (move or deprioritise it) in favour of ``beneficiary`` on ``worker_id``."""

    preempted: WorkflowId
    """Low-AFS workflow that yields."""
    beneficiary: WorkflowId
    """High-AFS workflow that was blocked."""
    worker_id: WorkerId
    """Worker where it happens."""
    reason: PreemptionReason
    """Why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FairShareEpoch:
    """Result of one AFS epoch (Eq. 8): urgency, capacity share and request priority per tenant.

    Hosts keep the latest epoch and use it for dispatch order, SGLang ``priority`` values and
    preemption until the next epoch (every 100 ms).
    """

    computed_at_s: float
    """Absolute time of the epoch."""
    afs: Mapping[TenantId, float] = field(default_factory=dict)
    """AFS_i of Eq. 8 (weighted), per tenant with active work; higher = more urgent."""
    share: Mapping[TenantId, float] = field(default_factory=dict)
    """Capacity share per tenant, proportional to AFS, summing to 1 over tenants with active work."""
    priority: Mapping[TenantId, int] = field(default_factory=dict)
    """SGLang request ``priority`` per tenant (larger runs first, SGLang's default order)."""
    tenant_of: Mapping[WorkflowId, TenantId] = field(default_factory=dict)
    """Tenant of each active workflow seen this epoch (preemption compares tenants' AFS)."""
    urgency: Mapping[WorkflowId, float] = field(default_factory=dict)
    """Per-workflow term of Eq. 8, work_remain / max(deadline - now, min_slack) (unweighted), or with
    ``within_tenant="srpt"`` 1 / (1 + work_remain): the order inside a tenant (larger first), and the
    ``urgency`` hint a worker orders its queue by."""

    def priority_of(self, tenant_id: TenantId, default: int = 0) -> int:
        """Priority for a tenant, ``default`` if it had no active work this epoch."""
        return self.priority.get(tenant_id, default)
