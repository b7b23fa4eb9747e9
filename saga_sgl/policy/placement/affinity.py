"""Eq. 7: session-affinity routing.

    route(r of workflow s) = w*_s                 if load(w*_s) < theta and cached(w*_s, s)
                           = argmin_w load(w)     otherwise

theta = 0.8 [P]. w*_s is ``CallView.affinity_worker_id``, cached(w*_s, s) is
``CallView.affinity_cached``; load(w) is ``placement.load.worker_load``. An unhealthy or missing
affinity worker falls to the second branch. argmin ties: fewer queued requests, then the injected
RNG (never input order). O(W).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from saga_sgl.errors import NoEligibleWorker
from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.load import LoadSettings, queue_depth, worker_load
from saga_sgl.policy.views import CallView, WorkerView


def affinity_placement(
    call: CallView, workers: Sequence[WorkerView], theta: float, load_settings: LoadSettings
) -> Placement | None:
    """Eq. 7's first branch: the affinity worker if it holds the KV and is below theta, else None."""
    if call.affinity_worker_id is None or not call.affinity_cached:
        return None
    for w in workers:
        if w.worker_id == call.affinity_worker_id:
            if w.is_healthy and worker_load(w, load_settings) < theta:
                return Placement(worker_id=w.worker_id, reason=PlacementReason.AFFINITY)
            return None
    return None


def least_loaded(
    workers: Sequence[WorkerView], load_settings: LoadSettings, rng: random.Random
) -> WorkerView:
    """argmin_w load(w) over healthy workers; ties by queue depth, then ``rng``."""
    best: tuple[float, int] | None = None
    tied: list[WorkerView] = []
    for w in workers:
        if not w.is_healthy:
            continue
        k = (worker_load(w, load_settings), queue_depth(w))
        if best is None or k < best:
            best, tied = k, [w]
        elif k == best:
            tied.append(w)
    if not tied:
        raise NoEligibleWorker("no healthy worker")
    if len(tied) == 1:
        return tied[0]
    return rng.choice(sorted(tied, key=lambda w: w.worker_id))
