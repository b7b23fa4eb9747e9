"""The paper's BurstGPT-derived 10-tenant mix (saga-paper.md section 4.1).

======== ======= ================================ ======================
class    tenants agent                            arrivals per tenant
======== ======= ================================ ======================
heavy    3       Gamma(2, 50) steps, cap 200      16 tasks/min
medium   4       Gamma(2, 15) steps, cap 80       8 tasks/min
light    3       Gamma(2, 5) steps, cap 30        4 tasks/min
======== ======= ================================ ======================

Initial prompt 3-5K / 2-4K / 1.5-3K tokens (of which ``tenant_system_tokens`` are the tenant's
shared system prompt), outputs 200-600 / 100-400 / 50-200, observations Gamma(2, 200), tools 50/50
code/web, contexts cumulative. These are the paper repository's calibrations [R].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from saga_sgl.sim.workloads.coding import build_cumulative_task, sample_steps
from saga_sgl.sim.workloads.model import Segment, SegmentIds, TaskSpec
from saga_sgl.sim.workloads.tool_latency import TENANT_TOOL_MIX, ToolMix


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantClass:
    """One tenant class of the mix."""

    name: str
    num_tenants: int
    rate_per_min: float
    steps_gamma_scale: float
    max_steps: int
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    steps_gamma_shape: float = 2.0
    min_steps: int = 1


DEFAULT_CLASSES: tuple[TenantClass, ...] = (
    TenantClass(
        name="heavy",
        num_tenants=3,
        rate_per_min=16,
        steps_gamma_scale=50,
        max_steps=200,
        prompt_tokens=(3000, 5000),
        output_tokens=(200, 600),
    ),
    TenantClass(
        name="medium",
        num_tenants=4,
        rate_per_min=8,
        steps_gamma_scale=15,
        max_steps=80,
        prompt_tokens=(2000, 4000),
        output_tokens=(100, 400),
    ),
    TenantClass(
        name="light",
        num_tenants=3,
        rate_per_min=4,
        steps_gamma_scale=5,
        max_steps=30,
        prompt_tokens=(1500, 3000),
        output_tokens=(50, 200),
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantMixSettings:
    classes: tuple[TenantClass, ...] = DEFAULT_CLASSES
    tenant_system_tokens: int = 1024
    """Part of each tenant's initial prompt that is its shared system prompt (all its tasks)."""
    observation_gamma: tuple[float, float] = (2.0, 200.0)
    """Observation tokens ~ Gamma(shape, scale)."""
    max_context_tokens: int = 131072
    tools: ToolMix = field(default_factory=lambda: TENANT_TOOL_MIX)


def generate_tenant_task(
    settings: TenantMixSettings,
    cls: TenantClass,
    *,
    task_id: str,
    tenant: str,
    arrival_s: float,
    ids: SegmentIds,
    shape_rng: np.random.Generator,
    tool_rng: np.random.Generator,
) -> TaskSpec:
    n = sample_steps(shape_rng, cls.steps_gamma_shape, cls.steps_gamma_scale, cls.min_steps, cls.max_steps)
    prompt = int(shape_rng.integers(cls.prompt_tokens[0], cls.prompt_tokens[1] + 1))
    sys_tokens = min(settings.tenant_system_tokens, prompt - 1)
    head = [Segment(ids.named(f"{tenant}:system"), sys_tokens), Segment(ids.new(), prompt - sys_tokens)]
    outs = shape_rng.integers(cls.output_tokens[0], cls.output_tokens[1] + 1, n)
    shape, scale = settings.observation_gamma
    obs = np.maximum(1, np.round(shape_rng.gamma(shape, scale, n))).astype(int)
    tools, lat = settings.tools.sample(tool_rng, n)
    return build_cumulative_task(
        task_id=task_id,
        tenant=tenant,
        tenant_class=cls.name,
        agent_type=f"tenant-{cls.name}",
        arrival_s=arrival_s,
        head=head,
        outputs=outs,
        observations=obs,
        tools=tools,
        tool_latencies=lat,
        ids=ids,
        max_context_tokens=settings.max_context_tokens,
    )
