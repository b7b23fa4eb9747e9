"""round_robin baseline (sglang-router ``round_robin``): the next healthy worker in turn.

State: one counter (the rotation), as in sglang-router. Workers are taken in the order given; an
unhealthy worker is skipped. O(W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRobinSettings:
    """round_robin has no constants."""


class RoundRobinPlacement:
    """Cycle through the workers, skipping unhealthy ones."""

    name: ClassVar[str] = "round_robin"

    def __init__(self, settings: RoundRobinSettings | None = None) -> None:
        self.settings = settings or RoundRobinSettings()
        self._counter = 0

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        n = len(workers)
        for k in range(n):
            w = workers[(self._counter + k) % n]
            if w.is_healthy:
                self._counter = (self._counter + k + 1) % n
                return Placement(worker_id=w.worker_id, reason=PlacementReason.ROUND_ROBIN)
        raise NoEligibleWorker("round_robin: no healthy worker")


if TYPE_CHECKING:
    _check: PlacementPolicy = RoundRobinPlacement()
