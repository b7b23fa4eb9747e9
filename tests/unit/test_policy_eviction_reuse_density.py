"""reuse_density: reduces to LRU without information, keeps a tool-due context, time-invariant keys."""

from __future__ import annotations

import math
import random

from saga_sgl.aeg.gaps import GapModel
from saga_sgl.aeg.predict import ReusePredictor
from saga_sgl.policy import registry
from saga_sgl.policy.decisions import Tier
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.eviction.reuse_density import ReuseDensityEviction, ReuseDensitySettings
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, WorkflowId


def _key_only() -> ReuseDensityEviction:
    """The key's own order (no recency guard: tests/unit/test_policy_eviction_guard.py covers it)."""
    return ReuseDensityEviction(ReuseDensitySettings(recency_guard=False))


def _drain(policy: object, entries: list[CacheEntryView], now_s: float) -> list[int]:
    index = VictimIndex(policy)  # type: ignore[arg-type]
    for e in entries:
        index.add(e, now_s, 0.0)
    out = []
    while (v := index.pop(now_s, 0.0)) is not None:
        out.append(v.entry_id)
    return out


def test_without_information_the_order_is_lrus() -> None:
    rng = random.Random(3)
    entries = [
        CacheEntryView(
            entry_id=i,
            num_tokens=rng.randint(1, 4096),
            depth_tokens=rng.randint(4096, 40000),
            last_access_s=rng.uniform(0, 1000),
            workflow_id=WorkflowId(f"w{i % 7}") if i % 2 else None,
        )
        for i in range(500)
    ]
    lru = _drain(LruEviction(), entries, 1000.0)
    assert _drain(_key_only(), entries, 1000.0) == lru
    assert _drain(ReuseDensityEviction(), entries, 1000.0) == lru  # guarded (the default) too


def test_saga_names_reuse_density_in_the_registry() -> None:
    assert registry.DEFAULT_EVICTION == "reuse_density"
    assert isinstance(registry.create_eviction("saga"), ReuseDensityEviction)
    assert registry.create_eviction("saga", {"decay_s": 30.0}).settings.decay_s == 30.0  # type: ignore[attr-defined]


def test_a_context_whose_tool_is_due_outlives_an_older_and_a_fresher_idle_one() -> None:
    """The tool-due view comes from the real predictor (cold start: the code tool's Table 1 prior)."""
    predictor = ReusePredictor(GapModel())
    now = 1000.0
    due = predictor.predict(idle_since_s=now - 0.1, now_s=now, tool="code", residence_s=60.0)
    assert due.reuse_prob > 0.9 and due.next_use_at_s - now < 1.0
    tool_ctx = CacheEntryView(
        entry_id=1,
        num_tokens=512,
        depth_tokens=4096,
        last_access_s=now - 0.1,
        workflow_id=WorkflowId("agent"),
        reuse_prob=due.reuse_prob,
        next_use_at_s=due.next_use_at_s,
    )
    older_idle = CacheEntryView(entry_id=2, num_tokens=512, depth_tokens=4096, last_access_s=now - 30.0)
    fresher_idle = CacheEntryView(entry_id=3, num_tokens=512, depth_tokens=4096, last_access_s=now)
    order = _drain(_key_only(), [tool_ctx, older_idle, fresher_idle], now)
    assert order == [2, 3, 1]
    # LRU would evict the tool context before the fresher idle one.
    assert _drain(LruEviction(), [tool_ctx, older_idle, fresher_idle], now) == [2, 1, 3]


def test_unlikely_reuse_goes_before_recent_and_dead_before_all() -> None:
    now = 500.0
    hopeless = CacheEntryView(
        entry_id=1, num_tokens=8, depth_tokens=8, last_access_s=now, reuse_prob=0.01, next_use_at_s=now + 60
    )
    plain = CacheEntryView(entry_id=2, num_tokens=8, depth_tokens=8, last_access_s=now - 20.0)
    dead = CacheEntryView(entry_id=3, num_tokens=8, depth_tokens=8, last_access_s=now, is_finished=True)
    never = CacheEntryView(
        entry_id=4, num_tokens=8, depth_tokens=8, last_access_s=now, reuse_prob=0.5, next_use_at_s=math.inf
    )
    assert _drain(_key_only(), [hopeless, plain, dead, never], now) == [3, 4, 1, 2]


def test_an_unlikely_reuse_costs_its_whole_lifetime_so_probability_outweighs_a_short_wait() -> None:
    """LHD's lifetime P*W + (1-P)*H: an entry 80% likely never read costs ~H of space-time even if its
    expected wait given a read is short, so it goes before a likely read 30 s away (P / W alone kept
    it: 0.2 / 3 s > 0.9 / 31 s)."""
    now = 100.0
    unlikely = CacheEntryView(
        entry_id=1, num_tokens=64, depth_tokens=64, last_access_s=now, reuse_prob=0.2, next_use_at_s=now + 2.0
    )
    likely = CacheEntryView(
        entry_id=2,
        num_tokens=64,
        depth_tokens=64,
        last_access_s=now,
        reuse_prob=0.9,
        next_use_at_s=now + 30.0,
    )
    assert _drain(_key_only(), [unlikely, likely], now) == [1, 2]
    # The same P and W with H as short as the wait: the lifetime is W again and the short wait wins.
    short_h = ReuseDensityEviction(ReuseDensitySettings(recency_guard=False, miss_lifetime_s=1.0))
    assert _drain(short_h, [unlikely, likely], now) == [2, 1]


def test_deeper_tokens_cost_more_to_recompute() -> None:
    policy = ReuseDensityEviction()
    shallow = CacheEntryView(
        entry_id=1, num_tokens=512, depth_tokens=512, last_access_s=0.0, reuse_prob=0.5, next_use_at_s=30.0
    )
    deep = CacheEntryView(
        entry_id=2, num_tokens=512, depth_tokens=40000, last_access_s=0.0, reuse_prob=0.5, next_use_at_s=30.0
    )
    assert policy.key(deep, 0.0, 0.0) > policy.key(shallow, 0.0, 0.0)
    flat = ReuseDensityEviction(ReuseDensitySettings(attention_tokens=1e30))
    assert flat.key(deep, 0.0, 0.0).primary == flat.key(shallow, 0.0, 0.0).primary
    tokens_only = ReuseDensityEviction(ReuseDensitySettings(cost_weight=0.0))
    assert tokens_only.key(deep, 0.0, 0.0).primary == tokens_only.key(shallow, 0.0, 0.0).primary
    # A smaller weight keeps the order but narrows the gap (in seconds of recency).
    half = ReuseDensityEviction(ReuseDensitySettings(cost_weight=0.5))
    gap_half = half.key(deep, 0.0, 0.0).primary - half.key(shallow, 0.0, 0.0).primary
    full = ReuseDensityEviction(ReuseDensitySettings(cost_weight=1.0))
    gap_full = full.key(deep, 0.0, 0.0).primary - full.key(shallow, 0.0, 0.0).primary
    assert 0.0 < gap_half < gap_full


def test_keys_do_not_drift_with_the_clock_and_a_live_ttl_protects_below_threshold_high() -> None:
    policy = ReuseDensityEviction()
    e = CacheEntryView(
        entry_id=1,
        num_tokens=10,
        depth_tokens=10,
        last_access_s=5.0,
        reuse_prob=0.7,
        next_use_at_s=9.0,
        ttl_deadline_s=20.0,
    )
    assert policy.key(e, 10.0, 0.1).tier == Tier.PROTECTED
    assert policy.key(e, 10.0, 0.95).tier == Tier.ORDINARY  # sustained pressure: TTLs ignored
    assert policy.key(e, 25.0, 0.1).tier == Tier.ORDINARY  # expired
    assert policy.key(e, 25.0, 0.1).primary == policy.key(e, 1e6, 0.1).primary


def test_the_wait_runs_from_the_prediction_so_idle_time_already_spent_is_sunk() -> None:
    """Two workflows both due in 1 s; one has been idle 60 s (re-predicted at 60 s of age, or its next
    call is already waiting). Anchored at its last use it would look 60x less dense and go first; LHD
    ranks by the remaining lifetime, so with ``predicted_at_s`` it is as dense as the fresh one and an
    entry due later goes before both. Without ``predicted_at_s`` the key is unchanged (anchored at the
    last use), and a ``predicted_at_s`` before the last use is ignored."""
    now = 1000.0
    kw = {"num_tokens": 64, "depth_tokens": 64, "reuse_prob": 1.0}
    stale = CacheEntryView(entry_id=1, last_access_s=now - 60.0, next_use_at_s=now + 1.0, **kw)  # type: ignore[arg-type]
    rekeyed = CacheEntryView(
        entry_id=1,
        last_access_s=now - 60.0,
        next_use_at_s=now + 1.0,
        predicted_at_s=now,
        **kw,  # type: ignore[arg-type]
    )
    fresh = CacheEntryView(entry_id=2, last_access_s=now, next_use_at_s=now + 1.0, **kw)  # type: ignore[arg-type]
    later = CacheEntryView(entry_id=3, last_access_s=now, next_use_at_s=now + 20.0, **kw)  # type: ignore[arg-type]
    policy = _key_only()
    assert _drain(policy, [stale, fresh, later], now) == [1, 3, 2]
    assert _drain(policy, [rekeyed, fresh, later], now) == [3, 1, 2]
    assert policy.primary(rekeyed) == policy.primary(fresh)
    before_last = CacheEntryView(
        entry_id=1,
        last_access_s=now,
        next_use_at_s=now + 1.0,
        predicted_at_s=now - 5.0,
        **kw,  # type: ignore[arg-type]
    )
    assert policy.primary(before_last) == policy.primary(fresh)
    # An entry with no prediction keeps LRU's key whatever predicted_at_s says.
    plain = CacheEntryView(
        entry_id=4, num_tokens=8, depth_tokens=8, last_access_s=now - 9.0, predicted_at_s=now
    )
    assert policy.key(plain, now, 0.0).primary == now - 9.0
