"""GapModel: hazards from events and exposure, classes with fallback, workflow history, cold start."""

from __future__ import annotations

import math

import pytest

from saga_sgl.aeg.gaps import GapModel, GapSettings, step_bucket
from saga_sgl.aeg.predict import ReusePredictor


def test_cold_start_uses_the_tool_latency_prior() -> None:
    m = GapModel()
    code = m.outlook(0.0, 10.0, tool="code")  # Table 1: P50 0.18 s, P99 28 s
    assert code.source == "prior:code"
    assert 0.95 < code.prob < 1.0 and code.expected_wait_s < 1.0
    web = m.outlook(0.0, 1.0, tool="web")  # P50 0.85 s
    assert 0.4 < web.prob < 0.7


def test_a_class_that_rarely_returns_is_told_apart_from_one_that_does() -> None:
    m = GapModel(settings=GapSettings(min_class_samples=5))
    for _ in range(50):
        m.observe(2.0, step=1)  # step 1: back after 2 s
        m.observe_idle(0.0, 600.0, False, step=0)  # step 0: idle for 10 min, not back
    for _ in range(5):
        m.observe(100.0, step=0)
    back = m.outlook(0.0, 30.0, step=1)
    gone = m.outlook(0.0, 30.0, step=0)
    assert back.prob > 0.9 and abs(back.expected_wait_s - 2.0) < 1.0
    assert gone.prob < 0.05
    assert back.source.startswith("class:") and gone.source.startswith("class:")


def test_heavy_tails_make_a_long_idle_entry_less_likely_to_return() -> None:
    m = GapModel(settings=GapSettings(min_class_samples=5))
    for gap in [1.0] * 60 + [30.0] * 10:
        m.observe(gap)
    for _ in range(30):
        m.observe_idle(0.0, 3600.0, False)  # a third never comes back
    probs = [m.outlook(age, 20.0).prob for age in (0.0, 5.0, 60.0)]
    assert probs[0] > probs[1] > probs[2]


def test_a_workflow_s_own_history_moves_its_prediction_off_the_population() -> None:
    m = GapModel(settings=GapSettings(min_class_samples=5, prior_weight=2.0))
    for _ in range(40):
        m.observe(1.0, workflow_id=None)
    for _ in range(10):
        m.observe(60.0, workflow_id="slow")
    pop = m.outlook(0.0, 5.0)
    slow = m.outlook(0.0, 5.0, workflow_id="slow")
    assert slow.source == "workflow"
    assert slow.prob < pop.prob


def test_step_buckets_and_bad_input() -> None:
    assert [step_bucket(s) for s in (0, 1, 2, 3, 4, 7, 8)] == [0, 1, 2, 2, 3, 3, 4]
    m = GapModel()
    with pytest.raises(ValueError):
        m.observe(-1.0)
    with pytest.raises(ValueError):
        m.observe_idle(5.0, 1.0, True)
    with pytest.raises(ValueError):
        m.observe(math.nan)


def test_predictor_horizon_follows_the_residence_time() -> None:
    p = ReusePredictor(GapModel())
    assert p.horizon_s(math.inf) == p.settings.max_horizon_s
    assert p.horizon_s(10.0) == pytest.approx(p.settings.horizon_factor * 10.0)
    pred = p.predict(idle_since_s=0.0, now_s=1.0, tool="code", residence_s=10.0)
    assert pred.now_s == 1.0 and pred.next_use_at_s >= 1.0
    assert pred.effective_next_use_s >= pred.next_use_at_s
