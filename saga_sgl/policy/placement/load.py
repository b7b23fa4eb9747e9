"""load(w): the one definition of a worker's load used by placement and stealing.

The paper leaves load(w) undefined [I]. Ours, from what SGLang's ``/v1/loads`` reports:

    request_load = (running + waiting) / max_running_reqs        (saturates at 1)
    token_load   = kv_used_tokens / kv_capacity_tokens           (saturates at 1)
    load(w)      = request_weight * request_load + token_weight * token_load

with request_weight + token_weight = 1, so load(w) is in [0, 1] and Eq. 7's theta = 0.8 reads as
"80% busy". A full batch with a full queue counts as saturated: queue depth beyond the batch cap
does not raise the load further, so ``queue_depth`` breaks ties between saturated workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_sgl.policy.settings import require, require_frac
from saga_sgl.policy.views import WorkerView


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSettings:
    """Weights of load(w); they must sum to 1."""

    request_weight: float = 0.5
    """Weight of (running + waiting) / max_running_reqs [I] (the repo weighs utilisation 0.5 [R])."""
    token_weight: float = 0.5
    """Weight of KV token usage [I] (the repo weighs memory pressure 0.5 [R])."""

    def __post_init__(self) -> None:
        require_frac("LoadSettings", "request_weight", self.request_weight)
        require_frac("LoadSettings", "token_weight", self.token_weight)
        total = self.request_weight + self.token_weight
        require(abs(total - 1.0) < 1e-9, "LoadSettings", "request_weight+token_weight", "1", total)


def worker_load(w: WorkerView, settings: LoadSettings) -> float:
    """load(w) in [0, 1]."""
    request_load = min(1.0, queue_depth(w) / w.max_running_reqs)
    token_load = min(1.0, max(0, w.kv_used_tokens) / w.kv_capacity_tokens)
    return settings.request_weight * request_load + settings.token_weight * token_load


def queue_depth(w: WorkerView) -> int:
    """Requests running or waiting on ``w`` (tie-break between equally loaded workers).

    At least the host's in-flight count: a call forwarded a moment ago is not in the worker's
    reported running/waiting counts until its next load report. Live, five agents starting within
    milliseconds all saw both workers empty and six of ten workflows were admitted to one worker
    (then stolen back at 650-1,600 re-built tokens each). In the simulator the two are equal."""
    return max(w.num_running_reqs + w.num_waiting_reqs, w.num_inflight_reqs or 0)
