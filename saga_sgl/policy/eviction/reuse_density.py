"""Reuse-density eviction: keep the most expected recompute saved per token-second (ours [I]).

Closest published rule: least hit density (LHD, Beckmann et al., NSDI'18): rank by hits per unit
of space x time an entry is expected to use. Here, per entry e with a prediction:

    density(e) = P_e * c(e) / L_e,      L_e = P_e * W_e + (1 - P_e) * H

* P_e = ``reuse_prob``: P(the entry is read again within the horizon | its age, tool, step and its
  workflow's history), from ``aeg.predict.ReusePredictor`` (a distribution of the time to next use,
  not a point estimate: an entry idle in the heavy tail of its gap distribution gets a low P).
* W_e = ``next_use_at_s - t_e`` (+ ``min_wait_s``): the time the entry occupies the cache from t_e
  until the expected next use given it comes. t_e is the entry's last use, or the moment its
  prediction was made if that is later (``predicted_at_s``: a re-prediction conditional on the idle
  age, or a next use that is known rather than predicted): LHD ranks by the *remaining* lifetime,
  and time already spent idle is sunk. Given the true next admissions, the key anchored at the view
  comes within 1.5-3% of Belady in the simulator's 1.5x-pool cells; anchored at the last use it
  stayed 1.3-1.8x Belady (benchmarks/results/eviction_reading_s7.md).
* L_e: LHD's expected lifetime, the space-time it costs per token: W_e if it is read again, else
  H = ``miss_lifetime_s`` (an entry that is not read again stays until it is evicted). Session 4's
  key used W_e alone (P / W): P then entered only through its log and the noisy W decided, and
  WA-LRU (P linear) beat it by 11 points at SWE 5% with 16-token blocks; with L_e an unlikely entry
  costs the full H, so P counts about linearly when small (benchmarks/results/eviction_reading_s5.md).
* c(e) = 1 + (tokens from the root to the middle of the entry) / ``attention_tokens``: the recompute
  time per token grows with the prefix in front of it (attention), relative to a token at depth 0.
  Tokens cancel: the recompute saved and the space held are both proportional to ``num_tokens``.
  It enters as c(e) ** ``cost_weight``: 1 ranks by recompute time saved, 0 by tokens saved.

The key is an absolute time, so ``VictimIndex`` keeps it in a heap without drift [I]. Rule for a
quantity that changes with age: between two (re)predictions an entry's density is taken to decay as
exp(-age / ``decay_s``), the same for every entry, so log density + const orders like

    primary = t_e + decay_s * ln(density(e) / density_ref)

(density_ref = p_ref / decay_s: an unpredicted entry is taken to live decay_s, whatever H; this is
the anchor the measurements used), and the order does not change as the clock moves. The host
re-predicts (re-keys) on events: a hint, a tool start or finish, and in the replay driver at
log-spaced ages, where the gap distribution replaces the exponential guess. An entry with no
prediction gets primary = ``last_access_s``: with no information at all the key *is* LRU's
(tie-break 0, then entry id). A workflow whose tool is due
back has P near 1 and a short wait W, so it is kept well past an older idle entry; a finished or
terminal workflow's KV goes first (DEAD tier, LRU among them); a live tool-aware TTL puts an entry
in the PROTECTED tier while ``protects(pressure)`` (see ``policy.pressure``). O(1) per key.

By default the policy asks ``VictimIndex`` for the recency guard (``policy.eviction.guard``): the
index evicts by this key only while it has recently chosen better than LRU, so where the
predictions do not help, the victims are LRU's. ``key()`` alone (SGLang's stock per-call heap, the
legacy tree) is the unguarded order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.cost_model import LinearCostSettings
from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.guard import GUARD_MODES, RecencyGuardSettings
from saga_sgl.policy.eviction.ttl import ttl_protects
from saga_sgl.policy.settings import require, require_frac, require_non_negative, require_positive
from saga_sgl.policy.views import CacheEntryView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy

_new_key = tuple.__new__
"""What ``EvictionKey(...)`` does, without the NamedTuple's Python-level ``__new__`` frame."""
_DEAD, _ORDINARY, _PROTECTED = Tier.DEAD, Tier.ORDINARY, Tier.PROTECTED

_COST = LinearCostSettings()
ATTENTION_TOKENS_DEFAULT = _COST.prefill_per_token_s / _COST.prefill_attn_s_per_token2
"""Depth at which a prefilled token's attention time equals its linear-op time (LinearCostModel
defaults, Llama-3-8B on an H100: c_lin / c_attn, about 18.5K tokens)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReuseDensitySettings:
    """Settings of ``ReuseDensityEviction``."""

    decay_s: float = 60.0
    """Time scale of the exponential decay assumed between re-predictions, seconds: one decay_s of
    extra idleness is worth a factor e of density. Also the unit that turns density into time [I]."""
    p_ref: float = 0.5
    """P_reuse of an entry with no prediction (reference density p_ref / decay_s); only moves predicted
    entries against unpredicted ones [I]."""
    miss_lifetime_s: float = 300.0
    """H: how long an entry that is not read again occupies the cache (until evicted), seconds; the
    (1 - P) part of LHD's expected lifetime. Ideally the cache's residence time, which the view does
    not carry [I]. Measured (benchmarks/results/eviction_reading_s5.md): 60 is 1.003 of LRU at
    Mooncake 50%; 180 loses to WA-LRU by up to 0.6 points on SWE (512-token blocks, 5%); 300 beats
    WA-LRU on every SWE replay cell and is within 0.1 point of it elsewhere."""
    min_wait_s: float = 1.0
    """Added to every wait W: a due entry is not infinitely dense (its next call still takes time) [I]."""
    min_prob: float = 1e-4
    """Floor of P before the log (P = 0 is "never again" without saying "finished") [I]."""
    attention_tokens: float = ATTENTION_TOKENS_DEFAULT
    """Depth at which recomputing a token costs twice a token at the root (cost model) [I]; a huge
    value (1e30) turns the depth weighting off."""
    cost_weight: float = 0.5
    """Exponent of the recompute cost c(e) in the density: 1 ranks by recompute time saved, 0 by
    tokens saved (the depth weighting off). 0.5 measured best in recomputed tokens on both replay
    traces at 1-20% (benchmarks/eviction_replay.py; e.g. SWE 2%: 0.817 -> 0.807 of LRU, Mooncake
    5%: 0.991 -> 0.987) [I]."""
    ttl_protection: bool = True
    """A live tool-aware TTL puts the entry in the PROTECTED tier [I]."""
    threshold_high: float = 0.9
    """Pressure at and above which TTLs stop protecting (``policy.pressure``) [P]."""
    recency_guard: bool = True
    """Victim selection follows this key only while it has recently chosen better than LRU
    (``policy.eviction.guard``, applied by ``VictimIndex``); off: the key alone [I]."""
    guard_window: float = 4096.0
    """The guard's memory in settled disagreements (``RecencyGuardSettings.window``). 4096: with
    16-token blocks about 100K disagreements settle, 78% for the key, and a 256-vote memory handed
    23% of the choices to LRU in local runs of bad luck (SWE 5%: 0.805 of LRU vs 0.775) [I]."""
    guard_confidence: float = 2.0
    """z of ``RecencyGuardSettings.confidence``: LRU takes over only on a lead beyond z standard
    deviations of the recent votes (0: on any lead, session 4's rule) [I]."""

    ghost_read_window: float = 4096.0
    """Ghost mode: ``RecencyGuardSettings.read_window`` (read requests of memory of the lead) [I]."""
    guard_mode: str = "pairwise"
    """``RecencyGuardSettings.mode``: ``pairwise`` (settled disagreements) or ``ghost`` (the cache's
    misses against an LRU ghost of the pool's size, ``policy.eviction.ghost``) [I]."""

    def __post_init__(self) -> None:
        owner = "ReuseDensitySettings"
        require(self.guard_mode in GUARD_MODES, owner, "guard_mode", f"one of {GUARD_MODES}", self.guard_mode)
        require_positive(owner, "decay_s", self.decay_s)
        require(0.0 < self.p_ref <= 1.0, owner, "p_ref", "in (0, 1]", self.p_ref)
        require_positive(owner, "miss_lifetime_s", self.miss_lifetime_s)
        require_positive(owner, "min_wait_s", self.min_wait_s)
        require(0.0 < self.min_prob < 1.0, owner, "min_prob", "in (0, 1)", self.min_prob)
        require_positive(owner, "attention_tokens", self.attention_tokens)
        require_non_negative(owner, "cost_weight", self.cost_weight)
        require_frac(owner, "threshold_high", self.threshold_high)
        require_positive(owner, "guard_window", self.guard_window)
        require_positive(owner, "ghost_read_window", self.ghost_read_window)
        require_non_negative(owner, "guard_confidence", self.guard_confidence)


class ReuseDensityEviction:
    """Dead first, then the lowest expected recompute saved per token-second; live TTLs last."""

    name: ClassVar[str] = "reuse_density"

    def __init__(self, settings: ReuseDensitySettings | None = None) -> None:
        self.settings = s = settings or ReuseDensitySettings()
        # primary = last + decay * ln(prob * cost / lifetime) - decay * ln(density_ref): hoisted constants.
        self._decay = s.decay_s
        self._miss = s.miss_lifetime_s
        self._offset = s.decay_s * math.log(s.decay_s / s.p_ref)
        self._inv_attention = 1.0 / s.attention_tokens
        self._cost_decay = s.decay_s * s.cost_weight
        # key() runs once per indexed entry and per eviction: its settings are read from plain attributes.
        self._ttl_protection = s.ttl_protection
        self._threshold_high = s.threshold_high
        self.recency_guard: RecencyGuardSettings | None = (
            RecencyGuardSettings(
                window=s.guard_window,
                confidence=s.guard_confidence,
                mode=s.guard_mode,
                read_window=s.ghost_read_window,
            )
            if s.recency_guard
            else None
        )
        """Asks ``VictimIndex`` for the recency guard (None: victims by this key alone)."""

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        # Same rules as written out in the module doc; inlined (``protects``, ``is_ttl_live``, the
        # NamedTuple constructor) because this is the hot path of every victim decision.
        entry_id = entry.entry_id
        if entry.is_finished or entry.is_terminal:
            return _new_key(EvictionKey, (_DEAD, entry.last_access_s, -float(entry.depth_tokens), entry_id))
        deadline = entry.ttl_deadline_s
        live_ttl = deadline is not None and now_s < deadline  # ttl.is_ttl_live
        protects = self._ttl_protection and pressure < self._threshold_high  # self.protects(pressure)
        tier = _PROTECTED if protects and live_ttl else _ORDINARY
        if entry.reuse_prob is None and entry.next_use_at_s is None:
            return _new_key(EvictionKey, (tier, entry.last_access_s, 0.0, entry_id))  # no information: LRU
        return _new_key(EvictionKey, (tier, self.primary(entry), -float(entry.depth_tokens), entry_id))

    def primary(self, entry: CacheEntryView) -> float:
        """t_e + decay_s * ln(density / density_ref) for an entry with a prediction (t_e: the later of
        its last use and ``predicted_at_s``)."""
        s = self.settings
        last = entry.last_access_s
        at = entry.predicted_at_s
        if at is not None and at > last:
            last = at  # the prediction is newer than the last use: the wait runs from it
        prob = entry.reuse_prob
        if prob is None:
            prob = s.p_ref
        elif prob > 1.0:
            prob = 1.0
        nxt = entry.next_use_at_s
        if nxt is None:
            wait = self._decay
        elif nxt == math.inf:
            prob, wait = s.min_prob, self._decay  # "never": as unlikely as a prediction can say
        else:
            wait = (nxt - last if nxt > last else 0.0) + s.min_wait_s
        if prob < s.min_prob:
            prob = s.min_prob
        mid_depth = entry.depth_tokens - entry.num_tokens * 0.5
        cost = 1.0 + (mid_depth if mid_depth > 0.0 else 0.0) * self._inv_attention
        lifetime = prob * wait + (1.0 - prob) * self._miss
        density = math.log(prob / lifetime) * self._decay + self._cost_decay * math.log(cost)
        return last + density + self._offset

    def protects(self, pressure: float) -> bool:
        return ttl_protects(self.settings.ttl_protection, self.settings.threshold_high, pressure)


if TYPE_CHECKING:
    _check: EvictionPolicy = ReuseDensityEviction()
