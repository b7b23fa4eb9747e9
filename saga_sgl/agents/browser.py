"""A WebArena-style browser agent in the SGLang DSL, with a growing history (BrowserGym style).

Shape from the workload model's browser agent (``sim.workloads.browser.BrowserAgentSettings`` with
``keep_history=True``): a system prompt with few-shot examples shared by every task, the task intent,
then per step an action and the page's accessibility tree appended to the history, so the context
grows like a coding agent's. Steps Uniform{5..30} (capped by ``AgentScale.max_steps``); tools follow
the paper's WebArena mix (75% web, 15% file, 5% code, 5% db) with Table 1 latencies.

With dummy weights the model's text is meaningless, so the agent never parses it: the number of
steps, each step's tool and its latency are drawn from the workload model with the task's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sglang as sgl

from saga_sgl.agents.coding import PlannedStep
from saga_sgl.agents.common import AgentScale, run_tool, text_of
from saga_sgl.sim.workloads.browser import BrowserAgentSettings

TOOL_NAMES = {"web": "browser", "file": "read_file", "code": "python", "db": "sql"}


def plan_browser_task(
    seed: int, scale: AgentScale, model: BrowserAgentSettings | None = None
) -> dict[str, Any]:
    m = model or BrowserAgentSettings(keep_history=True)
    rng = np.random.default_rng(seed)
    steps = min(scale.max_steps, int(rng.integers(m.steps[0], m.steps[1] + 1)))
    kinds, latencies = m.tools.sample(rng, steps)
    plan = [
        PlannedStep(
            tool=None if k == steps - 1 else TOOL_NAMES[kinds[k]],
            latency_s=0.0 if k == steps - 1 else float(latencies[k]),
            observation_tokens=scale.tokens(
                float(rng.integers(m.observation_tokens[0], m.observation_tokens[1] + 1))
            ),
        )
        for k in range(steps)
    ]
    return {
        "system_tokens": scale.tokens(m.system_prompt_tokens),
        "intent_tokens": scale.tokens(m.intent_tokens),
        "steps": plan,
    }


def _browser_agent(s: Any, task_id: str, plan: dict[str, Any], scale: AgentScale) -> None:
    """Observe the page, act, append the new page to the history; stop with an answer."""
    s += "You are a web agent. Actions: click [id], type [id] [text], scroll, goto [url], stop [answer].\n"
    s += text_of("web:system", plan["system_tokens"]) + "\n"
    s += "Objective: " + text_of(f"web:intent:{task_id}", plan["intent_tokens"]) + "\n"
    for k, step in enumerate(plan["steps"]):
        s += f"Page {k}: " + text_of(f"web:page:{task_id}:{k}", step.observation_tokens) + "\n"
        if step.tool is None:
            s += "Action: stop [" + sgl.gen("answer", max_tokens=scale.max_new_tokens) + "]\n"
            break
        s += f"Action {k}:" + sgl.gen(f"action_{k}", max_tokens=scale.max_new_tokens) + "\n"
        run_tool(step.tool, s, step.latency_s, scale)


browser_agent = sgl.function(_browser_agent)
"""The SGLang program (``browser_agent.run(task_id=..., plan=..., scale=...)``)."""
