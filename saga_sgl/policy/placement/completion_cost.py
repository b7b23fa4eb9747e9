"""Placement of a new workflow by expected completion time of its call, in seconds (ours).

The multi-criteria admission score (``placement.admission``) adds min-max normalised load to a
prefix-locality fraction with fixed weights: one in-flight call of difference scores 0 vs 1 and
outweighs any prefix hit, whatever the hit saves. Live on CPU workers that mixed coding and browser
agents across workers and lost their prefixes (issue 13). Here every term is in seconds at the
host's own rates, so a prefix hit counts exactly as much as the pre-fill it saves:

    x(w)    = uncached_prefill_s(w) + decode_s                the call's own work on w
    q(w)    = sum over calls i outstanding on w of min(remaining_i, x(w))
    kv(w)   = overflow(w) x (remaining_calls - 1) x reprefill_s_per_token
    cost(w) = x(w) + q(w) + kv(w)

``x + q`` is the call's expected response time when w shares its capacity among its calls
(processor sharing: every call ahead of it that finishes first delays it by its own remaining
work, every other one by as much as the newcomer's). Pre-fill seconds are at the host's rates (the
router measures them from ``/v1/loads`` counters), else the scheduler's cost model (the simulator's
profile); ``outstanding_s`` and ``decode_s`` are the scheduler's estimates of the calls it
dispatched (``CallView``).

``kv`` prices the binding, not just the first call (issue 13): the workflow stays on w for all its
calls. With ``resident(w)`` the KV the workflows bound to w will hold (a shared prompt head once)
and ``need(w) = predicted_kv_tokens - prefix_match(w)`` what the newcomer adds there (a head w
already caches is not added again), ``pushed(R, P) = max(0, R + need - P) - max(0, R - P)`` is how
far it pushes a pool P holding R past its size, and ``overflow(w)`` the larger of w's own
(``pushed(resident(w), pool(w))``) and the cluster's (``pushed(sum resident, sum pool)``): while the
cluster as a whole is full, an empty worker's room is no saving, the workflows of another prompt
head will need it. Those tokens are evicted in tool gaps and pre-filled again, about once per later
call of the newcomer. Where nothing overflows the term is 0 and placement is the first call's
response time, as before; where everything does, the workers differ by the shared head's tokens
once per later call: a worker that already holds the head saves them at every call, not only the
first (live, a mixed placement kept two heads per 2,560-token pool and missed 2.3x more of its own
context than sglang-router's cache_aware). Ties (within ``tie_epsilon``
seconds) are broken by the injected RNG. O(W + calls in flight).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.views import AgentType, CallView, WorkerId, WorkerView, WorkflowState, WorkflowView


@dataclass(slots=True)
class Residency:
    """``resident(w)``: the KV the live workflows bound to each worker will hold. The one rule of
    both placement (``CallView.resident_kv_tokens``) and the steal's KV price: each workflow's own
    part (its predicted peak less the prompt head it shares) plus, per worker and agent type, the
    largest shared head once (the radix cache holds a head once; two agent types with different
    system prompts on one worker hold two). A workflow with no agent type shares no head: all its
    peak is its own. ``without`` leaves the workflow being priced out (a steal)."""

    own: dict[WorkerId, int] = field(default_factory=dict)
    heads: dict[tuple[WorkerId, AgentType], list[int]] = field(default_factory=dict)

    def add(
        self, worker_id: WorkerId, agent_type: AgentType | None, peak_tokens: int, head_tokens: int
    ) -> None:
        """A live workflow bound to ``worker_id``: predicted peak ``peak_tokens`` (at least its
        context), of which ``head_tokens`` is the prompt head it shares with its agent type."""
        shared = head_tokens > 0 and agent_type is not None
        own = max(0, peak_tokens - (head_tokens if shared else 0))
        self.own[worker_id] = self.own.get(worker_id, 0) + own
        if shared:
            assert agent_type is not None
            self.heads.setdefault((worker_id, agent_type), []).append(head_tokens)

    @classmethod
    def of(cls, workflows: Sequence[WorkflowView]) -> Residency:
        """From workflow views (the steal's inputs): peak = max(predicted footprint, context)."""
        r = cls()
        for wf in workflows:
            if wf.worker_id is not None and wf.state is not WorkflowState.FINISHED:
                r.add(wf.worker_id, wf.agent_type, _peak(wf), wf.shared_prefix_tokens)
        return r

    def tokens(self) -> dict[WorkerId, int]:
        """``resident(w)`` of every worker some workflow is bound to."""
        out = dict(self.own)
        for (wid, _), heads in self.heads.items():
            out[wid] = out.get(wid, 0) + max(heads)
        return out

    def _heads_without(self, wid: WorkerId, agent_type: AgentType, wf: WorkflowView) -> list[int]:
        heads = self.heads.get((wid, agent_type), [])
        if wf.worker_id == wid and wf.agent_type == agent_type and wf.shared_prefix_tokens in heads:
            heads = list(heads)
            heads.remove(wf.shared_prefix_tokens)
        return heads

    def without(self, wf: WorkflowView) -> dict[WorkerId, int]:
        """``resident(w)`` per worker with ``wf`` bound nowhere."""
        out = dict(self.own)
        if wf.worker_id in out:
            shared = wf.shared_prefix_tokens if wf.agent_type is not None else 0
            out[wf.worker_id] -= max(0, _peak(wf) - shared)
        for wid, agent_type in self.heads:
            out[wid] = out.get(wid, 0) + max(self._heads_without(wid, agent_type, wf), default=0)
        return out

    def head_match(self, wf: WorkflowView, wid: WorkerId) -> int:
        """Tokens of ``wf``'s shared head that ``wid`` holds for the other workflows of its type."""
        if wf.agent_type is None or wf.shared_prefix_tokens <= 0:
            return 0
        return min(wf.shared_prefix_tokens, max(self._heads_without(wid, wf.agent_type, wf), default=0))


def _peak(wf: WorkflowView) -> int:
    return max(wf.footprint_tokens, wf.cached_prefix_tokens)


def _pushed_past(resident: int, need: int, pool: int) -> int:
    return max(0, resident + need - pool) - max(0, resident - pool)


def kv_overflow_tokens(call: CallView, worker: WorkerView, cluster: Sequence[WorkerView] = ()) -> int:
    """Tokens by which binding ``call``'s workflow to ``worker`` pushes a pool past its size: its own,
    or (``cluster``: the healthy workers) all the pools together. An empty worker's room is no
    saving while the cluster as a whole is full: the workflows of the next prompt head need it."""
    if call.predicted_kv_tokens <= 0:
        return 0
    wid = worker.worker_id
    need = max(0, call.predicted_kv_tokens - call.prefix_match_tokens.get(wid, 0))
    own = _pushed_past(call.resident_kv_tokens.get(wid, 0), need, worker.kv_capacity_tokens)
    if not cluster:
        return own
    resident = sum(call.resident_kv_tokens.get(w.worker_id, 0) for w in cluster)
    pools = sum(w.kv_capacity_tokens for w in cluster)
    return max(own, _pushed_past(resident, need, pools))


def kv_pressure_s(call: CallView, worker: WorkerView, cluster: Sequence[WorkerView] = ()) -> float:
    """``kv(w)``: seconds of re-pre-fill that binding the workflow to ``worker`` is expected to
    cause by overflowing its pool or the cluster's (see the module docstring)."""
    later = max(0.0, call.remaining_calls - 1.0)
    if later <= 0.0 or call.reprefill_s_per_token <= 0.0:
        return 0.0
    return kv_overflow_tokens(call, worker, cluster) * later * call.reprefill_s_per_token


def response_s(call: CallView, worker_id: WorkerId) -> float:
    """``x + q``: expected response time (seconds) of ``call`` on ``worker_id``.

    A worker with no pre-fill estimate is charged the largest estimate of any worker (nothing known
    to be cached there)."""
    prefill = call.uncached_prefill_s.get(worker_id)
    if prefill is None:
        prefill = max(call.uncached_prefill_s.values(), default=0.0)
    own = prefill + call.decode_s
    return own + sum(min(r, own) for r in call.outstanding_s.get(worker_id, ()))


def completion_cost_s(call: CallView, worker: WorkerView, cluster: Sequence[WorkerView] = ()) -> float:
    """``cost(w)``: the first call's expected response time plus the binding's KV-pressure cost
    (``cluster``: the healthy workers, for the cluster-wide overflow)."""
    return response_s(call, worker.worker_id) + kv_pressure_s(call, worker, cluster)


def completion_costs(call: CallView, workers: Sequence[WorkerView]) -> dict[WorkerId, float]:
    """``completion_cost_s`` of each healthy worker."""
    healthy = [w for w in workers if w.is_healthy]
    return {w.worker_id: completion_cost_s(call, w, healthy) for w in healthy}


def cheapest(
    call: CallView, workers: Sequence[WorkerView], rng: random.Random, tie_epsilon: float = 1e-9
) -> WorkerView:
    """The healthy worker with the least expected completion time of ``call``."""
    healthy = [w for w in workers if w.is_healthy]
    if not healthy:
        raise NoEligibleWorker("completion cost: no healthy worker")
    costs = completion_costs(call, healthy)
    best = min(costs.values())
    tied = sorted((w for w in healthy if costs[w.worker_id] <= best + tie_epsilon), key=lambda w: w.worker_id)
    return tied[0] if len(tied) == 1 else rng.choice(tied)
