"""SWE-bench-like coding agents: long ReAct loops over a growing context.

Each task: a system prompt + tool schemas shared by every task of the agent type, a repository
context shared by the tasks on the same repository (Zipf over repositories), a unique task statement,
then per call k an action (the call's output) and a tool observation appended to the context.
When the context exceeds ``max_context_tokens`` the oldest observations are dropped (observation
masking), which breaks the cached prefix exactly as real agent frameworks do.

Defaults and their sources (workloads-and-cost-model.md section 1.3, saga-paper.md section 4.1):
calls per task Gamma(2, 18.5) capped at 150 (paper: mean 37, max 150); system prompt 4,096 tokens
(abench uses 8,192; 2-8K typical); repo context 1-4K over 50 repos (Zipf 1.1); task statement
500-1,500; output LogNormal(median 150, sigma 0.8) capped at 1,024 (Mooncake tool&agent mean 182);
observation LogNormal(median 250, sigma 1.0) capped at 8,192 (mean ~410; the research note's
median 400 / sigma 1.2 gives a mean of 820, twice the paper generator's Gamma(2, 175), and a deepest-turn
context far above the ~27K average of SWE-rebench-openhands); tools from Table 1 with the paper's
SWE-bench mix 45% code / 40% file / 10% web / 5% db.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from saga_sgl.sim.workloads.model import CallSpec, Segment, SegmentIds, TaskSpec
from saga_sgl.sim.workloads.tool_latency import SWE_TOOL_MIX, ToolMix


@dataclass(frozen=True, slots=True, kw_only=True)
class CodingAgentSettings:
    """Shape of one SWE-bench-like agent type. Every field is a knob."""

    agent_type: str = "swe"
    steps_gamma_shape: float = 2.0
    """Calls per task ~ Gamma(shape, scale), rounded, within [min_steps, max_steps]."""
    steps_gamma_scale: float = 18.5
    min_steps: int = 3
    max_steps: int = 150
    system_prompt_tokens: int = 4096
    """System prompt + tool schemas, shared by every task of this agent type."""
    num_repos: int = 50
    """Repositories tasks are drawn from (Zipf); tasks on one repo share its context segment."""
    repo_zipf_exponent: float = 1.1
    repo_context_tokens: tuple[int, int] = (1000, 4000)
    """Uniform range of a repository's shared context segment."""
    task_tokens: tuple[int, int] = (500, 1500)
    """Uniform range of the unique task statement."""
    output_median_tokens: float = 150.0
    output_sigma: float = 0.8
    max_output_tokens: int = 1024
    observation_median_tokens: float = 250.0
    observation_sigma: float = 1.0
    max_observation_tokens: int = 8192
    max_context_tokens: int = 131072
    """Context-window limit; beyond it the oldest observations are dropped (observation masking)."""
    tools: ToolMix = field(default_factory=lambda: SWE_TOOL_MIX)


def _lognormal_int(rng: np.random.Generator, median: float, sigma: float, cap: int, n: int) -> np.ndarray:
    return np.minimum(np.maximum(1, np.round(rng.lognormal(np.log(median), sigma, n))), cap).astype(int)


def sample_steps(rng: np.random.Generator, shape: float, scale: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(float(rng.gamma(shape, scale))))))


def build_cumulative_task(
    *,
    task_id: str,
    tenant: str,
    tenant_class: str,
    agent_type: str,
    arrival_s: float,
    head: list[Segment],
    outputs: np.ndarray,
    observations: np.ndarray,
    tools: list[str],
    tool_latencies: np.ndarray,
    ids: SegmentIds,
    max_context_tokens: int,
) -> TaskSpec:
    """A task whose prompt k is ``head + (out_0, obs_0, ..., out_{k-1}, obs_{k-1})`` with
    observation masking past ``max_context_tokens``. The head is never dropped."""
    n = len(outputs)
    history: list[Segment] = []
    head_tokens = sum(s.num_tokens for s in head)
    hist_tokens = 0
    calls: list[CallSpec] = []
    for k in range(n):
        out_id = ids.new()
        last = k == n - 1
        calls.append(
            CallSpec(
                step=k,
                prompt=tuple(head) + tuple(history),
                output_tokens=int(outputs[k]),
                output_seg_id=out_id,
                tool=None if last else tools[k],
                tool_latency_s=0.0 if last else float(tool_latencies[k]),
            )
        )
        if last:
            break
        history.append(Segment(out_id, int(outputs[k])))
        history.append(Segment(ids.new(), int(observations[k])))
        hist_tokens += int(outputs[k]) + int(observations[k])
        while head_tokens + hist_tokens > max_context_tokens and history:
            # Observation masking: drop the oldest (action, observation) pair.
            for _ in range(min(2, len(history))):
                hist_tokens -= history.pop(0).num_tokens
    return TaskSpec(
        task_id=task_id,
        tenant=tenant,
        tenant_class=tenant_class,
        agent_type=agent_type,
        arrival_s=arrival_s,
        calls=tuple(calls),
    )


def generate_coding_tasks(
    settings: CodingAgentSettings,
    arrivals_s: np.ndarray,
    *,
    tenant: str,
    tenant_class: str,
    ids: SegmentIds,
    shape_rng: np.random.Generator,
    tool_rng: np.random.Generator,
    task_prefix: str,
) -> list[TaskSpec]:
    """One task per arrival time."""
    s = settings
    system = Segment(ids.named(f"{s.agent_type}:system"), s.system_prompt_tokens)
    ranks = np.arange(1, s.num_repos + 1, dtype=float)
    repo_p = ranks**-s.repo_zipf_exponent
    repo_p /= repo_p.sum()
    repo_len = shape_rng.integers(s.repo_context_tokens[0], s.repo_context_tokens[1] + 1, s.num_repos)
    tasks = []
    for i, t in enumerate(arrivals_s):
        n = sample_steps(shape_rng, s.steps_gamma_shape, s.steps_gamma_scale, s.min_steps, s.max_steps)
        repo = int(shape_rng.choice(s.num_repos, p=repo_p))
        head = [
            system,
            Segment(ids.named(f"{s.agent_type}:repo{repo}"), int(repo_len[repo])),
            Segment(ids.new(), int(shape_rng.integers(s.task_tokens[0], s.task_tokens[1] + 1))),
        ]
        outs = _lognormal_int(shape_rng, s.output_median_tokens, s.output_sigma, s.max_output_tokens, n)
        obs = _lognormal_int(
            shape_rng, s.observation_median_tokens, s.observation_sigma, s.max_observation_tokens, n
        )
        tools, lat = s.tools.sample(tool_rng, n)
        tasks.append(
            build_cumulative_task(
                task_id=f"{task_prefix}{i}",
                tenant=tenant,
                tenant_class=tenant_class,
                agent_type=s.agent_type,
                arrival_s=float(t),
                head=head,
                outputs=outs,
                observations=obs,
                tools=tools,
                tool_latencies=lat,
                ids=ids,
                max_context_tokens=s.max_context_tokens,
            )
        )
    return tasks
