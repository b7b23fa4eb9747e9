"""One entry point for every scenario: ``generate(WorkloadSpec(...)) -> Workload``.

Scenarios: ``swe`` (coding agents), ``web`` (WebArena, non-cumulative), ``web-history``
(BrowserGym-style), ``tenants`` (the paper's 10-tenant mix). Randomness comes from three named
streams of the root seed (arrivals, task shapes, tool latencies), so e.g. the tool-latency CV sweep
changes tool latencies and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from saga_sgl.sim.rng import stream
from saga_sgl.sim.workloads.arrivals import Arrivals
from saga_sgl.sim.workloads.browser import BrowserAgentSettings, generate_browser_tasks
from saga_sgl.sim.workloads.coding import CodingAgentSettings, generate_coding_tasks
from saga_sgl.sim.workloads.model import SegmentIds, TaskSpec, Workload
from saga_sgl.sim.workloads.tenants import TenantMixSettings, generate_tenant_task
from saga_sgl.sim.workloads.tool_latency import ToolMix

Scenario = Literal["swe", "web", "web-history", "tenants"]
SCENARIOS: tuple[str, ...] = ("swe", "web", "web-history", "tenants")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSpec:
    """Everything that determines a generated workload (with ``seed``)."""

    scenario: Scenario = "swe"
    seed: int = 0
    horizon_s: float = 600.0
    """Arrivals are generated in [0, horizon_s)."""
    rate_per_min: float = 8.0
    """Task arrival rate of the single-tenant scenarios (paper: lambda ~ 8 tasks/min)."""
    rate_scale: float = 1.0
    """Multiplies every arrival rate (single-tenant and per tenant class): the load knob."""
    burst_cv: float = 1.0
    """Inter-arrival CV: 1 = Poisson, > 1 = bursty Gamma arrivals."""
    closed_loop_agents: int = 0
    """If > 0: closed loop, this many concurrent tasks per tenant; ``max_tasks`` per tenant total."""
    max_tasks: int = 0
    """Closed loop: tasks per tenant to generate. Open loop: if > 0, keep only the first max_tasks."""
    tool_scale: float = 1.0
    """Multiplies every tool latency."""
    tool_cv: float | None = None
    """If set, tool latencies are LogNormal(mean 1.2 s, this CV) instead of Table 1 (Table 10 sweep)."""
    coding: CodingAgentSettings = field(default_factory=CodingAgentSettings)
    browser: BrowserAgentSettings = field(default_factory=BrowserAgentSettings)
    tenants: TenantMixSettings = field(default_factory=TenantMixSettings)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"WorkloadSpec.scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.horizon_s <= 0 or self.rate_scale <= 0:
            raise ValueError("WorkloadSpec.horizon_s and rate_scale must be > 0")


def _tools(mix: ToolMix, spec: WorkloadSpec) -> ToolMix:
    return dataclasses.replace(mix, scale=mix.scale * spec.tool_scale, cv_override=spec.tool_cv)


def _arrival_times(spec: WorkloadSpec, rate_per_min: float, tenant: str) -> list[float]:
    if spec.closed_loop_agents > 0:
        return [0.0] * spec.max_tasks
    arr = Arrivals(rate_per_min=rate_per_min * spec.rate_scale, burst_cv=spec.burst_cv)
    times: list[float] = arr.times(stream(spec.seed, f"arrivals/{tenant}"), spec.horizon_s).tolist()
    return times


def generate(spec: WorkloadSpec) -> Workload:
    """Generate the workload described by ``spec`` (deterministic in ``spec``)."""
    ids = SegmentIds()
    shape_rng = stream(spec.seed, "shapes")
    tool_rng = stream(spec.seed, "tools")
    tasks: list[TaskSpec] = []
    if spec.scenario == "swe":
        s = dataclasses.replace(spec.coding, tools=_tools(spec.coding.tools, spec))
        times = _arrival_times(spec, spec.rate_per_min, "swe")
        tasks = generate_coding_tasks(
            s,
            _np(times),
            tenant="swe",
            tenant_class="swe",
            ids=ids,
            shape_rng=shape_rng,
            tool_rng=tool_rng,
            task_prefix="swe-",
        )
    elif spec.scenario in ("web", "web-history"):
        b = dataclasses.replace(
            spec.browser, keep_history=spec.scenario == "web-history", tools=_tools(spec.browser.tools, spec)
        )
        times = _arrival_times(spec, spec.rate_per_min, "web")
        tasks = generate_browser_tasks(
            b,
            _np(times),
            tenant="web",
            tenant_class="web",
            ids=ids,
            shape_rng=shape_rng,
            tool_rng=tool_rng,
            task_prefix="web-",
        )
    else:
        mix = dataclasses.replace(spec.tenants, tools=_tools(spec.tenants.tools, spec))
        for cls in mix.classes:
            for j in range(cls.num_tenants):
                tenant = f"{cls.name}{j}"
                for i, t in enumerate(_arrival_times(spec, cls.rate_per_min, tenant)):
                    tasks.append(
                        generate_tenant_task(
                            mix,
                            cls,
                            task_id=f"{tenant}-{i}",
                            tenant=tenant,
                            arrival_s=float(t),
                            ids=ids,
                            shape_rng=shape_rng,
                            tool_rng=tool_rng,
                        )
                    )
    tasks.sort(key=lambda t: (t.arrival_s, t.task_id))
    if spec.max_tasks > 0 and spec.closed_loop_agents == 0:
        tasks = tasks[: spec.max_tasks]
    return Workload(
        tasks=tuple(tasks),
        name=spec.scenario,
        closed_loop_agents=spec.closed_loop_agents,
        meta={
            "scenario": spec.scenario,
            "seed": spec.seed,
            "horizon_s": spec.horizon_s,
            "rate_scale": spec.rate_scale,
            "burst_cv": spec.burst_cv,
            "tool_cv": spec.tool_cv,
        },
    )


def _np(times: list[float]):  # type: ignore[no-untyped-def]
    import numpy as np

    return np.asarray(times, dtype=float)
