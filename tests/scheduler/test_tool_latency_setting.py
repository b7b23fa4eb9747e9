"""The scheduler's tool-latency model takes its settings from SchedulerSettings.tool_latency."""

from __future__ import annotations

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.settings import load_settings
from saga_sgl.policy.views import ToolType
from saga_sgl.scheduler import SchedulerSettings, WorkflowScheduler


def test_prior_scale_reaches_the_schedulers_latency_model() -> None:
    plain = WorkflowScheduler(SchedulerSettings(), clock=ManualClock())
    # As the router loads --scheduler-config: JSON, strictly.
    fast = WorkflowScheduler(
        load_settings(SchedulerSettings, {"tool_latency": {"prior_scale": 0.1}}), clock=ManualClock()
    )
    web = ToolType("web")
    assert fast.latency.quantile_s(web, 0.5) == pytest.approx(0.1 * plain.latency.quantile_s(web, 0.5))


def test_an_unknown_tool_latency_setting_is_refused() -> None:
    with pytest.raises(InvalidSettings):
        WorkflowScheduler(SchedulerSettings(tool_latency={"prior_scael": 0.1}), clock=ManualClock())
