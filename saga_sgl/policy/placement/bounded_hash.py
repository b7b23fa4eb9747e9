"""bounded_hash baseline: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
SODA 2018; HAProxy's ``hash-balance-factor``).

Each call of a workflow goes to the first worker clockwise from the hash of its routing key (the
workflow id) whose load stays within the bound after taking it:

    load(w) + 1 <= ceil(balance_factor x (sum_w load(w) + 1) / num_healthy_workers)

load(w) = the router's in-flight requests on w (``num_inflight_reqs``, else running + waiting).
balance_factor = 1.25 (HAProxy's documented recommendation, ``hash-balance-factor 125``). Unhealthy
workers are skipped. A session therefore stays on its ring owner unless that owner is over the
bound at the moment of a call. The ring is ``consistent_hash``'s (sha256, 160 points per worker).
O(W x virtual_nodes) per call at worst.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.cache_aware import inflight_load
from saga_sgl.policy.placement.consistent_hash import (
    ConsistentHashPlacement,
    ConsistentHashSettings,
)
from saga_sgl.policy.settings import require
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundedHashSettings:
    """Settings of ``BoundedHashPlacement``."""

    balance_factor: float = 1.25
    """c of the bound: no worker takes more than ceil(c x average load) (HAProxy: 125%)."""
    virtual_nodes: int = 160
    """Ring points per worker (as ``consistent_hash``)."""

    def __post_init__(self) -> None:
        owner = "BoundedHashSettings"
        require(self.balance_factor >= 1.0, owner, "balance_factor", ">= 1", self.balance_factor)
        require(self.virtual_nodes >= 1, owner, "virtual_nodes", ">= 1", self.virtual_nodes)


class BoundedHashPlacement:
    """Consistent hashing of the workflow id with a per-worker load bound."""

    name: ClassVar[str] = "bounded_hash"

    def __init__(self, settings: BoundedHashSettings | None = None) -> None:
        self.settings = settings or BoundedHashSettings()
        self._ring = ConsistentHashPlacement(
            ConsistentHashSettings(virtual_nodes=self.settings.virtual_nodes)
        )

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        healthy = {w.worker_id: w for w in workers if w.is_healthy}
        if not healthy:
            raise NoEligibleWorker("bounded_hash: no healthy worker")
        total = sum(inflight_load(w) for w in healthy.values())
        bound = math.ceil(self.settings.balance_factor * (total + 1) / len(healthy))
        for k, owner in enumerate(self._ring.ring_order(call.workflow_id, workers)):
            w = healthy.get(owner)
            if w is not None and inflight_load(w) + 1 <= bound:
                reason = PlacementReason.BOUNDED_HASH if k == 0 else PlacementReason.BOUNDED_HASH_FORWARD
                return Placement(worker_id=w.worker_id, reason=reason)
        raise NoEligibleWorker("bounded_hash: no worker under the bound")  # unreachable: the bound >= min + 1


if TYPE_CHECKING:
    _check: PlacementPolicy = BoundedHashPlacement()
