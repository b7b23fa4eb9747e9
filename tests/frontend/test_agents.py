"""The shipped agents: shapes drawn from the workload model, seeded (the live run of each kind is in
test_dsl_live.py, which shares one worker)."""

from __future__ import annotations

import pytest

from saga_sgl.agents import AgentScale, run_agents
from saga_sgl.agents.browser import plan_browser_task
from saga_sgl.agents.coding import plan_coding_task
from saga_sgl.agents.common import text_of
from saga_sgl.agents.tot import plan_tot_task
from saga_sgl.sim.workloads.tool_latency import TABLE1


def test_plans_are_seeded_and_follow_the_workload_model() -> None:
    scale = AgentScale(max_steps=30)
    a, b, c = plan_coding_task(7, scale), plan_coding_task(7, scale), plan_coding_task(8, scale)
    assert a == b and a != c
    tools = [s.tool for p in (plan_coding_task(i, scale) for i in range(200)) for s in p["steps"] if s.tool]
    # The paper's SWE-bench mix: 45% code (run_test/edit_code), 40% file, 10% web, 5% db.
    code = sum(t in ("run_test", "edit_code") for t in tools) / len(tools)
    assert 0.38 < code < 0.52 and 0.33 < tools.count("read_file") / len(tools) < 0.47
    latencies = [
        s.latency_s for p in (plan_browser_task(i, scale) for i in range(200)) for s in p["steps"] if s.tool
    ]
    assert 0.4 < sorted(latencies)[len(latencies) // 2] < 1.2  # web dominates: Table 1 P50 0.85 s
    assert all(p["steps"][-1].tool is None for p in (plan_coding_task(i, scale) for i in range(20)))
    tot = plan_tot_task(3, scale, depth=3, breadth=4)
    assert len(tot["keep"]) == 3 and all(0 <= k < 4 for k in tot["keep"])
    assert max(tot["verify_latency_s"]) <= TABLE1["code"].max_s


def test_synthetic_text_is_deterministic_and_sized() -> None:
    assert text_of("swe:system", 100) == text_of("swe:system", 100)
    assert text_of("a", 100) != text_of("b", 100)
    assert 250 < len(text_of("x", 100)) < 350
    with pytest.raises(ValueError):
        AgentScale(token_scale=0)
    with pytest.raises(ValueError, match="unknown agent kind"):
        run_agents("http://127.0.0.1:1", 1, kinds=["chess"])
