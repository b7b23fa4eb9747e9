"""benchmarks/cluster.py end to end on a tiny cluster: every section runs and the outputs appear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmarks import cluster as bench
from saga_sgl.sim.cluster import ClusterSettings

TINY = bench.Mode(
    name="tiny",
    cluster=ClusterSettings(num_workers=4),
    seeds=(1,),
    horizon_s=40.0,
    rates={"swe": 12.0, "web": 40.0, "tenants": 0.05},
    cv_points=(1.0,),
    sweep_horizon_s=30.0,
    closed_loop_agents=1,
    closed_loop_tasks=1,
    pressure_kv_tokens=60_000,
    pressure_rate=12.0,
    all_rows_everywhere=False,
    tenant_seeds=1,
)


def test_tiny_benchmark_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    sections = {"main", "kv_pressure", "ablations", "cv_sweep", "throughput"}
    assert bench.run_benchmark(TINY, sections, tmp_path, num_procs=1, progress=False) == 0
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert isinstance(doc["saga.tct_ratio_vs_best_baseline"], float)
    assert "saga.tct_ratio_vs_best_baseline.swe@kv_pressure" in doc
    assert doc["header"]["machine"] and doc["header"]["cluster"]["num_workers"] == 4
    res = doc["results"]
    assert set(res["scenarios"]) == {"swe", "web", "tenants", "swe@kv_pressure"}
    saga = res["scenarios"]["swe"]["saga"]
    assert {"vllm_apc_affinity", "round_robin", "sglang_cache_aware"} <= set(saga["ratios"])
    assert 0.0 <= saga["slo_attainment"]["overall"] <= 1.0
    assert {"ablations", "cv_sweep", "throughput"} <= set(res)
    md = (tmp_path / "cluster.md").read_text()
    assert "## swe@kv_pressure" in md and "## throughput" in md
    assert (tmp_path / "cluster_tct.png").stat().st_size > 0
    assert (tmp_path / "cluster_cv_sweep.png").stat().st_size > 0
