"""The fidelity check's two bridges: the CPU-calibrated cost model prices iterations exactly as its
profile says, and the live benchmark's agents become the simulator's chains with the right sharing."""

from __future__ import annotations

import dataclasses
import math

import pytest

from benchmarks.explicit_schedules import Schedule, all_schedules, schedule_tcts
from benchmarks.sim_fidelity import (
    BOUND_CHECK_ROWS,
    SGLANG_CPU_CHUNKED_PREFILL,
    CpuProfileCostModel,
    Tokens,
    cpu_task_floors,
    live_workload,
    mean_tct_bound,
    pooled_stretch,
    priority_schedule_mean_tct,
    run_stretch,
    saga_admission,
    sim_row_for,
    simulate,
)
from saga_sgl.sim.bounds import finite_closed_loop_bound, fluid_closed_loop_bound

PROFILE = {
    "meta": {"hidden_size": 256, "layers": 4},
    "request_overhead_s": 0.02,
    "linear_ms": {"points": [[1, 10.0], [8, 12.0], [256, 40.0], [1024, 130.0], [4096, 520.0]]},
    "prefill_attn_s_per_token2": 2e-8,
    "decode_attn_s_per_kv_token": 3e-6,
}
META = {
    "kinds": ["coding", "browser"],
    "token_scale": 0.05,
    "time_scale": 0.1,
    "max_steps": 4,
    "max_new_tokens": 8,
    "agents": 6,
    "tenants": 2,
    "concurrency": 4,
    "workers": 2,
    "kv_tokens": 2048,
}


def test_cpu_cost_model_prices_iterations_from_the_profile() -> None:
    cost = CpuProfileCostModel(PROFILE, chunk_size_tokens=4096)
    # One uncached prefill chunk of q tokens: c(q) + c_attn q (0 + q/2).
    assert cost.prefill_iteration_s([(256, 0)]) == pytest.approx(0.040 + 2e-8 * 256 * 128)
    # Behind a cached prefix the attention term grows with P.
    assert cost.prefill_iteration_s([(256, 1000)]) == pytest.approx(0.040 + 2e-8 * 256 * 1128)
    # Interpolated between profile points.
    assert cost.linear_s(640) == pytest.approx(0.085)
    # One decode iteration of 8 sequences attending to 4000 KV tokens in all: c(8) + a S.
    assert cost.decode_run_s(8, 4000, 1) == pytest.approx(0.012 + 3e-6 * 4000)
    # The run's speed factor scales every term.
    slow = CpuProfileCostModel(PROFILE, chunk_size_tokens=4096, speed=2.0)
    chunk = [(256, 1000)]
    assert slow.prefill_iteration_s(chunk) == pytest.approx(2 * cost.prefill_iteration_s(chunk))
    assert slow.decode_run_s(8, 4000, 3) == pytest.approx(2 * cost.decode_run_s(8, 4000, 3))
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        cost.kv_capacity_tokens()


def test_live_agents_become_chains_sharing_their_system_prompt() -> None:
    wl = live_workload(META, seed=1, tokens=Tokens(), overhead_s=0.02)
    assert len(wl.tasks) == 6 and wl.closed_loop_agents == 4
    assert {t.agent_type for t in wl.tasks} <= {"coding", "browser"}
    assert [t.task_id.split("-")[1:] for t in wl.tasks] == [["s1", str(i)] for i in range(6)]
    heads: dict[str, set[int]] = {}
    for t in wl.tasks:
        heads.setdefault(t.agent_type, set()).add(t.calls[0].prompt[0].seg_id)
        for a, b in zip(t.calls, t.calls[1:], strict=False):
            # Each call's prompt extends the previous one by its output and the new text.
            assert b.prompt[: len(a.prompt)] == a.prompt
            assert b.prompt[len(a.prompt)].num_tokens == META["max_new_tokens"]
            assert a.tool_latency_s >= 0.02
        assert t.calls[-1].tool is None and t.calls[-1].tool_latency_s == 0.0
    assert all(len(ids) == 1 for ids in heads.values())  # one system-prompt segment per kind


def test_a_simulated_row_runs_every_task() -> None:
    wl = live_workload(META, seed=0, tokens=Tokens(), overhead_s=0.02)
    for name in ("saga", "sglang-router cache_aware + LRU", "saga-router round_robin + LRU"):
        res = simulate(wl, sim_row_for(name), PROFILE, META, seed=0)
        assert res.unfinished == 0 and len(res.tasks) == 6
        assert all(math.isfinite(r.tct_s) and r.tct_s > 0 for r in res.tasks)


def test_shared_closed_loop_runs_that_many_agents_whatever_their_tenant() -> None:
    wl = live_workload({**META, "agents": 10}, seed=2, tokens=Tokens(), overhead_s=0.02)
    res = simulate(wl, sim_row_for("saga-router round_robin + LRU"), PROFILE, META, seed=0)
    assert len(res.tasks) == 10
    events = sorted([(r.arrival_s, 1) for r in res.tasks] + [(r.finished_s, -1) for r in res.tasks])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == META["concurrency"]  # 4 at once in all, not 4 per tenant


def test_each_run_s_speed_is_its_engine_stretch_else_its_workers() -> None:
    runs = [
        {
            "row": "saga",
            "seed": 0,
            "worker_sched_s": {"cpu": 10.0, "wait": 30.0, "engine_cpu": 8.0, "engine_wait": 8.0},
        },
        {"row": "saga", "seed": 1, "worker_sched_s": {"cpu": 10.0, "wait": 15.0}},  # older run
        {"row": "x", "seed": 0},  # no figures: not corrected
    ]
    assert run_stretch({"runs": runs}) == {("saga", 0): 2.0, ("saga", 1): 2.5}


def test_a_worker_is_not_busy_while_its_only_agent_is_in_a_tool() -> None:
    """The simulated worker seconds (the report's 'worker s') count runs only: one agent on one worker
    leaves it idle for every tool gap, and waking it up must not book that idle time as busy."""
    meta = {**META, "agents": 1, "concurrency": 1, "workers": 1, "time_scale": 1.0, "max_steps": 4}
    wl = live_workload(meta, seed=3, tokens=Tokens(), overhead_s=0.0)
    gaps = sum(c.tool_latency_s for c in wl.tasks[0].calls)
    assert gaps > 1.0
    res = simulate(wl, sim_row_for("saga-router round_robin + LRU"), PROFILE, meta, seed=0)
    busy_s = res.counters["busy_frac"] * res.end_s
    assert 0 < busy_s <= res.end_s - gaps + 1e-9


def test_the_pooled_stretch_weighs_every_run_by_its_engine_seconds() -> None:
    """One factor for the whole live run (--speed pooled): total (cpu + wait) / total cpu, not
    the mean of the runs' ratios, and the same for every row."""
    runs = [
        {"row": "saga", "seed": 0, "worker_sched_s": {"engine_cpu": 8.0, "engine_wait": 8.0}},
        {"row": "x", "seed": 0, "worker_sched_s": {"engine_cpu": 2.0, "engine_wait": 6.0}},
        {"row": "y", "seed": 0},  # no figures: no weight
    ]
    assert pooled_stretch({"runs": runs}) == pytest.approx(24.0 / 10.0)
    assert pooled_stretch({"runs": []}) == 1.0


def test_the_saga_rows_run_with_the_admission_control_the_live_run_gave_them() -> None:
    on = {"admission": {"enabled": True, "shared_prefix_once": True}}
    assert saga_admission({}, None) is None
    assert saga_admission({"saga_scheduler_config": on}, None) == on["admission"]
    assert saga_admission({"saga_scheduler_config": on}, {"tool_latency": {}}) is None  # the flag wins
    row = sim_row_for("saga", saga_admission({}, on))
    assert row.admission.enabled and row.admission.shared_prefix_once
    assert not sim_row_for("saga").admission.enabled
    assert sim_row_for("sglang-router cache_aware + LRU", on["admission"]).placement == "cache_aware"


EXTEND_PROFILE = {
    **PROFILE,
    "extend": {
        "linear_ms": {"points": [[1, 4.0], [4, 7.0], [64, 35.0], [1024, 440.0], [4096, 1740.0]]},
        "attn_s_per_seq_token2": 1e-7,
        "s_per_seq_token": 1e-4,
    },
}


@pytest.mark.parametrize("speed", [1.0, 1.7])
def test_no_simulated_row_beats_the_all_schedulers_floor(speed: float) -> None:
    """The floor of ``--bound`` (CPU extend form, the live task model) is below the mean TCT of every
    simulated row, oracles included, on a small live-like run at two machine speeds; the work floors
    are below the workers' simulated busy seconds and each task's path floor below its TCT; the
    explicit priority schedule lies above it."""
    meta = {**META, "agents": 8, "concurrency": 4}
    o = EXTEND_PROFILE["request_overhead_s"] * speed
    wl = live_workload(meta, seed=3, tokens=Tokens(), overhead_s=o)
    bound = mean_tct_bound(wl, EXTEND_PROFILE, meta, speed)
    floors = cpu_task_floors(wl, EXTEND_PROFILE, speed)
    assert bound.mean_tct_s >= max(bound.work_only_s, bound.path_only_s) > o
    rows = [*BOUND_CHECK_ROWS, sim_row_for("saga", {"enabled": True, "shared_prefix_once": True})]
    for row in rows:
        res = simulate(wl, row, EXTEND_PROFILE, meta, seed=0, speed=speed)
        assert len(res.tasks) == len(wl.tasks), row.label
        mean = sum(r.tct_s + o for r in res.tasks) / len(res.tasks)
        assert bound.mean_tct_s <= mean + 1e-9, row.label
        busy = res.counters["busy_frac"] * res.end_s * meta["workers"]
        assert sum(f.work_s for f in floors.values()) <= busy + 1e-9, row.label
        for r in res.tasks:
            assert floors[r.task_id].path_s <= r.tct_s + 1e-9, (row.label, r.task_id)
    # the explicit priority schedule is a schedule too: above the floor, below a one-worker one
    prio = priority_schedule_mean_tct(wl, EXTEND_PROFILE, meta, speed)
    assert (
        bound.mean_tct_s
        <= prio
        < priority_schedule_mean_tct(wl, EXTEND_PROFILE, {**meta, "workers": 1}, speed)
    )


@pytest.mark.parametrize("speed", [1.0, 1.7])
def test_no_explicit_schedule_or_simulated_row_beats_the_fluid_floor(speed: float) -> None:
    """The tightened floor (each task on one worker at a time) is above the plain one and below every
    explicit schedule of the study, every simulated row and every task's own path; a run-to-completion
    schedule whose contexts fit the pool never misses, so the pool does not change it; the oracle
    order (true remaining work) and a live one are both priced (finite means)."""
    meta = {**META, "agents": 8, "concurrency": 4}
    o = EXTEND_PROFILE["request_overhead_s"] * speed
    wl = live_workload(meta, seed=3, tokens=Tokens(), overhead_s=o)
    floors = cpu_task_floors(wl, EXTEND_PROFILE, speed)
    ordered = [floors[t.task_id] for t in wl.tasks]
    plain = finite_closed_loop_bound(ordered, meta["concurrency"], meta["workers"]).mean_tct_s + o
    fluid = fluid_closed_loop_bound(ordered, meta["concurrency"], meta["workers"]) + o
    assert fluid >= plain - 1e-9
    assert mean_tct_bound(wl, EXTEND_PROFILE, meta, speed).mean_tct_s == pytest.approx(fluid)  # --bound's
    cost = CpuProfileCostModel(EXTEND_PROFILE, chunk_size_tokens=SGLANG_CPU_CHUNKED_PREFILL, speed=speed)
    means = {}
    for sc in all_schedules():
        tct = schedule_tcts(
            wl.tasks,
            cost,
            agents=meta["concurrency"],
            workers=meta["workers"],
            kv_tokens=meta["kv_tokens"],
            schedule=sc,
            overhead_s=o,
        )
        assert len(tct) == len(wl.tasks), sc.label
        for t in wl.tasks:
            assert tct[t.task_id] >= floors[t.task_id].path_s + o - 1e-9, (sc.label, t.task_id)
        means[sc] = sum(tct.values()) / len(tct)
        assert means[sc] >= fluid - 1e-9, sc.label
    biggest = max(c.prompt_tokens + c.output_tokens for t in wl.tasks for c in t.calls)
    assert biggest <= meta["kv_tokens"]
    for order in ("oldest", "predicted", "srpt"):
        rtc = Schedule(order=order, slots=1, mode="task", placement="home")  # type: ignore[arg-type]
        assert means[rtc] == pytest.approx(means[dataclasses.replace(rtc, infinite_pool=True)])
    for row in [*BOUND_CHECK_ROWS, sim_row_for("saga", {"enabled": True, "shared_prefix_once": True})]:
        res = simulate(wl, row, EXTEND_PROFILE, meta, seed=0, speed=speed)
        assert sum(r.tct_s + o for r in res.tasks) / len(res.tasks) >= fluid - 1e-9, row.label
