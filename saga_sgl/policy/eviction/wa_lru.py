"""WA-LRU: the paper's workflow-aware LRU score (Eq. 1-3), as an eviction key.

    P_evict(s) = alpha * R(s) + beta * (1 - P_reuse(s)) + gamma * S(s)          (Eq. 1)
    R(s) = (t_now - t_last(s)) / tau_max                                       (Eq. 2)
    S(s) = size(s) / size_max                                                  (Eq. 3)

alpha = 0.3, beta = 0.5, gamma = 0.2 [P]; the largest P_evict is evicted first.

Key [I]. tau_max and size_max are fixed normalisers (settings), not recomputed over the pool at
each eviction round as in the reference repo [R]: with fixed normalisers the score is rank-equivalent
to alpha * t_last / tau_max - beta * (1 - P_reuse) - gamma * S (the alpha * t_now / tau_max term is
the same for every entry), which uses absolute times only, so a key stays valid as the clock moves
and ``VictimIndex`` can keep it in a heap. The recency term is therefore not clamped at 1 (an entry
idle for longer than tau_max keeps getting older, as in LRU); S is clamped at 1. ``score`` gives the
literal Eq. 1 for a caller that wants pool-wide normalisers (O(N) per victim, as in the paper).

P_reuse: ``entry.reuse_prob``; 0 for finished or terminal workflows [R]; ``default_reuse_prob``
when the host has no prediction. Tiers: PROTECTED while a TTL is live and usage < threshold_high,
else ORDINARY. Tie-break: deeper entry first, then entry id. O(1) per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.ttl import is_ttl_live, ttl_protects
from saga_sgl.policy.settings import require, require_frac, require_non_negative, require_positive
from saga_sgl.policy.views import CacheEntryView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class WaLruSettings:
    """Settings of ``WaLruEviction`` (Eq. 1-3)."""

    alpha: float = 0.3
    """Weight of normalised recency R (Eq. 1) [P]."""
    beta: float = 0.5
    """Weight of 1 - P_reuse (Eq. 1) [P]."""
    gamma: float = 0.2
    """Weight of normalised size S (Eq. 1) [P]."""
    tau_max_s: float = 300.0
    """tau_max of Eq. 2, seconds. Fixed [I] (the paper: largest idle time observed); default TTL_max,
    the longest tool gap the scheduler keeps KV for."""
    size_max_tokens: int = 32768
    """size_max of Eq. 3, tokens. Fixed [I] (the paper: largest entry in the pool); default a 32K context."""
    default_reuse_prob: float = 0.5
    """P_reuse used when the host has no prediction for an entry (request-level traffic) [I]."""
    ttl_protection: bool = True
    """A live tool-aware TTL puts the entry in the PROTECTED tier [I]."""
    threshold_high: float = 0.9
    """KV usage fraction at and above which TTLs stop protecting (Eq. 6's threshold_high) [P]."""

    def __post_init__(self) -> None:
        owner = "WaLruSettings"
        for name in ("alpha", "beta", "gamma"):
            require_non_negative(owner, name, getattr(self, name))
        require(self.alpha + self.beta + self.gamma > 0, owner, "alpha+beta+gamma", "> 0", 0)
        require_positive(owner, "tau_max_s", self.tau_max_s)
        require(self.size_max_tokens > 0, owner, "size_max_tokens", "> 0", self.size_max_tokens)
        require_frac(owner, "default_reuse_prob", self.default_reuse_prob)
        require_frac(owner, "threshold_high", self.threshold_high)


class WaLruEviction:
    """Evict the entry with the largest WA-LRU score (Eq. 1) first, TTL-protected entries last."""

    name: ClassVar[str] = "wa_lru"

    def __init__(self, settings: WaLruSettings | None = None) -> None:
        self.settings = settings or WaLruSettings()

    def reuse_prob(self, entry: CacheEntryView) -> float:
        """P_reuse the score uses for ``entry``."""
        if entry.is_finished or entry.is_terminal:
            return 0.0
        if entry.reuse_prob is None:
            return self.settings.default_reuse_prob
        return min(1.0, max(0.0, entry.reuse_prob))

    def score(self, entry: CacheEntryView, now_s: float, tau_max_s: float, size_max_tokens: int) -> float:
        """Literal Eq. 1 with the given normalisers (floored at 1, normalised terms clamped to 1 [R])."""
        s = self.settings
        recency = min(1.0, max(0.0, now_s - entry.last_access_s) / max(tau_max_s, 1.0))
        size = min(1.0, entry.num_tokens / max(size_max_tokens, 1))
        return s.alpha * recency + s.beta * (1.0 - self.reuse_prob(entry)) + s.gamma * size

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        s = self.settings
        tier = Tier.PROTECTED if self.protects(pressure) and is_ttl_live(entry, now_s) else Tier.ORDINARY
        size = min(1.0, entry.num_tokens / s.size_max_tokens)
        primary = (
            s.alpha * entry.last_access_s / s.tau_max_s
            - s.beta * (1.0 - self.reuse_prob(entry))
            - s.gamma * size
        )
        return EvictionKey(tier, primary, -float(entry.depth_tokens), entry.entry_id)

    def protects(self, pressure: float) -> bool:
        return ttl_protects(self.settings.ttl_protection, self.settings.threshold_high, pressure)


if TYPE_CHECKING:
    _check: EvictionPolicy = WaLruEviction()
