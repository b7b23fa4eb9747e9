"""consistent_hash baseline: session affinity by a hash ring on the workflow id (routing key).

Like sglang-router's ``consistent_hashing`` on ``X-SMG-Routing-Key``: every call of a workflow goes
to the ring owner of its key; when the owner is unhealthy, to the next healthy worker clockwise.
Hashes are sha256 (stable across processes; never Python's salted ``hash()``), with
``virtual_nodes`` points per worker. The ring is rebuilt only when the worker set changes.
O(log(W * virtual_nodes)) per call.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.settings import require
from saga_sgl.policy.views import CallView, WorkerId, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


def stable_hash64(text: str) -> int:
    """First 8 bytes of sha256(text) as an unsigned int: the same in every process and run."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistentHashSettings:
    """Settings of ``ConsistentHashPlacement``."""

    virtual_nodes: int = 160
    """Ring points per worker; more points spread keys more evenly [I]."""

    def __post_init__(self) -> None:
        require(
            self.virtual_nodes >= 1, "ConsistentHashSettings", "virtual_nodes", ">= 1", self.virtual_nodes
        )


class ConsistentHashPlacement:
    """Route by sha256 ring position of the workflow id."""

    name: ClassVar[str] = "consistent_hash"

    def __init__(self, settings: ConsistentHashSettings | None = None) -> None:
        self.settings = settings or ConsistentHashSettings()
        self._ring_for: tuple[WorkerId, ...] = ()
        self._points: list[int] = []
        self._owners: list[WorkerId] = []

    def _ring(self, ids: tuple[WorkerId, ...]) -> None:
        if ids == self._ring_for:
            return
        pts = sorted(
            (stable_hash64(f"{wid}#{v}"), wid) for wid in ids for v in range(self.settings.virtual_nodes)
        )
        self._points = [p for p, _ in pts]
        self._owners = [wid for _, wid in pts]
        self._ring_for = ids

    def ring_order(self, key: str, workers: Sequence[WorkerView]) -> Iterator[WorkerId]:
        """Every worker once, clockwise from ``key``'s point on the ring (healthy or not)."""
        self._ring(tuple(sorted(w.worker_id for w in workers)))
        n = len(self._points)
        start = bisect.bisect_left(self._points, stable_hash64(key)) % n
        seen: set[WorkerId] = set()
        for k in range(n):
            owner = self._owners[(start + k) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self._ring_for):
                    return

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        if not workers:
            raise NoEligibleWorker("consistent_hash: no workers")
        # The ring depends on the set of workers, not their order.
        self._ring(tuple(sorted(w.worker_id for w in workers)))
        healthy = {w.worker_id for w in workers if w.is_healthy}
        if not healthy:
            raise NoEligibleWorker("consistent_hash: no healthy worker")
        n = len(self._points)
        start = bisect.bisect_left(self._points, stable_hash64(call.workflow_id)) % n
        for k in range(n):
            owner = self._owners[(start + k) % n]
            if owner in healthy:
                reason = (
                    PlacementReason.CONSISTENT_HASH if k == 0 else PlacementReason.CONSISTENT_HASH_FAILOVER
                )
                return Placement(worker_id=owner, reason=reason)
        raise NoEligibleWorker("consistent_hash: no healthy worker")  # unreachable: healthy is non-empty


if TYPE_CHECKING:
    _check: PlacementPolicy = ConsistentHashPlacement()
