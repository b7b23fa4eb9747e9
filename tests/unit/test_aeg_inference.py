"""Pattern inference per agent type (theta_conf = 0.7) and the 30-task cold start."""

from __future__ import annotations

import pytest

from saga_sgl.aeg.inference import InferenceSettings, ObservabilityTier, ObservedStep, PatternInference
from saga_sgl.policy.views import AgentType, StepId, ToolType

CODER = AgentType("coder")
FILE, CODE, WEB = ToolType("file"), ToolType("code"), ToolType("web")


def _task(*tools: ToolType | None) -> list[ObservedStep]:
    return [
        ObservedStep(tool=t, prompt_tokens=2000, output_tokens=100, observation_tokens=400) for t in tools
    ]


def test_cold_start_until_30_tasks() -> None:
    inf = PatternInference()
    for i in range(29):
        inf.observe_task(CODER, _task(FILE, CODE, None))
        assert inf.tier(CODER) is ObservabilityTier.COLD_START, i
        assert inf.infer(CODER) is None
    inf.observe_task(CODER, _task(FILE, CODE, None))
    assert inf.tier(CODER) is ObservabilityTier.INFERRED
    assert inf.infer(CODER) is not None
    assert inf.tier(AgentType("other")) is ObservabilityTier.COLD_START


def test_transition_probabilities_and_theta_conf() -> None:
    inf = PatternInference(InferenceSettings(cold_start_tasks=0))
    # file -> code 8x, file -> web 2x: P = 0.8 >= 0.7 kept; code -> file 6x, code -> web 4x: 0.6 dropped.
    for _ in range(8):
        inf.observe_task(CODER, _task(FILE, CODE))
    for _ in range(2):
        inf.observe_task(CODER, _task(FILE, WEB))
    for _ in range(6):
        inf.observe_task(CODER, _task(CODE, FILE))
    for _ in range(4):
        inf.observe_task(CODER, _task(CODE, WEB))
    p = inf.transition_probs(CODER)
    assert p[(FILE, CODE)] == pytest.approx(0.8)
    assert p[(CODE, FILE)] == pytest.approx(0.6)
    assert inf.confident_successor(CODER, FILE) == CODE
    assert inf.confident_successor(CODER, CODE) is None
    assert inf.accuracy_proxy(CODER) == pytest.approx(8 / 20)


def test_inferred_chain_follows_confident_successors() -> None:
    inf = PatternInference(InferenceSettings(cold_start_tasks=1))
    for _ in range(10):
        inf.observe_task(CODER, _task(FILE, CODE, CODE, CODE, None))
    g = inf.infer(CODER)
    assert g is not None
    assert g.source == "inferred"
    assert g.step(StepId("v0")).tool == FILE
    assert g.step(StepId("v1")).tool == CODE
    # 10 tasks over 50 steps: p_term = 0.2 on every edge.
    assert inf.termination_prob(CODER) == pytest.approx(0.2)
    assert all(e.prob == pytest.approx(0.8) for e in g.edges)
    last = g.step(StepId(f"v{len(g) - 1}"))
    assert last.is_terminal
    # Chain stops once survival < 1%: 0.8^k < 0.01 -> k = 21 edges.
    assert len(g) == 21
    # Token EMAs moved from the repo defaults toward the observed 2000/100/400.
    v0 = g.step(StepId("v0"))
    assert v0.prompt_tokens_est < 3000
    assert v0.observation_tokens_est > 300


def test_modal_first_tool_and_explicit_first_tool() -> None:
    inf = PatternInference(InferenceSettings(cold_start_tasks=1))
    inf.observe_task(CODER, _task(WEB, CODE))
    inf.observe_task(CODER, _task(WEB, CODE))
    inf.observe_task(CODER, _task(FILE, CODE))
    g = inf.infer(CODER)
    assert g is not None and g.step(StepId("v0")).tool == WEB
    g2 = inf.infer(CODER, first_tool=FILE)
    assert g2 is not None and g2.step(StepId("v0")).tool == FILE


def test_no_cold_start_and_no_history_infers_nothing() -> None:
    from saga_sgl.aeg.inference import InferenceSettings, PatternInference
    from saga_sgl.policy.views import AgentType

    inference = PatternInference(InferenceSettings(cold_start_tasks=0))
    assert inference.infer(AgentType("never-seen")) is None
