"""Placement: load(w), Eq. 7, workflow-atomic admission, round_robin, consistent_hash."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Sequence

import pytest
from factories import make_call, make_worker
from hypothesis import given
from hypothesis import strategies as st

from saga_sgl.errors import InvalidSettings, NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.admission import AdmissionWeights, admission_scores
from saga_sgl.policy.placement.completion_cost import (
    completion_cost_s,
    kv_overflow_tokens,
    kv_pressure_s,
    response_s,
)
from saga_sgl.policy.placement.consistent_hash import (
    ConsistentHashPlacement,
    ConsistentHashSettings,
    stable_hash64,
)
from saga_sgl.policy.placement.load import LoadSettings, worker_load
from saga_sgl.policy.placement.round_robin import RoundRobinPlacement
from saga_sgl.policy.placement.saga import SagaPlacement, SagaPlacementSettings
from saga_sgl.policy.views import CallView, WorkerId, WorkerView

WEIGHTED = SagaPlacementSettings(new_workflow="admission")
"""The earlier weighted admission score (min-max load, footprint, locality), now an ablation."""


@pytest.mark.parametrize(
    ("running", "waiting", "used", "load"),
    [
        (0, 0, 0, 0.0),
        (50, 0, 50_000, 0.5),
        (100, 0, 100_000, 1.0),
        (80, 40, 0, 0.5),  # request load saturates at 1 (120 > 100)
        (20, 20, 60_000, 0.5 * 0.4 + 0.5 * 0.6),
    ],
)
def test_load_function(running: int, waiting: int, used: int, load: float) -> None:
    w = make_worker(running=running, waiting=waiting, kv_used_tokens=used)
    assert worker_load(w, LoadSettings()) == pytest.approx(load)


def test_load_settings_must_sum_to_one() -> None:
    with pytest.raises(InvalidSettings, match="request_weight"):
        LoadSettings(request_weight=0.5, token_weight=0.6)


def _cluster(load_a: int, load_b: int, *, healthy_a: bool = True) -> list[WorkerView]:
    # load = percentage / 100 with running and KV usage both at the same percentage.
    return [
        make_worker("a", running=load_a, kv_used_tokens=load_a * 1000, healthy=healthy_a),
        make_worker("b", running=load_b, kv_used_tokens=load_b * 1000),
    ]


@pytest.mark.parametrize(
    ("load_a", "cached", "healthy", "affinity", "worker", "reason"),
    [
        (50, True, True, "a", "a", PlacementReason.AFFINITY),
        (79, True, True, "a", "a", PlacementReason.AFFINITY),
        (80, True, True, "a", "b", PlacementReason.LEAST_LOADED),  # load(w*) < theta is strict
        (90, True, True, "a", "b", PlacementReason.LEAST_LOADED),
        (50, False, True, "a", "b", PlacementReason.LEAST_LOADED),  # not cached(w*, s)
        (10, True, False, "a", "b", PlacementReason.LEAST_LOADED),  # w* unhealthy
        (10, True, True, "gone", "a", PlacementReason.LEAST_LOADED),  # w* left the cluster
    ],
    ids=["below-theta", "just-below", "at-theta", "above-theta", "kv-evicted", "unhealthy", "missing"],
)
def test_eq7(
    load_a: int, cached: bool, healthy: bool, affinity: str, worker: str, reason: PlacementReason
) -> None:
    workers = _cluster(load_a, 30 if load_a != 10 else 40, healthy_a=healthy)
    call = make_call(affinity_worker_id=affinity, affinity_cached=cached)
    p = SagaPlacement().place(call, workers, 0.0)
    assert (p.worker_id, p.reason) == (worker, reason)


def test_eq7_theta_is_a_setting() -> None:
    workers = _cluster(85, 30)
    call = make_call(affinity_worker_id="a", affinity_cached=True)
    assert SagaPlacement(SagaPlacementSettings(theta=0.9)).place(call, workers, 0.0).worker_id == "a"


def test_admission_prefers_load_footprint_and_locality() -> None:
    busy = make_worker("busy", running=60, kv_used_tokens=60_000)
    idle = make_worker("idle")
    assert SagaPlacement(WEIGHTED).place(make_call(), [busy, idle], 0.0).worker_id == "idle"
    # Same load; only one has room for the predicted footprint.
    tight = make_worker("tight", running=10, kv_used_tokens=90_000, kv_capacity_tokens=100_000)
    roomy = make_worker("roomy", running=10, kv_used_tokens=45_000, kv_capacity_tokens=50_000)
    roomy2 = make_worker("roomy2", running=10, kv_used_tokens=10_000, kv_capacity_tokens=20_000)
    call = make_call(predicted_kv_tokens=10_000)
    p = SagaPlacement(WEIGHTED).place(call, [tight, roomy, roomy2], 0.0)
    assert p.worker_id == "roomy2" and p.reason == PlacementReason.ADMISSION
    # Same load and room; the shared prefix is cached on one of them.
    w1, w2 = make_worker("w1", running=10), make_worker("w2", running=10)
    call = make_call(prompt_tokens=1000, prefix_match_tokens={"w2": 800})
    assert SagaPlacement(WEIGHTED).place(call, [w1, w2], 0.0).worker_id == "w2"
    scores = admission_scores(call, [w1, w2], AdmissionWeights(), LoadSettings())
    assert scores["w2"] - scores["w1"] == pytest.approx(0.2 * 0.8)


def test_admission_skips_workers_above_theta_unless_all_are() -> None:
    hot_but_local = make_worker("hot", running=85, kv_used_tokens=85_000)
    cool = make_worker("cool", running=70, kv_used_tokens=70_000)
    call = make_call(prompt_tokens=100, prefix_match_tokens={"hot": 100})
    assert SagaPlacement(WEIGHTED).place(call, [hot_but_local, cool], 0.0).worker_id == "cool"
    assert SagaPlacement(WEIGHTED).place(call, [hot_but_local], 0.0).worker_id == "hot"


def test_ties_broken_by_injected_rng_not_input_order() -> None:
    workers = [make_worker(f"w{i}") for i in range(8)]
    picks = {
        SagaPlacement(WEIGHTED, rng=random.Random(seed)).place(make_call(), workers, 0.0).worker_id
        for seed in range(40)
    }
    assert len(picks) > 1
    reversed_pick = (
        SagaPlacement(WEIGHTED, rng=random.Random(5)).place(make_call(), workers[::-1], 0.0).worker_id
    )
    assert (
        reversed_pick
        == SagaPlacement(WEIGHTED, rng=random.Random(5)).place(make_call(), workers, 0.0).worker_id
    )


@given(
    seed=st.integers(0, 2**32),
    loads=st.lists(st.integers(0, 100), min_size=1, max_size=12),
    affinity=st.one_of(st.none(), st.integers(0, 11)),
)
def test_same_inputs_and_seed_same_decision(seed: int, loads: list[int], affinity: int | None) -> None:
    workers = [make_worker(f"w{i}", running=x, kv_used_tokens=x * 1000) for i, x in enumerate(loads)]
    call = make_call(affinity_worker_id=None if affinity is None else f"w{affinity}", affinity_cached=True)
    a = [SagaPlacement(rng=random.Random(seed)).place(call, workers, 0.0) for _ in range(2)]
    assert a[0] == a[1]


def test_no_healthy_worker_raises() -> None:
    down = [make_worker("a", healthy=False)]
    for policy in (SagaPlacement(), RoundRobinPlacement(), ConsistentHashPlacement()):
        with pytest.raises(NoEligibleWorker):
            policy.place(make_call(), down, 0.0)
    with pytest.raises(NoEligibleWorker):
        SagaPlacement().place(make_call(affinity_worker_id="a", affinity_cached=True), down, 0.0)


def test_round_robin_cycles_and_skips_unhealthy() -> None:
    rr = RoundRobinPlacement()
    ws = [make_worker("a"), make_worker("b", healthy=False), make_worker("c")]
    got = [rr.place(make_call(), ws, 0.0).worker_id for _ in range(5)]
    assert got == ["a", "c", "a", "c", "a"]


def test_stable_hash_is_sha256_not_python_hash() -> None:
    expected = int.from_bytes(hashlib.sha256(b"wf-42").digest()[:8], "big")
    assert stable_hash64("wf-42") == expected


def test_consistent_hash_affinity_and_minimal_remapping() -> None:
    workers = [make_worker(f"w{i}") for i in range(5)]
    ch = ConsistentHashPlacement()
    calls = [make_call(f"wf{i}") for i in range(300)]
    before = {c.workflow_id: ch.place(c, workers, 0.0).worker_id for c in calls}
    # Same key -> same worker, independent of worker order and of a fresh instance.
    again = ConsistentHashPlacement()
    assert all(again.place(c, workers[::-1], 0.0).worker_id == before[c.workflow_id] for c in calls)
    assert len(set(before.values())) == 5
    # Remove w2: only w2's workflows move.
    after = {c.workflow_id: ch.place(c, workers[:2] + workers[3:], 0.0).worker_id for c in calls}
    moved = {wf for wf in before if before[wf] != after[wf]}
    assert moved == {wf for wf, w in before.items() if w == "w2"}


def test_consistent_hash_failover_when_owner_unhealthy() -> None:
    workers = [make_worker(f"w{i}") for i in range(3)]
    ch = ConsistentHashPlacement(ConsistentHashSettings(virtual_nodes=8))
    call = make_call("wf7")
    owner = ch.place(call, workers, 0.0)
    assert owner.reason == PlacementReason.CONSISTENT_HASH
    degraded = [make_worker(w.worker_id, healthy=w.worker_id != owner.worker_id) for w in workers]
    p = ch.place(call, degraded, 0.0)
    assert p.worker_id != owner.worker_id
    assert p.reason == PlacementReason.CONSISTENT_HASH_FAILOVER


@given(
    loads=st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 100), st.booleans()), min_size=1, max_size=10
    ),
    affinity=st.integers(0, 9),
    cached=st.booleans(),
    seed=st.integers(0, 100),
)
def test_eq7_rule_property(
    loads: list[tuple[int, int, bool]], affinity: int, cached: bool, seed: int
) -> None:
    workers = [
        make_worker(f"w{i}", running=r, kv_used_tokens=u * 1000, healthy=h)
        for i, (r, u, h) in enumerate(loads)
    ]
    call = make_call(affinity_worker_id=f"w{affinity}", affinity_cached=cached)
    healthy = [w for w in workers if w.is_healthy]
    if not healthy:
        with pytest.raises(NoEligibleWorker):
            SagaPlacement(rng=random.Random(seed)).place(call, workers, 0.0)
        return
    p = SagaPlacement(rng=random.Random(seed)).place(call, workers, 0.0)
    ls = LoadSettings()
    star = next((w for w in workers if w.worker_id == f"w{affinity}"), None)
    if star is not None and star.is_healthy and cached and worker_load(star, ls) < 0.8:
        assert (p.worker_id, p.reason) == (star.worker_id, PlacementReason.AFFINITY)
    else:
        assert p.reason == PlacementReason.LEAST_LOADED
        chosen = next(w for w in workers if w.worker_id == p.worker_id)
        assert chosen.is_healthy
        assert worker_load(chosen, ls) == min(worker_load(w, ls) for w in healthy)


def test_admission_balance_outweighs_a_cached_shared_prefix() -> None:
    # A workflow lives where it is admitted; a one-off system-prompt hit must not pile new workflows
    # onto the busier worker (load is min-max normalised over the candidates).
    local_busier = make_worker("local", running=12, kv_used_tokens=12_000)
    remote_idler = make_worker("remote", running=10, kv_used_tokens=10_000)
    call = make_call(prompt_tokens=1000, prefix_match_tokens={"local": 1000})
    scores = admission_scores(call, [local_busier, remote_idler], AdmissionWeights(), LoadSettings())
    # load: 1 vs 0 (x0.5); locality: 0 vs 1 (x0.2); footprint: 2K more free of a 100K pool (x0.3)
    assert scores["remote"] - scores["local"] == pytest.approx(0.5 - 0.2 + 0.3 * 0.02)
    assert SagaPlacement(WEIGHTED).place(call, [local_busier, remote_idler], 0.0).worker_id == "remote"


# --- request-level and session-level baselines -------------------------------------------------


def _ids(s: str) -> tuple[int, ...]:
    return tuple(map(ord, s))


def test_prefix_affinity_defaults_are_ray_serves() -> None:
    from saga_sgl.policy.placement.prefix_affinity import PrefixAffinitySettings

    s = PrefixAffinitySettings()
    assert (s.imbalanced_threshold, s.match_rate_threshold) == (10, 0.1)


def test_prefix_affinity_follows_the_longest_match_at_or_above_the_threshold() -> None:
    from saga_sgl.policy.placement.prefix_affinity import PrefixAffinityPlacement

    pa = PrefixAffinityPlacement(rng=random.Random(1))
    pa.index.insert(_ids("a" * 10), WorkerId("w1"))
    pa.index.insert(_ids("zzzz"), WorkerId("w0"))
    workers = [make_worker("w0", inflight=5), make_worker("w1", inflight=9)]
    # 10 of 100 match on w1: rate exactly 0.1 >= 0.1 -> w1, despite its higher load (within 10).
    p = pa.place(make_call(prefix=_ids("a" * 10 + "b" * 90)), workers, 0.0)
    assert (p.worker_id, p.reason) == ("w1", PlacementReason.PREFIX_MATCH)
    # 9 of 100: below -> the replica with the least text in the tree (w0: 4 chars vs w1's 100 now).
    p = pa.place(make_call(prefix=_ids("a" * 9 + "c" * 91)), workers, 0.0)
    assert (p.worker_id, p.reason) == ("w0", PlacementReason.PREFIX_SMALLEST_TREE)
    assert pa.index.match(_ids("a" * 9 + "c" * 91))[WorkerId("w0")] == 100


def test_prefix_affinity_is_request_level_not_session_level() -> None:
    from saga_sgl.policy.placement.prefix_affinity import PrefixAffinityPlacement

    pa = PrefixAffinityPlacement()
    pa.index.insert(_ids("other context"), WorkerId("w1"))
    workers = [make_worker("w0"), make_worker("w1")]
    # The workflow is bound to w0, but its prompt matches w1: routing is by prefix only.
    p = pa.place(make_call(prefix=_ids("other context, next step"), affinity_worker_id="w0"), workers, 0.0)
    assert p.worker_id == "w1"


def test_prefix_affinity_imbalance_falls_back_to_power_of_two_choices() -> None:
    from saga_sgl.policy.placement.prefix_affinity import PrefixAffinityPlacement

    pa = PrefixAffinityPlacement(rng=random.Random(0))
    pa.index.insert(_ids("hello world"), WorkerId("w0"))
    # 11 > 10: imbalanced. With two workers, power of two choices always finds the lighter one.
    workers = [make_worker("w0", inflight=11), make_worker("w1", inflight=0)]
    for _ in range(5):
        p = pa.place(make_call(prefix=_ids("hello world")), workers, 0.0)
        assert (p.worker_id, p.reason) == ("w1", PlacementReason.PREFIX_IMBALANCED)
    # A difference of exactly 10 is balanced: the cache wins.
    workers = [make_worker("w0", inflight=10), make_worker("w1", inflight=0)]
    assert (
        pa.place(make_call(prefix=_ids("hello world")), workers, 0.0).reason == PlacementReason.PREFIX_MATCH
    )


def test_sticky_least_loaded_binds_once_and_stays() -> None:
    from saga_sgl.policy.placement.sticky import StickyLeastLoadedPlacement

    sticky = StickyLeastLoadedPlacement()
    workers = [make_worker("w0", inflight=3), make_worker("w1", inflight=1), make_worker("w2", inflight=1)]
    p = sticky.place(make_call(), workers, 0.0)
    assert (p.worker_id, p.reason) == ("w1", PlacementReason.STICKY_LEAST_LOADED)  # first of the tie
    busy = [make_worker("w0", inflight=0), make_worker("w1", inflight=50)]
    p = sticky.place(make_call(affinity_worker_id="w1"), busy, 1.0)
    assert (p.worker_id, p.reason) == ("w1", PlacementReason.STICKY)  # load-blind once bound
    down = [make_worker("w0", inflight=4), make_worker("w1", healthy=False)]
    p = sticky.place(make_call(affinity_worker_id="w1"), down, 2.0)
    assert (p.worker_id, p.reason) == ("w0", PlacementReason.STICKY_LEAST_LOADED)


def test_bounded_hash_is_consistent_hashing_until_the_owner_exceeds_the_bound() -> None:
    from saga_sgl.policy.placement.bounded_hash import BoundedHashPlacement

    bh, ch = BoundedHashPlacement(), ConsistentHashPlacement()
    idle = [make_worker(f"w{i}", inflight=0) for i in range(4)]
    for k in range(20):
        call = make_call(f"wf{k}")
        assert bh.place(call, idle, 0.0).worker_id == ch.place(call, idle, 0.0).worker_id
    call = make_call("wf-x")
    order = list(ch.ring_order("wf-x", idle))
    owner, second = order[0], order[1]
    # total in flight 12 over 4 workers: bound = ceil(1.25 x 13 / 4) = 5; the owner has 5 -> full.
    loads = {owner: 5, second: 3}
    workers = [
        make_worker(w.worker_id, inflight=loads.get(w.worker_id, 2 if w.worker_id != owner else 5))
        for w in idle
    ]
    total = sum(w.num_inflight_reqs or 0 for w in workers)
    assert math.ceil(1.25 * (total + 1) / 4) == 5
    p = bh.place(call, workers, 0.0)
    assert (p.worker_id, p.reason) == (second, PlacementReason.BOUNDED_HASH_FORWARD)
    workers = [make_worker(w.worker_id, inflight=4 if w.worker_id == owner else 3) for w in idle]
    assert bh.place(call, workers, 0.0) == Placement(worker_id=owner, reason=PlacementReason.BOUNDED_HASH)


def test_saga_places_new_workflows_by_the_papers_rule_when_asked() -> None:
    workers = [
        make_worker("w0", running=10, kv_used_tokens=10_000),
        make_worker("w1", running=12, kv_used_tokens=5_000),
    ]
    # w1 holds the whole prompt as a shared prefix: our admission weighs that; the paper's rule does not.
    call = make_call(prompt_tokens=1000, prefix_match_tokens={"w1": 1000})
    ours = SagaPlacement(WEIGHTED).place(call, workers, 0.0)
    paper = SagaPlacement(SagaPlacementSettings(new_workflow="least_loaded")).place(call, workers, 0.0)
    assert ours.reason == PlacementReason.ADMISSION
    assert paper.reason == PlacementReason.LEAST_LOADED
    assert paper.worker_id == min(workers, key=lambda w: worker_load(w, LoadSettings())).worker_id
    with pytest.raises(InvalidSettings):
        SagaPlacementSettings(new_workflow="random")


def test_admission_can_weigh_the_predicted_work_of_bound_workflows() -> None:
    # w0 looks idle now (its agents are in tool gaps) but 300 s of predicted work is bound to it;
    # w1 is busier this instant with 20 s bound. load(w) picks w0; the bound-work signal picks w1.
    w0 = make_worker("w0", running=0, kv_used_tokens=0)
    w1 = make_worker("w1", running=20, kv_used_tokens=20_000)
    call = dataclasses.replace(make_call(), bound_work_s={WorkerId("w0"): 300.0, WorkerId("w1"): 20.0})
    assert SagaPlacement(WEIGHTED).place(call, [w0, w1], 0.0).worker_id == "w0"
    bound = SagaPlacement(SagaPlacementSettings(new_workflow="admission", load_signal="bound_work"))
    assert bound.place(call, [w0, w1], 0.0).worker_id == "w1"
    # No bound work known (the scheduler sent none): the instantaneous load decides.
    assert bound.place(make_call(), [w0, w1], 0.0).worker_id == "w0"
    with pytest.raises(InvalidSettings):
        SagaPlacementSettings(load_signal="psychic")


def test_admission_can_weigh_the_predicted_footprint_of_bound_workflows() -> None:
    # Equal load(w). w0 holds no KV now (its agents' contexts are short or evicted) but 80K tokens of
    # predicted footprint are bound to it; w1 holds 25K now and nothing is bound to it. The reported
    # free KV picks w0; the bound-footprint signal picks w1, where the newcomer's 90K will fit.
    w0 = make_worker("w0", running=25, kv_used_tokens=0)
    w1 = make_worker("w1", running=0, kv_used_tokens=25_000)
    call = dataclasses.replace(
        make_call(predicted_kv_tokens=90_000), bound_kv_tokens={WorkerId("w0"): 80_000, WorkerId("w1"): 0}
    )
    assert SagaPlacement(WEIGHTED).place(call, [w0, w1], 0.0).worker_id == "w0"
    bound = SagaPlacement(SagaPlacementSettings(new_workflow="admission", footprint_signal="bound"))
    assert bound.place(call, [w0, w1], 0.0).worker_id == "w1"
    with pytest.raises(InvalidSettings):
        SagaPlacementSettings(footprint_signal="psychic")


# --- placement of new workflows by expected completion time (seconds) -----------------------------


def _cost_call(
    prefill: dict[str, float], outstanding: dict[str, tuple[float, ...]], decode: float
) -> CallView:
    return dataclasses.replace(
        make_call(prompt_tokens=2000),
        uncached_prefill_s={WorkerId(k): v for k, v in prefill.items()},
        outstanding_s={WorkerId(k): v for k, v in outstanding.items()},
        decode_s=decode,
    )


def test_completion_cost_is_processor_sharing_response_time() -> None:
    call = _cost_call({"w0": 0.2, "w1": 1.5}, {"w0": (0.1, 5.0), "w1": ()}, decode=0.3)
    # w0: own 0.5 s; a call with 0.1 s left delays it 0.1 s, one with 5 s left by 0.5 s.
    assert response_s(call, WorkerId("w0")) == pytest.approx(0.5 + 0.1 + 0.5)
    assert response_s(call, WorkerId("w1")) == pytest.approx(1.8)
    # A worker the scheduler gave no pre-fill estimate counts as caching nothing (the largest one).
    assert response_s(call, WorkerId("w9")) == pytest.approx(1.8)
    # No footprint predicted: no KV-pressure term, the cost is the response time.
    assert completion_cost_s(call, make_worker("w0")) == pytest.approx(1.1)


def test_a_prefix_hit_wins_exactly_while_it_saves_more_than_the_queue_costs() -> None:
    workers = [make_worker("w0", inflight=1), make_worker("w1", inflight=0)]
    policy = SagaPlacement()
    # The prompt is cached on w0 (0.1 s left to pre-fill) and not on w1 (1.5 s); one call is out on w0.
    short_queue = _cost_call({"w0": 0.1, "w1": 1.5}, {"w0": (0.6,)}, decode=0.2)
    p = policy.place(short_queue, workers, 0.0)
    assert (p.worker_id, p.reason) == ("w0", PlacementReason.COMPLETION_COST)
    # The weighted score sends it to w1: one in-flight call of difference outweighs the hit.
    assert (
        SagaPlacement(WEIGHTED)
        .place(dataclasses.replace(short_queue, prefix_match_tokens={WorkerId("w0"): 1900}), workers, 0.0)
        .worker_id
        == "w1"
    )
    # Sharing w0 with six long calls costs 6 x 0.3 s, more than the 1.4 s of pre-fill saved: w1.
    long_queue = _cost_call({"w0": 0.1, "w1": 1.5}, {"w0": (3.0,) * 6}, decode=0.2)
    assert completion_cost_s(long_queue, make_worker("w0")) == pytest.approx(2.1)
    assert policy.place(long_queue, workers, 0.0).worker_id == "w1"


def test_completion_cost_balances_equal_prompts_by_outstanding_work_and_skips_unhealthy() -> None:
    workers = [make_worker("w0"), make_worker("w1"), make_worker("w2", healthy=False)]
    call = _cost_call({"w0": 0.5, "w1": 0.5, "w2": 0.5}, {"w0": (2.0, 2.0), "w1": (2.0,)}, decode=1.0)
    assert SagaPlacement().place(call, workers, 0.0).worker_id == "w1"
    with pytest.raises(NoEligibleWorker):
        SagaPlacement().place(call, [workers[2]], 0.0)


def test_completion_cost_ties_are_broken_by_the_injected_rng() -> None:
    workers = [make_worker(f"w{i}") for i in range(8)]
    picks = {
        SagaPlacement(rng=random.Random(seed)).place(make_call(), workers, 0.0).worker_id
        for seed in range(40)
    }
    assert len(picks) > 1


def _bound_call(match: dict[str, int], resident: dict[str, int], predicted_kv_tokens: int = 1500) -> CallView:
    call = _cost_call({"w0": 0.3, "w1": 0.3}, {}, decode=0.1)
    return dataclasses.replace(
        call,
        predicted_kv_tokens=predicted_kv_tokens,
        prefix_match_tokens={WorkerId(k): v for k, v in match.items()},
        resident_kv_tokens={WorkerId(k): v for k, v in resident.items()},
        remaining_calls=6.0,
        reprefill_s_per_token=1e-3,
    )


def test_kv_pressure_is_zero_while_the_pool_holds_every_bound_workflow() -> None:
    w = make_worker("w0", kv_capacity_tokens=4000)
    call = _bound_call({"w0": 0}, {"w0": 2000})
    assert kv_overflow_tokens(call, w) == 0  # 2,000 + 1,500 fit in 4,000
    assert kv_pressure_s(call, w) == 0.0
    # Past the pool: only the newcomer's own push counts (500 of its 1,500 tokens), once per later call.
    tight = dataclasses.replace(call, resident_kv_tokens={WorkerId("w0"): 3000})
    assert kv_overflow_tokens(tight, w) == 500
    assert kv_pressure_s(tight, w) == pytest.approx(500 * 5 * 1e-3)
    # A pool already past its size: every token the newcomer adds pushes someone out.
    full = dataclasses.replace(call, resident_kv_tokens={WorkerId("w0"): 9000})
    assert kv_overflow_tokens(full, w) == 1500
    # A one-call workflow is never read again: nothing to re-pre-fill.
    assert kv_pressure_s(dataclasses.replace(full, remaining_calls=1.0), w) == 0.0


def test_under_kv_pressure_the_worker_caching_the_shared_head_wins_despite_a_queued_call() -> None:
    workers = [make_worker("w0", kv_capacity_tokens=2560), make_worker("w1", kv_capacity_tokens=2560)]
    # Both pools overflow; w0 caches the 600-token shared head, w1 does not, and w0 has one call out.
    # Pre-fill priced alike (the head saves 0.3 s once); the queued call costs 0.4 s more than that.
    call = dataclasses.replace(
        _bound_call({"w0": 600, "w1": 0}, {"w0": 3000, "w1": 3000}),
        uncached_prefill_s={WorkerId("w0"): 0.3, WorkerId("w1"): 0.6},
        outstanding_s={WorkerId("w0"): (2.0,)},
    )
    assert response_s(call, WorkerId("w0")) > response_s(call, WorkerId("w1"))
    # Held once on w0 instead of twice, the head frees 600 tokens at each of 5 later calls: 3 s.
    assert kv_pressure_s(call, workers[1]) - kv_pressure_s(call, workers[0]) == pytest.approx(3.0)
    assert SagaPlacement().place(call, workers, 0.0).worker_id == "w0"
    # With room in both pools the first call's response time decides, as before: w1.
    roomy = dataclasses.replace(call, resident_kv_tokens={})
    roomy_workers = [make_worker("w0"), make_worker("w1")]  # 100,000-token pools
    assert SagaPlacement().place(roomy, roomy_workers, 0.0).worker_id == "w1"


# --- service seconds the completion cost reads (scheduler/service_time.py) -------------------------


def test_one_price_rate_for_all_workers_the_mean_of_the_measured_ones() -> None:
    from saga_sgl.scheduler.service_time import price_rate

    fast = dataclasses.replace(make_worker("w0"), prefill_tokens_per_s=2000.0)
    slow = dataclasses.replace(make_worker("w1"), prefill_tokens_per_s=500.0)
    assert price_rate([fast, slow, make_worker("w2")]) == pytest.approx(1250.0)
    assert price_rate([make_worker("w2")]) is None


def test_service_times_learn_calls_per_workflow_and_cap_decode_at_the_request_limit() -> None:
    from saga_sgl.policy.registry import create_cost_model
    from saga_sgl.policy.views import AgentType
    from saga_sgl.scheduler.service_time import DEFAULT_CALLS, ServiceTimes

    st = ServiceTimes(create_cost_model(), default_output_tokens=200, alpha=0.1)
    coding, browser = AgentType("coding"), AgentType("browser")
    assert st.expected_calls(coding) == DEFAULT_CALLS
    st.observe_calls(coding, 6)
    st.observe_calls(coding, 4)
    assert st.expected_calls(coding) == pytest.approx(5.0)
    assert st.expected_calls(browser) == pytest.approx(5.0)  # no browser finished yet: all types
    # Decode is priced at the request's own max_new_tokens while nothing is learned, never above it.
    assert st.output_tokens(coding) == 200
    assert st.output_tokens(coding, cap=8) == 8
    assert st.decode_s(coding, 500, cap=8) < st.decode_s(coding, 500)
    # Re-pre-fill price: 1/rate when measured, else the cost model's seconds per token.
    assert st.reprefill_s_per_token(2000.0) == pytest.approx(5e-4)
    assert st.reprefill_s_per_token(None) > 0.0


def test_an_empty_workers_room_is_no_saving_while_the_cluster_is_full() -> None:
    workers = [make_worker("w0", kv_capacity_tokens=2560), make_worker("w1", kv_capacity_tokens=2560)]
    # w0 holds one workflow of the newcomer's prompt head (600 tokens cached); w1 is empty.
    call = dataclasses.replace(
        _bound_call({"w0": 600, "w1": 0}, {"w0": 2000}, predicted_kv_tokens=2000),
        uncached_prefill_s={WorkerId("w0"): 0.2, WorkerId("w1"): 0.5},
        outstanding_s={WorkerId("w0"): (2.0,)},
    )
    # Alone, w1's pool holds the newcomer (no overflow there) and w0's would overflow by 840 tokens.
    assert kv_overflow_tokens(call, workers[1]) == 0
    assert kv_overflow_tokens(call, workers[0]) == 840
    # But with 7,000 tokens more bound elsewhere (a third worker's pool of 2,560), the cluster is full:
    # every token the newcomer adds is pushed out somewhere, so w1 costs its 2,000 and w0 its 1,400.
    full = [*workers, make_worker("w2", kv_capacity_tokens=2560)]
    crowded = dataclasses.replace(call, resident_kv_tokens={WorkerId("w0"): 2000, WorkerId("w2"): 7000})
    assert kv_overflow_tokens(crowded, full[1], full) == 2000
    assert kv_overflow_tokens(crowded, full[0], full) == 1400
    assert SagaPlacement().place(crowded, full, 0.0).worker_id == "w0"
    # With room in the cluster the empty worker wins (its pool holds the newcomer, no queue).
    assert SagaPlacement().place(call, workers, 0.0).worker_id == "w1"


def test_the_scheduler_gives_placement_the_binding_inputs_a_live_router_has() -> None:
    from saga_sgl.clock import ManualClock
    from saga_sgl.policy.views import WorkflowId
    from saga_sgl.scheduler import (
        CallArrived,
        CallFinished,
        Dispatch,
        SchedulerSettings,
        WorkerLoads,
        WorkflowFinished,
        WorkflowScheduler,
    )
    from saga_sgl.scheduler.service_time import DEFAULT_CALLS

    s = WorkflowScheduler(SchedulerSettings(), clock=ManualClock())
    pools = (make_worker("w0", kv_capacity_tokens=2560), make_worker("w1", kv_capacity_tokens=2560))
    s.handle(WorkerLoads(workers=pools))
    seen: list[CallView] = []
    place = s.placement.place

    def recording(call: CallView, workers: Sequence[WorkerView], now: float) -> Placement:
        seen.append(call)
        return place(call, workers, now)

    s.placement.place = recording  # type: ignore[method-assign]

    def arrive(wf: str, cap: int | None = None) -> Dispatch:
        ev = CallArrived(
            call_id=f"{wf}:0", workflow_id=WorkflowId(wf), prompt_tokens=1000, step=0, max_output_tokens=cap
        )
        [d] = s.handle(ev)
        assert isinstance(d, Dispatch)
        return d

    a = arrive("a", cap=8)
    # Nothing bound yet; decode priced at the request's 8 tokens, not the 200-token default.
    assert seen[-1].resident_kv_tokens == {} and seen[-1].remaining_calls == DEFAULT_CALLS
    kind = s.workflow(WorkflowId("a")).agent_type
    assert seen[-1].decode_s == pytest.approx(s.service.decode_s(kind, 1000, 8))
    assert seen[-1].decode_s < s.service.decode_s(kind, 1000)
    assert seen[-1].reprefill_s_per_token > 0.0
    arrive("b")
    # a is bound to its worker at its predicted peak (no workflow finished: the default footprint).
    assert seen[-1].resident_kv_tokens == {a.worker_id: s.workflow(WorkflowId("a")).footprint_tokens()}
    # a finishes after one call: the next workflow is expected to make one call (no later re-reads).
    s.handle(
        CallFinished(
            call_id="a:0", workflow_id=WorkflowId("a"), worker_id=a.worker_id, prompt_tokens=1000,
            output_tokens=8,
        )
    )
    s.handle(WorkflowFinished(workflow_id=WorkflowId("a")))
    arrive("c")
    assert seen[-1].remaining_calls == pytest.approx(1.0)
    assert a.worker_id not in seen[-1].resident_kv_tokens


def test_placement_and_the_steal_price_count_shared_heads_by_one_rule() -> None:
    # Issue 13: placement counted a worker's shared head once per worker (the largest), the steal
    # price once per agent type. One rule now (``Residency``): per worker and agent type, once.
    from saga_sgl.policy.placement.completion_cost import Residency
    from saga_sgl.policy.stealing import Residency as StealResidency
    from saga_sgl.policy.views import AgentType, WorkflowId, WorkflowState, WorkflowView

    assert StealResidency is Residency
    coding, browser = AgentType("coding"), AgentType("browser")
    flows = [
        WorkflowView(workflow_id=WorkflowId(f"f{i}"), tenant_id="t", worker_id=WorkerId("w0"),  # type: ignore[arg-type]
                     state=WorkflowState.TOOL_GAP, admitted_at_s=0.0, agent_type=kind,
                     shared_prefix_tokens=head, footprint_tokens=1200)
        for i, (kind, head) in enumerate([(coding, 592), (coding, 592), (browser, 391)])
    ]
    r = Residency.of(flows)
    # Own parts (1,200 - head each) plus both heads: two system prompts are two radix branches.
    assert r.tokens() == {"w0": 2 * (1200 - 592) + (1200 - 391) + 592 + 391}
    # Pricing one out (a steal) leaves its own part and keeps a head others of its type still hold.
    assert r.without(flows[0]) == {"w0": (1200 - 592) + (1200 - 391) + 592 + 391}
    assert r.without(flows[2]) == {"w0": 2 * (1200 - 592) + 592}
    # The scheduler builds placement's resident KV by the same rule from its records.
    from saga_sgl.clock import ManualClock
    from saga_sgl.scheduler import CallArrived, SchedulerSettings, WorkerLoads, WorkflowScheduler

    s = WorkflowScheduler(SchedulerSettings(stealing=None), clock=ManualClock())
    s.handle(WorkerLoads(workers=(make_worker("w0", kv_capacity_tokens=2560),)))
    for f in flows:
        s.handle(CallArrived(call_id=f"{f.workflow_id}:0", workflow_id=f.workflow_id, prompt_tokens=1200,
                             step=0, agent_type=f.agent_type))
        rec = s.workflow(f.workflow_id)
        rec.predicted_peak_tokens, rec.shared_tokens = 1200, f.shared_prefix_tokens
    assert s._resident_kv() == r.tokens()
