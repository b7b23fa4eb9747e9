"""Predicted peak KV footprint of a workflow, learned per agent type from finished workflows.

A live router cannot know a workflow's final context before it ends; it can learn what workflows
of the same agent type ended with. Model: an EMA of the peak context (prompt + output tokens of the
last call) per agent type; before any workflow of a type finished, the EMA over all types, else a
default. A client's own estimate (``WorkflowSubmitted.predicted_kv_tokens``) overrides the model.
"""

from __future__ import annotations

from saga_sgl.policy.views import AgentType


class FootprintModel:
    """EMA of finished workflows' peak context per agent type."""

    def __init__(self, *, alpha: float, default_tokens: int) -> None:
        self._alpha = alpha
        self._default = default_tokens
        self._by_type: dict[AgentType, float] = {}
        self._overall: float | None = None

    def observe(self, agent_type: AgentType, peak_tokens: int) -> None:
        """A workflow of ``agent_type`` finished with ``peak_tokens`` of context."""
        a = self._alpha
        prev = self._by_type.get(agent_type)
        self._by_type[agent_type] = float(peak_tokens) if prev is None else (1 - a) * prev + a * peak_tokens
        o = self._overall
        self._overall = float(peak_tokens) if o is None else (1 - a) * o + a * peak_tokens

    def predict(self, agent_type: AgentType) -> int:
        """Predicted peak context of a new workflow of ``agent_type`` (tokens)."""
        v = self._by_type.get(agent_type, self._overall)
        return self._default if v is None else max(1, round(v))
