"""Clock, strict settings loader, and the default cost model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from saga_sgl.clock import Clock, ManualClock, SimClock, SystemClock
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.cost_model import LinearCostModel, LinearCostSettings
from saga_sgl.policy.settings import load_settings, settings_to_dict


def test_clocks() -> None:
    m = ManualClock(5.0)
    assert m.now_s() == 5.0
    assert m.advance(1.5) == 6.5
    m.set(1.0)
    assert m.now_s() == 1.0
    with pytest.raises(ValueError):
        m.advance(-1.0)
    s = SimClock()
    s.advance_to(3.0)
    assert s.now_s() == 3.0
    with pytest.raises(ValueError):
        s.advance_to(2.0)
    sysc = SystemClock()
    assert sysc.now_s() <= sysc.now_s()
    assert all(isinstance(c, Clock) for c in (m, s, sysc))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Knobs:
    rate: float = 1.0
    count: int = 2
    name: str = "x"
    flag: bool = False
    limit: float | None = None


def test_strict_loader() -> None:
    k = load_settings(_Knobs, {"rate": 3, "count": 4, "name": "y", "flag": True, "limit": None})
    assert k == _Knobs(rate=3.0, count=4, name="y", flag=True, limit=None)
    assert isinstance(k.rate, float)
    assert load_settings(_Knobs, {"limit": 2}).limit == 2.0
    assert settings_to_dict(k)["count"] == 4
    for bad in ({"rate": "fast"}, {"count": 1.5}, {"count": True}, {"flag": 1}, {"name": 3}, {"limit": "x"}):
        with pytest.raises(InvalidSettings):
            load_settings(_Knobs, bad)
    with pytest.raises(InvalidSettings, match="'bogus'"):
        load_settings(_Knobs, {"bogus": 1})
    with pytest.raises(TypeError):
        load_settings(int, {})
    with pytest.raises(TypeError):
        settings_to_dict(_Knobs)


def test_linear_cost_model() -> None:
    c = LinearCostModel()
    assert c.prefill_time_s(0, 100) == 0.0
    assert c.decode_time_s(0, 100) == 0.0
    # An 8K-token prefill on Llama-3-8B/H100 is ~0.2-0.3 s (research notes: ~220 ms).
    assert 0.15 < c.prefill_time_s(8192, 0) < 0.3
    # Decode at batch 1 is ~6 ms/token.
    assert 0.005 < c.decode_time_s(1, 1000) < 0.008
    # Cached context makes prefill attention more expensive, never cheaper.
    assert c.prefill_time_s(1000, 30_000) > c.prefill_time_s(1000, 0)
    flat = LinearCostModel(
        LinearCostSettings(
            prefill_fixed_s=0.0,
            prefill_attn_s_per_token2=0.0,
            prefill_per_token_s=1e-3,
            decode_kv_read_s_per_token=0.0,
            decode_step_s=1e-2,
        )
    )
    assert flat.prefill_time_s(100, 5) == pytest.approx(0.1)
    assert flat.decode_time_s(10, 5) == pytest.approx(0.1)
    with pytest.raises(InvalidSettings):
        LinearCostSettings(decode_step_s=-1.0)
