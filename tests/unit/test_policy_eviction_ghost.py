"""The ghost LRU guard (``policy.eviction.ghost``): it counts LRU's own misses on the live reads, the
cache's misses from the index's evictions, and follows the predicted key only while the cache is
not missing more than the ghost."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest

from saga_sgl.policy import registry
from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.ghost import GhostLruGuard
from saga_sgl.policy.eviction.guard import RecencyGuardSettings
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.settings import InvalidSettings
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView
from saga_sgl.replay import prefix_replay
from saga_sgl.replay.driver import HintDriver
from saga_sgl.replay.prefix_replay import Mode, replay
from saga_sgl.replay.traces import TraceRequest

B = 16
"""Tokens per block in the hand-made traces."""


def _req(t: float, blocks: list[int], tail: int = 0) -> TraceRequest:
    """A request reading ``blocks`` (the last one ``B - tail`` tokens long)."""
    return TraceRequest(
        timestamp_s=t,
        input_length=B * len(blocks) - tail,
        output_length=1,
        hash_ids=tuple(blocks),
        block_size=B,
    )


def _ghost_misses(requests: list[TraceRequest], capacity: int) -> int:
    """The ghost alone fed the requests' paths (a block is its chain from the root; root first; its
    tokens as first seen, as the replay sizes a radix segment)."""
    ghost = GhostLruGuard(RecencyGuardSettings(mode="ghost"), capacity)
    sizes: dict[tuple[int, ...], int] = {}
    for r in requests:
        contents = [r.hash_ids[: j + 1] for j in range(len(r.hash_ids))]
        ghost.on_path(contents, [sizes.setdefault(c, r.block_tokens(j)) for j, c in enumerate(contents)])
    return ghost.ghost_miss_tokens


def _random_trace(seed: int, n: int = 200) -> list[TraceRequest]:
    """Sessions that extend their own chain below a few shared prefixes (a radix tree)."""
    rng = random.Random(seed)
    roots = [[rng.randrange(10**6) for _ in range(rng.randint(1, 4))] for _ in range(6)]
    chains: dict[int, list[int]] = {}
    out = []
    for i in range(n):
        s = rng.randrange(10)
        chain = chains.get(s) or list(rng.choice(roots))
        chain = chain + [rng.randrange(10**6) for _ in range(rng.randint(0, 3))]
        chains[s] = chain
        out.append(_req(float(i), chain, tail=rng.randint(0, B - 1)))
    return out


def test_the_ghost_counts_lrus_misses_on_a_hand_made_sequence() -> None:
    # Capacity 2 blocks. A, B, A, C, B: LRU misses A, B, (A hits), C (evicts B), B (evicts A).
    seq = [_req(1.0, [1]), _req(2.0, [2]), _req(3.0, [1]), _req(4.0, [3]), _req(5.0, [2])]
    lru = replay(seq, 2 * B, LruEviction(), Mode.PLAIN)
    assert lru.recomputed_tokens == 4 * B
    assert _ghost_misses(seq, 2 * B) == lru.recomputed_tokens


def test_the_ghost_evicts_a_leaf_before_its_ancestor() -> None:
    # Root r with children x, y; capacity 2 blocks. Reading r/y must evict the leaf x, not r (which
    # was read at the same moment as x): then r/x misses only x. Fed root first, a plain LRU list
    # would hold r as older than x and evict r (a miss of r too, and a cache that is not a prefix).
    seq = [_req(1.0, [10, 11]), _req(2.0, [10, 12]), _req(3.0, [10, 11])]
    lru = replay(seq, 2 * B, LruEviction(), Mode.PLAIN)
    assert lru.recomputed_tokens == 4 * B  # r, x, y, then x again
    assert _ghost_misses(seq, 2 * B) == lru.recomputed_tokens


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("blocks", [3, 10, 40])
def test_ghost_and_real_miss_counts_match_the_replays(seed: int, blocks: int) -> None:
    """On random radix traces (bypasses included at 3 blocks): the ghost's misses are the LRU
    replay's recomputed tokens, and its count of the real cache's misses is the guarded replay's."""
    seq = _random_trace(seed)
    capacity = blocks * B
    lru = replay(seq, capacity, LruEviction(), Mode.PLAIN)
    assert _ghost_misses(seq, capacity) == lru.recomputed_tokens
    with _spy_index() as made:
        guarded = replay(
            seq,
            capacity,
            registry.create_eviction("saga", {"guard_mode": "ghost"}),
            Mode.HINTS,
            driver=HintDriver(),
        )
    ghost = made[0].ghost
    assert ghost is not None
    assert ghost.ghost_miss_tokens == lru.recomputed_tokens
    assert ghost.real_miss_tokens == guarded.recomputed_tokens


@contextmanager
def _spy_index() -> Iterator[list[VictimIndex]]:
    made: list[VictimIndex] = []
    real = prefix_replay.VictimIndex

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    prefix_replay.VictimIndex = Spy  # type: ignore[misc]
    try:
        yield made
    finally:
        prefix_replay.VictimIndex = real  # type: ignore[misc]


class _MruKey:
    """A predicted key that evicts the most recently used entry first (a test's stand-in for a key
    whose predictions are wrong on a recency-friendly stream and right on a loop)."""

    name: ClassVar[str] = "mru_key"

    def __init__(self, guard: str | None, confidence: float = 2.0) -> None:
        self.recency_guard = (
            None if guard is None else RecencyGuardSettings(mode=guard, window=4096.0, confidence=confidence)
        )

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        return EvictionKey(Tier.ORDINARY, -entry.last_access_s, 0.0, entry.entry_id)

    def protects(self, pressure: float) -> bool:
        return False


def _run_flat(policy: Any, stream: list[int], cap_blocks: int) -> tuple[int, VictimIndex]:
    """A flat cache of ``cap_blocks`` blocks of B tokens; returns (recomputed tokens, its index)."""
    index = VictimIndex(policy, capacity_tokens=cap_blocks * B)
    cached: set[int] = set()
    missed = 0
    for t, c in enumerate(stream):
        now = float(t)
        index.note_path([c], [B])
        if c in cached:
            index.remove(c)  # pinned while read
        else:
            missed += B
            while len(cached) >= cap_blocks:
                victim = index.pop(now, 0.0)
                assert victim is not None
                cached.discard(victim.entry_id)
            cached.add(c)
        index.add(CacheEntryView(entry_id=c, num_tokens=B, depth_tokens=B, last_access_s=now), now, 0.0)
    return missed, index


def _recency_stream(seed: int, n: int = 20_000) -> list[int]:
    """A hot set that fits the cache, read again and again, between one-off reads: LRU keeps the hot
    set, the MRU key evicts each hot entry right after it is read."""
    rng = random.Random(seed)
    return [rng.randrange(20) if rng.random() < 0.7 else 1000 + i for i in range(n)]


def _loop_stream(n: int = 20_000) -> list[int]:
    """A loop over 40 entries: LRU (cache of 32) misses every read, the MRU key keeps 31 of them."""
    return [i % 40 for i in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_a_wrong_key_behind_the_ghost_recomputes_at_most_lru_plus_the_margin(seed: int) -> None:
    stream = _recency_stream(seed)
    lru, _ = _run_flat(LruEviction(), stream, 32)
    alone, _ = _run_flat(_MruKey(None), stream, 32)
    guarded, index = _run_flat(_MruKey("ghost"), stream, 32)
    ghost = index.ghost
    assert ghost is not None
    assert alone > 1.5 * lru  # the key is badly wrong here
    assert ghost.ghost_miss_tokens == lru and ghost.real_miss_tokens == guarded
    # The stated margin: z * sqrt(energy) (terms of B tokens: z * sqrt(window) * B at most) per read
    # window; the stream is about 5 read windows.
    windows = len(stream) / ghost.settings.read_window + 1
    margin = ghost.settings.confidence * (ghost.settings.window**0.5) * B * windows
    assert guarded <= lru + margin
    assert guarded - lru < 0.1 * (alone - lru)  # and it gives back over 90% of the key's loss
    assert ghost.chose_lru > ghost.chose_prediction


def test_a_right_key_behind_the_ghost_keeps_its_gain() -> None:
    stream = _loop_stream()
    lru, _ = _run_flat(LruEviction(), stream, 32)
    alone, _ = _run_flat(_MruKey(None), stream, 32)
    guarded, index = _run_flat(_MruKey("ghost"), stream, 32)
    assert lru == len(stream) * B  # LRU misses every read of the loop
    assert alone < 0.3 * lru
    assert guarded <= alone * 1.01  # the key's gain is kept (its wins push the lead down)
    ghost = index.ghost
    assert ghost is not None and ghost.follows and ghost.won_tokens > 0 and ghost.lost_tokens == 0


def test_memory_is_bounded_by_the_pool() -> None:
    stream = _recency_stream(0)
    _, index = _run_flat(_MruKey("ghost"), stream, 32)
    ghost = index.ghost
    assert ghost is not None
    assert ghost.ghost_tokens <= 32 * B
    assert ghost._real_only_tokens <= 32 * B


def test_the_ghost_learns_the_pools_size_at_evictions() -> None:
    """A host that does not know its pool (the plugin) gets the resident tokens at the first
    eviction: the cache evicts when it is full."""
    ghost = GhostLruGuard(RecencyGuardSettings(mode="ghost"))
    for c in range(5):
        ghost.on_path([c], [B])
    assert ghost.ghost_tokens == 5 * B
    ghost.on_evict(0)
    assert ghost.capacity == 5 * B
    ghost.on_path([5], [B])  # the cache now holds 1..5: the ghost drops its oldest (0)
    assert ghost.ghost_tokens == 5 * B
    ghost.on_path([0], [B])  # both missed 0: no evidence
    assert ghost.lost_tokens == ghost.won_tokens == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidSettings, match="mode"):
        RecencyGuardSettings(mode="ghosts")
    with pytest.raises(InvalidSettings, match="read_window"):
        RecencyGuardSettings(mode="ghost", read_window=0.0)
    with pytest.raises(InvalidSettings, match="guard_mode"):
        registry.create_eviction("saga", {"guard_mode": "lru"})
    with pytest.raises(ValueError, match="capacity"):
        GhostLruGuard(RecencyGuardSettings(mode="ghost"), -1)


def test_the_pairwise_guard_is_untouched_by_paths_that_are_only_written() -> None:
    index = VictimIndex(registry.create_eviction("saga"))
    assert index.ghost is None and index.guard is not None
    index.note_path([1, 2], [B, B], count=False)
    index.note_uncached(1)
    index.set_capacity(100)
    assert index.guard.votes == 0
