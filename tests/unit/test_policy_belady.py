"""Belady (prefix-closed MIN) oracle and the shared prefix-cache replay."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_sgl.policy.eviction.belady import Access, belady_recomputed_tokens, replay, replay_belady
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.eviction.vllm_prefix import VllmPrefixEviction


def _single(*ids: str, tokens: int = 10) -> list[Access]:
    return [[(i, tokens)] for i in ids]


def test_textbook_example() -> None:
    trace = _single("a", "b", "c", "a", "b")
    # Belady: at c, evict b (next use 4) rather than a (next use 3); b misses again later: 4 misses.
    b = replay_belady(trace, 20)
    assert b.recomputed_tokens == 40
    assert b.hit_tokens == 10
    assert b.num_evictions == 2
    # LRU evicts a at c, then b at a, then c at b: every access misses.
    assert replay(trace, 20, LruEviction()).recomputed_tokens == 50
    assert belady_recomputed_tokens(trace, 20) == 40


def test_never_used_again_goes_first_and_prefix_stays_closed() -> None:
    sys = ("sys", 100)
    trace: list[Access] = [
        [sys, ("s1-0", 50)],
        [sys, ("s2-0", 50)],
        [sys, ("s1-0", 50), ("s1-1", 50)],
        [sys, ("s2-0", 50)],
    ]
    # Capacity 250: after access 3 the cache must drop 50 tokens; s1-1 is never used again.
    r = replay_belady(trace, 250)
    assert r.recomputed_tokens == 100 + 50 + 50 + 50  # sys, s1-0, s2-0, s1-1 once each
    assert r.hit_tokens == 100 + 100 + 50 + 150
    assert r.total_tokens == r.hit_tokens + r.recomputed_tokens


def test_chain_longer_than_capacity_is_bypassed() -> None:
    trace: list[Access] = [[("a", 60), ("b", 60)], [("a", 60), ("b", 60)]]
    r = replay_belady(trace, 100)
    # b never fits while a is pinned: recomputed and bypassed both times; a hits the second time.
    assert r.bypassed_tokens == 120
    assert r.hit_tokens == 60
    assert r.recomputed_tokens == 180


def test_inconsistent_trace_is_rejected() -> None:
    with pytest.raises(ValueError, match="two parents"):
        replay_belady([[("a", 10), ("x", 5)], [("b", 10), ("x", 5)]], 100)
    with pytest.raises(ValueError):
        replay_belady([], -1)


def _agent_trace(rng: random.Random, sessions: int, steps: int) -> list[Access]:
    chains: dict[int, list[tuple[object, int]]] = {s: [("sys", 64)] for s in range(sessions)}
    trace: list[Access] = []
    for segment_id in range(1, steps + 1):
        s = rng.randrange(sessions)
        chains[s] = [*chains[s], (segment_id, rng.randint(8, 128))]
        if rng.random() < 0.1:
            chains[s] = [("sys", 64)]
        trace.append(list(chains[s]))
    return trace


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(64, 4000))
def test_belady_never_worse_than_lru_or_vllm(seed: int, capacity: int) -> None:
    trace = _agent_trace(random.Random(seed), sessions=6, steps=60)
    b = replay_belady(trace, capacity)
    lru = replay(trace, capacity, LruEviction())
    vllm = replay(trace, capacity, VllmPrefixEviction())
    assert b.recomputed_tokens <= lru.recomputed_tokens
    assert b.recomputed_tokens <= vllm.recomputed_tokens
    for r in (b, lru, vllm):
        assert r.hit_tokens + r.recomputed_tokens == r.total_tokens


def test_infinite_capacity_recomputes_each_segment_once() -> None:
    trace = _agent_trace(random.Random(1), sessions=4, steps=40)
    unique = {seg: tok for access in trace for seg, tok in access}
    assert replay_belady(trace, 10**9).recomputed_tokens == sum(unique.values())
    assert replay(trace, 10**9, LruEviction()).recomputed_tokens == sum(unique.values())


def test_noisy_predictions_land_between_belady_and_lru() -> None:
    from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction

    trace = _agent_trace(random.Random(5), sessions=12, steps=600)
    capacity = 3000
    noise = random.Random(9)

    def noisy(_seg: object, t: int, true_next: float) -> float:
        # Predicted gap off by up to 2x either way; "never" stays "never".
        return true_next if true_next == float("inf") else t + (true_next - t) * noise.uniform(0.5, 2.0)

    belady = replay_belady(trace, capacity).recomputed_tokens
    predicted = replay(trace, capacity, ReuseTimeEviction(), predict_next_use=noisy).recomputed_tokens
    lru = replay(trace, capacity, LruEviction()).recomputed_tokens
    assert belady <= predicted < lru
