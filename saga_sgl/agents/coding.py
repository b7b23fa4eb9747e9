"""A SWE-bench-style ReAct coding agent in the SGLang DSL (read, edit, run-tests tools).

Shape from the workload model's coding agent (``sim.workloads.coding.CodingAgentSettings``): a
system prompt with tool schemas shared by every task, a repository context shared by tasks on the
same repository (Zipf over repositories), a task statement, then per step a thought/action and the
tool's observation appended to a growing context. Tools follow the paper's SWE-bench mix (45% code,
40% file, 10% web, 5% db) with Table 1 latencies.

With dummy weights the model's text is meaningless, so the agent never parses it: the number of
steps, each step's tool and its latency are drawn from the workload model with the task's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sglang as sgl

from saga_sgl.agents.common import AgentScale, run_tool, text_of
from saga_sgl.sim.workloads.coding import CodingAgentSettings, sample_steps

TOOL_NAMES = {
    "code": ("run_test", "edit_code"),
    "file": ("read_file",),
    "web": ("fetch_url",),
    "db": ("sql",),
}
"""Concrete tool per workload-model tool type (names ``aeg.tool_latency`` maps back to the type)."""


@dataclass(frozen=True, slots=True)
class PlannedStep:
    tool: str | None
    """None on the last step (the agent answers)."""
    latency_s: float
    observation_tokens: int


def plan_coding_task(
    seed: int, scale: AgentScale, model: CodingAgentSettings | None = None
) -> dict[str, Any]:
    """The task's shape drawn from the workload model: repository, task length, steps and tools."""
    m = model or CodingAgentSettings()
    rng = np.random.default_rng(seed)
    steps = min(
        scale.max_steps, sample_steps(rng, m.steps_gamma_shape, m.steps_gamma_scale, m.min_steps, m.max_steps)
    )
    ranks = np.arange(1, m.num_repos + 1, dtype=float) ** -m.repo_zipf_exponent
    repo = int(rng.choice(m.num_repos, p=ranks / ranks.sum()))
    kinds, latencies = m.tools.sample(rng, steps)
    obs = np.minimum(
        np.maximum(
            1, np.round(rng.lognormal(np.log(m.observation_median_tokens), m.observation_sigma, steps))
        ),
        m.max_observation_tokens,
    )
    plan = []
    for k in range(steps):
        last = k == steps - 1
        names = TOOL_NAMES[kinds[k]]
        plan.append(
            PlannedStep(
                tool=None if last else names[int(rng.integers(len(names)))],
                latency_s=0.0 if last else float(latencies[k]),
                observation_tokens=scale.tokens(float(obs[k])),
            )
        )
    return {
        "repo": repo,
        "repo_tokens": scale.tokens(
            float(rng.integers(m.repo_context_tokens[0], m.repo_context_tokens[1] + 1))
        ),
        "task_tokens": scale.tokens(float(rng.integers(m.task_tokens[0], m.task_tokens[1] + 1))),
        "system_tokens": scale.tokens(m.system_prompt_tokens),
        "steps": plan,
    }


def _coding_agent(s: Any, task_id: str, plan: dict[str, Any], scale: AgentScale) -> None:
    """ReAct loop: thought + action per step, the tool's observation appended, an answer at the end."""
    s += "You are a software engineering agent. Tools: read_file(path), edit_code(patch), run_test(), "
    s += "fetch_url(url), sql(query).\n" + text_of("swe:system", plan["system_tokens"]) + "\n"
    s += "Repository:\n" + text_of(f"swe:repo{plan['repo']}", plan["repo_tokens"]) + "\n"
    s += "Task: " + text_of(f"swe:task:{task_id}", plan["task_tokens"]) + "\n"
    for k, step in enumerate(plan["steps"]):
        if step.tool is None:
            s += "Final answer:" + sgl.gen("answer", max_tokens=scale.max_new_tokens)
            break
        s += f"Thought {k}:" + sgl.gen(f"thought_{k}", max_tokens=scale.max_new_tokens) + "\n"
        s += f"Action {k}: {step.tool}\n"
        run_tool(step.tool, s, step.latency_s, scale)
        s += f"Observation {k}: " + text_of(f"swe:obs:{task_id}:{k}", step.observation_tokens) + "\n"


coding_agent = sgl.function(_coding_agent)
"""The SGLang program (``coding_agent.run(task_id=..., plan=..., scale=...)``)."""
