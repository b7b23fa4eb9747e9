"""prefix_affinity baseline: request-level prefix-cache affinity, the paper's main baseline.

The paper's primary comparison is vLLM with automatic prefix caching behind a prefix-affinity router
(Ray Serve LLM's ``PrefixCacheAffinityRouter``): routing is per request, by prompt prefix, with no
session retention across tool calls. Rules and defaults follow Ray Serve's documentation
(``ray.llm`` prefix-aware request router, 2.4x):

1. Queue length of a replica = the router's in-flight requests there (``num_inflight_reqs``, else
   running + waiting). If max - min > ``imbalanced_threshold`` (10): power of two choices over the
   healthy replicas (two drawn at random, the one with fewer in-flight requests).
2. Otherwise match the prompt against the approximate multi-tenant prefix tree:
   match_rate = longest match / len(prompt).
   * match_rate >= ``match_rate_threshold`` (0.1): the replicas with the longest match;
   * below it: the replicas with the least text in the tree ("lowest prefix cache utilisation");
   * no prefix (empty prompt ids): all replicas.
   Among the chosen replicas, power of two choices.
3. The prompt is inserted into the chosen replica's tenancy (``on_request_routed``).
4. ``do_eviction`` is off by default: the tree is never trimmed and never sees the engine's
   evictions (the real router's blind spot, kept).

The RNG (power of two choices) is injected. O(len(prompt) + W) per call.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.cache_aware import inflight_load
from saga_sgl.policy.placement.prefix_index import ApproxPrefixIndex
from saga_sgl.policy.settings import require, require_frac
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixAffinitySettings:
    """Ray Serve ``PrefixCacheAffinityRouter`` knobs, named and defaulted as its documentation."""

    imbalanced_threshold: int = 10
    """Queue-length difference above which load balance overrides prefix affinity."""
    match_rate_threshold: float = 0.1
    """Minimum match rate to route for cache locality."""

    def __post_init__(self) -> None:
        owner = "PrefixAffinitySettings"
        require(
            self.imbalanced_threshold >= 0, owner, "imbalanced_threshold", ">= 0", self.imbalanced_threshold
        )
        require_frac(owner, "match_rate_threshold", self.match_rate_threshold)


class PrefixAffinityPlacement:
    """Per-request prefix-cache affinity with a load-imbalance guard and power of two choices."""

    name: ClassVar[str] = "prefix_affinity"
    uses_prefix: ClassVar[bool] = True
    """Reads ``CallView.prefix``."""

    def __init__(
        self, settings: PrefixAffinitySettings | None = None, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or PrefixAffinitySettings()
        self.index = ApproxPrefixIndex()
        self._rng = rng if rng is not None else random.Random(0)

    def _pow2(self, candidates: list[WorkerView]) -> WorkerView:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        return a if inflight_load(a) <= inflight_load(b) else b

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        s = self.settings
        healthy = [w for w in workers if w.is_healthy]
        if not healthy:
            raise NoEligibleWorker("prefix_affinity: no healthy worker")
        loads = [inflight_load(w) for w in healthy]
        if max(loads) - min(loads) > s.imbalanced_threshold or not call.prefix:
            chosen, reason = self._pow2(healthy), PlacementReason.PREFIX_IMBALANCED
        else:
            matched = self.index.match(call.prefix)
            best = max((matched.get(w.worker_id, 0) for w in healthy), default=0)
            if best / len(call.prefix) >= s.match_rate_threshold:
                tied = [w for w in healthy if matched.get(w.worker_id, 0) == best]
                chosen, reason = self._pow2(tied), PlacementReason.PREFIX_MATCH
            else:
                least = min(self.index.tenant_size(w.worker_id) for w in healthy)
                tied = [w for w in healthy if self.index.tenant_size(w.worker_id) == least]
                chosen, reason = self._pow2(tied), PlacementReason.PREFIX_SMALLEST_TREE
        if call.prefix:
            self.index.insert(call.prefix, chosen.worker_id)
        return Placement(worker_id=chosen.worker_id, reason=reason)


if TYPE_CHECKING:
    _check: PlacementPolicy = PrefixAffinityPlacement()
