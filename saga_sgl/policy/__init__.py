"""The pure policy core: eviction keys and TTL, placement, stealing, fairness, oracles.

Everything here is deterministic and free of I/O: plain views in, a decision out, the clock and
randomness injected. Imports only the standard library, numpy, ``saga_sgl.aeg``, ``saga_sgl.clock``
(types) and ``saga_sgl.errors``; never sglang, aiohttp, zmq, msgspec or prometheus_client
(``tests/unit/test_import_boundary.py`` enforces this).

Hosts use: ``views`` (inputs), ``decisions`` (outputs), ``interfaces`` (Protocols) and
``registry`` (name -> policy).
"""

from saga_sgl.policy.decisions import (
    EvictionKey,
    FairShareEpoch,
    Placement,
    PlacementReason,
    Preemption,
    PreemptionReason,
    Steal,
    StealTrigger,
    Tier,
)
from saga_sgl.policy.interfaces import (
    CostModel,
    EvictionPolicy,
    FairnessPolicy,
    PlacementPolicy,
    StealPolicy,
    ToolLatencyEstimate,
)
from saga_sgl.policy.views import (
    AgentType,
    BlockingView,
    CacheEntryView,
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

__all__ = [
    "AgentType",
    "BlockingView",
    "CacheEntryView",
    "CallView",
    "CostModel",
    "EvictionKey",
    "EvictionPolicy",
    "FairShareEpoch",
    "FairnessPolicy",
    "PendingCallView",
    "Placement",
    "PlacementPolicy",
    "PlacementReason",
    "Preemption",
    "PreemptionReason",
    "Steal",
    "StealPolicy",
    "StealTrigger",
    "StepId",
    "TenantId",
    "TenantView",
    "Tier",
    "ToolLatencyEstimate",
    "ToolType",
    "WorkerId",
    "WorkerView",
    "WorkflowId",
    "WorkflowState",
    "WorkflowView",
]
