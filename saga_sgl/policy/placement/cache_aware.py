"""cache_aware baseline: sglang-router's ``cache_aware`` policy, with its real rules and defaults.

Per call (sgl-model-gateway ``cache_aware.rs``; defaults from ``router_args.py``):

1. load(w) = the router's in-flight request count per worker (``WorkerView.num_inflight_reqs``,
   falling back to running + waiting when the host has no in-flight count), over ALL workers.
2. The system is *imbalanced* iff max_load - min_load > balance_abs_threshold (64) AND
   max_load > balance_rel_threshold (1.5) x min_load. Then: the first healthy least-loaded worker.
3. Otherwise match_rate = matched / len(prompt) over the approximate tree. If match_rate >
   cache_threshold (0.3): the worker with the longest match; else the first healthy worker with the
   fewest in-flight requests (measured on the 0.3.2 binary: six distinct prompts in a row all went
   to worker 1; older sgl-router versions picked the smallest tree here).
4. The prompt is inserted into the chosen worker's tree in every case.
5. Every ``eviction_interval_s`` (60 s) each worker's tree is trimmed to ``max_tree_size`` elements
   by LRU (sglang-router does this on a background thread; here it happens on the first call after
   the interval, on the host's clock).

Ties (equal load, equal match) go to the earliest worker in the given order, as
Rust's ``min_by_key``/``max_by_key`` over the worker list would. The tree never sees worker
evictions; that is the real policy's blind spot and we keep it.

State: the ``ApproxPrefixIndex`` and the last trim time. O(len(prompt) + W) per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.prefix_index import ApproxPrefixIndex
from saga_sgl.policy.settings import require, require_frac, require_non_negative, require_positive
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheAwareSettings:
    """sglang-router ``cache_aware`` knobs, named and defaulted as its CLI (0.3.2)."""

    cache_threshold: float = 0.3
    """Minimum match rate to follow the cache (``--cache-threshold``)."""
    balance_abs_threshold: int = 64
    """Imbalance needs max - min load above this (``--balance-abs-threshold``)."""
    balance_rel_threshold: float = 1.5
    """Imbalance needs max load above this x min load (``--balance-rel-threshold``)."""
    eviction_interval_s: float = 60.0
    """Seconds between tree trims (``--eviction-interval-secs``; the code default, docs say 120)."""
    max_tree_size: int = 2**26
    """Elements kept per worker tree after a trim (``--max-tree-size``)."""

    def __post_init__(self) -> None:
        owner = "CacheAwareSettings"
        require_frac(owner, "cache_threshold", self.cache_threshold)
        require(
            self.balance_abs_threshold >= 0,
            owner,
            "balance_abs_threshold",
            ">= 0",
            self.balance_abs_threshold,
        )
        require_non_negative(owner, "balance_rel_threshold", self.balance_rel_threshold)
        require_positive(owner, "eviction_interval_s", self.eviction_interval_s)
        require(self.max_tree_size >= 0, owner, "max_tree_size", ">= 0", self.max_tree_size)


def inflight_load(w: WorkerView) -> int:
    """sglang-router's load: in-flight requests (running + waiting if the host has no count)."""
    return w.num_inflight_reqs if w.num_inflight_reqs is not None else w.num_running_reqs + w.num_waiting_reqs


class CacheAwarePlacement:
    """sglang-router's cache-aware routing over an approximate per-worker prefix tree."""

    name: ClassVar[str] = "cache_aware"
    uses_prefix: ClassVar[bool] = True
    """Reads ``CallView.prefix`` (hosts fill it only for policies that do)."""

    def __init__(self, settings: CacheAwareSettings | None = None) -> None:
        self.settings = settings or CacheAwareSettings()
        self.index = ApproxPrefixIndex()
        self._last_trim_s: float | None = None

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        s = self.settings
        healthy = [w for w in workers if w.is_healthy]
        if not healthy:
            raise NoEligibleWorker("cache_aware: no healthy worker")
        self._maybe_trim(now_s)
        all_loads = [inflight_load(w) for w in workers]
        max_load, min_load = max(all_loads), min(all_loads)
        least = min(healthy, key=inflight_load)  # first on ties, as Rust's min_by_key
        if max_load - min_load > s.balance_abs_threshold and max_load > s.balance_rel_threshold * min_load:
            chosen = least
            reason = PlacementReason.CACHE_IMBALANCED
        else:
            matched = self.index.match(call.prefix)
            best = max(healthy, key=lambda w: matched.get(w.worker_id, 0))  # first on ties
            best_len = matched.get(best.worker_id, 0)
            rate = best_len / len(call.prefix) if call.prefix else 0.0
            if rate > s.cache_threshold:
                chosen, reason = best, PlacementReason.CACHE_MATCH
            else:
                chosen, reason = least, PlacementReason.CACHE_MIN_LOAD
        self.index.insert(call.prefix, chosen.worker_id)
        return Placement(worker_id=chosen.worker_id, reason=reason)

    def _maybe_trim(self, now_s: float) -> None:
        if self._last_trim_s is None:
            self._last_trim_s = now_s
        elif now_s - self._last_trim_s >= self.settings.eviction_interval_s:
            self.index.trim(self.settings.max_tree_size)
            self._last_trim_s = now_s


if TYPE_CHECKING:
    _check: PlacementPolicy = CacheAwarePlacement()
