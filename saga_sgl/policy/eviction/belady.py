"""Belady oracle for a prefix (radix) cache, and the same replay for any eviction policy.

Access model (research: workloads-and-cost-model.md section 3.4):

* A trace is a sequence of accesses; an access is the chain of segments (``(segment_id, tokens)``)
  on the path from the root that one request reads, in order. Segment ids name a prefix path, so a
  segment always has the same parent.
* An access hits the longest cached prefix of its chain; every other segment of the chain is
  recomputed (its tokens are the cost) and inserted. While the access runs, its whole chain is
  pinned; afterwards the chain's cached leaves become evictable.
* Only leaves are evicted, so the cache stays prefix-closed. If even after evicting every evictable
  leaf a segment does not fit, it and the rest of the chain are recomputed but not cached
  (``bypassed_tokens``): bypassing is otherwise not allowed.

Oracle ("Belady, prefix-closed MIN"): evict the leaf whose next use is farthest in the future
(never again = infinity), ties deepest first. Because a child is only used together with its parent,
next(parent) <= next(child), and the rule never strands a child. With variable segment sizes and a
token-weighted cost this is the standard strong heuristic, not a proven optimum (optimal variable-
size caching is NP-hard) [I]. It is implemented as the ``reuse_time`` key fed with perfect next-use
times, through the same ``VictimIndex`` every policy uses; time is the access index.

Cost: O(R log n) for R segment references. No I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction, ReuseTimeSettings
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView

SegmentRef = tuple[Hashable, int]
"""(segment id, tokens) of one segment of a prefix path."""
Access = Sequence[SegmentRef]
"""The chain of segments one request reads, root first."""

NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Outcome of replaying a trace through a prefix cache."""

    total_tokens: int
    """Tokens read over all accesses."""
    hit_tokens: int
    """Tokens served from the cache."""
    recomputed_tokens: int
    """Tokens recomputed (missed): total - hit. The cost Belady minimises."""
    bypassed_tokens: int
    """Recomputed tokens that could not be cached at all (chain longer than the free capacity)."""
    num_evictions: int
    """Segments evicted."""

    @property
    def hit_rate(self) -> float:
        """hit_tokens / total_tokens (0 for an empty trace)."""
        return self.hit_tokens / self.total_tokens if self.total_tokens else 0.0


class _Segment:
    __slots__ = ("cached", "depth", "eid", "num_cached_children", "parent", "tokens")

    def __init__(self, eid: int, tokens: int, depth: int, parent: Hashable | None) -> None:
        self.eid = eid
        self.tokens = tokens
        self.depth = depth
        self.parent = parent
        self.cached = False
        self.num_cached_children = 0


def replay(
    trace: Sequence[Access],
    capacity_tokens: int,
    policy: EvictionPolicy,
    *,
    oracle: bool = False,
    predict_next_use: Callable[[Hashable, int, float], float | None] | None = None,
) -> ReplayResult:
    """Replay ``trace`` through a prefix cache of ``capacity_tokens`` evicting by ``policy``.

    ``oracle=True`` fills each entry's ``next_use_at_s`` with its true next access index (infinity if
    never), which is what turns ``reuse_time`` into Belady. ``predict_next_use(segment_id,
    access_index, true_next_use)`` instead supplies a prediction (None = unknown), e.g. a noisy
    oracle, to measure how prediction error moves a policy between LRU and Belady.
    """
    if capacity_tokens < 0:
        raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
    segments: dict[Hashable, _Segment] = {}
    by_eid: list[Hashable] = []
    uses: dict[Hashable, list[int]] = {}
    for i, access in enumerate(trace):
        parent: Hashable | None = None
        depth = 0
        for seg_id, tokens in access:
            if tokens < 0:
                raise ValueError(f"segment {seg_id!r} has negative tokens")
            depth += tokens
            seg = segments.get(seg_id)
            if seg is None:
                seg = _Segment(len(by_eid), tokens, depth, parent)
                segments[seg_id] = seg
                by_eid.append(seg_id)
            elif seg.parent != parent or seg.tokens != tokens:
                raise ValueError(f"segment {seg_id!r} appears with two parents or sizes; ids must name paths")
            lst = uses.setdefault(seg_id, [])
            if not lst or lst[-1] != i:
                lst.append(i)
            parent = seg_id

    def next_use(seg_id: Hashable, after: int) -> float:
        lst = uses[seg_id]
        k = bisect.bisect_right(lst, after)
        return float(lst[k]) if k < len(lst) else NEVER

    def view(seg_id: Hashable, seg: _Segment, t: int) -> CacheEntryView:
        nxt: float | None = None
        if predict_next_use is not None:
            nxt = predict_next_use(seg_id, t, next_use(seg_id, t))
        elif oracle:
            nxt = next_use(seg_id, t)
        return CacheEntryView(
            entry_id=seg.eid,
            num_tokens=seg.tokens,
            depth_tokens=seg.depth,
            last_access_s=float(t),
            next_use_at_s=nxt,
        )

    index = VictimIndex(policy)
    used = total = hit = bypassed = evictions = 0
    for i, access in enumerate(trace):
        now = float(i)
        chain = [seg_id for seg_id, _ in access]
        pinned = set(chain)
        for seg_id in chain:
            seg = segments[seg_id]
            total += seg.tokens
            if seg.cached:
                index.remove(seg.eid)  # pinned while the access runs
        k = 0
        while k < len(chain) and segments[chain[k]].cached:
            hit += segments[chain[k]].tokens
            k += 1
        caching = True
        for seg_id in chain[k:]:
            seg = segments[seg_id]
            if caching:
                while capacity_tokens - used < seg.tokens:
                    victim = index.pop(now, 0.0)
                    if victim is None:
                        break
                    vid = by_eid[victim.entry_id]
                    vseg = segments[vid]
                    vseg.cached = False
                    used -= vseg.tokens
                    evictions += 1
                    if vseg.parent is not None:
                        pseg = segments[vseg.parent]
                        pseg.num_cached_children -= 1
                        # A parent left without cached children is a leaf now: evictable unless pinned.
                        if pseg.num_cached_children == 0 and vseg.parent not in pinned:
                            index.add(view(vseg.parent, pseg, _last_use(uses[vseg.parent], i)), now, 0.0)
                caching = capacity_tokens - used >= seg.tokens
            if caching:
                seg.cached = True
                used += seg.tokens
                if seg.parent is not None:
                    segments[seg.parent].num_cached_children += 1
            else:
                bypassed += seg.tokens
        # Unpin: the chain's cached leaves become evictable, stamped with this access.
        for seg_id in chain:
            seg = segments[seg_id]
            if seg.cached and seg.num_cached_children == 0:
                index.add(view(seg_id, seg, i), now, 0.0)
    return ReplayResult(
        total_tokens=total,
        hit_tokens=hit,
        recomputed_tokens=total - hit,
        bypassed_tokens=bypassed,
        num_evictions=evictions,
    )


def _last_use(lst: list[int], before: int) -> int:
    """Index of the last access before ``before`` that used the segment."""
    k = bisect.bisect_left(lst, before)
    return lst[k - 1] if k > 0 else 0


def replay_belady(trace: Sequence[Access], capacity_tokens: int) -> ReplayResult:
    """Belady (prefix-closed MIN): farthest next use first, deepest first on ties."""
    policy = ReuseTimeEviction(ReuseTimeSettings(ttl_protection=False))
    return replay(trace, capacity_tokens, policy, oracle=True)


def belady_recomputed_tokens(trace: Sequence[Access], capacity_tokens: int) -> int:
    """Tokens Belady recomputes on ``trace`` with ``capacity_tokens`` of cache."""
    return replay_belady(trace, capacity_tokens).recomputed_tokens
