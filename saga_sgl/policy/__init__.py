"""The pure policy core: eviction keys and TTL, placement, stealing, fairness, oracles.

Everything here is deterministic and free of I/O: plain views in, a decision out, the clock and
randomness injected. Imports only the standard library, numpy, ``saga_sgl.aeg``, ``saga_sgl.clock``
(types) and ``saga_sgl.errors``; never sglang, aiohttp, zmq, msgspec or prometheus_client
(``tests/unit/test_import_boundary.py`` enforces this).

Hosts use: ``views`` (inputs), ``decisions`` (outputs), ``interfaces`` (Protocols) and
``registry`` (name -> policy). In short::

    from saga_sgl.policy import registry
    from saga_sgl.policy.victim_index import VictimIndex

    evict = registry.create_eviction("reuse_time", json_config)       # strict: unknown key -> error
    index = VictimIndex(evict)                                         # one per cache
    index.add(CacheEntryView(...), now_s, usage_frac)                  # entry became an evictable leaf
    victim = index.pop(now_s, usage_frac)                              # O(log n)

    place = registry.create_placement("saga", cfg, rng=random.Random(seed))
    decision = place.place(CallView(...), [WorkerView(...), ...], now_s)   # Placement(worker_id, reason)

    steal = registry.create_stealing("saga_steal", cfg, rng=...)      # plan(workers, workflows, now_s)
    afs = registry.create_fairness("afs", cfg)                        # epoch / order / preemptions

Models the host feeds (``saga_sgl.aeg``): ``ToolLatencyModel``, ``ObservationLengthModel``,
``PatternInference``, and here ``ServiceLedger``; the TTL of Algorithm 1 is
``eviction.ttl.ToolAwareTtl(latency_model)``; Belady is ``eviction.belady.replay_belady``.
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
