"""Service seconds of calls at the host's rates: what placement by completion cost reads.

Pre-fill seconds come from the rate the host measured on the worker (``WorkerView.
prefill_tokens_per_s``: the router learns it from SGLang's ``/v1/loads`` counters), else from the
scheduler's cost model (the simulator passes its GPU profile). Decode seconds come from the cost
model and the output length learned per agent type (EMA of finished calls). Every dispatched call
keeps its estimate until it finishes; ``outstanding`` is what is left of them per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_sgl.policy.interfaces import CostModel
from saga_sgl.policy.views import AgentType, WorkerId, WorkerView

RUNNING_FLOOR_FRAC = 0.25
"""A running call is never counted below this fraction of its estimate: in a busy batch calls run
slower than alone, so elapsed time overstates the work done [I]."""


@dataclass(slots=True)
class _Out:
    worker_id: WorkerId
    estimate_s: float
    prompt_tokens: int
    started_s: float | None = None


class ServiceTimes:
    """Per-call service estimates and the learned output length per agent type."""

    def __init__(self, cost: CostModel, *, default_output_tokens: int, alpha: float) -> None:
        self._cost = cost
        self._default = default_output_tokens
        self._alpha = alpha
        self._output: dict[AgentType, float] = {}
        self._calls: dict[str, _Out] = {}

    # --- rates ----------------------------------------------------------------------------------
    def prefill_s(
        self,
        worker: WorkerView | None,
        new_tokens: int,
        cached_tokens: int,
        fallback_rate: float | None = None,
    ) -> float:
        """Seconds to pre-fill ``new_tokens`` on top of ``cached_tokens`` on ``worker``: at its
        measured rate, else ``fallback_rate`` (the scheduler passes the slowest rate measured on
        any worker: a CPU cluster is not priced at GPU rates while one worker is still unmeasured),
        else the cost model."""
        if new_tokens <= 0:
            return 0.0
        rate = (worker.prefill_tokens_per_s if worker is not None else None) or fallback_rate
        if rate:
            return new_tokens / rate
        return self._cost.prefill_time_s(new_tokens, cached_tokens)

    def output_tokens(self, agent_type: AgentType) -> int:
        """Expected output tokens of a call of ``agent_type``."""
        v = self._output.get(agent_type)
        return self._default if v is None else max(1, round(v))

    def decode_s(self, agent_type: AgentType, prompt_tokens: int) -> float:
        """Expected decode seconds of a call of ``agent_type`` alone, from ``prompt_tokens``."""
        return self._cost.decode_time_s(self.output_tokens(agent_type), prompt_tokens)

    def observe_output(self, agent_type: AgentType, tokens: int) -> None:
        """A call of ``agent_type`` finished with ``tokens`` output tokens."""
        prev = self._output.get(agent_type)
        self._output[agent_type] = float(tokens) if prev is None else prev + self._alpha * (tokens - prev)

    # --- calls in flight ------------------------------------------------------------------------
    def dispatched(
        self, call_id: str, worker_id: WorkerId, estimate_s: float, prompt_tokens: int = 0
    ) -> None:
        self._calls[call_id] = _Out(worker_id, max(0.0, estimate_s), prompt_tokens)

    def started(self, call_id: str, now_s: float) -> None:
        out = self._calls.get(call_id)
        if out is not None:
            out.started_s = now_s

    def requeued(self, call_id: str) -> None:
        """Preempted: back in its worker's waiting queue."""
        out = self._calls.get(call_id)
        if out is not None:
            out.started_s = None

    def moved(self, call_id: str, worker_id: WorkerId) -> None:
        out = self._calls.get(call_id)
        if out is not None:
            out.worker_id = worker_id

    def done(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def outstanding(self, now_s: float) -> dict[WorkerId, tuple[float, ...]]:
        """Expected remaining seconds of every call in flight, per worker."""
        per: dict[WorkerId, list[float]] = {}
        for out in self._calls.values():
            per.setdefault(out.worker_id, []).append(_remaining(out, now_s))
        return {w: tuple(v) for w, v in per.items()}

    def remaining_s(self, call_id: str, now_s: float) -> float | None:
        """Expected remaining seconds of one call in flight (None: not tracked)."""
        out = self._calls.get(call_id)
        return None if out is None else _remaining(out, now_s)

    def prompt_tokens(self, call_id: str) -> int:
        out = self._calls.get(call_id)
        return 0 if out is None else out.prompt_tokens


def _remaining(out: _Out, now_s: float) -> float:
    if out.started_s is None:
        return out.estimate_s
    return max(RUNNING_FLOOR_FRAC * out.estimate_s, out.estimate_s - (now_s - out.started_s))
