"""Fixed-schedule replay: one recorded simulator schedule, every policy and Belady on the same sequence."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from saga_sgl.policy import registry
from saga_sgl.policy.views import WorkflowState
from saga_sgl.replay.schedule_replay import (
    KnownGaps,
    ViewMode,
    belady_policy,
    replay_schedule,
    replay_worker,
)
from saga_sgl.replay.sim_schedule import Access, Finish, HintChange, Schedule, record_schedule
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.run import simulate
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads import WorkloadSpec, generate
from saga_sgl.sim.workloads.tool_latency import TABLE1

SETTINGS = ClusterSettings(num_workers=2, worker=WorkerSettings(kv_capacity_tokens=60_000))


@functools.cache
def _recorded() -> tuple[Schedule, object]:
    wl = generate(WorkloadSpec(scenario="swe", seed=3, horizon_s=60.0, rate_per_min=20.0))
    return record_schedule(wl, rows.SAGA, SETTINGS, seed=3)


def test_recording_only_observes_the_simulation() -> None:
    schedule, result = _recorded()
    wl = generate(WorkloadSpec(scenario="swe", seed=3, horizon_s=60.0, rate_per_min=20.0))
    plain = simulate(wl, rows.SAGA, SETTINGS, seed=3)
    assert result.summary() == plain.summary()  # type: ignore[attr-defined]
    accesses = schedule.accesses()
    assert accesses and any(isinstance(e, HintChange) for e in schedule.events)
    finishes = [e for e in schedule.events if isinstance(e, Finish)]
    assert len(finishes) <= len(accesses)
    assert all(schedule.events[f.access].finish_s == f.at_s for f in finishes)  # type: ignore[union-attr]


def test_every_row_reads_the_same_sequence_and_belady_is_the_common_denominator() -> None:
    schedule, _ = _recorded()
    belady = replay_schedule(schedule, belady_policy, ViewMode.ORACLE)
    again = replay_schedule(schedule, belady_policy, ViewMode.ORACLE)
    assert belady == again  # deterministic: the oracle row's ratio is 1.00 by construction
    assert belady.evicted_recompute_tokens > 0, "the test schedule must be under KV pressure"
    for name, mode in (
        ("lru", ViewMode.PLAIN),
        ("saga", ViewMode.HINTS),
        ("wa_lru", ViewMode.HINTS),
        ("saga", ViewMode.HINTS_BY_AGE),
    ):
        st = replay_schedule(schedule, lambda n=name: registry.create_eviction(n), mode)
        assert st.read_tokens == belady.read_tokens
        assert st.compulsory_tokens == belady.compulsory_tokens
        assert st.recomputed_tokens == st.read_tokens - st.hit_tokens
        assert st.evicted_recompute_tokens >= belady.evicted_recompute_tokens, name


def test_blame_accounts_for_every_evicted_token_and_true_returns_are_an_oracle_row() -> None:
    schedule, _ = _recorded()
    blame: dict[str, int] = {}
    saga = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.HINTS, blame=blame)
    assert sum(blame.values()) == saga.evicted_recompute_tokens
    assert set(blame) <= {
        "no workflow",
        "shared by workflows",
        "no hints",
        "workflow finished",
        "tool gap, TTL live",
        "tool gap, no live TTL",
        "workflow queued",
        "workflow running",
        "bypassed earlier",
    }
    true = replay_schedule(
        schedule,
        lambda: registry.create_eviction("reuse_time", {"ttl_protection": False}),
        ViewMode.TRUE_RETURN,
    )
    assert true.read_tokens == saga.read_tokens
    assert true != replay_schedule(
        schedule, lambda: registry.create_eviction("reuse_time", {"ttl_protection": False}), ViewMode.HINTS
    )


def test_saga_without_hints_is_lru_on_the_schedule() -> None:
    schedule, _ = _recorded()
    lru = replay_schedule(schedule, lambda: registry.create_eviction("lru"), ViewMode.PLAIN)
    saga = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.PLAIN)
    assert saga == lru


def test_hints_reach_the_keys() -> None:
    schedule, _ = _recorded()
    plain = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.PLAIN)
    hinted = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.HINTS)
    assert hinted != plain


def test_hints_by_age_re_key_tool_gaps_from_gaps_learned_on_the_schedule() -> None:
    """The recording names each gap's tool; the age row learns their hazard from gaps that ended and
    re-keys idle workflows as they age, which changes saga's victims (and nothing clairvoyant)."""
    schedule, _ = _recorded()
    gaps = [e for e in schedule.events if isinstance(e, HintChange) and e.hints is not None]
    assert any(e.tool and e.agent_type for e in gaps if e.hints.state is WorkflowState.TOOL_GAP)  # type: ignore[union-attr]
    hinted = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.HINTS, 1.5)
    aged = replay_schedule(schedule, lambda: registry.create_eviction("saga"), ViewMode.HINTS_BY_AGE, 1.5)
    assert aged.read_tokens == hinted.read_tokens
    assert (
        aged.evictions != hinted.evictions or aged.evicted_recompute_tokens != hinted.evicted_recompute_tokens
    )
    # Without hints the age model has nothing to scale: LRU's order.
    lru = replay_schedule(schedule, lambda: registry.create_eviction("lru"), ViewMode.HINTS_BY_AGE)
    assert lru == replay_schedule(schedule, lambda: registry.create_eviction("lru"), ViewMode.PLAIN)


def test_the_schedulers_age_re_keys_are_in_the_schedule_and_the_ablation_drops_them() -> None:
    """The recorded hints carry the scheduler's re-keys of tool gaps (``predicted_at_s`` set), which
    the ``hints`` row reads as any hint; ``hints_at_tool_start`` ignores them (the ablation)."""
    schedule, _ = _recorded()
    rekeys = [
        e
        for e in schedule.events
        if isinstance(e, HintChange) and e.hints is not None and e.hints.predicted_at_s is not None
    ]
    assert rekeys and all(e.hints.state is WorkflowState.TOOL_GAP for e in rekeys)  # type: ignore[union-attr]
    make = functools.partial(registry.create_eviction, "saga")
    hinted = replay_schedule(schedule, make, ViewMode.HINTS, 1.5)
    at_start = replay_schedule(schedule, make, ViewMode.HINTS_AT_TOOL_START, 1.5)
    assert hinted.read_tokens == at_start.read_tokens
    assert hinted != at_start


def test_known_gaps_give_the_true_mean_remaining_latency_and_the_oracle_row_needs_them() -> None:
    uniform = KnownGaps({"u": lambda u: 10.0 * u})  # T ~ U(0, 10): E[T - a | T > a] = (10 - a) / 2
    for age in (0.0, 2.0, 7.5):
        assert uniform.mean_remaining_s("u", age) == pytest.approx((10.0 - age) / 2, rel=1e-3)
    assert uniform.mean_remaining_s("u", 11.0) == 0.0
    assert "u" in uniform and "v" not in uniform
    schedule, _ = _recorded()
    make = functools.partial(registry.create_eviction, "saga")
    with pytest.raises(ValueError, match="known_gaps"):
        replay_schedule(schedule, make, ViewMode.KNOWN_GAP)
    table1 = KnownGaps({tool: d.quantile for tool, d in TABLE1.items()})
    known = replay_schedule(schedule, make, ViewMode.KNOWN_GAP, 1.5, known_gaps=table1)
    hinted = replay_schedule(schedule, make, ViewMode.HINTS, 1.5)
    assert known.read_tokens == hinted.read_tokens and known != hinted


# --- Belady is optimal for unit-size segments (brute force on small random schedules) --------------


def _unit_schedule(rng: random.Random, n: int) -> Schedule:
    """Accesses one after another (no overlap) on paths of a binary tree of depth 3, 1 token each."""
    events: list[object] = []
    for i in range(n):
        depth = rng.randint(1, 3)
        path: list[tuple[int, int]] = []
        node = 0
        for _ in range(depth):
            node = 2 * node + 1 + rng.randint(0, 1)
            path.append((node, 1))
        events.append(Access(worker=0, admit_s=float(i), workflow=None, prompt=tuple(path), output=()))
        events.append(Finish(i + 0.5, len(events) - 1))
    return Schedule(events=events, num_workers=1, capacity_tokens=[0])  # type: ignore[arg-type]


def _optimum(schedule: Schedule, capacity: int) -> int:
    """Fewest recomputed tokens over every eviction choice (leaves not read by the access)."""
    chains = [tuple(p for p, _ in a.prompt) for a in schedule.accesses()]
    parent = {c[k]: (c[k - 1] if k else None) for c in chains for k in range(len(c))}

    @functools.cache
    def best(i: int, cached: frozenset[int]) -> int:
        if i == len(chains):
            return 0
        chain = chains[i]
        k = 0
        while k < len(chain) and chain[k] in cached:
            k += 1
        missing = chain[k:]
        return len(missing) + fill(i, cached, missing)

    def fill(i: int, cached: frozenset[int], missing: tuple[int, ...]) -> int:
        if not missing:
            return best(i + 1, cached)
        if len(cached) < capacity:
            return fill(i, cached | {missing[0]}, missing[1:])
        chain = set(chains[i])
        leaves = [s for s in cached if s not in chain and not any(parent[c] == s for c in cached)]
        if not leaves:  # bypass the rest of the chain
            return best(i + 1, cached)
        return min(fill(i, cached - {v}, missing) for v in leaves)

    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(12))
def test_belady_is_the_optimum_for_unit_segments(seed: int) -> None:
    rng = random.Random(seed)
    schedule = _unit_schedule(rng, 9)
    capacity = rng.randint(3, 5)
    opt = _optimum(schedule, capacity)
    belady = replay_worker(schedule, 0, capacity, belady_policy(), ViewMode.ORACLE)
    lru = replay_worker(schedule, 0, capacity, registry.create_eviction("lru"), ViewMode.PLAIN)
    assert belady.recomputed_tokens == opt
    assert lru.recomputed_tokens >= opt


def test_bad_arguments_are_refused() -> None:
    schedule, _ = _recorded()
    with pytest.raises(ValueError, match="capacity_tokens"):
        replay_worker(schedule, 0, -1, belady_policy(), ViewMode.ORACLE)
    with pytest.raises(ValueError, match="worker"):
        replay_worker(schedule, 5, 10, belady_policy(), ViewMode.ORACLE)
    with pytest.raises(ValueError, match="capacity_scale"):
        replay_schedule(schedule, belady_policy, ViewMode.ORACLE, 0.0)


def test_benchmark_gives_every_row_the_oracle_as_denominator(tmp_path: Path) -> None:
    from benchmarks.eviction_sim import main

    out = str(tmp_path / "eviction_sim.json")
    report = main(
        [
            "--scenarios", "swe", "--seeds", "3", "--workers", "2", "--kv-tokens", "60000",
            "--horizon-s", "60", "--capacity-scales", "1.0", "--out", out,
        ]
    )  # fmt: skip
    for cell in report["runs"]:
        ratios = {r["row"]: r["ratio_to_belady"] for r in cell["rows"]}
        assert ratios["belady (oracle)"] == 1.0
        assert all(v is not None and v >= 1.0 for v in ratios.values()), ratios
    assert report["summary"][0]["ratios"]["belady (oracle)"] == 1.0
    assert "| swe | 1 |" in (tmp_path / "eviction_sim.md").read_text()
    assert (tmp_path / "eviction_sim.png").stat().st_size > 0
