"""VictimIndex: O(log n) victim selection for any ``EvictionPolicy`` key.

Mental model: a min-heap of (key, version, entry id) with lazy deletion. Keys are built from
absolute times, so a stored key stays correct as the clock moves, with two exceptions that the
``EvictionPolicy`` contract names, both of which can only *lower* a key:

1. a TTL deadline passes (PROTECTED -> ORDINARY or DEAD): a second heap orders protected entries
   by ``ttl_deadline_s``; before each selection, entries whose deadline has passed are re-keyed;
2. usage at or above threshold_high (``policy.protects(pressure)`` is False): every entry stored
   in the PROTECTED tier is re-keyed before the selection (each at most once per time it was keyed
   PROTECTED).

Any other change (a key that went *up*, e.g. protection turning back on) is caught by lazy
re-validation: the candidate's key is recomputed from ``now_s`` and ``pressure``; if it differs
from the stored one the entry is pushed back with the new key and the next one is tried. By the
contract only a TTL or a ``protects(pressure)`` flip can change a stored key, so the index
recomputes a candidate's key only when its entry has a TTL deadline or ``protects`` differs from
the value it was keyed under (most of a selection's cost otherwise); ``revalidate_all=True``
recomputes every candidate (the reference the tests compare with: same victims, keys, protected
tokens and guard state).

Key equality (the one rule every host uses, through :func:`clean_key`): a key is a plain tuple
compared with ``==``, after NaN in ``primary`` or ``tiebreak`` is replaced by +inf (last within its
tier). Without this a NaN key never equals its own recomputation and ``pop`` would loop forever, and
NaN breaks the heap order. Wire input is validated long before (``saga_sgl.protocol``); this guards
the index against a policy bug or an unvalidated host.

Costs: add/update/remove O(log n); selection O(log n) amortised plus O(k log n) for the k TTLs that
expired since the previous selection. Hosts call ``add`` (or ``update``) when an entry becomes
evictable or its view changes, ``remove`` when it is locked or deleted, and ``pop`` to evict.

Recency guard (``policy.eviction.guard``): when the policy carries ``recency_guard`` settings
(``reuse_density`` does by default), the index also keeps every entry's recency key (the policy's
tier, then LRU's order: finished workflows first and live TTLs last stay rules; the guard arbitrates
the order within a tier) in a second KeyHeap of the same backend. At each selection the policy's
victim and the recency victim are compared; where they differ the guard says which to evict and
remembers the pair, and the host's reads (``note_use``, by a content identity that survives
eviction: ``content_of``) settle the pairs. So the index follows the predicted key only while it
has not recently chosen worse than LRU, and is LRU itself where predictions do not help. Selection
stays O(log n): two heap tops, O(1) guard work.

Guard modes: ``pairwise`` (``RecencyGuard``, above) or ``ghost`` (``policy.eviction.ghost``: an
LRU ghost of the pool's size fed the same reads; the index follows the key while the cache is not
missing more than the ghost). The ghost needs each read's tokens and the pool's size: hosts report a
request's reads with ``note_path`` (contents and tokens, root first) and give ``capacity_tokens``
when they know it (else the ghost learns it at the index's evictions, which it also sees: ``pop``).

Backend seam: the ordered part (one key per entry id, smallest first) is a ``saga_kernels.KeyHeap``,
native when built, else its pure-Python twin; both order the same key tuples the same way, so the
victims are the exact policy's either way. The policy's keys are always computed here, in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence

from saga_kernels import KeyHeapLike, default_backend, new_key_heap

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.ghost import GhostLruGuard
from saga_sgl.policy.eviction.guard import RecencyGuard, RecencyGuardSettings
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.views import CacheEntryView

_PROTECTED = int(Tier.PROTECTED)


def recency_guard_settings(policy: EvictionPolicy) -> RecencyGuardSettings | None:
    """The policy's recency-guard settings, if it asks for the guard (``recency_guard`` attribute)."""
    settings = getattr(policy, "recency_guard", None)
    return settings if isinstance(settings, RecencyGuardSettings) else None


def clean_key(key: EvictionKey) -> EvictionKey:
    """``key`` with NaN ordering quantities replaced by +inf (see the module doc: one equality rule)."""
    primary, tiebreak = key[1], key[2]
    if primary == primary and tiebreak == tiebreak:  # neither is NaN (the common, fast path)
        return key
    return EvictionKey(
        key[0],
        math.inf if math.isnan(primary) else primary,
        math.inf if math.isnan(tiebreak) else tiebreak,
        key[3],
    )


def entry_key(policy: EvictionPolicy, view: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
    """The key every host stores and compares for ``view``: the policy's key, cleaned."""
    return clean_key(policy.key(view, now_s, pressure))


def shared_entry_view(users: Sequence[CacheEntryView]) -> CacheEntryView:
    """The one rule for an entry (a radix node, a prefix segment) used by several workflows.

    One user: its own view. Several users (a shared system prompt, a tree-of-thought trunk), or a
    workflow plus hint-less traffic: the entry is *unpredicted*, ordered by its last use like any
    request-level prefix. One workflow's prediction (a TTL, a finish) says nothing about the other
    users' next use, and no user's prediction may pin or expose a prefix the others depend on.
    Every host (worker plugin, simulator) builds shared entries' views through this function.
    """
    if len(users) == 1:
        return users[0]
    first = users[0]
    return CacheEntryView(
        entry_id=first.entry_id,
        num_tokens=first.num_tokens,
        depth_tokens=first.depth_tokens,
        last_access_s=max(u.last_access_s for u in users),
    )


class VictimIndex:
    """The evictable entries of one cache, ordered by one policy's keys."""

    __slots__ = (
        "_content_of",
        "_deadline_floor",
        "_deadlines",
        "_entries",
        "_ghost",
        "_heap",
        "_now_high",
        "_policy",
        "_protect_memo",
        "_protected_tokens",
        "_recency",
        "backend",
        "guard",
        "revalidate_all",
    )

    def __init__(
        self,
        policy: EvictionPolicy,
        backend: str | None = None,
        *,
        content_of: Callable[[CacheEntryView], Hashable] | None = None,
        revalidate_all: bool = False,
        capacity_tokens: int | None = None,
    ) -> None:
        """``backend``: ``native`` or ``python`` KeyHeap (default: ``saga_kernels.default_backend``).

        ``content_of``: the identity of an entry's content that survives its eviction (what the host
        passes to ``note_use``); default the entry id (hosts whose ids are stable across re-insertion).

        ``capacity_tokens``: the pool's size, the ghost guard's size (``set_capacity``; else learned).

        ``revalidate_all``: recompute the key of every candidate victim (the reference the contract
        shortcut is tested against); default only where the contract allows a change (see ``_push``).
        """
        self._policy = policy
        # entry id -> (view, stored key, protects(pressure) when keyed, valid until: the entry's TTL
        # deadline if it lay ahead when keyed, else inf); the heap holds exactly one key per entry.
        self._entries: dict[int, tuple[CacheEntryView, EvictionKey, bool, float]] = {}
        self.backend = backend or default_backend()
        """Which KeyHeap orders this index: ``native`` or ``python`` (logs, metrics, tests)."""
        self._heap: KeyHeapLike = new_key_heap(self.backend)
        # (0, ttl deadline, 0.0, entry id) of the entries stored in the PROTECTED tier.
        self._deadlines: KeyHeapLike = new_key_heap(self.backend)
        self._deadline_floor = math.inf
        """At most the earliest deadline in ``_deadlines``: no TTL expired before it (no heap look)."""
        self._protected_tokens = 0
        guard_settings = recency_guard_settings(policy)
        self.guard: RecencyGuard | GhostLruGuard | None = None
        """The recency guard (None when the policy does not ask for one)."""
        self._ghost: GhostLruGuard | None = None
        if guard_settings is not None:
            if guard_settings.mode == "ghost":
                self.guard = self._ghost = GhostLruGuard(guard_settings, capacity_tokens)
            else:
                self.guard = RecencyGuard(guard_settings)
        # (tier, last access, 0.0, entry id): LRU within the policy's tier, the guard's second expert
        # (without information every tier is ORDINARY: LruEviction's key).
        self._recency: KeyHeapLike | None = None if self.guard is None else new_key_heap(self.backend)
        self._content_of = content_of
        self.revalidate_all = revalidate_all
        """Recompute every candidate's key (tests' reference), not only where the contract allows a change."""
        self._now_high = -math.inf
        """The latest ``now_s`` seen: a call with an earlier one re-validates every candidate."""
        self._protect_memo: tuple[float, bool] = (math.nan, False)
        """(pressure, policy.protects(pressure)) of the last call (NaN: none yet)."""

    def content(self, view: CacheEntryView) -> Hashable:
        """The content identity of ``view`` the guard remembers (``content_of``, default its entry id)."""
        return view.entry_id if self._content_of is None else self._content_of(view)

    def note_use(self, content: Hashable, tokens: int | None = None) -> None:
        """The host read ``content`` (a hit or a miss): settles the guard's pairs (no-op unguarded).
        The ghost guard needs ``tokens``; a prefix cache reports a whole path with ``note_path``."""
        guard = self.guard
        if guard is not None:
            if self._ghost is None:
                guard.on_use(content)
            else:
                self._ghost.on_use(content, tokens)

    def note_path(self, contents: Sequence[Hashable], tokens: Sequence[int], *, count: bool = True) -> None:
        """A request read ``contents`` (root first, ``tokens`` each; hits and misses): the guard's
        evidence. ``count=False``: the path was only touched or written (its request ended, its
        output was inserted): the ghost's LRU order changes, no evidence (the pairwise guard ignores it)."""
        guard = self.guard
        if guard is None:
            return
        ghost = self._ghost
        if ghost is not None:
            ghost.on_path(contents, tokens, count=count)
        elif count:
            on_use = guard.on_use
            for content in contents:
                on_use(content)

    def note_uncached(self, content: Hashable) -> None:
        """The host read ``content`` but did not cache it (no room even after evicting every
        candidate): for the ghost guard, as if evicted at once (no-op for other guards)."""
        if self._ghost is not None:
            self._ghost.on_evict(content)

    @property
    def ghost(self) -> GhostLruGuard | None:
        """The ghost guard, when the policy asks for ``mode="ghost"`` (else None)."""
        return self._ghost

    def set_capacity(self, tokens: int) -> None:
        """The pool's size in tokens (the ghost guard's size; no-op for other guards)."""
        if self._ghost is not None:
            self._ghost.set_capacity(tokens)

    @property
    def policy(self) -> EvictionPolicy:
        """The policy whose keys order this index."""
        return self._policy

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def protected_tokens(self) -> int:
        """Tokens the indexed PROTECTED-tier entries keep: each one's whole path (``depth_tokens``),
        since its ancestors cannot be evicted before it (``policy.pressure``'s protected term)."""
        return self._protected_tokens

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def __iter__(self) -> Iterator[CacheEntryView]:
        return (item[0] for item in self._entries.values())

    def get(self, entry_id: int) -> CacheEntryView | None:
        """The current view of ``entry_id``, if indexed."""
        item = self._entries.get(entry_id)
        return None if item is None else item[0]

    def add(self, entry: CacheEntryView, now_s: float, pressure: float) -> None:
        """Index ``entry`` (or replace the indexed view with the same ``entry_id``)."""
        key = self._policy.key(entry, now_s, pressure)
        if key[1] != key[1] or key[2] != key[2]:  # NaN: the one cleaning rule (clean_key)
            key = clean_key(key)
        memo = self._protect_memo
        if now_s > self._now_high:
            self._now_high = now_s
        self._push(entry, key, memo[1] if pressure == memo[0] else self._protects(pressure), now_s)

    update = add

    def remove(self, entry_id: int) -> bool:
        """Drop ``entry_id`` (locked, deleted or evicted by the host); False if it was not indexed."""
        item = self._entries.pop(entry_id, None)
        if item is None:
            return False
        self._unindex(entry_id, item)
        return True

    def peek(self, now_s: float, pressure: float) -> CacheEntryView | None:
        """The entry the policy would evict now, without removing it; None if the index is empty."""
        top = self._choose(now_s, pressure, False)
        return None if top is None else self._entries[top][0]

    def pop(self, now_s: float, pressure: float) -> CacheEntryView | None:
        """Remove and return the entry to evict now; None if the index is empty."""
        top = self._choose(now_s, pressure, True)
        if top is None:
            return None
        item = self._entries.pop(top)
        if self._ghost is not None:
            self._ghost.on_evict(self.content(item[0]))
        # ``_unindex`` inlined: this is the hot path of every eviction.
        self._heap.remove(top)
        recency = self._recency
        if recency is not None:
            recency.remove(top)
        if item[1][0] == _PROTECTED:
            self._protected_tokens -= item[0].depth_tokens
            self._deadlines.remove(top)
        return item[0]

    def pop_keyed(self, now_s: float, pressure: float) -> tuple[CacheEntryView, EvictionKey] | None:
        """Like ``pop``, with the key the victim was chosen by (hosts count victims by its tier)."""
        top = self._choose(now_s, pressure, True)
        if top is None:
            return None
        item = self._entries.pop(top)
        self._unindex(top, item)
        if self._ghost is not None:
            self._ghost.on_evict(self.content(item[0]))
        return item[0], item[1]

    def pop_tokens(self, num_tokens: int, now_s: float, pressure: float) -> list[CacheEntryView]:
        """Pop victims in order until they hold at least ``num_tokens`` (or the index is empty).

        The host re-adds a parent that became an evictable leaf between calls; this helper is for
        hosts whose entries are independent (segments, whole sessions).
        """
        out: list[CacheEntryView] = []
        freed = 0
        while freed < num_tokens:
            view = self.pop(now_s, pressure)
            if view is None:
                break
            out.append(view)
            freed += view.num_tokens
        return out

    def key_of(self, entry_id: int) -> EvictionKey | None:
        """The stored key of ``entry_id`` (as of its last (re)keying), if indexed."""
        item = self._entries.get(entry_id)
        return None if item is None else item[1]

    # -- internals -------------------------------------------------------------------------------

    def _protects(self, pressure: float) -> bool:
        """``policy.protects(pressure)``, memoised for the last pressure (hosts hold it per round)."""
        protects = bool(self._policy.protects(pressure))
        self._protect_memo = (pressure, protects)
        return protects

    # Contract shortcut ("stale" below): a stored key may differ from the entry's key now only if
    # ``now_s >= valid_until_s`` (its TTL deadline, ahead when keyed, has passed), or ``protects``
    # differs from the value it was keyed under, or ``check_all`` (``revalidate_all``, or a call
    # with an earlier ``now_s`` than one already seen: a TTL may be live again). The EvictionPolicy
    # contract allows no other change, so no other key is recomputed at selection (most of a
    # selection's time otherwise).

    def _push(self, entry: CacheEntryView, key: EvictionKey, protects: bool, now_s: float) -> None:
        entry_id = entry.entry_id
        entries = self._entries
        old = entries.get(entry_id)
        old_protected = old is not None and old[1][0] == _PROTECTED
        if old_protected:
            self._protected_tokens -= old[0].depth_tokens  # type: ignore[index]  # old_protected: not None
        deadline = entry.ttl_deadline_s
        entries[entry_id] = (
            entry,
            key,
            protects,
            deadline if deadline is not None and deadline > now_s else math.inf,  # valid until
        )
        self._heap.push(key)
        recency = self._recency
        tier = key[0]
        if recency is not None:
            last = entry.last_access_s
            # Pushed only when the recency key (tier, last access) changed: an unchanged one stays.
            if old is None or old[1][0] != tier or old[0].last_access_s != last:
                recency.push((tier, last if last == last else math.inf, 0.0, entry_id))
        if tier == _PROTECTED:
            self._protected_tokens += entry.depth_tokens
            deadline = math.inf if deadline is None else deadline
            self._deadlines.push((0, deadline, 0.0, entry_id))
            if deadline < self._deadline_floor:
                self._deadline_floor = deadline
        elif old_protected:
            self._deadlines.remove(entry_id)

    def _unindex(self, entry_id: int, item: tuple[CacheEntryView, EvictionKey, bool, float]) -> None:
        """Drop ``entry_id`` (already popped from ``_entries`` as ``item``) from the heaps."""
        self._heap.remove(entry_id)
        recency = self._recency
        if recency is not None:
            recency.remove(entry_id)
        if item[1][0] == _PROTECTED:
            self._protected_tokens -= item[0].depth_tokens
            self._deadlines.remove(entry_id)

    def _choose(self, now_s: float, pressure: float, record: bool) -> int | None:
        """The victim: the policy's, or (guarded, where they differ) the guard's pick of it vs the
        recency victim. A recency key whose tier went stale is re-keyed first (lazily, as ``_select``
        does for the policy's keys), which can move the policy's victim too: then both are re-read.

        Hot path (one decision of a steady cache): no TTL due, the policy's top not stale: two heap
        tops, one stale check each, the guard's current choice; no call into ``_select``."""
        memo = self._protect_memo
        protects = memo[1] if pressure == memo[0] else self._protects(pressure)
        if now_s < self._now_high:
            check_all = True
        else:
            self._now_high = now_s
            check_all = self.revalidate_all
        entries, deadlines, heap = self._entries, self._deadlines, self._heap
        while True:
            predicted: int | None = None
            if not check_all and not (len(deadlines) and (now_s >= self._deadline_floor or not protects)):
                top = heap.top()
                if top is not None:
                    item = entries[top]
                    if now_s < item[3] and item[2] is protects:  # not stale (see ``_select``)
                        predicted = top
            if predicted is None:
                predicted = self._select(now_s, pressure, protects, check_all)
            guard = self.guard
            if predicted is None or guard is None:
                return predicted
            lru = self._recency.top()  # type: ignore[union-attr]  # guarded: the recency heap exists
            if lru is None or lru == predicted:
                return predicted
            l_item = entries[lru]
            if now_s >= l_item[3] or l_item[2] is not protects or check_all:  # stale
                fresh = entry_key(self._policy, l_item[0], now_s, pressure)
                if fresh[0] != l_item[1][0]:
                    self._push(l_item[0], fresh, protects, now_s)
                    continue
            follow = guard.follows
            if record:
                if follow:
                    v, sp = entries[predicted][0], l_item[0]
                else:
                    v, sp = l_item[0], entries[predicted][0]
                content_of = self._content_of
                if content_of is None:
                    guard.on_disagreement(
                        v.entry_id, v.num_tokens, sp.entry_id, sp.num_tokens, predicted_chose=follow
                    )
                else:
                    guard.on_disagreement(
                        content_of(v), v.num_tokens, content_of(sp), sp.num_tokens, predicted_chose=follow
                    )
            return predicted if follow else lru

    def _rekey(self, entry_id: int, now_s: float, pressure: float, protects: bool) -> None:
        view = self._entries[entry_id][0]
        self._push(view, entry_key(self._policy, view, now_s, pressure), protects, now_s)

    def _release_protections(self, now_s: float, pressure: float, protects: bool) -> None:
        deadlines = self._deadlines
        if not len(deadlines):
            return
        if not protects:
            # At this usage no TTL protects: every key stored in the PROTECTED tier is too high.
            # Each protected entry is re-keyed once (out of the tier), so this stays amortised.
            expired = []
            while (entry_id := deadlines.pop()) is not None:
                expired.append(entry_id)
        else:
            expired = []
            while (first := deadlines.min_key()) is not None and first[1] <= now_s:
                deadlines.remove(first[3])
                expired.append(first[3])
        first = deadlines.min_key()
        self._deadline_floor = math.inf if first is None else first[1]
        # Collected first: a re-key never re-enters this loop, even for a policy that breaks the
        # contract and keeps an expired entry PROTECTED.
        for entry_id in expired:
            self._rekey(entry_id, now_s, pressure, protects)

    def _select(self, now_s: float, pressure: float, protects: bool, check_all: bool) -> int | None:
        if len(self._deadlines) and (now_s >= self._deadline_floor or not protects):
            self._release_protections(now_s, pressure, protects)
        heap, entries, key_fn = self._heap, self._entries, self._policy.key
        while (entry_id := heap.top()) is not None:
            view, key, keyed_protects, valid_until_s = entries[entry_id]
            if now_s < valid_until_s and keyed_protects is protects and not check_all:  # not stale
                return entry_id
            fresh = key_fn(view, now_s, pressure)
            if fresh[1] != fresh[1] or fresh[2] != fresh[2]:  # NaN: the one cleaning rule
                fresh = clean_key(fresh)
            if fresh == key:  # checked now: valid from now on
                deadline = view.ttl_deadline_s
                valid_until_s = deadline if deadline is not None and deadline > now_s else math.inf
                entries[entry_id] = (view, key, protects, valid_until_s)
                return entry_id
            self._push(view, fresh, protects, now_s)  # lazy re-validation: the key moved; try the next
        return None
