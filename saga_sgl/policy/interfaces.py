"""Protocols of the policy core, one per decision kind.

Every policy is a small class behind one of these Protocols. It holds its settings (a frozen
dataclass), takes plain views plus ``now_s`` (and, if it draws, a ``random.Random`` given at
construction), and returns a value. It does no I/O, reads no clock and no globals, and never awaits.
Implementations carry ``name: ClassVar[str]`` equal to their key in ``policy.registry``.

Time arguments are absolute seconds on the host's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from saga_sgl.policy.decisions import EvictionKey, FairShareEpoch, Placement, Preemption, Steal
from saga_sgl.policy.views import (
    BlockingView,
    CacheEntryView,
    CallView,
    PendingCallView,
    TenantView,
    ToolType,
    WorkerView,
    WorkflowView,
)


@runtime_checkable
class EvictionPolicy(Protocol):
    """Orders evictable KV entries. The entry with the smallest key is evicted first.

    ``pressure`` is the KV pool usage fraction used/capacity in [0, 1] (the input of Eq. 6, not m).

    Contract (what ``VictimIndex``, SGLang's heap and the simulator rely on):

    * keys are ``EvictionKey`` tuples (tier, primary, tiebreak, entry_id), deterministic in
      (entry, now_s, pressure);
    * keys are built from absolute times, so between two calls a key only changes when a TTL
      deadline passes (PROTECTED -> lower tier) or when ``protects(pressure)`` flips;
    * a key is in ``Tier.PROTECTED`` only if ``protects(pressure)`` and the entry's TTL is live.
    """

    name: ClassVar[str]

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        """Eviction key of ``entry`` at time ``now_s`` and KV usage ``pressure``."""
        ...

    def protects(self, pressure: float) -> bool:
        """True if a live TTL protects entries at this KV usage (False above threshold_high)."""
        ...


@runtime_checkable
class PlacementPolicy(Protocol):
    """Chooses the worker for a call (and, for a new workflow, binds the workflow to it)."""

    name: ClassVar[str]

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        """Worker for ``call``. Raises ``saga_sgl.errors.NoEligibleWorker`` if none is healthy."""
        ...


@runtime_checkable
class StealPolicy(Protocol):
    """Decides work steals for one epoch."""

    name: ClassVar[str]

    def plan(
        self, workers: Sequence[WorkerView], workflows: Sequence[WorkflowView], now_s: float
    ) -> list[Steal]:
        """Steals to perform now (at most the per-epoch limit; never a workflow stolen before)."""
        ...


@runtime_checkable
class FairnessPolicy(Protocol):
    """Orders work across tenants (Agent Fair Share or a baseline)."""

    name: ClassVar[str]

    def epoch(
        self, workflows: Sequence[WorkflowView], tenants: Sequence[TenantView], now_s: float
    ) -> FairShareEpoch:
        """Recompute per-tenant urgency, share and priority (run every epoch, 100 ms)."""
        ...

    def order(self, pending: Sequence[PendingCallView], epoch: FairShareEpoch) -> list[PendingCallView]:
        """Dispatch order of ``pending`` calls (first = dispatch first)."""
        ...

    def preemptions(
        self, blocking: Sequence[BlockingView], epoch: FairShareEpoch, now_s: float
    ) -> list[Preemption]:
        """Preemptions to perform now, given who blocks whom."""
        ...


@runtime_checkable
class CostModel(Protocol):
    """GPU time of prefill and decode work on one worker (Eq. 9's T_prefill and T_decode)."""

    def prefill_time_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        """Seconds to prefill ``num_new_tokens`` on top of ``num_cached_tokens`` already cached."""
        ...

    def decode_time_s(self, num_output_tokens: int, num_context_tokens: int) -> float:
        """Seconds to decode ``num_output_tokens`` starting from a context of ``num_context_tokens``."""
        ...


@runtime_checkable
class ToolLatencyEstimate(Protocol):
    """Per-tool latency distribution, read by the TTL and the next-use predictor."""

    def quantile_s(self, tool: ToolType, q: float) -> float:
        """Latency quantile ``q`` in (0, 1) of ``tool``, seconds."""
        ...

    def mean_s(self, tool: ToolType) -> float:
        """Mean latency of ``tool``, seconds."""
        ...
