"""Predicted peak KV footprint of a workflow, learned per agent type from finished workflows.

A live router cannot know a workflow's final context before it ends; it can learn what workflows
of the same agent type ended with. Model: a running mean of the peak context (prompt + output tokens
of the last call) per agent type, whose weight falls as 1/n to ``alpha`` and then stays (an EMA that
forgets slowly, so the model follows a change of workload); before any workflow of a type finished,
the same over all types, else a default. A client's own estimate
(``WorkflowSubmitted.predicted_kv_tokens``) overrides the model.

Why a mean and a small weight: admission control sums these predictions over a worker's workflows,
so what must be right is the mean. Peaks are heavy-tailed (web-history: 5-30 calls of growing
history), and an EMA of weight 0.1 follows the last ten finishes: in the simulator's production
point it stood at 40-50K tokens where the mean peak was 35K, and held workflows for nothing.
"""

from __future__ import annotations

from saga_sgl.policy.views import AgentType


class FootprintModel:
    """Running mean (then slow EMA) of finished workflows' peak context per agent type."""

    def __init__(self, *, alpha: float, default_tokens: int) -> None:
        self._alpha = alpha
        self._default = default_tokens
        self._by_type: dict[AgentType, float] = {}
        self._n: dict[AgentType | None, int] = {}
        self._overall: float | None = None

    def _weight(self, key: AgentType | None) -> float:
        n = self._n[key] = self._n.get(key, 0) + 1
        return max(1.0 / n, self._alpha)

    def observe(self, agent_type: AgentType, peak_tokens: int) -> None:
        """A workflow of ``agent_type`` finished with ``peak_tokens`` of context."""
        a = self._weight(agent_type)
        prev = self._by_type.get(agent_type)
        self._by_type[agent_type] = float(peak_tokens) if prev is None else (1 - a) * prev + a * peak_tokens
        a = self._weight(None)
        o = self._overall
        self._overall = float(peak_tokens) if o is None else (1 - a) * o + a * peak_tokens

    def predict(self, agent_type: AgentType) -> int:
        """Predicted peak context of a new workflow of ``agent_type`` (tokens)."""
        v = self._by_type.get(agent_type, self._overall)
        return self._default if v is None else max(1, round(v))
