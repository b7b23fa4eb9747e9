"""Reuse-time eviction: evict the entry whose predicted next use is farthest away (ours [I]).

Belady's rule (evict the farthest next use) with AEG predictions in place of the future:

* DEAD tier: KV of finished workflows or of workflows whose last step is terminal; it will not be
  read by its workflow again. Among them, least recently used first.
* PROTECTED tier: a live tool-aware TTL while KV usage < threshold_high (Algorithm 1's protection).
* ORDINARY tier: by predicted next use, farthest first. ``next_use_at_s`` is the absolute time
  from ``aeg.predict.NextUsePredictor`` (tool start + tool-latency quantile + queueing).
* Entries with no prediction (request-level traffic, nodes written before a hint arrived) are
  ordered among themselves by LRU, as SGLang would, and as a group either before every predicted
  live entry (``unpredicted_first``, default) or after them [I]. They cannot share the predicted
  entries' time axis: a fixed "reused H seconds after the last access" guess would order them
  most-recently-used first, the opposite of what recency tells us.

Keys: live predicted (ORDINARY, -next_use_at_s, -depth_tokens, entry_id), deeper entries first on
ties so a prefix never goes before its extensions (a prediction of "never", +inf, sorts first);
unpredicted (ORDINARY, -inf or +inf, last_access_s, entry_id); dead (DEAD, last_access_s,
-depth_tokens, entry_id). Absolute times only: keys do not drift. O(1) per key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.ttl import is_ttl_live, ttl_protects
from saga_sgl.policy.settings import require_frac
from saga_sgl.policy.views import CacheEntryView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class ReuseTimeSettings:
    """Settings of ``ReuseTimeEviction``."""

    unpredicted_first: bool = True
    """Entries with no next-use prediction go before every predicted live entry (LRU among them);
    False puts them after [I]."""
    ttl_protection: bool = True
    """A live tool-aware TTL puts the entry in the PROTECTED tier [I]."""
    threshold_high: float = 0.9
    """KV usage fraction at and above which TTLs stop protecting (Eq. 6's threshold_high) [P]."""

    def __post_init__(self) -> None:
        require_frac("ReuseTimeSettings", "threshold_high", self.threshold_high)


class ReuseTimeEviction:
    """Finished/terminal first, then farthest predicted next use; live TTLs last."""

    name: ClassVar[str] = "reuse_time"

    def __init__(self, settings: ReuseTimeSettings | None = None) -> None:
        self.settings = settings or ReuseTimeSettings()

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        depth = -float(entry.depth_tokens)
        if entry.is_finished or entry.is_terminal:
            return EvictionKey(Tier.DEAD, entry.last_access_s, depth, entry.entry_id)
        tier = Tier.PROTECTED if self.protects(pressure) and is_ttl_live(entry, now_s) else Tier.ORDINARY
        if entry.next_use_at_s is None:
            group = -math.inf if self.settings.unpredicted_first else math.inf
            return EvictionKey(tier, group, entry.last_access_s, entry.entry_id)
        return EvictionKey(tier, -entry.next_use_at_s, depth, entry.entry_id)

    def protects(self, pressure: float) -> bool:
        return ttl_protects(self.settings.ttl_protection, self.settings.threshold_high, pressure)


if TYPE_CHECKING:
    _check: EvictionPolicy = ReuseTimeEviction()
