"""Tier 2 and 3 of AEG construction: pattern inference per agent type, and the cold-start rule.

Model (observe/predict) [P]/[R]/[I]:

* Per agent type, count tool transitions C[a, b] (tool a followed by tool b inside one task) and
  P[a, b] = C[a, b] / sum_b C[a, b] [R]. Edges are kept only if P >= theta_conf = 0.7 [P].
* Until ``cold_start_tasks`` (30) tasks of a type have completed, the type is served request-level
  (``infer`` returns None) [P].
* The inferred AEG is a linear chain [R]: step 0 calls the modal first tool; each next step calls
  the modal successor of the previous tool if P >= theta_conf, otherwise the same tool again [R].
  The continuation probability of every edge is 1 - p_term, with p_term the maximum-likelihood
  hazard of a geometric task length, completed tasks / observed steps [I] (the repo uses
  1 - 1/max(2, n - i), which needs a known n). The chain stops once the survival probability falls
  below ``min_chain_survival`` or at ``max_chain_steps``.
* Token estimates per step are EMAs over the observed steps of that agent type [P: EMA updates].

Deterministic: ties between equally frequent tools go to the smallest name.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from saga_sgl.aeg.build import step_id_of
from saga_sgl.aeg.graph import AEG, Edge, Step
from saga_sgl.policy.settings import require, require_frac, require_positive
from saga_sgl.policy.views import AgentType, ToolType


class ObservabilityTier(StrEnum):
    """Which AEG tier serves an agent type."""

    EXPLICIT = "explicit"
    """The framework submitted a graph or hints (tier 1)."""
    INFERRED = "inferred"
    """Pattern inference (tier 2)."""
    COLD_START = "cold_start"
    """Request-level scheduling until enough tasks completed (tier 3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceSettings:
    """Settings of ``PatternInference``."""

    theta_conf: float = 0.7
    """Keep a tool transition a -> b only if P[a, b] >= theta_conf (paper, tier 2) [P]."""
    cold_start_tasks: int = 30
    """Completed tasks of an agent type before pattern inference switches on (paper, tier 3) [P]."""
    max_chain_steps: int = 64
    """Longest inferred chain (the reference repo's Eq. 9 depth bound) [R]."""
    min_chain_survival: float = 0.01
    """Stop the inferred chain once P(task still running) falls below this [I]."""
    token_ema_alpha: float = 0.1
    """EMA weight of a new step in the per-agent-type token estimates [I] (same as tool latency)."""
    default_prompt_tokens: int = 3000
    """Prompt tokens per step before any observation (repo default [R])."""
    default_output_tokens: int = 250
    """Output tokens per step before any observation (repo default [R])."""
    default_observation_tokens: int = 300
    """Observation tokens per tool call before any observation (repo default [R])."""

    def __post_init__(self) -> None:
        owner = "InferenceSettings"
        require_frac(owner, "theta_conf", self.theta_conf)
        require(self.cold_start_tasks >= 0, owner, "cold_start_tasks", ">= 0", self.cold_start_tasks)
        require(self.max_chain_steps >= 1, owner, "max_chain_steps", ">= 1", self.max_chain_steps)
        require_frac(owner, "min_chain_survival", self.min_chain_survival)
        require_positive(owner, "token_ema_alpha", self.token_ema_alpha)
        require(self.token_ema_alpha <= 1, owner, "token_ema_alpha", "<= 1", self.token_ema_alpha)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedStep:
    """One step of a completed task, as the request stream shows it."""

    tool: ToolType | None
    """Tool called after the step (None for the final answer)."""
    prompt_tokens: int = 0
    """New prompt tokens of the step (0 = unknown, not averaged)."""
    output_tokens: int = 0
    """Decoded tokens of the step (0 = unknown)."""
    observation_tokens: int = 0
    """Tokens returned by the tool (0 = unknown)."""


class _AgentStats:
    __slots__ = ("completed", "first_tool", "obs_tokens", "output_tokens", "prompt_tokens", "steps", "trans")

    def __init__(self, s: InferenceSettings) -> None:
        self.trans: defaultdict[ToolType, Counter[ToolType]] = defaultdict(Counter)
        self.first_tool: Counter[ToolType] = Counter()
        self.completed = 0
        self.steps = 0
        self.prompt_tokens = float(s.default_prompt_tokens)
        self.output_tokens = float(s.default_output_tokens)
        self.obs_tokens = float(s.default_observation_tokens)


class PatternInference:
    """Learns tool-transition patterns per agent type and emits inferred AEGs."""

    def __init__(self, settings: InferenceSettings | None = None) -> None:
        self.settings = settings or InferenceSettings()
        self._agents: dict[AgentType, _AgentStats] = {}

    def observe_task(self, agent_type: AgentType, steps: Sequence[ObservedStep]) -> None:
        """Record one completed task of ``agent_type`` (its steps in order)."""
        st = self._agents.setdefault(agent_type, _AgentStats(self.settings))
        st.completed += 1
        st.steps += len(steps)
        tools = [s.tool for s in steps if s.tool is not None]
        if tools:
            st.first_tool[tools[0]] += 1
        for a, b in itertools.pairwise(tools):
            st.trans[a][b] += 1
        alpha = self.settings.token_ema_alpha
        for s in steps:
            if s.prompt_tokens > 0:
                st.prompt_tokens += alpha * (s.prompt_tokens - st.prompt_tokens)
            if s.output_tokens > 0:
                st.output_tokens += alpha * (s.output_tokens - st.output_tokens)
            if s.observation_tokens > 0:
                st.obs_tokens += alpha * (s.observation_tokens - st.obs_tokens)

    def completed_tasks(self, agent_type: AgentType) -> int:
        """Completed tasks of ``agent_type`` observed so far."""
        st = self._agents.get(agent_type)
        return 0 if st is None else st.completed

    def tier(self, agent_type: AgentType) -> ObservabilityTier:
        """COLD_START until ``cold_start_tasks`` tasks completed, then INFERRED."""
        if self.completed_tasks(agent_type) < self.settings.cold_start_tasks:
            return ObservabilityTier.COLD_START
        return ObservabilityTier.INFERRED

    def transition_probs(self, agent_type: AgentType) -> dict[tuple[ToolType, ToolType], float]:
        """P[a, b] for every observed transition of ``agent_type``."""
        st = self._agents.get(agent_type)
        out: dict[tuple[ToolType, ToolType], float] = {}
        if st is None:
            return out
        for a, counts in st.trans.items():
            total = sum(counts.values())
            for b, c in counts.items():
                out[(a, b)] = c / total
        return out

    def confident_successor(self, agent_type: AgentType, tool: ToolType) -> ToolType | None:
        """The successor b of ``tool`` with the largest P >= theta_conf, or None."""
        st = self._agents.get(agent_type)
        if st is None or not st.trans.get(tool):
            return None
        counts = st.trans[tool]
        total = sum(counts.values())
        b, c = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return b if c / total >= self.settings.theta_conf else None

    def accuracy_proxy(self, agent_type: AgentType) -> float:
        """Share of observed transitions whose P >= theta_conf (reference repo's proxy) [R]."""
        st = self._agents.get(agent_type)
        if st is None:
            return 0.0
        kept = total = 0
        for counts in st.trans.values():
            n = sum(counts.values())
            total += n
            kept += sum(c for c in counts.values() if c / n >= self.settings.theta_conf)
        return kept / total if total else 0.0

    def termination_prob(self, agent_type: AgentType) -> float:
        """p_term: completed tasks / observed steps (MLE of a geometric task length) [I]."""
        st = self._agents.get(agent_type)
        if st is None or st.steps == 0:
            return 1.0
        return min(1.0, st.completed / st.steps)

    def infer(self, agent_type: AgentType, first_tool: ToolType | None = None) -> AEG | None:
        """Inferred linear AEG for ``agent_type``; None while the type is in cold start or has no
        observed steps at all (``cold_start_tasks=0``).

        ``first_tool``: the tool the live task's first step actually called, if already known.
        """
        if self.tier(agent_type) is ObservabilityTier.COLD_START:
            return None
        st = self._agents.get(agent_type)
        if st is None:  # cold_start_tasks=0 and nothing observed yet: no pattern to infer
            return None
        s = self.settings
        p_term = self.termination_prob(agent_type)
        tool = first_tool
        if tool is None and st.first_tool:
            tool = min(st.first_tool.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        steps: list[Step] = []
        survival = 1.0
        for i in range(s.max_chain_steps):
            is_last = i == s.max_chain_steps - 1 or survival * (1.0 - p_term) < s.min_chain_survival
            steps.append(
                Step(
                    step_id=step_id_of(i),
                    tool=None if is_last else tool,
                    prompt_tokens_est=round(st.prompt_tokens),
                    output_tokens_est=round(st.output_tokens),
                    observation_tokens_est=0 if is_last else round(st.obs_tokens),
                    is_terminal=is_last,
                )
            )
            if is_last:
                break
            survival *= 1.0 - p_term
            if tool is not None:
                tool = self.confident_successor(agent_type, tool) or tool
        edges = [Edge(src=a.step_id, dst=b.step_id, prob=1.0 - p_term) for a, b in itertools.pairwise(steps)]
        return AEG.build(steps, edges, agent_type=agent_type, source="inferred")
