"""benchmarks/cluster.py end to end on a tiny cluster: every load point runs and the outputs appear."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmarks import cluster as bench
from saga_sgl.sim import rows as R

TINY = dataclasses.replace(
    bench.QUICK,
    name="tiny",
    cluster=dataclasses.replace(bench.QUICK.cluster, num_workers=2),
    scenarios=("web-history",),
    loads=(
        dataclasses.replace(bench.PAPER, rate_per_replica_per_min=1.0),
        dataclasses.replace(bench.PRODUCTION, agents_per_replica=2, load_x_isolated=1.0),
    ),
    rows=(R.ROUND_ROBIN, R.PREFIX_AFFINITY, R.SAGA),
    ablations=(R.ABLATIONS[0],),
    window_factor=1.0,
    warmup_factor=0.5,
)


def test_tiny_benchmark_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    assert bench.run_benchmark(TINY, {"main", "ablations"}, tmp_path, num_procs=1, progress=False) == 0
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert doc["saga.best_baseline"] in {"round_robin", "vllm_apc_prefix_affinity"}
    head = doc["headline"]["production"]
    assert doc["saga.tct_ratio_vs_best_baseline"] == min(h["geomean"] for h in head.values())
    assert set(doc["headline"]) == {"paper", "production"}
    assert {"geomean", "ratio_of_means"} <= set(head["round_robin"])
    saga = doc["results"]["production"]["web-history"]["saga"]
    assert saga["num_tasks"] > 0 and 0.0 <= saga["slo_attainment"] <= 1.0
    assert saga["tasks_per_min"] > 0 and saga["tct_over_alone"] >= 1.0 - 1e-9
    assert "saga-no_admission_control" in doc["results"]["production"]["web-history"]
    # Closed-loop throughput: SAGA against the baseline that completed the most tasks per minute.
    thr = doc["throughput"]["production"]
    rows = doc["results"]["production"]["web-history"]
    best = max(("round_robin", "vllm_apc_prefix_affinity"), key=lambda b: rows[b]["tasks_per_min"])
    assert thr["best_baseline"] == best
    assert thr["saga_tasks_per_min"] == pytest.approx(saga["tasks_per_min"])
    assert thr["ratio"] == pytest.approx(saga["tasks_per_min"] / rows[best]["tasks_per_min"])
    assert all(r["cpu_s"] > 0 for r in doc["runs"]) and doc["header"]["sim_cpu_s"] > 0
    h = doc["header"]
    assert h["setup_cpu_s"] > 0
    assert h["free_cores_wall_s"] == pytest.approx(h["setup_cpu_s"] + h["sim_cpu_s"] / h["jobs"])
    assert doc["header"]["replicas"] == 2 and doc["header"]["machine"]
    md = (tmp_path / "cluster.md").read_text()
    assert "## production / web-history" in md and "evict/route/steal" in md
    assert "## Throughput" in md
    assert "Belady" not in md  # the per-row eviction-vs-Belady column is gone (issue 10 replays it)
    assert (tmp_path / "cluster_tct.png").stat().st_size > 0


def test_time_breakdown_adds_up_to_the_tct_and_holds_show_only_under_admission_control(
    tmp_path: Path,
) -> None:
    tiny = dataclasses.replace(TINY, loads=(TINY.loads[1],), rows=(R.ROUND_ROBIN, R.SAGA), ablations=())
    assert bench.run_benchmark(tiny, {"main"}, tmp_path, num_procs=1, progress=False) == 0
    rows = json.loads((tmp_path / "cluster.json").read_text())["results"]["production"]["web-history"]
    for m in rows.values():
        parts = [m[f"time_{k}_s"] for k in bench.TIME_PARTS]
        assert all(p >= -1e-6 for p in parts)
        assert sum(parts) == pytest.approx(m["tct_mean_s"])
        assert m["time_decode_s"] > 0 and m["time_tool_s"] > 0
    assert rows["round_robin"]["time_held_s"] == 0.0
    assert "## Where the time goes" in (tmp_path / "cluster.md").read_text()


def test_resume_keeps_finished_runs_and_runs_only_the_missing_ones(tmp_path: Path) -> None:
    tiny = dataclasses.replace(TINY, loads=(TINY.loads[0],), rows=(R.ROUND_ROBIN, R.SAGA), ablations=())
    assert bench.run_benchmark(tiny, {"main"}, tmp_path, num_procs=1, progress=False) == 0
    full = json.loads((tmp_path / "cluster.json").read_text())
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # Cut off after the first run, with a torn second line: --no-run reports what is there.
    (tmp_path / "runs.jsonl").write_text(lines[0] + "\n" + lines[1][:40])
    assert (
        bench.run_benchmark(tiny, {"main"}, tmp_path, num_procs=1, progress=False, resume=True, run=False)
        == 0
    )
    partial = json.loads((tmp_path / "cluster.json").read_text())
    assert partial["header"]["runs_missing"] == 1
    assert "Partial report: 1 runs missing" in (tmp_path / "cluster.md").read_text()
    # --resume runs only the missing one; the result equals the uninterrupted run's.
    assert bench.run_benchmark(tiny, {"main"}, tmp_path, num_procs=1, progress=False, resume=True) == 0
    again = json.loads((tmp_path / "cluster.json").read_text())
    assert again["header"]["runs_missing"] == 0
    assert [json.loads(x)["row"] for x in (tmp_path / "runs.jsonl").read_text().splitlines()] == [
        json.loads(lines[0])["row"],
        json.loads(lines[1])["row"],
    ]
    assert again["headline"] == full["headline"] and again["results"] == full["results"]


def test_ceiling_bounds_are_computed_from_sagas_own_runs_and_labelled(tmp_path: Path) -> None:
    tiny = dataclasses.replace(TINY, loads=(TINY.loads[1],), rows=(R.ROUND_ROBIN, R.SAGA), ablations=())
    assert bench.run_benchmark(tiny, {"main"}, tmp_path, num_procs=1, progress=False) == 0
    doc = json.loads((tmp_path / "cluster.json").read_text())
    runs = {json.loads(x)["row"]: json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()}
    base, saga = runs["round_robin"], runs["saga"]
    # Recomputed here from the per-task records of the run: baseline TCT over SAGA's decode + tool
    # (no hold, queue or pre-fill), and over the task alone on an idle replica.
    for kind, key in (("saga_no_wait", "tct_no_wait"), ("alone", "tct_alone")):
        ids = sorted(set(base["tct"]) & set(saga[key]))
        assert ids
        ratios = [base["tct"][i] / saga[key][i] for i in ids]
        want = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        got = doc["bounds"]["production"]["round_robin"][kind]
        assert got["geomean"] == pytest.approx(want)
        means = sum(base["tct"][i] for i in ids) / sum(saga[key][i] for i in ids)
        assert got["ratio_of_means"] == pytest.approx(means)
    # Each task's bound TCT is at most its measured TCT, so the bounds sit above SAGA's measured ratio.
    assert all(saga["tct_no_wait"][i] <= saga["tct"][i] + 1e-9 for i in saga["tct"])
    measured = doc["headline"]["production"]["round_robin"]["geomean"]
    assert doc["bounds"]["production"]["round_robin"]["saga_no_wait"]["geomean"] >= measured - 1e-9
    assert doc["bounds"]["production"]["round_robin"]["alone"]["geomean"] >= measured - 1e-9
    # All schedulers (closed loop): the baseline's mean TCT over SAGA's counted tasks / the bound the
    # SAGA run recorded; a ratio of means only.
    assert isinstance(saga["bound_mean_tct_s"], float) and saga["bound_mean_tct_s"] > 0
    ids = [i for i in saga["tct"] if i in base["tct"]]
    want = sum(base["tct"][i] for i in ids) / len(ids) / saga["bound_mean_tct_s"]
    got = doc["bounds"]["production"]["round_robin"]["all_schedulers"]
    assert got == {"ratio_of_means": pytest.approx(want)}
    md = (tmp_path / "cluster.md").read_text()
    assert "## Ceilings: labelled bounds" in md and "bound: SAGA with zero hold/queue/prefill" in md
    assert "bound: all schedulers (means)" in md
    assert "tct_no_wait" not in json.dumps(doc["runs"])  # per-task maps stay in runs.jsonl


def test_window_is_a_multiple_of_the_median_task_time_at_the_load() -> None:
    """A load point whose tasks take k x their isolated time gets a warm-up and window k x longer
    (closed loop: an agent runs about ``window_factor`` tasks in the window), and enough tasks."""
    base = dataclasses.replace(bench.PRODUCTION, agents_per_replica=2, load_x_isolated=1.0)
    slow = dataclasses.replace(base, load_x_isolated=2.0)
    spec1, _, (lo1, hi1) = bench._setup(TINY, base, "web-history", 1)
    spec2, cl2, (lo2, hi2) = bench._setup(TINY, slow, "web-history", 1)
    median = bench.median_task_s(TINY, "web-history", 1)
    assert lo1 == pytest.approx(TINY.warmup_factor * median)
    assert hi1 - lo1 == pytest.approx(TINY.window_factor * median)
    assert (lo2, hi2) == pytest.approx((2 * lo1, 2 * hi1))
    assert cl2.closed_loop_until_s == pytest.approx(hi2) and spec2.max_tasks > spec1.max_tasks


def test_production_agents_hold_about_70_percent_of_the_pool() -> None:
    """Issue 8's production point: about 12 agents per replica and about 70% KV in use. An agent holds
    its current context through its task, so N x its time-averaged context (each call's context
    weighted by its decode and tool time) over the replica's pool is the KV the live agents hold."""
    from saga_sgl.sim.cluster import Cluster
    from saga_sgl.sim.policies import build_row
    from saga_sgl.sim.workloads import WorkloadSpec, generate

    for scenario in bench.HEADLINE_SCENARIOS:
        wl = generate(WorkloadSpec(scenario=scenario, seed=1, closed_loop_agents=8, max_tasks=300))  # type: ignore[arg-type]
        cluster = Cluster(wl, build_row(R.ROUND_ROBIN, 1), bench.QUICK.cluster)
        pool = cluster.workers[0].capacity_tokens
        calls = [c for t in wl.tasks for c in t.calls]
        cost = cluster.cost
        weights = [cost.decode_time_s(c.output_tokens, c.prompt_tokens) + c.tool_latency_s for c in calls]
        held = sum(w * (c.prompt_tokens + c.output_tokens) for w, c in zip(weights, calls, strict=True))
        context = held / sum(weights)
        assert 0.6 <= bench.PRODUCTION.agents_per_replica * context / pool <= 0.8
        assert bench.PRODUCTION_14.agents_per_replica * context / pool > 0.78
