"""Workflow-atomic admission: where a *new* workflow is placed, whole.

This multi-criteria placement of new workflows is ours: the paper places a new session by Eq. 7's
second branch (the least-loaded worker) and describes nothing more. The ``saga-paper_new_workflow``
ablation row measures it against that rule. (Workflow-level admission *control*, holding new
workflows while no worker has room, is a separate rule, also ours: ``saga_sgl.scheduler``.)

A multi-criteria choice in the llm-d shape [I]: per-signal scores normalised to [0, 1], weights in
settings, the combination in one place, ties broken by the injected RNG.

Signals for worker w and new workflow s:

* ``load``:      (max_c load(c) - load(w)) / (max_c load(c) - min_c load(c))  over the candidates c
                 (least loaded = 1, most loaded = 0; 1 for all when loads are equal); with
                 ``load_signal="bound_work"`` load(w) is replaced by the predicted remaining work of
                 the live workflows bound to w (the scheduler's AEG predictions)
* ``footprint``: min(1, free_kv_tokens(w) / predicted_kv_tokens(s))       (the workflow fits = 1);
                 free fraction of the pool when no footprint is predicted; with
                 ``footprint_signal="bound"``: (pool - predicted footprints of the live workflows
                 bound to w - predicted_kv_tokens(s)) / pool, at least 0: the room left once s is
                 placed, by what the bound workflows will hold, not what w holds now (ours)
* ``locality``:  min(1, prefix_match_tokens(w) / prompt_tokens(s))        (shared prefix cached = 1)

score(w) = w_load * load + w_footprint * footprint + w_locality * locality.

The load signal is min-max normalised over the candidates (llm-d's queue scorer does the same) [I]:
absolute load differences between workers are small (a few requests out of a 256-request batch cap,
KV pools that are all nearly full of cached prefixes), so ``1 - load(w)`` let the shared-prefix
locality term decide nearly every admission and piled new workflows onto the workers that already
held the system prompt (simulator, browser workload: an idle worker got 1 of 413 admissions). A
workflow stays where it is admitted for its whole life, so balance must dominate a one-off prefix hit.

Workers at or above theta (Eq. 7's headroom) are filtered out unless all are. O(W).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.placement.load import LoadSettings, worker_load
from saga_sgl.policy.settings import require, require_non_negative
from saga_sgl.policy.views import CallView, WorkerId, WorkerView


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionWeights:
    """Weights of the admission signals (non-negative, not all zero)."""

    load_weight: float = 0.5
    """Weight of 1 - load(w) [I]."""
    footprint_weight: float = 0.3
    """Weight of the predicted-KV-footprint fit [I]."""
    locality_weight: float = 0.2
    """Weight of shared-prefix locality [I]."""
    tie_epsilon: float = 1e-9
    """Scores within this of the best are ties, broken by the RNG."""

    def __post_init__(self) -> None:
        owner = "AdmissionWeights"
        for name in ("load_weight", "footprint_weight", "locality_weight", "tie_epsilon"):
            require_non_negative(owner, name, getattr(self, name))
        total = self.load_weight + self.footprint_weight + self.locality_weight
        require(total > 0, owner, "load_weight+footprint_weight+locality_weight", "> 0", total)


def admission_scores(
    call: CallView,
    workers: Sequence[WorkerView],
    weights: AdmissionWeights,
    load_settings: LoadSettings,
    loads: Mapping[WorkerId, float] | None = None,
    bound_work: bool = False,
    bound_footprint: bool = False,
) -> dict[WorkerId, float]:
    """The combined admission score of each healthy worker (``loads``: precomputed load(w)).

    ``bound_work``: the load signal is the predicted remaining work of the live workflows bound to
    each worker (``call.bound_work_s``) instead of load(w): a worker whose agents are all in tool
    gaps looks idle to load(w) but will be busy when they return. ``bound_footprint``: the free KV
    of the footprint signal is the pool less the predicted footprints bound to each worker
    (``call.bound_kv_tokens``) instead of the worker's reported free KV."""
    healthy = [w for w in workers if w.is_healthy]
    if bound_work and call.bound_work_s:
        loads = {w.worker_id: call.bound_work_s.get(w.worker_id, 0.0) for w in healthy}
    elif loads is None:
        loads = {w.worker_id: worker_load(w, load_settings) for w in healthy}
    lo = min((loads[w.worker_id] for w in healthy), default=0.0)
    spread = max((loads[w.worker_id] for w in healthy), default=0.0) - lo
    out: dict[WorkerId, float] = {}
    for w in healthy:
        load = loads[w.worker_id]
        load_score = 1.0 - (load - lo) / spread if spread > weights.tie_epsilon else 1.0
        used = call.bound_kv_tokens.get(w.worker_id, 0) if bound_footprint else w.kv_used_tokens
        free = max(0, w.kv_capacity_tokens - used)
        if bound_footprint:
            # Room left once it is placed, graded: "fits" alone saturates at 1 on every worker that
            # admission control lets through, and would not tell them apart.
            footprint = max(0, free - call.predicted_kv_tokens) / w.kv_capacity_tokens
        elif call.predicted_kv_tokens > 0:
            footprint = min(1.0, free / call.predicted_kv_tokens)
        else:
            footprint = free / w.kv_capacity_tokens
        matched = call.prefix_match_tokens.get(w.worker_id, 0)
        locality = min(1.0, matched / call.prompt_tokens) if call.prompt_tokens > 0 else 0.0
        out[w.worker_id] = (
            weights.load_weight * load_score
            + weights.footprint_weight * footprint
            + weights.locality_weight * locality
        )
    return out


def admit(
    call: CallView,
    workers: Sequence[WorkerView],
    weights: AdmissionWeights,
    load_settings: LoadSettings,
    theta: float,
    rng: random.Random,
    bound_work: bool = False,
    bound_footprint: bool = False,
) -> WorkerView:
    """The worker a new workflow is bound to (``bound_work``, ``bound_footprint``: see
    ``admission_scores``)."""
    healthy = [w for w in workers if w.is_healthy]
    if not healthy:
        raise NoEligibleWorker("admission: no healthy worker")
    loads = {w.worker_id: worker_load(w, load_settings) for w in healthy}
    headroom = [w for w in healthy if loads[w.worker_id] < theta]
    candidates = headroom or healthy
    scores = admission_scores(call, candidates, weights, load_settings, loads, bound_work, bound_footprint)
    best = max(scores.values())
    tied = sorted(
        (w for w in candidates if scores[w.worker_id] >= best - weights.tie_epsilon),
        key=lambda w: w.worker_id,
    )
    return tied[0] if len(tied) == 1 else rng.choice(tied)
