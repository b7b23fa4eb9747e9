"""Predictors: P_reuse (Eq. 4-5), time to next use, remaining work (Eq. 9)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga_sgl.aeg.build import from_tool_hints, paper_figure3
from saga_sgl.aeg.graph import AEG, Edge, EdgeKind, Step
from saga_sgl.aeg.predict import (
    NextUsePredictor,
    NextUseSettings,
    ObservationLengthModel,
    WorkMode,
    WorkSettings,
    expected_completion_s,
    expected_queue_delay_s,
    overlap,
    remaining_work_s,
    reuse_probability,
)
from saga_sgl.aeg.tool_latency import ToolLatencyModel
from saga_sgl.policy.cost_model import LinearCostModel
from saga_sgl.policy.views import StepId, ToolType

V = [StepId(f"v{i}") for i in range(5)]


class FlatCost:
    """1 ms per prefilled token, 10 ms per decoded token: numbers a test can add up by hand."""

    def prefill_time_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        return 0.001 * num_new_tokens

    def decode_time_s(self, num_output_tokens: int, num_context_tokens: int) -> float:
        return 0.01 * num_output_tokens


# Figure 3 with 12K tokens cached and the 300-token observation estimate: overlap = 12000 / 12300.
OV = 12_000 / 12_300


@pytest.mark.parametrize(
    ("step", "expected"),
    [(V[0], 0.95 * OV), (V[1], 0.85 * OV), (V[2], 1.00 * OV), (V[3], 1.00 * OV), (V[4], 0.0)],
    ids=["v0", "v1", "v2-with-retry", "v3-with-retry", "v4-terminal"],
)
def test_figure3_reuse_probability(step: StepId, expected: float) -> None:
    assert reuse_probability(paper_figure3(), step, 12_000) == pytest.approx(expected)


def test_reuse_probability_edge_cases() -> None:
    g = paper_figure3()
    assert reuse_probability(g, V[0], 0) == 0.0
    assert overlap(0, 300) == 0.0
    assert overlap(900, 300) == pytest.approx(0.75)
    # The observation EMA per tool type replaces the step's own estimate.
    obs = ObservationLengthModel()
    obs.observe(ToolType("file"), 3000)
    assert reuse_probability(g, V[0], 3000, obs.for_step) == pytest.approx(0.95 * 0.5)


def test_branch_overlap_uses_shared_prefix() -> None:
    steps = [Step(step_id=V[0], tool=ToolType("web")), Step(step_id=V[1]), Step(step_id=V[2])]
    edges = [
        Edge(src=V[0], dst=V[1], prob=0.6, kind=EdgeKind.BRANCH, shared_prefix_tokens=500),
        Edge(src=V[0], dst=V[2], prob=0.4, kind=EdgeKind.BRANCH, shared_prefix_tokens=2000),
    ]
    g = AEG.build(steps, edges)
    # 0.6 * 500/1000 + 0.4 * min(2000, 1000)/1000 = 0.7
    assert reuse_probability(g, V[0], 1000) == pytest.approx(0.7)


@given(ctx=st.integers(0, 200_000), step=st.sampled_from(V))
def test_reuse_probability_is_a_probability(ctx: int, step: StepId) -> None:
    assert 0.0 <= reuse_probability(paper_figure3(), step, ctx) <= 1.0


def test_observation_model_ema() -> None:
    obs = ObservationLengthModel()
    t = ToolType("code")
    assert obs.predict(t, 300.0) == 300.0
    obs.observe(t, 1000)
    assert obs.predict(t, 300.0) == 1000.0
    obs.observe(t, 0)
    assert obs.predict(t, 300.0) == pytest.approx(900.0)
    with pytest.raises(ValueError):
        obs.observe(t, -1)


def test_next_use_is_tool_start_plus_median_plus_queueing() -> None:
    lat = ToolLatencyModel()
    pred = NextUsePredictor(lat)
    # code P50 = 0.18 s (Table 1).
    assert pred.next_use_at_s(ToolType("code"), 100.0, 100.0) == pytest.approx(100.18)
    assert pred.next_use_at_s(ToolType("code"), 100.0, 100.0, queue_delay_s=0.5) == pytest.approx(100.68)
    p95 = NextUsePredictor(lat, NextUseSettings(gap_quantile=0.95))
    assert p95.next_use_at_s(ToolType("web"), 0.0, 0.0) == pytest.approx(4.5)
    # A tool running longer than predicted: the prediction moves past "now" (conditional median).
    late = pred.next_use_at_s(ToolType("code"), 100.0, 105.0)
    assert late > 105.0


def test_expected_queue_delay() -> None:
    assert expected_queue_delay_s(0, 10, 2.0) == 0.0
    assert expected_queue_delay_s(20, 10, 2.0) == pytest.approx(4.0)
    assert expected_queue_delay_s(3, 0, 2.0) == pytest.approx(6.0)


def test_remaining_work_figure3_most_likely_path() -> None:
    g = paper_figure3()
    cost = FlatCost()
    # After v0: v1..v4 pending, each prefilling 300 observation tokens (0.3 s) and decoding 250 (2.5 s).
    assert remaining_work_s(g, V[0], 3000, cost) == pytest.approx(4 * 2.8)
    # Nothing ran yet: the root prefills its whole 3000-token prompt first.
    assert remaining_work_s(g, None, 0, cost) == pytest.approx(3.0 + 2.5 + 4 * 2.8)
    assert remaining_work_s(g, V[4], 12_000, cost) == 0.0
    assert remaining_work_s(g, V[0], 3000, cost, settings=WorkSettings(max_depth=2)) == pytest.approx(2 * 2.8)


def test_remaining_work_expected_mode_weights_paths() -> None:
    g = from_tool_hints(["shell", "shell", "shell"])
    g_half = AEG.build(
        [g.step(s) for s in (V[0], V[1], V[2])],
        [Edge(src=V[0], dst=V[1], prob=0.5), Edge(src=V[1], dst=V[2], prob=0.5)],
    )
    cost = FlatCost()
    step = 0.3 + 2.5
    expected = remaining_work_s(g_half, None, 0, cost, settings=WorkSettings(mode=WorkMode.EXPECTED))
    assert expected == pytest.approx((3.0 + 2.5) + 0.5 * step + 0.25 * step)
    likely = remaining_work_s(g_half, None, 0, cost)
    assert likely == pytest.approx((3.0 + 2.5) + 2 * step)


def test_remaining_work_expected_mode_terminates_on_retry_loops() -> None:
    g = paper_figure3()
    w = remaining_work_s(g, V[3], 12_000, FlatCost(), settings=WorkSettings(mode=WorkMode.EXPECTED))
    # At least the 0.6-likely final step, finite despite the v2 <-> v3 retry loop.
    assert 0.6 * 2.8 < w < 64 * 2.8


def test_expected_completion_adds_mean_tool_latency() -> None:
    g = paper_figure3()
    lat = ToolLatencyModel()
    cost = LinearCostModel()
    work = remaining_work_s(g, V[0], 3000, cost)
    total = expected_completion_s(g, V[0], 3000, cost, lat)
    tools = lat.mean_s(ToolType("file")) + 3 * lat.mean_s(ToolType("code"))
    assert total == pytest.approx(work + tools)


def test_work_settings_load_strictly() -> None:
    from saga_sgl.errors import InvalidSettings
    from saga_sgl.policy.settings import load_settings

    assert load_settings(WorkSettings, {"mode": "expected"}).mode is WorkMode.EXPECTED
    with pytest.raises(InvalidSettings, match="mode"):
        load_settings(WorkSettings, {"mode": "psychic"})
    with pytest.raises(InvalidSettings, match="max_depth"):
        WorkSettings(max_depth=0)
