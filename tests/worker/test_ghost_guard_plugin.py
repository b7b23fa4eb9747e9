"""The plugin feeds the ghost LRU guard (``policy.eviction.ghost``) on a real SGLang unified cache:
every checkpointed path reaches the ghost with its tokens, the leaf index's evictions tell it what
the real cache dropped, it learns the pool's size at the first eviction, and a re-read of what the
key evicted (and LRU would have kept) sends the next disagreement to LRU."""

from __future__ import annotations

from typing import Any

import pytest

from saga_sgl.protocol import ReuseHint

pytestmark = pytest.mark.sglang

CTX = 10


def test_the_plugin_feeds_the_ghost_and_the_ghost_decides(make_harness: Any) -> None:
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams

    # guard_confidence 0: one loss beyond the ghost decides (z = 2 waits for a lead beyond noise,
    # tests/unit/test_policy_eviction_ghost.py); this test is about the plugin's wiring.
    h = make_harness("unified", "saga", kv_size=64, guard_mode="ghost", guard_confidence=0.0)
    system = [7, 8, 9, 10]
    old, dead, dead2 = (system + list(range(b, b + CTX)) for b in (100, 200, 300))
    hopeless = {"reuse_prob": 0.01, "next_use_in_s": 600.0}
    h.clock.advance(1.0)
    h.run(old)
    h.clock.advance(1.0)
    h.run(dead, hint=ReuseHint(workflow_id="d1", **hopeless))
    h.clock.advance(1.0)
    [index] = h.runtime.leaf_indices
    ghost = index.victims.ghost
    assert ghost is not None and index.victims.guard is ghost
    # Both paths reached the ghost with their tokens (every node, hits included).
    assert ghost.read_tokens >= len(old) + len(dead)
    assert ghost.ghost_miss_tokens >= len(system) + 2 * CTX
    assert ghost.capacity == float("inf")  # no eviction yet: the pool's size is not known
    assert ghost.follows_prediction()
    h.cache.evict(EvictParams(num_tokens=1))  # the key's victim (the hopeless one), not LRU's (old)
    assert h.resident_tokens(dead) == len(system) and h.resident_tokens(old) == len(old)
    assert 0 < ghost.capacity <= 64  # learned at the eviction: what the cache held
    assert ghost.lost_tokens == 0
    h.clock.advance(1.0)
    h.run(dead)  # read again: the real cache recomputes it, an LRU cache of that size would not
    assert ghost.lost_tokens == CTX and ghost.won_tokens == 0
    assert not ghost.follows_prediction()
    h.clock.advance(1.0)
    h.run(dead2, hint=ReuseHint(workflow_id="d2", **hopeless))
    h.clock.advance(1.0)
    h.cache.evict(EvictParams(num_tokens=1))  # now LRU's victim: the least recently used context
    assert h.resident_tokens(old) == len(system) and h.resident_tokens(dead2) == len(dead2)
    assert ghost.chose_lru >= 1
