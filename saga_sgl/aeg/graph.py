"""The Agent Execution Graph G = (V, E, P, phi) and its structural validation.

* V: LLM inference steps (``Step``), each with token estimates and ``is_terminal``.
* E, P: directed edges with transition probabilities (``Edge``). Out-probabilities of a step sum to
  at most 1; the rest is the probability that the workflow ends there (p_term).
* phi: the tool invoked after each step (``Step.tool``; None when the step calls no tool).

Edge kinds [P]: ``NEXT`` (ReAct chain), ``BRANCH`` (tree-of-thought fork; carries the prefix the
branch shares with the parent's context) and ``RETRY`` (back-edge of a retry loop).

Pure data plus graph walks; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from saga_sgl.errors import InvalidGraph
from saga_sgl.policy.views import AgentType, StepId, ToolType

PROB_TOLERANCE = 1e-6
"""Slack allowed when checking that a step's out-probabilities sum to at most 1 (float rounding)."""


class EdgeKind(StrEnum):
    """What an edge means for the KV of the workflow."""

    NEXT = "next"
    """Forward step of a chain: the next prompt extends the current context by the observation."""
    BRANCH = "branch"
    """Fork: the successor shares only ``Edge.shared_prefix_tokens`` of the current context."""
    RETRY = "retry"
    """Back-edge of a retry loop; the context still grows (the error is appended)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One LLM inference step v in V."""

    step_id: StepId
    """Unique id inside the graph."""
    tool: ToolType | None = None
    """phi(v): tool type invoked after this step; None if the step invokes no tool."""
    prompt_tokens_est: int = 3000
    """Estimated new prompt tokens of the step's first call (reference repo default [R])."""
    output_tokens_est: int = 250
    """Estimated decoded tokens of the step (reference repo default [R])."""
    observation_tokens_est: int = 300
    """Estimated tokens the step's tool returns (appended to the next prompt) (repo default [R])."""
    is_terminal: bool = False
    """The workflow ends after this step."""

    def __post_init__(self) -> None:
        for name in ("prompt_tokens_est", "output_tokens_est", "observation_tokens_est"):
            if getattr(self, name) < 0:
                raise InvalidGraph(f"step {self.step_id!r}: {name} must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """One dependency (src -> dst) with transition probability P(src -> dst)."""

    src: StepId
    """Source step."""
    dst: StepId
    """Destination step."""
    prob: float
    """Transition probability in [0, 1]."""
    kind: EdgeKind = EdgeKind.NEXT
    """What the edge means for KV reuse."""
    shared_prefix_tokens: int | None = None
    """BRANCH only: tokens of the current context the branch reuses (Eq. 5 per branch)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prob) and 0.0 <= self.prob <= 1.0):
            raise InvalidGraph(f"edge {self.src!r}->{self.dst!r}: probability {self.prob!r} not in [0, 1]")
        if self.kind is EdgeKind.BRANCH and self.shared_prefix_tokens is None:
            raise InvalidGraph(f"branch edge {self.src!r}->{self.dst!r} needs shared_prefix_tokens")
        if self.shared_prefix_tokens is not None and self.shared_prefix_tokens < 0:
            raise InvalidGraph(f"edge {self.src!r}->{self.dst!r}: shared_prefix_tokens must be >= 0")


@dataclass(frozen=True, slots=True)
class AEG:
    """An Agent Execution Graph. Build with ``AEG.build`` (validates) or ``aeg.build`` helpers."""

    root: StepId
    """First step."""
    steps: Mapping[StepId, Step]
    """V, by id (read-only)."""
    out_edges: Mapping[StepId, tuple[Edge, ...]]
    """E and P: out-edges per step, highest probability first (ties by destination id)."""
    agent_type: AgentType | None = None
    """Agent type this graph describes, if known."""
    source: str = "explicit"
    """How the graph was obtained: ``explicit``, ``hints`` or ``inferred``."""
    _edges: tuple[Edge, ...] = field(default=(), repr=False)

    @classmethod
    def build(
        cls,
        steps: Iterable[Step],
        edges: Iterable[Edge],
        *,
        root: StepId | None = None,
        agent_type: AgentType | None = None,
        source: str = "explicit",
    ) -> AEG:
        """Validate and build. Raises ``InvalidGraph`` naming the first problem found."""
        step_list = list(steps)
        if not step_list:
            raise InvalidGraph("an AEG needs at least one step")
        by_id: dict[StepId, Step] = {}
        for s in step_list:
            if s.step_id in by_id:
                raise InvalidGraph(f"duplicate step id {s.step_id!r}")
            by_id[s.step_id] = s
        root_id = step_list[0].step_id if root is None else root
        if root_id not in by_id:
            raise InvalidGraph(f"root {root_id!r} is not a step")
        edge_list = list(edges)
        out: dict[StepId, list[Edge]] = {sid: [] for sid in by_id}
        seen: set[tuple[StepId, StepId]] = set()
        for e in edge_list:
            for end in (e.src, e.dst):
                if end not in by_id:
                    raise InvalidGraph(f"edge {e.src!r}->{e.dst!r} names unknown step {end!r}")
            if (e.src, e.dst) in seen:
                raise InvalidGraph(f"duplicate edge {e.src!r}->{e.dst!r}")
            seen.add((e.src, e.dst))
            if by_id[e.src].is_terminal:
                raise InvalidGraph(f"terminal step {e.src!r} has an out-edge to {e.dst!r}")
            out[e.src].append(e)
        for sid, es in out.items():
            total = sum(e.prob for e in es)
            if total > 1.0 + PROB_TOLERANCE:
                raise InvalidGraph(f"out-probabilities of step {sid!r} sum to {total:.6f} > 1")
            es.sort(key=lambda e: (-e.prob, e.dst))
        frozen_out = {sid: tuple(es) for sid, es in out.items()}
        return cls(
            root=root_id,
            steps=MappingProxyType(by_id),
            out_edges=MappingProxyType(frozen_out),
            agent_type=agent_type,
            source=source,
            _edges=tuple(edge_list),
        )

    @property
    def edges(self) -> tuple[Edge, ...]:
        """All edges, in the order given to ``build``."""
        return self._edges

    def step(self, step_id: StepId) -> Step:
        """The step ``step_id``; ``InvalidGraph`` if absent."""
        try:
            return self.steps[step_id]
        except KeyError:
            raise InvalidGraph(f"no step {step_id!r} in the AEG") from None

    def successors(self, step_id: StepId) -> tuple[Edge, ...]:
        """Out-edges of ``step_id``, highest probability first."""
        self.step(step_id)
        return self.out_edges[step_id]

    def termination_prob(self, step_id: StepId) -> float:
        """Probability that the workflow ends after ``step_id`` (1 - sum of out-probabilities)."""
        if self.step(step_id).is_terminal:
            return 1.0
        return max(0.0, 1.0 - sum(e.prob for e in self.out_edges[step_id]))

    def most_likely_successor(self, step_id: StepId) -> Edge | None:
        """argmax_u P(v -> u) (ties: smallest destination id); None if the step has no successor."""
        es = self.successors(step_id)
        return es[0] if es else None

    def most_likely_path(self, start: StepId, max_depth: int) -> list[StepId]:
        """Steps after ``start`` along the most likely successor, up to ``max_depth`` steps.

        Follows retry loops too (bounded by ``max_depth``), as the reference repo's Eq. 9 walk does.
        """
        path: list[StepId] = []
        cur = start
        for _ in range(max_depth):
            e = self.most_likely_successor(cur)
            if e is None:
                break
            path.append(e.dst)
            cur = e.dst
        return path

    def __len__(self) -> int:
        return len(self.steps)
