"""Service seconds of calls at the host's rates: what placement by completion cost reads.

Pre-fill seconds come from the rate the host measured (``WorkerView.prefill_tokens_per_s``: the
router learns it from SGLang's ``/v1/loads`` counters), else from the scheduler's cost model (the
simulator passes its GPU profile). Placement prices every worker at one rate, the mean of the
measured ones (``price_rate``): a worker's measured rate mixes its speed with its traffic, since a
pre-fill step has a fixed cost and attends to its cached prefix, so a worker whose calls hit the
cache pre-fills short extends and measures slower. Live, two identical CPU workers measured
464-721 against 1,183-2,087 tokens/s in one run (issue 13), and pricing each at its own rate steered
new workflows away from the worker holding their prefix. Decode seconds come from the cost
model and the output length learned per agent type (EMA of finished calls). Every dispatched call
keeps its estimate until it finishes; ``outstanding`` is what is left of them per worker.

A live router also measures here the mean seconds a call takes from its start (else its
dispatch) to its answer (``mean_call_s``: the steal's wait estimate; issue 13).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    dispatched_s: float | None = None


DEFAULT_CALLS = 4.0
"""Expected LLM calls of a workflow of an agent type none of which has finished yet [I]."""
_PER_TOKEN_PROBE = 1024
"""Pre-fill length at which the cost model's seconds per token are read (no measured rate) [I]."""


def price_rate(workers: Sequence[WorkerView]) -> float | None:
    """The one pre-fill rate placement prices every worker at: the mean of the measured ones (None:
    none measured yet). See the module docstring."""
    rates = [w.prefill_tokens_per_s for w in workers if w.prefill_tokens_per_s]
    return sum(rates) / len(rates) if rates else None


class ServiceTimes:
    """Per-call service estimates, and the learned output length and calls per agent type."""

    def __init__(self, cost: CostModel, *, default_output_tokens: int, alpha: float) -> None:
        self._cost = cost
        self._default = default_output_tokens
        self._alpha = alpha
        self._output: dict[AgentType, float] = {}
        self._calls: dict[str, _Out] = {}
        self._per_workflow: dict[AgentType | None, tuple[float, int]] = {}
        """Mean calls per finished workflow and how many finished, per agent type (None: all)."""
        self._call_s: float | None = None

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

    def output_tokens(self, agent_type: AgentType, cap: int | None = None) -> int:
        """Expected output tokens of a call of ``agent_type``, at most the request's ``cap``."""
        v = self._output.get(agent_type)
        n = self._default if v is None else max(1, round(v))
        return n if cap is None else max(1, min(n, cap))

    def decode_s(self, agent_type: AgentType, prompt_tokens: int, cap: int | None = None) -> float:
        """Expected decode seconds of a call of ``agent_type`` alone, from ``prompt_tokens`` (at most
        ``cap`` output tokens: the request's own limit)."""
        return self._cost.decode_time_s(self.output_tokens(agent_type, cap), prompt_tokens)

    def observe_output(self, agent_type: AgentType, tokens: int) -> None:
        """A call of ``agent_type`` finished with ``tokens`` output tokens."""
        prev = self._output.get(agent_type)
        self._output[agent_type] = float(tokens) if prev is None else prev + self._alpha * (tokens - prev)

    def reprefill_s_per_token(self, rate: float | None) -> float:
        """Seconds to pre-fill one evicted context token again: at ``rate`` (``price_rate``), else
        the cost model's seconds per token of a long pre-fill."""
        if rate:
            return 1.0 / rate
        return self._cost.prefill_time_s(_PER_TOKEN_PROBE, 0) / _PER_TOKEN_PROBE

    def observe_calls(self, agent_type: AgentType, calls: int) -> None:
        """A workflow of ``agent_type`` finished after ``calls`` LLM calls (running mean)."""
        for key in (agent_type, None):
            mean, n = self._per_workflow.get(key, (0.0, 0))
            self._per_workflow[key] = (mean + (calls - mean) / (n + 1), n + 1)

    def expected_calls(self, agent_type: AgentType) -> float:
        """Expected LLM calls of a new workflow of ``agent_type``: the mean over finished workflows of
        its type, else of every type, else ``DEFAULT_CALLS``."""
        got = self._per_workflow.get(agent_type) or self._per_workflow.get(None)
        return got[0] if got else DEFAULT_CALLS

    def mean_call_s(self) -> float | None:
        """Mean seconds of a call from its start (else its dispatch) to its answer, measured (EMA;
        None: none finished yet)."""
        return self._call_s

    # --- calls in flight ------------------------------------------------------------------------
    def dispatched(
        self,
        call_id: str,
        worker_id: WorkerId,
        estimate_s: float,
        prompt_tokens: int = 0,
        now_s: float | None = None,
    ) -> None:
        self._calls[call_id] = _Out(worker_id, max(0.0, estimate_s), prompt_tokens, dispatched_s=now_s)

    def finished(self, call_id: str, now_s: float) -> None:
        """The call answered: its measured duration feeds ``mean_call_s``; then it is ``done``."""
        out = self._calls.get(call_id)
        began = None if out is None else (out.started_s if out.started_s is not None else out.dispatched_s)
        if began is not None:
            took = max(0.0, now_s - began)
            prev = self._call_s
            self._call_s = took if prev is None else prev + self._alpha * (took - prev)
        self.done(call_id)

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
