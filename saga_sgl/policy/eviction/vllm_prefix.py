"""vLLM v1 prefix-caching eviction order, as a baseline policy.

vLLM v1's ``BlockPool`` keeps blocks with ref count 0 in ``FreeKVCacheBlockQueue`` and evicts from
its head. A request's blocks are appended when it frees them, in *reverse* order (tail block first),
and a cached block that a new request hits is taken out of the queue ("touch") and appended again
when that request frees it. The order is therefore:

1. by the time the block was last released (least recently released first), and
2. among blocks released together, the one farther from the root first (the tail of the sequence).

Key: (ORDINARY, last_access_s, -depth_tokens, entry_id), where the host sets ``last_access_s`` to the
release time (SGLang stamps nodes on release as well). No protection tiers. O(1) per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.views import CacheEntryView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class VllmPrefixSettings:
    """vLLM's free-queue order has no constants."""


class VllmPrefixEviction:
    """Least recently released first; ties: deeper (tail) block first, then entry id."""

    name: ClassVar[str] = "vllm_prefix"

    def __init__(self, settings: VllmPrefixSettings | None = None) -> None:
        self.settings = settings or VllmPrefixSettings()

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        return EvictionKey(Tier.ORDINARY, entry.last_access_s, -float(entry.depth_tokens), entry.entry_id)

    def protects(self, pressure: float) -> bool:
        return False


if TYPE_CHECKING:
    _check: EvictionPolicy = VllmPrefixEviction()
