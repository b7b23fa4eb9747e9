"""Recency guard: settles disagreements by the next read, follows the better expert, else LRU."""

from __future__ import annotations

import random

import pytest

from saga_sgl.policy import registry
from saga_sgl.policy.eviction.guard import RecencyGuard, RecencyGuardSettings
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, WorkflowId


def test_a_pair_is_settled_by_the_first_read_of_its_victim_or_of_its_spared_entry() -> None:
    g = RecencyGuard()
    assert g.follows_prediction()  # no evidence: the prediction is trusted
    # The guard followed LRU: evicted "old", spared "dead-looking". "old" is read first: LRU was wrong.
    g.on_disagreement("old", 10, "dead-looking", 10, predicted_chose=False)
    g.on_use("old")
    assert g.votes == 1 and g.score == 10.0 and g.follows_prediction()
    g.on_use("dead-looking")  # already settled: no second vote
    assert g.votes == 1
    # Now following the prediction: it evicted "p" and spared "q"; "q" is read while still cached.
    g.on_disagreement("p", 5, "q", 7, predicted_chose=True)
    g.on_use("q")
    assert g.votes == 2 and g.score > 10.0
    # Belady's pairwise rule: the one read later should have gone. The victim is read first here.
    g.on_disagreement("p2", 5, "q2", 7, predicted_chose=True)
    before = g.score
    g.on_use("p2")
    assert g.votes == 3 and g.score == pytest.approx(before * (1 - 1 / 256) - 5)
    g.on_use("q2")  # already settled
    assert g.votes == 3


def test_votes_decay_and_wrong_predictions_send_the_guard_back_to_lru() -> None:
    g = RecencyGuard(RecencyGuardSettings(window=4.0))
    for i in range(20):
        g.on_disagreement(f"r{i}", 1, f"p{i}", 1, predicted_chose=False)
        g.on_use(f"r{i}")  # LRU keeps evicting what is read next: the prediction is better
    assert g.follows_prediction()
    for i in range(3):
        g.on_disagreement(f"x{i}", 1, f"y{i}", 1, predicted_chose=True)
        g.on_use(f"x{i}")  # the predicted victims come back: three wrong calls outweigh old evidence
    assert not g.follows_prediction()


def test_with_confidence_lru_takes_over_only_on_a_lead_beyond_noise() -> None:
    """z = 2: a lead a fair coin would give (one wrong call, or alternating calls) keeps the
    prediction; a steady run of wrong calls still hands the choice to LRU."""
    bare, sure = RecencyGuard(), RecencyGuard(RecencyGuardSettings(confidence=2.0))
    for g in (bare, sure):
        g.on_disagreement("x", 100, "y", 100, predicted_chose=True)
        g.on_use("x")  # one wrong call
    assert not bare.follows_prediction()  # the bare sign flips on one vote
    assert sure.follows_prediction()  # |score| = 1 sd: noise
    for i in range(6):  # alternate right and wrong: still noise
        sure.on_disagreement(f"p{i}", 100, f"q{i}", 100, predicted_chose=True)
        sure.on_use(f"q{i}" if i % 2 else f"p{i}")
    assert sure.follows_prediction()
    for i in range(12):  # twelve wrong calls in a row: LRU is better beyond doubt
        sure.on_disagreement(f"w{i}", 100, f"k{i}", 100, predicted_chose=True)
        sure.on_use(f"w{i}")
    assert not sure.follows_prediction()
    assert registry.create_eviction("saga").recency_guard.confidence == 2.0  # type: ignore[attr-defined]


def test_pending_pairs_are_bounded() -> None:
    g = RecencyGuard(RecencyGuardSettings(max_pending=8))
    for i in range(100):
        g.on_disagreement(i, 1, -1, 1, predicted_chose=False)
    assert len(g._pairs) == 8 and len(g._by_victim) == 8 and len(g._by_spared[-1]) == 8
    g.on_use(-1)  # the spared entry read: every pending pair votes once, then all are gone
    assert g.votes == 8 and not g._pairs and not g._by_spared


def _views(rng: random.Random, n: int, now: float, hinted: bool) -> list[CacheEntryView]:
    return [
        CacheEntryView(
            entry_id=i,
            num_tokens=rng.randint(1, 512),
            depth_tokens=rng.randint(512, 20000),
            last_access_s=now - rng.uniform(0, 600),
            workflow_id=WorkflowId(f"w{i % 5}") if hinted else None,
            reuse_prob=rng.random() if hinted else None,
            next_use_at_s=now + rng.uniform(0, 120) if hinted else None,
        )
        for i in range(n)
    ]


def _stream(index: VictimIndex, rng: random.Random, views: list[CacheEntryView], rounds: int) -> list[int]:
    """Alternate evictions and reads (a read of a victim re-adds it, as a re-inserted block)."""
    now = 1000.0
    for v in views:
        index.add(v, now, 0.0)
    victims = []
    evicted: dict[int, CacheEntryView] = {}
    for _ in range(rounds):
        now += 1.0
        v = index.pop(now, 0.0)
        assert v is not None
        victims.append(v.entry_id)
        evicted[v.entry_id] = v
        back = rng.choice(sorted(evicted))
        index.note_use(back)
        index.add(evicted.pop(back), now, 0.0)
    return victims


def test_without_information_the_guarded_index_is_lru_to_the_victim() -> None:
    views = _views(random.Random(1), 300, 1000.0, hinted=False)
    saga = VictimIndex(registry.create_eviction("saga"))
    assert saga.guard is not None
    lru = VictimIndex(LruEviction())
    assert _stream(saga, random.Random(2), views, 400) == _stream(lru, random.Random(2), views, 400)
    assert saga.guard.chose_prediction == saga.guard.chose_lru == 0  # never a disagreement


def _learn(trust_prediction: bool) -> VictimIndex:
    """Entries 0..49 predicted dead, 50..99 predicted due; recency says the opposite (the dead are
    fresh). The reads that follow are the predicted ones (``trust_prediction``) or LRU's bet."""
    now = 1000.0
    index = VictimIndex(registry.create_eviction("saga"))
    for i in range(100):
        dead = i < 50
        index.add(
            CacheEntryView(
                entry_id=i,
                num_tokens=16,
                depth_tokens=16,
                last_access_s=now - (1.0 if dead else 100.0) - i * 0.01,
                workflow_id=WorkflowId(f"w{i}"),
                reuse_prob=0.01 if dead else 0.99,
                next_use_at_s=now + (3000.0 if dead else 2.0),
            ),
            now,
            0.0,
        )
    for _ in range(10):
        victim = index.pop(now, 0.0)
        assert victim is not None
        # Read what the prediction keeps (entries 50..99) or what it would evict (0..49).
        index.note_use(victim.entry_id if (victim.entry_id >= 50) == trust_prediction else -1)
        for i in range(50, 100) if trust_prediction else range(50):
            index.note_use(i)
    return index


def test_the_guard_follows_the_prediction_when_it_is_right_and_lru_when_it_is_not() -> None:
    right = _learn(trust_prediction=True)
    assert right.guard is not None and right.guard.follows_prediction()
    v = right.peek(1000.0, 0.0)
    assert v is not None and v.entry_id < 50  # a predicted-dead entry goes first
    wrong = _learn(trust_prediction=False)
    assert wrong.guard is not None and not wrong.guard.follows_prediction()
    v = wrong.peek(1000.0, 0.0)
    assert v is not None and v.entry_id >= 50  # LRU's victim: the least recently used


def test_on_lru_the_guard_keeps_the_tiers_a_due_tool_outlives_an_older_idle_one_until_pressure() -> None:
    """The guard arbitrates the order inside a tier: even when it follows LRU, a finished workflow's
    KV goes first and a context whose tool is due back (live TTL) last, until sustained pressure
    switches protection off and the order is LRU's."""
    now = 1000.0
    tool_ctx = CacheEntryView(
        entry_id=1,
        num_tokens=64,
        depth_tokens=64,
        last_access_s=now - 50.0,
        workflow_id=WorkflowId("agent"),
        reuse_prob=0.95,
        next_use_at_s=now + 1.0,
        ttl_deadline_s=now + 30.0,
    )
    older_idle = CacheEntryView(entry_id=2, num_tokens=64, depth_tokens=64, last_access_s=now - 40.0)
    fresh_idle = CacheEntryView(entry_id=3, num_tokens=64, depth_tokens=64, last_access_s=now - 1.0)
    finished = CacheEntryView(
        entry_id=4,
        num_tokens=64,
        depth_tokens=64,
        last_access_s=now,
        workflow_id=WorkflowId("done"),
        is_finished=True,
    )

    def order(pressure: float) -> list[int]:
        index = VictimIndex(registry.create_eviction("saga"))
        assert index.guard is not None
        for i in range(12):  # the prediction chose wrong again and again: the guard follows LRU
            index.guard.on_disagreement(f"x{i}", 1, f"y{i}", 1, predicted_chose=True)
            index.guard.on_use(f"x{i}")
        assert not index.guard.follows_prediction()
        for v in (tool_ctx, older_idle, fresh_idle, finished):
            index.add(v, now, pressure)
        out = []
        while (v := index.pop(now, pressure)) is not None:
            out.append(v.entry_id)
        return out

    assert order(0.5) == [4, 2, 3, 1]
    assert order(0.95) == [4, 1, 2, 3]  # protection off: LRU inside the ordinary tier
