"""WebArena-like browser agents, in two variants.

* ``keep_history=False`` (WebArena's own harness): each call sends the shared system prompt with
  few-shot examples, the task intent, the *current* accessibility tree (truncated to 1,920 tokens)
  and the previous action. Only the system prompt and the intent are reusable: the low-reuse control.
* ``keep_history=True`` (BrowserGym/AgentLab style): observations and actions accumulate, so the
  context grows like a coding agent's: the high-reuse case.

Defaults (workloads-and-cost-model.md section 1.3; webarena run.py: max_steps 30,
max_obs_length 1920, max_tokens 384; paper: mean 18 steps): calls Uniform{5..30}; system 2,500;
intent 100; observation Uniform(1,500, 1,920); previous action 50; output LogNormal(median 120,
sigma 0.6) capped at 384; tools from Table 1 with the paper's WebArena mix 75% web / 15% file /
5% code / 5% db.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from saga_sgl.sim.workloads.coding import _lognormal_int, build_cumulative_task
from saga_sgl.sim.workloads.model import CallSpec, Segment, SegmentIds, TaskSpec
from saga_sgl.sim.workloads.tool_latency import WEB_TOOL_MIX, ToolMix


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserAgentSettings:
    """Shape of one WebArena-like agent type. Every field is a knob."""

    agent_type: str = "web"
    keep_history: bool = False
    """False: WebArena's non-cumulative prompt; True: BrowserGym-style growing history."""
    steps: tuple[int, int] = (5, 30)
    """Calls per task, uniform over this inclusive range."""
    system_prompt_tokens: int = 2500
    intent_tokens: int = 100
    observation_tokens: tuple[int, int] = (1500, 1920)
    prev_action_tokens: int = 50
    output_median_tokens: float = 120.0
    output_sigma: float = 0.6
    max_output_tokens: int = 384
    max_context_tokens: int = 131072
    tools: ToolMix = field(default_factory=lambda: WEB_TOOL_MIX)


def generate_browser_tasks(
    settings: BrowserAgentSettings,
    arrivals_s: np.ndarray,
    *,
    tenant: str,
    tenant_class: str,
    ids: SegmentIds,
    shape_rng: np.random.Generator,
    tool_rng: np.random.Generator,
    task_prefix: str,
) -> list[TaskSpec]:
    s = settings
    agent = s.agent_type + ("-history" if s.keep_history else "")
    system = Segment(ids.named(f"{agent}:system"), s.system_prompt_tokens)
    tasks = []
    for i, t in enumerate(arrivals_s):
        n = int(shape_rng.integers(s.steps[0], s.steps[1] + 1))
        intent = Segment(ids.new(), s.intent_tokens)
        obs = shape_rng.integers(s.observation_tokens[0], s.observation_tokens[1] + 1, n)
        outs = _lognormal_int(shape_rng, s.output_median_tokens, s.output_sigma, s.max_output_tokens, n)
        tools, lat = s.tools.sample(tool_rng, n)
        if s.keep_history:
            # Prompt k = system, intent, obs_0, out_0, obs_1, ...: the first page is part of the head,
            # and each later observation follows the action that produced it.
            head = [system, intent, Segment(ids.new(), int(obs[0]))]
            tasks.append(
                build_cumulative_task(
                    task_id=f"{task_prefix}{i}",
                    tenant=tenant,
                    tenant_class=tenant_class,
                    agent_type=agent,
                    arrival_s=float(t),
                    head=head,
                    outputs=outs,
                    observations=np.concatenate([obs[1:], obs[:1]]),
                    tools=tools,
                    tool_latencies=lat,
                    ids=ids,
                    max_context_tokens=s.max_context_tokens,
                )
            )
            continue
        calls = []
        prev_action: tuple[Segment, ...] = ()
        for k in range(n):
            last = k == n - 1
            calls.append(
                CallSpec(
                    step=k,
                    prompt=(system, intent, Segment(ids.new(), int(obs[k])), *prev_action),
                    output_tokens=int(outs[k]),
                    output_seg_id=ids.new(),
                    tool=None if last else tools[k],
                    tool_latency_s=0.0 if last else float(lat[k]),
                )
            )
            prev_action = (Segment(ids.new(), s.prev_action_tokens),)
        tasks.append(
            TaskSpec(
                task_id=f"{task_prefix}{i}",
                tenant=tenant,
                tenant_class=tenant_class,
                agent_type=agent,
                arrival_s=float(t),
                calls=tuple(calls),
            )
        )
    return tasks
