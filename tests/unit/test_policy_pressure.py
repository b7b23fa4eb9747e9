"""One pressure definition: held and protected KV against their budgets; TTLs capped at residence."""

from __future__ import annotations

import math

import pytest

from saga_sgl.aeg.tool_latency import ToolLatencyModel
from saga_sgl.policy.eviction.reuse_density import ReuseDensityEviction
from saga_sgl.policy.eviction.ttl import ToolAwareTtl
from saga_sgl.policy.pressure import ProtectedTokens, ResidenceTracker, kv_pressure
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, ToolType, WorkflowId


def test_definition() -> None:
    assert kv_pressure(1000, 0, 0) == 0.0
    assert kv_pressure(1000, 500, 0) == 0.5
    assert kv_pressure(1000, 0, 25) == 0.5  # half of the 5 % protection budget
    assert kv_pressure(1000, 0, 125, max_protected_frac=0.25) == 0.5
    assert kv_pressure(1000, 100, 250) == 1.0
    assert kv_pressure(0, 10, 10) == 0.0
    with pytest.raises(ValueError):
        kv_pressure(1000, -1, 0)


def test_protection_switches_off_under_sustained_pressure() -> None:
    """A pool full of evictable cache (held 0) where TTLs hold more than the budget: TTLs stop protecting."""
    capacity, now = 10_000, 100.0
    policy = ReuseDensityEviction()
    protected = ProtectedTokens()
    index = VictimIndex(policy)

    def add(i: int, tokens: int, last_s: float, ttl: float | None) -> None:
        e = CacheEntryView(
            entry_id=i, num_tokens=tokens, depth_tokens=tokens, last_access_s=last_s, ttl_deadline_s=ttl
        )
        protected.track(i, tokens, ttl, now)
        index.add(e, now, kv_pressure(capacity, 0, protected.tokens(now)))

    add(1, 200, 10.0, now + 50)  # oldest, protected by a live TTL
    add(2, 3000, 50.0, None)
    level = kv_pressure(capacity, 0, protected.tokens(now))
    assert level == pytest.approx(0.4) and policy.protects(level)
    assert index.peek(now, level).entry_id == 2  # type: ignore[union-attr]
    # More tool calls in flight: 500 protected tokens, the whole budget (5 % of the pool).
    add(3, 300, 60.0, now + 50)
    level = kv_pressure(capacity, 0, protected.tokens(now))
    assert level == 1.0 and not policy.protects(level)
    assert index.peek(now, level).entry_id == 1  # type: ignore[union-attr]
    # Deadlines pass: nothing is protected any more.
    assert protected.tokens(now + 51) == 0


def test_residence_time_is_cached_tokens_over_the_eviction_rate_and_caps_the_ttl() -> None:
    r = ResidenceTracker()
    assert math.isinf(r.residence_s(1000, 0.0))
    for t in range(0, 600):
        r.on_evict(float(t), 100)  # 100 tokens/s for 10 minutes
    assert r.residence_s(6000, 600.0) == pytest.approx(60.0, rel=0.05)
    ttl = ToolAwareTtl(ToolLatencyModel())
    web = ToolType("web")
    assert ttl.ttl_s(web, 0.0) == pytest.approx(4.5)
    assert ttl.ttl_s(web, 0.0, residence_s=2.0) == 2.0


def test_a_protected_leaf_counts_its_whole_path_so_a_few_agent_contexts_fill_the_budget() -> None:
    """A protected leaf keeps its ancestors (they cannot be evicted before it): the protected term
    counts ``depth_tokens``. Counting the leaf's own tokens, three protected 20K-token agent contexts
    ending in 200-token segments looked like 600 tokens, 12% of a 100K pool's 5% budget, and
    protection never switched off."""
    capacity, now = 100_000, 10.0
    index = VictimIndex(ReuseDensityEviction())
    for i in range(3):
        leaf = CacheEntryView(
            entry_id=i,
            num_tokens=200,
            depth_tokens=20_000,
            last_access_s=now,
            workflow_id=WorkflowId(f"w{i}"),
            reuse_prob=0.9,
            next_use_at_s=now + 2.0,
            ttl_deadline_s=now + 30.0,
        )
        index.add(leaf, now, 0.0)
    assert index.protected_tokens == 60_000
    assert kv_pressure(capacity, 0, index.protected_tokens) == 1.0
    assert not ReuseDensityEviction().protects(kv_pressure(capacity, 0, index.protected_tokens))
