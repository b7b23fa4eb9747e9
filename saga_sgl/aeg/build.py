"""AEG builders for tier 1 (explicit): from hints (a tool sequence) or a submitted graph.

* ``from_tool_hints``: a framework announces the planned tool sequence; the result is a ReAct
  chain with P(v_i -> v_{i+1}) = 1 - p_term [P]; a tool named ``finish`` (or the last hint) marks
  the terminal step [R].
* ``from_submitted``: a graph submitted at admission (steps and edges), validated by ``AEG.build``.
* ``paper_figure3``: the paper's worked example (SWE-bench coding agent, Figure 3).

No I/O; the wire schema converts its messages into the arguments here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from saga_sgl.aeg.graph import AEG, Edge, EdgeKind, Step
from saga_sgl.aeg.tool_latency import tool_type_of
from saga_sgl.policy.settings import require, require_frac
from saga_sgl.policy.views import AgentType, StepId, ToolType

FINISH_TOOL = "finish"
"""Tool name that marks the terminal step in hint sequences (reference repo [R])."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HintBuildSettings:
    """Settings of ``from_tool_hints``."""

    termination_prob: float = 0.05
    """p_term: probability that the workflow ends after any non-terminal step (repo default [R])."""
    prompt_tokens_est: int = 3000
    """Prompt tokens per step when the hint gives none (repo default [R])."""
    output_tokens_est: int = 250
    """Output tokens per step when the hint gives none (repo default [R])."""
    observation_tokens_est: int = 300
    """Observation tokens per tool call when the hint gives none (repo default [R])."""

    def __post_init__(self) -> None:
        owner = "HintBuildSettings"
        require_frac(owner, "termination_prob", self.termination_prob)
        for name in ("prompt_tokens_est", "output_tokens_est", "observation_tokens_est"):
            require(getattr(self, name) >= 0, owner, name, ">= 0", getattr(self, name))


def step_id_of(index: int) -> StepId:
    """Canonical id of the index-th step of a chain (``v0``, ``v1``, ...)."""
    return StepId(f"v{index}")


def from_tool_hints(
    tools: Sequence[str],
    *,
    settings: HintBuildSettings | None = None,
    agent_type: AgentType | None = None,
) -> AEG:
    """A ReAct chain, one step per announced tool name (mapped to its Table 1 type).

    The step whose tool is ``finish`` (or the last step) is terminal; steps after ``finish`` are
    ignored.
    """
    s = settings or HintBuildSettings()
    if not tools:
        raise ValueError("from_tool_hints needs at least one tool hint")
    steps: list[Step] = []
    for i, name in enumerate(tools):
        is_finish = name == FINISH_TOOL
        is_last = is_finish or i == len(tools) - 1
        steps.append(
            Step(
                step_id=step_id_of(i),
                tool=None if is_finish else tool_type_of(name),
                prompt_tokens_est=s.prompt_tokens_est,
                output_tokens_est=s.output_tokens_est,
                observation_tokens_est=0 if is_finish else s.observation_tokens_est,
                is_terminal=is_last,
            )
        )
        if is_finish:
            break
    edges = [
        Edge(src=a.step_id, dst=b.step_id, prob=1.0 - s.termination_prob)
        for a, b in itertools.pairwise(steps)
    ]
    return AEG.build(steps, edges, agent_type=agent_type, source="hints")


def from_submitted(
    steps: Iterable[Step],
    edges: Iterable[Edge],
    *,
    root: StepId | None = None,
    agent_type: AgentType | None = None,
) -> AEG:
    """A graph submitted at admission (tier 1), validated."""
    return AEG.build(steps, edges, root=root, agent_type=agent_type, source="explicit")


def paper_figure3(*, tokens_per_step: int = 3000) -> AEG:
    """The paper's Figure 3 AEG (SWE-bench coding agent).

    Chain v0 -> v1 -> v2 -> v3 -> v4 with forward probabilities 0.95, 0.85, 0.70, 0.60; v4 terminal.
    Retry back-edges 0.30 (v2 -> v1) and 0.40 (v3 -> v2): the paper gives the probabilities but not
    the ends; out-edges summing to 1 puts them on v2 and v3 [I]. Tools: read_file (file), edit_code
    (code), run_test (code), edit_code (code). ``tokens_per_step`` x 4 = the 12K tokens cached across
    v0-v3 [P].
    """
    tools: list[ToolType | None] = [
        tool_type_of("read_file"),
        tool_type_of("edit_code"),
        tool_type_of("run_test"),
        tool_type_of("edit_code"),
        None,
    ]
    steps = [
        Step(
            step_id=step_id_of(i),
            tool=tool,
            prompt_tokens_est=tokens_per_step,
            is_terminal=(i == 4),
            observation_tokens_est=0 if tool is None else 300,
        )
        for i, tool in enumerate(tools)
    ]
    v = [s.step_id for s in steps]
    edges = [
        Edge(src=v[0], dst=v[1], prob=0.95),
        Edge(src=v[1], dst=v[2], prob=0.85),
        Edge(src=v[2], dst=v[3], prob=0.70),
        Edge(src=v[3], dst=v[4], prob=0.60),
        Edge(src=v[2], dst=v[1], prob=0.30, kind=EdgeKind.RETRY),
        Edge(src=v[3], dst=v[2], prob=0.40, kind=EdgeKind.RETRY),
    ]
    return AEG.build(steps, edges, agent_type=AgentType("swe_bench_coder"), source="explicit")
