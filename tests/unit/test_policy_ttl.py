"""Tool-aware TTL: Algorithm 1 with the paper's Table 1 numbers, and Eq. 6."""

from __future__ import annotations

import pytest
from factories import make_entry

from saga_sgl.aeg.tool_latency import ToolLatencyModel, ToolLatencySettings
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.eviction.ttl import (
    ToolAwareTtl,
    TtlSettings,
    is_ttl_live,
    memory_pressure,
    ttl_protects,
)
from saga_sgl.policy.views import ToolType


@pytest.mark.parametrize(
    ("usage", "m"),
    [(0.0, 0.0), (0.7, 0.0), (0.75, 0.25), (0.8, 0.5), (0.85, 0.75), (0.9, 1.0), (0.99, 1.0)],
)
def test_eq6_memory_pressure(usage: float, m: float) -> None:
    assert memory_pressure(usage) == pytest.approx(m)


# Table 1 P95s: code 2.4 s, file 0.32 s, web 4.5 s, db 0.89 s; the TTL shrinks to x(1 - 0.5 m).
@pytest.mark.parametrize(
    ("tool", "usage", "ttl_s"),
    [
        ("code", 0.5, 2.4),
        ("file", 0.5, 0.32),
        ("web", 0.5, 4.5),
        ("db", 0.5, 0.89),
        ("code", 0.8, 1.8),
        ("file", 0.8, 0.24),
        ("web", 0.8, 3.375),
        ("db", 0.8, 0.6675),
        ("code", 0.95, 1.2),
        ("web", 1.0, 2.25),
    ],
    ids=lambda v: str(v),
)
def test_algorithm1_table1_ttls(tool: str, usage: float, ttl_s: float) -> None:
    ttl = ToolAwareTtl(ToolLatencyModel())
    assert ttl.ttl_s(ToolType(tool), usage) == pytest.approx(ttl_s, rel=1e-9)


def test_ttl_capped_at_300_s() -> None:
    slow = ToolLatencyModel(ToolLatencySettings(priors_s={"batch": (100.0, 1000.0, 2000.0)}))
    ttl = ToolAwareTtl(slow)
    assert ttl.ttl_s(ToolType("batch"), 0.0) == 300.0
    # 1000 x 0.5 = 500 s at full pressure: still capped.
    assert ttl.ttl_s(ToolType("batch"), 0.95) == 300.0


def test_deadline_is_absolute() -> None:
    ttl = ToolAwareTtl(ToolLatencyModel())
    assert ttl.deadline_s(ToolType("code"), 100.0, 0.0) == pytest.approx(102.4)


def test_live_ttl_and_protection_rule() -> None:
    e = make_entry(ttl_deadline_s=10.0)
    assert is_ttl_live(e, 9.999)
    assert not is_ttl_live(e, 10.0)
    assert not is_ttl_live(make_entry(), 0.0)
    assert ttl_protects(True, 0.9, 0.89)
    assert not ttl_protects(True, 0.9, 0.9)
    assert not ttl_protects(False, 0.9, 0.1)


def test_ttl_settings_validation() -> None:
    with pytest.raises(InvalidSettings, match="threshold_high"):
        TtlSettings(threshold_low=0.9, threshold_high=0.7)
    with pytest.raises(InvalidSettings, match="percentile"):
        TtlSettings(percentile=1.0)
