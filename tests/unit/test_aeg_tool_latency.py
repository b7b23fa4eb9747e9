"""ToolLatencyModel: Table 1 cold start, heavy tail, EMA updates, window tail, cdf/quantile."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_sgl.aeg.tool_latency import (
    TABLE1_PRIORS_S,
    ToolLatencyModel,
    ToolLatencySettings,
    tool_type_of,
)
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.views import ToolType


@pytest.mark.parametrize("tool", sorted(TABLE1_PRIORS_S))
def test_cold_start_matches_table1_p50_p95_p99(tool: str) -> None:
    m = ToolLatencyModel()
    p50, p95, p99 = TABLE1_PRIORS_S[tool]
    t = ToolType(tool)
    assert m.quantile_s(t, 0.50) == pytest.approx(p50, rel=1e-9)
    assert m.quantile_s(t, 0.95) == pytest.approx(p95, rel=1e-9)
    assert m.quantile_s(t, 0.99) == pytest.approx(p99, rel=1e-9)


def test_table1_tail_is_heavier_than_a_lognormal_through_p50_p95() -> None:
    # The research notes' check: a plain log-normal through code's P50/P95 predicts P99 = 7.0 s.
    fit = ToolLatencyModel().fit(ToolType("code"))
    plain_p99 = math.exp(fit.mu + fit.sigma_body * 2.3263)
    assert plain_p99 == pytest.approx(7.0, abs=0.1)
    assert fit.sigma_tail > fit.sigma_body
    assert fit.sigma_body == pytest.approx(math.log(2400 / 180) / 1.6449, rel=1e-3)


def test_unknown_tool_uses_default_prior() -> None:
    m = ToolLatencyModel()
    assert m.quantile_s(ToolType("mystery"), 0.5) == pytest.approx(1.2)
    assert m.quantile_s(ToolType("mystery"), 0.99) == pytest.approx(45.0)


def test_tool_names_map_to_table1_types() -> None:
    assert tool_type_of("run_test") == "code"
    assert tool_type_of("read_file") == "file"
    assert tool_type_of("fetch_url") == "web"
    assert tool_type_of("sql") == "db"
    assert tool_type_of("my_tool") == "my_tool"


def test_ema_converges_to_observed_lognormal() -> None:
    rng = random.Random(7)
    m = ToolLatencyModel()
    t = ToolType("code")
    for _ in range(3000):
        m.observe(t, math.exp(rng.gauss(math.log(0.5), 0.4)))
    fit = m.fit(t)
    assert fit.mu == pytest.approx(math.log(0.5), abs=0.15)
    assert fit.sigma_body == pytest.approx(0.4, abs=0.1)
    # A log-normal sample has no extra tail: the window slope is close to sigma_body.
    assert fit.sigma_tail == pytest.approx(fit.sigma_body, abs=0.25)
    assert m.quantile_s(t, 0.5) == pytest.approx(0.5, rel=0.2)


def test_window_tail_picks_up_heavy_tail() -> None:
    rng = random.Random(3)
    m = ToolLatencyModel()
    t = ToolType("db")
    # Body log-normal, 3% of calls 20x slower: P99 far above the body's log-normal P99.
    for _ in range(256):
        x = math.exp(rng.gauss(math.log(0.1), 0.3))
        m.observe(t, x * 20 if rng.random() < 0.03 else x)
    fit = m.fit(t)
    assert fit.sigma_tail > 2 * fit.sigma_body
    assert m.quantile_s(t, 0.99) > 3 * math.exp(fit.mu + fit.sigma_body * 2.3263)


def test_emas_only_move_on_observe_and_reject_bad_samples() -> None:
    m = ToolLatencyModel()
    before = m.fit(ToolType("web"))
    assert m.fit(ToolType("web")) == before
    with pytest.raises(ValueError):
        m.observe(ToolType("web"), -1.0)
    with pytest.raises(ValueError):
        m.observe(ToolType("web"), math.nan)
    m.observe(ToolType("web"), 0.0)  # floored at min_latency_s, not an error
    assert m.fit(ToolType("web")).num_samples == 1


@given(
    tool=st.sampled_from(["code", "file", "web", "db", "x"]),
    q=st.floats(min_value=0.001, max_value=0.999),
)
def test_cdf_inverts_quantile(tool: str, q: float) -> None:
    m = ToolLatencyModel()
    x = m.quantile_s(ToolType(tool), q)
    if x < m.settings.max_latency_s:
        assert m.cdf(ToolType(tool), x) == pytest.approx(q, abs=1e-9)


@given(q1=st.floats(0.01, 0.98), dq=st.floats(0.001, 0.01))
def test_quantiles_are_monotone(q1: float, dq: float) -> None:
    m = ToolLatencyModel()
    assert m.quantile_s(ToolType("code"), q1) <= m.quantile_s(ToolType("code"), q1 + dq)


def test_conditional_quantile_grows_with_elapsed_time() -> None:
    m = ToolLatencyModel()
    t = ToolType("code")
    assert m.conditional_quantile_s(t, 0.5, 0.0) == pytest.approx(m.quantile_s(t, 0.5))
    later = m.conditional_quantile_s(t, 0.5, 3.0)
    assert later > 3.0
    assert later > m.conditional_quantile_s(t, 0.5, 1.0)


@settings(deadline=None, max_examples=5)
@given(tool=st.sampled_from(["code", "file", "web", "db"]))
def test_mean_matches_monte_carlo(tool: str) -> None:
    m = ToolLatencyModel(ToolLatencySettings(max_latency_s=60.0))
    rng = random.Random(11)
    n = 60_000
    draws = [m.quantile_s(ToolType(tool), min(max(rng.random(), 1e-12), 1 - 1e-12)) for _ in range(n)]
    assert m.mean_s(ToolType(tool)) == pytest.approx(sum(draws) / n, rel=0.05)


def test_max_latency_caps_quantiles() -> None:
    m = ToolLatencyModel(ToolLatencySettings(max_latency_s=10.0))
    assert m.quantile_s(ToolType("web"), 0.999) == 10.0
    assert m.cdf(ToolType("web"), 10.0) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ema_alpha": 0.0},
        {"window_size": 1},
        {"min_tail_samples": 1000},
        {"splice_quantile": 0.99, "tail_quantile": 0.95},
        {"priors_s": {"code": (1.0, 0.5, 2.0)}},
        {"default_prior_s": (1.0, 2.0)},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidSettings):
        ToolLatencySettings(**kwargs)  # type: ignore[arg-type]


def test_settings_load_from_json_lists() -> None:
    from saga_sgl.policy.settings import load_settings

    s = load_settings(ToolLatencySettings, {"priors_s": {"code": [0.1, 1, 10]}, "default_prior_s": [1, 2, 3]})
    assert s.priors_s["code"] == (0.1, 1.0, 10.0)
    assert s.default_prior_s == (1.0, 2.0, 3.0)
    m = ToolLatencyModel(s)
    assert m.quantile_s(ToolType("code"), 0.95) == pytest.approx(1.0)
    assert m.quantile_s(ToolType("file"), 0.5) == pytest.approx(1.0)  # no prior for file any more


def test_prior_scale_scales_the_cold_start_quantiles_not_the_observations() -> None:
    plain = ToolLatencyModel()
    fast = ToolLatencyModel(ToolLatencySettings(prior_scale=0.1))
    for t in map(ToolType, TABLE1_PRIORS_S):
        for q in (0.5, 0.95, 0.99):
            assert fast.quantile_s(t, q) == pytest.approx(0.1 * plain.quantile_s(t, q), rel=1e-9)
    fast.observe(ToolType("code"), 7.0)
    plain.observe(ToolType("code"), 7.0)  # an observation counts as itself in both
    assert fast.quantile_s(ToolType("code"), 0.5) < plain.quantile_s(ToolType("code"), 0.5)
    with pytest.raises(InvalidSettings):
        ToolLatencySettings(prior_scale=0.0)
