"""Tool-aware TTL (Algorithm 1, Eq. 6) and the TTL protection rule shared by SAGA's eviction keys.

Algorithm 1 [P]: ttl = min(Percentile_p(latency of tool) * (1 - 0.5 m), TTL_max), p = 95%,
TTL_max = 300 s, with memory pressure (Eq. 6)

    m = clamp((usage - threshold_low) / (threshold_high - threshold_low), 0, 1)

threshold_low = 0.7, threshold_high = 0.9; the clamp to [0, 1] is the reference repo's [R].
``usage`` is the pressure level of ``policy.pressure`` (held or protected KV against their budgets,
not raw pool usage, which a full cache keeps near 1) [I], and a TTL is further capped at the
cache's recent residence time (``ResidenceTracker``) [I]. The percentile comes from the per-tool
latency model (``aeg.tool_latency``).

Protection rule [I] (research notes' reading of the paper): while an entry's TTL is live and KV
usage is below threshold_high, the entry is in ``Tier.PROTECTED``, so it is evicted only when no
unprotected entry is left; at or above threshold_high (m = 1, hard eviction) TTLs are ignored; an
expired TTL makes the entry an ordinary candidate. The TTL is set when the tool call starts, as an
absolute deadline (``CacheEntryView.ttl_deadline_s``), and cleared when the workflow returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saga_sgl.policy.interfaces import ToolLatencyEstimate
from saga_sgl.policy.settings import require, require_frac, require_positive
from saga_sgl.policy.views import CacheEntryView, ToolType


def memory_pressure(usage_frac: float, threshold_low: float = 0.7, threshold_high: float = 0.9) -> float:
    """Eq. 6: m in [0, 1] from the KV pool usage fraction."""
    if threshold_high <= threshold_low:
        raise ValueError("threshold_high must be > threshold_low")
    m = (usage_frac - threshold_low) / (threshold_high - threshold_low)
    return min(1.0, max(0.0, m))


@dataclass(frozen=True, slots=True, kw_only=True)
class TtlSettings:
    """Settings of ``ToolAwareTtl`` (Algorithm 1 and Eq. 6)."""

    percentile: float = 0.95
    """p: latency quantile of the tool used as the base TTL (Algorithm 1) [P]."""
    pressure_scale: float = 0.5
    """The 0.5 of pressure_factor = 1 - 0.5 m (Algorithm 1) [P]."""
    ttl_max_s: float = 300.0
    """TTL_max: upper bound of any TTL, seconds (Algorithm 1) [P]."""
    threshold_low: float = 0.7
    """KV usage fraction where soft pressure (TTL shrinking) starts (Eq. 6) [P]."""
    threshold_high: float = 0.9
    """KV usage fraction of full pressure m = 1; TTLs stop protecting here (Eq. 6) [P]."""

    def __post_init__(self) -> None:
        owner = "TtlSettings"
        require(0 < self.percentile < 1, owner, "percentile", "in (0, 1)", self.percentile)
        require_frac(owner, "pressure_scale", self.pressure_scale)
        require_positive(owner, "ttl_max_s", self.ttl_max_s)
        require_frac(owner, "threshold_low", self.threshold_low)
        require_frac(owner, "threshold_high", self.threshold_high)
        require(
            self.threshold_low < self.threshold_high,
            owner,
            "threshold_high",
            "> threshold_low",
            (self.threshold_low, self.threshold_high),
        )


class ToolAwareTtl:
    """Algorithm 1: how long to keep a workflow's KV while its tool runs."""

    name = "tool_aware_ttl"

    def __init__(self, latency: ToolLatencyEstimate, settings: TtlSettings | None = None) -> None:
        self.latency = latency
        self.settings = settings or TtlSettings()

    def pressure(self, usage_frac: float) -> float:
        """m of Eq. 6 for a KV usage fraction."""
        s = self.settings
        return memory_pressure(usage_frac, s.threshold_low, s.threshold_high)

    def ttl_s(self, tool: ToolType, usage_frac: float, residence_s: float = math.inf) -> float:
        """TTL in seconds for a call of ``tool`` starting now at pressure ``usage_frac``.

        ``residence_s``: the cache's recent residence time (``policy.pressure.ResidenceTracker``);
        a TTL never outlives it [I].
        """
        s = self.settings
        base = self.latency.quantile_s(tool, s.percentile)
        ttl = min(base * (1.0 - s.pressure_scale * self.pressure(usage_frac)), s.ttl_max_s)
        return max(0.0, min(ttl, residence_s))

    def deadline_s(
        self, tool: ToolType, tool_started_at_s: float, usage_frac: float, residence_s: float = math.inf
    ) -> float:
        """Absolute TTL deadline for a call of ``tool`` that started at ``tool_started_at_s``."""
        return tool_started_at_s + self.ttl_s(tool, usage_frac, residence_s)


def is_ttl_live(entry: CacheEntryView, now_s: float) -> bool:
    """The entry's TTL deadline lies in the future."""
    return entry.ttl_deadline_s is not None and now_s < entry.ttl_deadline_s


def ttl_protects(enabled: bool, threshold_high: float, pressure: float) -> bool:
    """Live TTLs protect entries iff protection is enabled and KV usage is below threshold_high."""
    return enabled and pressure < threshold_high
