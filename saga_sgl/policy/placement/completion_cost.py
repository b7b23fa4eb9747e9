"""Placement of a new workflow by expected completion time of its call, in seconds (ours).

The multi-criteria admission score (``placement.admission``) adds min-max normalised load to a
prefix-locality fraction with fixed weights: one in-flight call of difference scores 0 vs 1 and
outweighs any prefix hit, whatever the hit saves. Live on CPU workers that mixed coding and browser
agents across workers and lost their prefixes (issue 13). Here every term is in seconds at the
host's own rates, so a prefix hit counts exactly as much as the pre-fill it saves:

    x(w)    = uncached_prefill_s(w) + decode_s                the call's own work on w
    cost(w) = x(w) + sum over calls i outstanding on w of min(remaining_i, x(w))

``cost`` is the call's expected response time when w shares its capacity among its calls
(processor sharing: every call ahead of it that finishes first delays it by its own remaining
work, every other one by as much as the newcomer's). Pre-fill seconds come from the rate the host
measured on each worker (the router learns it from ``/v1/loads`` counters), else the scheduler's
cost model (the simulator's profile); ``outstanding_s`` and ``decode_s`` are the scheduler's
estimates of the calls it dispatched (``CallView``). Ties (within ``tie_epsilon`` seconds) are
broken by the injected RNG. O(W + calls in flight).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.views import CallView, WorkerId, WorkerView


def completion_cost_s(call: CallView, worker_id: WorkerId) -> float:
    """Expected response time (seconds) of ``call`` on ``worker_id`` (see the module docstring).

    A worker with no pre-fill estimate is charged the largest estimate of any worker (nothing known
    to be cached there)."""
    prefill = call.uncached_prefill_s.get(worker_id)
    if prefill is None:
        prefill = max(call.uncached_prefill_s.values(), default=0.0)
    own = prefill + call.decode_s
    return own + sum(min(r, own) for r in call.outstanding_s.get(worker_id, ()))


def completion_costs(call: CallView, workers: Sequence[WorkerView]) -> dict[WorkerId, float]:
    """``completion_cost_s`` of each healthy worker."""
    return {w.worker_id: completion_cost_s(call, w.worker_id) for w in workers if w.is_healthy}


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
