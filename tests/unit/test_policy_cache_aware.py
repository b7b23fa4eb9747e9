"""cache_aware baseline: sglang-router rules and defaults, and its approximate prefix tree."""

from __future__ import annotations

import pytest
from factories import make_call, make_worker

from saga_sgl.policy.decisions import PlacementReason
from saga_sgl.policy.placement.cache_aware import CacheAwarePlacement, CacheAwareSettings
from saga_sgl.policy.placement.prefix_index import ApproxPrefixIndex
from saga_sgl.policy.views import WorkerId

A, B = WorkerId("a"), WorkerId("b")


def _text(s: str) -> tuple[int, ...]:
    return tuple(map(ord, s))


def test_defaults_are_sglang_routers() -> None:
    s = CacheAwareSettings()
    assert (s.cache_threshold, s.balance_abs_threshold, s.balance_rel_threshold) == (0.3, 64, 1.5)
    assert (s.eviction_interval_s, s.max_tree_size) == (60.0, 2**26)


@pytest.mark.parametrize(
    ("load_a", "load_b", "imbalanced"),
    [
        (100, 10, True),  # diff 90 > 64 and 100 > 15
        (100, 36, False),  # diff 64 is not > 64
        (200, 135, False),  # diff 65 > 64 but 200 <= 1.5 * 135 = 202.5
        (200, 133, True),  # 200 > 199.5
        (65, 0, True),  # 65 > 0
    ],
)
def test_imbalance_rule_is_an_and_of_abs_and_rel(load_a: int, load_b: int, imbalanced: bool) -> None:
    ca = CacheAwarePlacement()
    # Warm b's tree with the prompt so a balanced system would follow the cache to b.
    ca.index.insert(_text("hello world"), B)
    workers = [make_worker("a", inflight=load_a), make_worker("b", inflight=load_b)]
    p = ca.place(make_call(prefix=_text("hello world")), workers, 0.0)
    if imbalanced:
        least = "a" if load_a < load_b else "b"
        assert (p.worker_id, p.reason) == (least, PlacementReason.CACHE_IMBALANCED)
    else:
        assert (p.worker_id, p.reason) == ("b", PlacementReason.CACHE_MATCH)


def test_match_rate_threshold_then_fewest_in_flight() -> None:
    ca = CacheAwarePlacement()
    ca.index.insert(_text("system prompt: you are an agent"), A)
    ca.index.insert(_text("xy"), B)
    workers = [make_worker("a", inflight=3), make_worker("b", inflight=5)]
    # 31 of 40 characters match on a: rate 0.775 > 0.3 -> a.
    p = ca.place(make_call(prefix=_text("system prompt: you are an agent. task 1")), workers, 0.0)
    assert (p.worker_id, p.reason) == ("a", PlacementReason.CACHE_MATCH)
    # Nothing matches: the worker with the fewest in-flight requests (a, 3 < 5), not the smallest
    # tree (b); the prompt is inserted there.
    p = ca.place(make_call(prefix=_text("completely different")), workers, 0.0)
    assert (p.worker_id, p.reason) == ("a", PlacementReason.CACHE_MIN_LOAD)
    assert ca.index.match(_text("completely different"))[A] == len("completely different")
    # Exactly 0.3 is not above the threshold; equal loads go to the first worker in order.
    ca2 = CacheAwarePlacement()
    ca2.index.insert(_text("abc"), A)
    p = ca2.place(make_call(prefix=_text("abcdefghij")), [make_worker("b"), make_worker("a")], 0.0)
    assert p.reason == PlacementReason.CACHE_MIN_LOAD and p.worker_id == "b"


def test_distinct_prompts_in_a_row_all_go_to_the_first_worker() -> None:
    # Measured on the sglang-router 0.3.2 binary: six distinct prompts sent one after another (each
    # finished before the next, so in-flight loads are all 0) all went to worker 1.
    ca = CacheAwarePlacement()
    workers = [make_worker("a", inflight=0), make_worker("b", inflight=0)]
    chosen = [ca.place(make_call(prefix=_text(f"prompt number {i} " * 3)), workers, 0.0) for i in range(6)]
    assert [p.worker_id for p in chosen] == ["a"] * 6
    assert {p.reason for p in chosen} == {PlacementReason.CACHE_MIN_LOAD}


def test_imbalance_counts_unhealthy_workers_but_never_picks_them() -> None:
    ca = CacheAwarePlacement()
    workers = [
        make_worker("a", inflight=0, healthy=False),
        make_worker("b", inflight=100),
        make_worker("c", inflight=90),
    ]
    p = ca.place(make_call(prefix=_text("q")), workers, 0.0)
    # max 100 - min 0 (the unhealthy a) > 64 and 100 > 0: imbalanced; c is the least-loaded healthy one.
    assert (p.worker_id, p.reason) == ("c", PlacementReason.CACHE_IMBALANCED)


def test_load_falls_back_to_running_plus_waiting() -> None:
    ca = CacheAwarePlacement()
    workers = [make_worker("a", running=100, waiting=5), make_worker("b", running=10)]
    p = ca.place(make_call(prefix=_text("q")), workers, 0.0)
    assert (p.worker_id, p.reason) == ("b", PlacementReason.CACHE_IMBALANCED)


def test_tree_does_not_see_worker_evictions_and_trims_on_interval() -> None:
    ca = CacheAwarePlacement(CacheAwareSettings(max_tree_size=10, eviction_interval_s=60.0))
    workers = [make_worker("a"), make_worker("b")]
    ca.place(make_call(prefix=_text("aaaaaaaaaaaaaaaaaaaa")), workers, 0.0)
    assert ca.index.tenant_size(A) + ca.index.tenant_size(B) == 20
    # Equal loads: both prompts go to a (the first worker); before the interval nothing is trimmed.
    ca.place(make_call(prefix=_text("bbbbbbbbbbbbbbbbbbbb")), workers, 30.0)
    assert (ca.index.tenant_size(A), ca.index.tenant_size(B)) == (40, 0)
    ca.place(make_call(prefix=_text("c")), workers, 61.0)
    assert ca.index.tenant_size(A) <= 11 and ca.index.tenant_size(B) <= 11


def test_prefix_index_split_match_trim() -> None:
    idx = ApproxPrefixIndex()
    idx.insert((1, 2, 3, 4), A)
    idx.insert((1, 2, 9), B)
    assert idx.match((1, 2, 3, 4, 5)) == {A: 4, B: 2}
    assert idx.match((1, 2, 9, 9)) == {A: 2, B: 3}
    assert idx.match((7,)) == {}
    assert idx.tenant_size(A) == 4 and idx.tenant_size(B) == 3
    idx.insert((1, 2, 3, 4), B)
    assert idx.tenant_size(B) == 5
    idx.insert((5, 5, 5), A)  # most recent for A
    idx.trim(3)
    assert idx.tenant_size(A) == 3
    assert idx.match((5, 5, 5)) == {A: 3}  # the LRU branch (1,2,3,4) went first
    idx.remove_tenant(B)
    assert idx.tenant_size(B) == 0
    assert idx.match((1, 2, 9)) == {}
