"""benchmarks/cluster.py end to end on a tiny cluster: every load point runs and the outputs appear."""

from __future__ import annotations

import dataclasses
import json
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
        dataclasses.replace(bench.PRODUCTION, agents_per_replica=2),
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
    assert doc["header"]["replicas"] == 2 and doc["header"]["machine"]
    md = (tmp_path / "cluster.md").read_text()
    assert "## production / web-history" in md and "evict/route/steal" in md
    assert "## Throughput" in md
    assert "Belady" not in md  # the per-row eviction-vs-Belady column is gone (issue 10 replays it)
    assert (tmp_path / "cluster_tct.png").stat().st_size > 0
