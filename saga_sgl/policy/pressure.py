"""KV pressure: the one definition every host (worker plugin, simulator, replay, router) uses.

The problem it solves: in steady state the KV pool is always full of evictable cache, so "used /
capacity" sits near 1 (TTL protection would never be on), while "held by running requests / capacity"
stays low (protection would never switch off, and protected KV could crowd out everything else).
Neither says whether *protection* is affordable. Our definition [I]:

    level = max(held / capacity, protected / (max_protected_frac * capacity))     clamped to [0, 1]

* held: tokens eviction cannot reclaim (running requests' KV, locked prefixes);
* protected: tokens kept by evictable entries whose tool-aware TTL is live, whether or not the policy
  currently honours the TTL (counting only honoured ones would make protection flap on and off). An
  entry keeps its whole path (``depth_tokens``): its ancestors cannot be evicted before it. Counting
  only the leaf's own tokens (sessions 2-6) hid nearly all of it: a protected agent context of 20K
  tokens counted as its last segment of a few hundred, so the budget below was never reached and
  protection stayed on in the simulator's unpressured pools (1.5x: 1.86 / 2.14 of Belady against
  1.81 / 1.85 with the path counted, benchmarks/results/eviction_reading_s7.md). Shared prefixes
  are counted once per protected path (an upper bound);
* max_protected_frac (0.05): the budget of the pool that TTL protection may hold. Measured
  (benchmarks/eviction_replay.py, SWE-agent trace, 1 / 2 / 5% capacity, recomputed tokens vs LRU):
  a budget of 0.25 gave 0.957 / 0.832 / 0.860, 0.05 gave 0.939 / 0.817 / 0.858, no TTL at all
  0.921 / 0.815 / 0.858. The reuse-density key already keeps a context whose tool is due back (high
  P, short wait); a hard protected tier on top only helps against what the key cannot see, so it
  gets a small budget [I].

``level`` is the ``pressure`` argument of every eviction policy and the usage input of Eq. 6:
TTLs shrink from 70% of the budget and stop protecting at 90% (``threshold_low``/``threshold_high``),
or when running requests alone hold 90% of the pool. So protected tokens stay bounded by about
0.9 x 0.05 of capacity, and under sustained pressure (the protected budget full, or the pool held by
running requests) protection is off.

Second rule: a TTL never outlives the cache's recent residence time, the time an unprotected entry
survives at the current eviction rate (``ResidenceTracker``: cached tokens / eviction rate).
Protecting KV longer than an unprotected entry would live
anyway only shifts misses onto others. Until the first eviction the residence time is infinite
(no eviction, no pressure). Pure functions and small state; no I/O, no clock reads.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from saga_sgl.policy.settings import require, require_non_negative

MAX_PROTECTED_FRAC = 0.05
"""Default share of the KV pool that live TTLs may protect [I]."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureSettings:
    """Settings of the pressure signal."""

    max_protected_frac: float = MAX_PROTECTED_FRAC
    """Budget of the pool that TTL protection may hold; the protected term is 1 at the budget [I]."""
    residence_window_s: float = 60.0
    """Time constant of the eviction-rate average behind the residence time, seconds [I]."""

    def __post_init__(self) -> None:
        owner = "PressureSettings"
        require(
            0.0 < self.max_protected_frac <= 1.0,
            owner,
            "max_protected_frac",
            "in (0, 1]",
            self.max_protected_frac,
        )
        require(self.residence_window_s > 0.0, owner, "residence_window_s", "> 0", self.residence_window_s)


def kv_pressure(
    capacity_tokens: int,
    held_tokens: int,
    protected_tokens: int = 0,
    *,
    max_protected_frac: float = MAX_PROTECTED_FRAC,
) -> float:
    """The pressure level in [0, 1] (see the module docstring). 0 for an empty or zero-size pool."""
    if capacity_tokens <= 0:
        return 0.0
    require_non_negative("kv_pressure", "held_tokens", held_tokens)
    require_non_negative("kv_pressure", "protected_tokens", protected_tokens)
    held = held_tokens / capacity_tokens
    protected = protected_tokens / (max_protected_frac * capacity_tokens)
    return min(1.0, max(held, protected, 0.0))


class ResidenceTracker:
    """Recent residence time of the cache: cached tokens / current eviction rate (Little's law).

    The eviction rate is an exponentially decaying average over ``residence_window_s``. Little's law
    makes the estimate independent of *which* entries the policy evicts (the idle age of victims
    would not be: a policy that evicts hopeless entries young would see a tiny "residence" and
    shrink its own horizon further) [I].
    """

    __slots__ = ("_last_s", "_rate", "_window_s", "num_evictions")

    def __init__(self, settings: PressureSettings | None = None) -> None:
        self._window_s = (settings or PressureSettings()).residence_window_s
        self._rate = 0.0
        self._last_s: float | None = None
        self.num_evictions = 0

    def on_evict(self, now_s: float, num_tokens: int) -> None:
        """``num_tokens`` were evicted at ``now_s`` (non-decreasing times)."""
        if num_tokens <= 0 or not math.isfinite(now_s):
            return
        self.num_evictions += 1
        self._decay_to(now_s)
        self._rate += num_tokens / self._window_s

    def eviction_rate(self, now_s: float) -> float:
        """Evicted tokens per second, recently."""
        self._decay_to(now_s)
        return self._rate

    def residence_s(self, cached_tokens: int, now_s: float) -> float:
        """Seconds a token stays cached at the current eviction rate (inf before any eviction)."""
        rate = self.eviction_rate(now_s)
        if rate <= 0.0:
            return math.inf
        return max(cached_tokens, 0) / rate

    def _decay_to(self, now_s: float) -> None:
        if self._last_s is not None and now_s > self._last_s:
            self._rate *= math.exp(-(now_s - self._last_s) / self._window_s)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s


class ProtectedTokens:
    """Tokens of evictable entries whose TTL is live: the ``protected`` input of ``kv_pressure``.

    Hosts call ``track`` when an entry becomes evictable or its view changes, ``untrack`` when it is
    locked or evicted; expired deadlines drop out lazily. O(log n) per change, amortised O(log n)
    per read.
    """

    __slots__ = ("_by_id", "_heap", "_total", "_version")

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[float, int, int]] = {}  # entry id -> (deadline, tokens, version)
        self._heap: list[tuple[float, int, int]] = []  # (deadline, version, entry id)
        self._total = 0
        self._version = 0

    def track(self, entry_id: int, num_tokens: int, ttl_deadline_s: float | None, now_s: float) -> None:
        """The evictable entry ``entry_id`` now has this TTL deadline (None or past: not protected)."""
        self.untrack(entry_id)
        if ttl_deadline_s is None or not ttl_deadline_s > now_s or num_tokens <= 0:
            return
        self._version += 1
        self._by_id[entry_id] = (ttl_deadline_s, num_tokens, self._version)
        heapq.heappush(self._heap, (ttl_deadline_s, self._version, entry_id))
        self._total += num_tokens

    def untrack(self, entry_id: int) -> None:
        """The entry is no longer evictable (locked, evicted) or no longer protected."""
        item = self._by_id.pop(entry_id, None)
        if item is not None:
            self._total -= item[1]

    def tokens(self, now_s: float) -> int:
        """Tracked tokens whose deadline is still after ``now_s``."""
        heap = self._heap
        while heap and heap[0][0] <= now_s:
            _, version, entry_id = heapq.heappop(heap)
            item = self._by_id.get(entry_id)
            if item is not None and item[2] == version:
                del self._by_id[entry_id]
                self._total -= item[1]
        if len(heap) > 2 * len(self._by_id) + 64:
            self._heap = [(d, v, i) for d, v, i in heap if self._by_id.get(i, (0, 0, -1))[2] == v]
            heapq.heapify(self._heap)
        return self._total
