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


# -- recorded program graphs (saga_sgl.frontend) ---------------------------------------------------

RECORDED_LINK_KINDS = ("next", "branch", "join", "retry")
"""Edge kinds of a recorded program graph (``protocol.EDGE_KINDS``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedCall:
    """One call of a program graph recorded as the program ran (token counts from the responses)."""

    node_id: str
    tool: str = ""
    """Tool run after the call; empty when none."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    observation_tokens: int = 0
    terminal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedLink:
    """One recorded edge: ``next``, ``branch`` (fork parent -> branch), ``join`` (branch end -> the
    parent's call after ``join()``) or ``retry``; ``shared_prefix_tokens`` = the fork prefix."""

    src: str
    dst: str
    kind: str = "next"
    shared_prefix_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECORDED_LINK_KINDS:
            raise ValueError(
                f"link {self.src!r}->{self.dst!r}: kind {self.kind!r} not in {RECORDED_LINK_KINDS}"
            )


def from_recorded(
    calls: Sequence[RecordedCall],
    links: Iterable[RecordedLink],
    *,
    settings: HintBuildSettings | None = None,
    agent_type: AgentType | None = None,
) -> AEG:
    """An AEG from a program graph recorded by the frontend (tier 1, explicit).

    The rule for parallel branches. An AEG is a Markov model of one thread of control: a step's
    out-probabilities sum to at most 1, but the n branches of a fork all run. So every successor of a
    step (each branch of its forks, and any ``next`` or ``retry`` successor) gets an equal share of the
    step's continuation probability, (1 - p_term) / (number of successors), with p_term from
    ``settings.termination_prob`` as for hint chains. What this gives:

    * Eq. 4 at a fork step is (1 - p_term) x the *mean* overlap of its branches, and every branch reads
      the shared prefix: when each branch starts with the whole context, P_reuse = 1 - p_term, exactly
      as for a chain step.
    * The remaining-work walk (Eq. 9) follows one branch. Branches run concurrently, so one branch is
      the latency critical path when branches are alike; the GPU work of the others is not counted
      (an under-estimate of the fork's work, by design).

    A ``join`` link (a branch's last call -> the parent's call after ``join()``) becomes a ``BRANCH``
    edge carrying the fork prefix: the joined call shares only that prefix with the branch's context.
    Missing prefixes count as 0 shared tokens. Prompt estimates are the *new* tokens of each call: its
    prompt minus what it inherits (the predecessor's prompt and output for ``next``/``retry``, the
    shared prefix for ``branch``/``join``). A recorded terminal call with successors is not terminal.
    """
    s = settings or HintBuildSettings()
    if not calls:
        raise ValueError("from_recorded needs at least one call")
    by_id = {c.node_id: c for c in calls}
    link_list = list(links)
    out: dict[str, list[RecordedLink]] = {c.node_id: [] for c in calls}
    inherited: dict[str, int] = {}
    for link in link_list:
        for end in (link.src, link.dst):
            if end not in by_id:
                raise ValueError(f"link {link.src!r}->{link.dst!r} names unknown call {end!r}")
        out[link.src].append(link)
        if link.kind in ("next", "retry"):
            producer = by_id[link.src]
            carried = producer.prompt_tokens + producer.output_tokens
        else:
            carried = link.shared_prefix_tokens or 0
        inherited[link.dst] = max(inherited.get(link.dst, 0), carried)
    steps = [
        Step(
            step_id=StepId(c.node_id),
            tool=tool_type_of(c.tool) if c.tool else None,
            prompt_tokens_est=max(0, c.prompt_tokens - inherited.get(c.node_id, 0)),
            output_tokens_est=c.output_tokens,
            observation_tokens_est=c.observation_tokens,
            is_terminal=c.terminal and not out[c.node_id],
        )
        for c in calls
    ]
    edges: list[Edge] = []
    for src, successors in out.items():
        if not successors:
            continue
        prob = (1.0 - s.termination_prob) / len(successors)
        for link in successors:
            kind = {"next": EdgeKind.NEXT, "retry": EdgeKind.RETRY}.get(link.kind, EdgeKind.BRANCH)
            edges.append(
                Edge(
                    src=StepId(src),
                    dst=StepId(link.dst),
                    prob=prob,
                    kind=kind,
                    shared_prefix_tokens=(link.shared_prefix_tokens or 0)
                    if kind is EdgeKind.BRANCH
                    else None,
                )
            )
    return AEG.build(steps, edges, root=StepId(calls[0].node_id), agent_type=agent_type, source="explicit")
