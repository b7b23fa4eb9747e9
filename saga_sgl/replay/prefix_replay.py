"""Replay a Mooncake-format trace through a prefix (radix) cache of 512-token blocks with one policy.

Access model (as ``policy.eviction.belady``): a request reads the chain of its blocks from the root;
the longest cached prefix hits, every other block is recomputed and inserted; while the request
runs its chain is pinned; only unpinned leaves are evicted, so the cache stays prefix-closed; a block
that does not fit even after evicting every candidate is recomputed but not cached. Requests are
instantaneous at their timestamps, so every policy sees the *same* access sequence and the rows are
comparable (a simulator's timing would diverge per policy).

Rows (``Mode``):
* ``plain``: views carry only the last access (what SGLang's LRU sees);
* ``fifo``: the LRU key on the insertion time instead of the last access (first in, first out);
* ``hints``: views filled by ``replay.driver.HintDriver`` (the router's hint path);
* ``oracle``: the true next use of each block (Belady with the ``reuse_time`` key; labelled oracle);
* ``true_return``: ``hints``, but each idle session's next use is its true next request (P = the
  hint path's share of the block the next call reads, or "never" after its last request), the wait
  measured from the moment the view is built: an oracle of perfect tool-return prediction, the most
  that better gap prediction could buy a key.

Victims come from the policy core's ``VictimIndex`` (O(log n)). No I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from saga_sgl.policy.cost_model import LinearCostModel
from saga_sgl.policy.decisions import Tier
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, WorkflowId
from saga_sgl.replay.driver import HintDriver, Session
from saga_sgl.replay.traces import TraceRequest


class Mode(StrEnum):
    PLAIN = "plain"
    FIFO = "fifo"
    HINTS = "hints"
    ORACLE = "oracle"
    TRUE_RETURN = "true_return"


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """Outcome of one replay."""

    total_tokens: int
    hit_tokens: int
    recomputed_tokens: int
    recompute_s: float
    """Recompute time of the missed blocks under the linear cost model (deeper tokens cost more)."""
    bypassed_tokens: int
    evictions: int
    protected_evictions: int
    """Victims taken from the PROTECTED tier (nothing else was left)."""
    dead_evictions: int

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.total_tokens if self.total_tokens else 0.0


class _Seg:
    __slots__ = (
        "block",
        "cached",
        "depth",
        "eid",
        "inserted_s",
        "kids",
        "last_s",
        "owner",
        "parent",
        "position",
        "shared",
        "tokens",
    )

    def __init__(
        self, eid: int, tokens: int, depth: int, parent: _Seg | None, block: int, position: int
    ) -> None:
        self.eid = eid
        self.block = block
        self.position = position
        self.tokens = tokens
        self.depth = depth
        self.parent = parent
        self.cached = False
        self.kids = 0
        self.last_s = 0.0
        self.inserted_s = 0.0
        self.owner: Session | None = None
        self.shared = False
        """Used by more than one session (a system prompt): no single workflow's prediction applies."""


def distinct_tokens(requests: Sequence[TraceRequest]) -> int:
    """Tokens of the distinct blocks of a trace (the 100% capacity)."""
    seen: dict[tuple[int, int], int] = {}
    for r in requests:
        parent = -1
        for j, block in enumerate(r.hash_ids):
            seen.setdefault((parent, block), r.block_tokens(j))
            parent = block
    return sum(seen.values())


def replay(
    requests: Sequence[TraceRequest],
    capacity_tokens: int,
    policy: EvictionPolicy,
    mode: Mode,
    *,
    driver: HintDriver | None = None,
    cost: LinearCostModel | None = None,
    on_request: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Replay ``requests`` through a cache of ``capacity_tokens`` evicting by ``policy``."""
    if capacity_tokens < 0:
        raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
    if mode in (Mode.HINTS, Mode.TRUE_RETURN) and driver is None:
        raise ValueError(f"mode {mode.value!r} needs a HintDriver")
    hinted = mode is Mode.HINTS or mode is Mode.TRUE_RETURN
    returns: dict[str, list[float]] = {}
    if mode is Mode.TRUE_RETURN:  # each session's request times (sessions do not depend on the cache)
        sessions = HintDriver()
        for r in requests:
            owner = sessions.session_of(r)
            sessions.on_arrival(owner, r, r.timestamp_s)
            sessions.on_end(owner, r, r.timestamp_s)
            returns.setdefault(owner.sid, []).append(r.timestamp_s)
    cost = cost or LinearCostModel()
    segs: dict[tuple[int, int], _Seg] = {}
    chains: list[list[_Seg]] = []
    uses: dict[int, list[float]] = {}
    for r in requests:
        parent: _Seg | None = None
        chain = []
        for j, block in enumerate(r.hash_ids):
            key = (-1 if parent is None else parent.eid, block)
            seg = segs.get(key)
            if seg is None:
                tokens = r.block_tokens(j)
                seg = _Seg(len(segs), tokens, (parent.depth if parent else 0) + tokens, parent, block, j)
                segs[key] = seg
            chain.append(seg)
            lst = uses.setdefault(seg.eid, [])
            if not lst or lst[-1] != r.timestamp_s:
                lst.append(r.timestamp_s)
            parent = seg
        chains.append(chain)

    def next_use(seg: _Seg, now_s: float) -> float:
        lst = uses[seg.eid]
        k = bisect.bisect_right(lst, now_s)
        return lst[k] if k < len(lst) else math.inf

    def view(seg: _Seg, now_s: float) -> CacheEntryView:
        if mode is Mode.PLAIN or mode is Mode.FIFO:
            last = seg.inserted_s if mode is Mode.FIFO else seg.last_s
            return CacheEntryView(
                entry_id=seg.eid, num_tokens=seg.tokens, depth_tokens=seg.depth, last_access_s=last
            )
        if mode is Mode.ORACLE:
            return CacheEntryView(
                entry_id=seg.eid,
                num_tokens=seg.tokens,
                depth_tokens=seg.depth,
                last_access_s=seg.last_s,
                next_use_at_s=next_use(seg, now_s),
            )
        sess = seg.owner
        if sess is None or seg.shared or driver is None:
            return CacheEntryView(
                entry_id=seg.eid, num_tokens=seg.tokens, depth_tokens=seg.depth, last_access_s=seg.last_s
            )
        reuse_prob, ttl_deadline_s = driver.block_hints(sess, seg.position, seg.block)
        next_use_at_s, known_at = sess.next_use_at_s, sess.predicted_at_s
        if mode is Mode.TRUE_RETURN and sess.idle_since_s is not None:
            times = returns[sess.sid]
            k = bisect.bisect_right(times, now_s)
            next_use_at_s = times[k] if k < len(times) else math.inf
            share = reuse_prob / sess.reuse_prob if reuse_prob is not None and sess.reuse_prob else 0.0
            reuse_prob = min(1.0, share) if next_use_at_s < math.inf else 0.0
            known_at = now_s  # known, not predicted: the wait runs from the moment the view is built
        return CacheEntryView(
            entry_id=seg.eid,
            num_tokens=seg.tokens,
            depth_tokens=seg.depth,
            last_access_s=seg.last_s,
            workflow_id=WorkflowId(sess.sid),
            reuse_prob=reuse_prob,
            next_use_at_s=next_use_at_s,
            ttl_deadline_s=ttl_deadline_s,
            predicted_at_s=known_at,
        )

    index = VictimIndex(policy, capacity_tokens=capacity_tokens)
    leaves_of: dict[str, set[int]] = {}
    by_eid: dict[int, _Seg] = {seg.eid: seg for seg in segs.values()}
    used = total = hit = bypassed = evictions = protected_ev = dead_ev = 0
    recompute_s = 0.0
    pressure = 0.0

    def index_add(seg: _Seg, now_s: float) -> None:
        index.add(view(seg, now_s), now_s, pressure)
        if seg.owner is not None and not seg.shared:
            leaves_of.setdefault(seg.owner.sid, set()).add(seg.eid)

    def index_remove(seg: _Seg) -> None:
        if index.remove(seg.eid) and seg.owner is not None:
            leaves_of.get(seg.owner.sid, set()).discard(seg.eid)

    ttl_live: dict[str, Session] = {}

    def protected_tokens(now_s: float) -> int:
        # Tokens kept by evictable leaves whose session's TTL is live: each leaf's whole path
        # (policy.pressure's "protected").
        n = 0
        for sid, s in list(ttl_live.items()):
            if s.ttl_deadline_s is None or s.ttl_deadline_s <= now_s:
                del ttl_live[sid]
            else:
                n += sum(by_eid[e].depth for e in leaves_of.get(sid, ()))
        return n

    for i, (r, chain) in enumerate(zip(requests, chains, strict=True)):
        now = r.timestamp_s
        sess: Session | None = None
        if hinted:
            assert driver is not None
            for t, changed in driver.due_timers(now):
                for eid in list(leaves_of.get(changed.sid, ())):
                    index.update(view(by_eid[eid], t), t, pressure)
            driver.update_cache(used, now)
            sess = driver.session_of(r)
            driver.on_arrival(sess, r, now)
            pressure = driver.update_pressure(capacity_tokens, 0, protected_tokens(now))
        # The recency guard's evidence (hits and misses, root first; ids are stable).
        index.note_path([seg.eid for seg in chain], [seg.tokens for seg in chain])
        pinned = set()
        for seg in chain:
            total += seg.tokens
            pinned.add(seg.eid)
            if seg.cached:
                index_remove(seg)
        k = 0
        while k < len(chain) and chain[k].cached:
            hit += chain[k].tokens
            k += 1
        caching = True
        for seg in chain[k:]:
            start = seg.depth - seg.tokens
            recompute_s += cost.prefill_time_s(seg.tokens, start) - cost.settings.prefill_fixed_s
            if caching:
                while capacity_tokens - used < seg.tokens:
                    victim = index.pop(now, pressure)
                    if victim is None:
                        break
                    vseg = by_eid[victim.entry_id]
                    key_tier = policy.key(victim, now, pressure).tier
                    protected_ev += key_tier == Tier.PROTECTED
                    dead_ev += key_tier == Tier.DEAD
                    if vseg.owner is not None:
                        leaves_of.get(vseg.owner.sid, set()).discard(vseg.eid)
                    vseg.cached = False
                    used -= vseg.tokens
                    evictions += 1
                    if driver is not None:
                        driver.on_evict(now, vseg.tokens)
                    p = vseg.parent
                    if p is not None:
                        p.kids -= 1
                        if p.kids == 0 and p.eid not in pinned:
                            index_add(p, now)
                caching = capacity_tokens - used >= seg.tokens
            if caching:
                seg.cached = True
                seg.inserted_s = now
                used += seg.tokens
                if seg.parent is not None:
                    seg.parent.kids += 1
            else:
                bypassed += seg.tokens
                index.note_uncached(seg.eid)
        for seg in chain:
            seg.last_s = now
            if sess is not None:
                if seg.owner is not None and seg.owner is not sess:
                    seg.shared = True
                    leaves_of.get(seg.owner.sid, set()).discard(seg.eid)
                seg.owner = sess
        if sess is not None:
            assert driver is not None
            driver.on_end(sess, r, now)
            if sess.ttl_deadline_s is not None:
                ttl_live[sess.sid] = sess
        for seg in chain:
            if seg.cached and seg.kids == 0:
                index_add(seg, now)
        if on_request is not None:
            on_request(i)
    return ReplayStats(
        total_tokens=total,
        hit_tokens=hit,
        recomputed_tokens=total - hit,
        recompute_s=recompute_s,
        bypassed_tokens=bypassed,
        evictions=evictions,
        protected_evictions=protected_ev,
        dead_evictions=dead_ev,
    )
