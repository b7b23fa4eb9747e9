"""sticky_least_loaded baseline: session affinity, with each session bound where load is least.

What a load-aware session-affine router does (e.g. a gateway with session stickiness over a
least-request balancer): a workflow's first call goes to the healthy worker with the fewest in-flight
requests (the router's own counts; ties: fewer running + waiting, then the first in order), and the
workflow stays there for every later call. If its worker becomes unhealthy it is bound again the
same way. No prefix matching, no rebalancing. O(W) per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.cache_aware import inflight_load
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class StickySettings:
    """sticky_least_loaded has no constants."""


class StickyLeastLoadedPlacement:
    """Bind each workflow at its first call to the least-loaded worker; keep it there."""

    name: ClassVar[str] = "sticky_least_loaded"

    def __init__(self, settings: StickySettings | None = None) -> None:
        self.settings = settings or StickySettings()

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        healthy = [w for w in workers if w.is_healthy]
        if not healthy:
            raise NoEligibleWorker("sticky_least_loaded: no healthy worker")
        if call.affinity_worker_id is not None:
            for w in healthy:
                if w.worker_id == call.affinity_worker_id:
                    return Placement(worker_id=w.worker_id, reason=PlacementReason.STICKY)
        best = min(healthy, key=lambda w: (inflight_load(w), w.num_running_reqs + w.num_waiting_reqs))
        return Placement(worker_id=best.worker_id, reason=PlacementReason.STICKY_LEAST_LOADED)


if TYPE_CHECKING:
    _check: PlacementPolicy = StickyLeastLoadedPlacement()
