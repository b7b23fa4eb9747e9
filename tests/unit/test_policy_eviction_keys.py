"""Eviction keys: LRU, vLLM prefix order, WA-LRU (Eq. 1-3), reuse_time; tiers and tie-breaks."""

from __future__ import annotations

import pytest
from factories import make_entry
from hypothesis import assume, given
from hypothesis import strategies as st

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction, ReuseTimeSettings
from saga_sgl.policy.eviction.vllm_prefix import VllmPrefixEviction
from saga_sgl.policy.eviction.wa_lru import WaLruEviction, WaLruSettings
from saga_sgl.policy.views import CacheEntryView


def _order(
    policy: object, entries: list[CacheEntryView], now_s: float = 100.0, pressure: float = 0.5
) -> list[int]:
    key = policy.key  # type: ignore[attr-defined]
    return [e.entry_id for e in sorted(entries, key=lambda e: key(e, now_s, pressure))]


def test_lru_oldest_first_ties_by_id() -> None:
    entries = [
        make_entry(3, last_access_s=5.0),
        make_entry(1, last_access_s=9.0),
        make_entry(2, last_access_s=5.0),
    ]
    assert _order(LruEviction(), entries) == [2, 3, 1]
    assert LruEviction().key(entries[0], 0.0, 0.0) == EvictionKey(Tier.ORDINARY, 5.0, 0.0, 3)
    # LRU ignores TTLs and workflow state: it is the plain baseline.
    assert not LruEviction().protects(0.0)
    assert LruEviction().key(make_entry(0, ttl_deadline_s=1e9), 0.0, 0.0).tier == Tier.ORDINARY


def test_vllm_free_queue_order() -> None:
    # vLLM v1: request A frees blocks a0..a2 at t=1 (appended tail first), B frees b0..b1 at t=2.
    # Then C hits a0, a1 (touch: out of the free queue), adds c2 and frees [a0, a1, c2] at t=4.
    blk = 16
    a0 = make_entry(10, num_tokens=blk, depth_tokens=16, last_access_s=4.0)
    a1 = make_entry(11, num_tokens=blk, depth_tokens=32, last_access_s=4.0)
    a2 = make_entry(12, num_tokens=blk, depth_tokens=48, last_access_s=1.0)
    b0 = make_entry(20, num_tokens=blk, depth_tokens=16, last_access_s=2.0)
    b1 = make_entry(21, num_tokens=blk, depth_tokens=32, last_access_s=2.0)
    c2 = make_entry(32, num_tokens=blk, depth_tokens=48, last_access_s=4.0)
    # Free queue head -> tail: a2 | b1 b0 | c2 a1 a0.
    assert _order(VllmPrefixEviction(), [a0, a1, a2, b0, b1, c2]) == [12, 21, 20, 32, 11, 10]
    assert not VllmPrefixEviction().protects(0.0)


def test_wa_lru_score_worked_numbers() -> None:
    p = WaLruEviction()
    # idle 60 s of tau_max 300 -> R = 0.2; P_reuse 0.9; size 8192 / 32768 = 0.25.
    live = make_entry(num_tokens=8192, last_access_s=40.0, reuse_prob=0.9)
    assert p.score(live, 100.0, 300.0, 32768) == pytest.approx(0.3 * 0.2 + 0.5 * 0.1 + 0.2 * 0.25)
    finished = make_entry(num_tokens=8192, last_access_s=40.0, reuse_prob=0.9, is_finished=True)
    assert p.score(finished, 100.0, 300.0, 32768) == pytest.approx(0.06 + 0.5 + 0.05)
    # Normalised terms clamp at 1 and the normalisers floor at 1 (reference repo).
    ancient = make_entry(num_tokens=10**6, last_access_s=0.0, reuse_prob=1.0)
    assert p.score(ancient, 1e6, 300.0, 32768) == pytest.approx(0.3 + 0.2)
    assert p.score(ancient, 1e6, 0.0, 0) == pytest.approx(0.3 + 0.2)
    assert p.reuse_prob(make_entry()) == 0.5  # no prediction -> default_reuse_prob


@given(
    a=st.tuples(st.floats(0, 300), st.floats(0, 1), st.integers(1, 32768)),
    b=st.tuples(st.floats(0, 300), st.floats(0, 1), st.integers(1, 32768)),
)
def test_wa_lru_key_is_rank_equivalent_to_eq1(
    a: tuple[float, float, int], b: tuple[float, float, int]
) -> None:
    p = WaLruEviction()
    now = 400.0
    ea = make_entry(1, last_access_s=now - a[0], reuse_prob=a[1], num_tokens=a[2])
    eb = make_entry(2, last_access_s=now - b[0], reuse_prob=b[1], num_tokens=b[2])
    sa, sb = p.score(ea, now, 300.0, 32768), p.score(eb, now, 300.0, 32768)
    assume(abs(sa - sb) > 1e-9)
    ka, kb = p.key(ea, now, 0.0), p.key(eb, now, 0.0)
    assert (sa > sb) == (ka < kb)  # larger score = evicted first = smaller key


def test_wa_lru_key_does_not_drift_with_the_clock() -> None:
    p = WaLruEviction()
    e = make_entry(last_access_s=10.0, reuse_prob=0.3)
    assert p.key(e, 20.0, 0.5) == p.key(e, 2000.0, 0.5)


@pytest.mark.parametrize(
    ("now", "pressure", "tier"),
    [
        (5.0, 0.5, Tier.PROTECTED),
        (5.0, 0.89, Tier.PROTECTED),
        (5.0, 0.9, Tier.ORDINARY),
        (10.0, 0.5, Tier.ORDINARY),
    ],
    ids=["ttl-running", "ttl-running-high-usage", "above-threshold-high", "expired"],
)
def test_ttl_tier(now: float, pressure: float, tier: Tier) -> None:
    e = make_entry(ttl_deadline_s=10.0, next_use_at_s=12.0)
    assert WaLruEviction().key(e, now, pressure).tier == tier
    assert ReuseTimeEviction().key(e, now, pressure).tier == tier


def test_ttl_protection_can_be_switched_off() -> None:
    e = make_entry(ttl_deadline_s=10.0)
    assert WaLruEviction(WaLruSettings(ttl_protection=False)).key(e, 5.0, 0.0).tier == Tier.ORDINARY
    assert ReuseTimeEviction(ReuseTimeSettings(ttl_protection=False)).key(e, 5.0, 0.0).tier == Tier.ORDINARY


def test_reuse_time_order_dead_then_farthest_next_use_then_protected() -> None:
    entries = [
        make_entry(1, next_use_at_s=50.0),
        make_entry(2, next_use_at_s=500.0),
        make_entry(3, is_finished=True, last_access_s=90.0),
        make_entry(4, is_terminal=True, last_access_s=10.0),
        make_entry(5, next_use_at_s=5000.0, ttl_deadline_s=200.0),
        make_entry(6, workflow_id=None, last_access_s=95.0),  # no prediction
    ]
    assert _order(ReuseTimeEviction(), entries) == [4, 3, 6, 2, 1, 5]
    assert _order(ReuseTimeEviction(ReuseTimeSettings(unpredicted_first=False)), entries) == [
        4,
        3,
        2,
        1,
        6,
        5,
    ]


@given(
    lasts=st.lists(st.floats(0, 1000), min_size=1, max_size=30),
    first=st.booleans(),
)
def test_reuse_time_without_predictions_is_lru(lasts: list[float], first: bool) -> None:
    entries = [make_entry(i, last_access_s=t, depth_tokens=100 + 7 * i) for i, t in enumerate(lasts)]
    policy = ReuseTimeEviction(ReuseTimeSettings(unpredicted_first=first))
    assert _order(policy, entries) == _order(LruEviction(), entries)


def test_reuse_time_ties_deepest_first() -> None:
    parent = make_entry(1, num_tokens=100, depth_tokens=100, next_use_at_s=50.0)
    child = make_entry(2, num_tokens=100, depth_tokens=200, next_use_at_s=50.0)
    assert _order(ReuseTimeEviction(), [parent, child]) == [2, 1]


class _VllmFreeQueue:
    """Reference model of vLLM v1's BlockPool free queue (FreeKVCacheBlockQueue) for cached blocks.

    ``touch``: a request hits a cached block; a block with ref count 0 leaves the free queue.
    ``free``: a request ends; its blocks are released in reverse order (tail first), and each block
    whose ref count drops to 0 is appended to the queue's tail. Eviction pops the head.
    """

    def __init__(self) -> None:
        self.ref: dict[int, int] = {}
        self.queue: list[int] = []

    def touch(self, blocks: list[int]) -> None:
        for b in blocks:
            if self.ref.get(b, 0) == 0 and b in self.queue:
                self.queue.remove(b)
            self.ref[b] = self.ref.get(b, 0) + 1

    def free(self, blocks: list[int]) -> list[int]:
        released = []
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.queue.append(b)
                released.append(b)
        return released


@given(
    script=st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 4), st.booleans()),  # (prefix root, length, finish now?)
        min_size=1,
        max_size=40,
    )
)
def test_vllm_prefix_key_order_equals_vllm_free_queue_order(script: list[tuple[int, int, bool]]) -> None:
    # Blocks form chains root r -> (r, 1) -> (r, 2) ...; block id r * 10 + depth; 16 tokens each.
    pool = _VllmFreeQueue()
    running: list[list[int]] = []
    released_at: dict[int, float] = {}
    t = 0.0
    for root, length, finish in script:
        blocks = [root * 10 + d for d in range(length)]
        pool.touch(blocks)
        running.append(blocks)
        if finish or len(running) > 3:
            t += 1.0
            for b in pool.free(running.pop(0)):
                released_at[b] = t
    while running:
        t += 1.0
        for b in pool.free(running.pop(0)):
            released_at[b] = t
    entries = [
        make_entry(b, num_tokens=16, depth_tokens=16 * (b % 10 + 1), last_access_s=released_at[b])
        for b in pool.queue
    ]
    assert _order(VllmPrefixEviction(), entries) == pool.queue
