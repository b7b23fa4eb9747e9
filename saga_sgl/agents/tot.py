"""A tree-of-thought agent in the SGLang DSL: propose thoughts in parallel with ``fork``, score each
with ``select``, keep the best, go one level deeper.

Every level forks ``breadth`` branches from the current context (one prefill, then the branches
share its KV), each branch generates a thought and rates it with ``select``; the program joins the
branches and appends the chosen thought. Between levels it runs a tool (a "verify" step, code type,
Table 1 latency), as tree searches over code or math do.

With dummy weights the model's text and ratings are meaningless: which branch is kept is drawn with
the task's seed (the ratings are still requested, so the traffic is that of a real tree search), and
the tool latencies come from the workload model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sglang as sgl

from saga_sgl.agents.common import AgentScale, run_tool, text_of
from saga_sgl.sim.workloads.tool_latency import TABLE1

RATINGS = ["sure", "likely", "impossible"]


def plan_tot_task(seed: int, scale: AgentScale, *, depth: int = 2, breadth: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "problem_tokens": scale.tokens(600),
        "breadth": breadth,
        "keep": [int(rng.integers(breadth)) for _ in range(depth)],
        "verify_latency_s": [float(x) for x in TABLE1["code"].sample(rng, depth)],
    }


def _tot_agent(s: Any, task_id: str, plan: dict[str, Any], scale: AgentScale) -> None:
    s += "Solve the problem step by step. Propose one next step, then rate it (sure/likely/impossible).\n"
    s += "Problem: " + text_of(f"tot:problem:{task_id}", plan["problem_tokens"]) + "\n"
    for level, keep in enumerate(plan["keep"]):
        branches = s.fork(plan["breadth"])
        branches += lambda i: (
            f"Candidate {i}:" + sgl.gen("thought", max_tokens=scale.max_new_tokens) + "\nRating: "
        )
        branches += sgl.select("rating", choices=RATINGS)
        branches.join()
        s += f"Step {level}: " + branches[keep]["thought"] + "\n"
        run_tool("run_test", s, plan["verify_latency_s"][level], scale)
        s += "Verified.\n"
    s += "Answer:" + sgl.gen("answer", max_tokens=scale.max_new_tokens)


tot_agent = sgl.function(_tot_agent)
"""The SGLang program (``tot_agent.run(task_id=..., plan=..., scale=...)``)."""
