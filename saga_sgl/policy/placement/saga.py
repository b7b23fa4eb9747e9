"""saga placement: workflow-atomic admission for new workflows, Eq. 7 for the rest.

* A call of a new workflow (no ``affinity_worker_id``) goes where its expected completion time in
  seconds is least (``completion_cost``: queueing behind the worker's outstanding calls plus the
  pre-fill of the prompt's uncached part at the host's rates); the host binds the workflow there.
  This rule is ours; ``new_workflow="admission"`` is the previous multi-criteria score (load,
  predicted KV footprint, shared-prefix locality, normalised weights), ``"least_loaded"`` the
  paper's (Eq. 7's second branch).
* A call of a bound workflow follows Eq. 7 (``affinity``): stay while the worker holds its KV and
  is below theta = 0.8, else the least-loaded worker (the host re-binds the workflow there).

Randomness (ties only) comes from the ``random.Random`` given at construction. O(W) per call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import Placement, PlacementReason
from saga_sgl.policy.placement.admission import AdmissionWeights, admit
from saga_sgl.policy.placement.affinity import affinity_placement, least_loaded
from saga_sgl.policy.placement.completion_cost import (
    cheapest,
    completion_cost_s,
    kv_overflow_tokens,
    kv_pressure_s,
)
from saga_sgl.policy.placement.load import LoadSettings
from saga_sgl.policy.settings import require, require_frac
from saga_sgl.policy.views import CallView, WorkerView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import PlacementPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaPlacementSettings:
    """Settings of ``SagaPlacement`` (flat, so SGLang/router JSON maps onto it directly)."""

    theta: float = 0.8
    """Eq. 7: stay on the affinity worker while load(w) < theta [P]."""
    request_weight: float = 0.5
    """load(w): weight of (running + waiting) / max_running_reqs (see ``placement.load``)."""
    token_weight: float = 0.5
    """load(w): weight of KV token usage (see ``placement.load``)."""
    load_weight: float = 0.5
    """Admission: weight of 1 - load(w)."""
    footprint_weight: float = 0.3
    """Admission: weight of the predicted KV footprint fit."""
    locality_weight: float = 0.2
    """Admission: weight of shared-prefix locality."""
    load_signal: str = "instant"
    """Admission's load signal: ``instant`` (load(w) from the worker's reported state) or
    ``bound_work`` (predicted remaining work of the live workflows bound to w; ours)."""
    footprint_signal: str = "instant"
    """Admission's footprint signal: ``instant`` (free KV the worker reports) or ``bound`` (the pool
    less the predicted footprints of the live workflows bound to w; ours)."""
    new_workflow: str = "completion_cost"
    """Where a new workflow goes: ``completion_cost`` (ours: least expected completion time in
    seconds), ``admission`` (ours, earlier: multi-criteria weighted score) or ``least_loaded`` (the
    paper: Eq. 7's second branch)."""

    def __post_init__(self) -> None:
        require_frac("SagaPlacementSettings", "theta", self.theta)
        require(
            self.new_workflow in ("completion_cost", "admission", "least_loaded"),
            "SagaPlacementSettings",
            "new_workflow",
            "'completion_cost', 'admission' or 'least_loaded'",
            self.new_workflow,
        )
        require(
            self.load_signal in ("instant", "bound_work"),
            "SagaPlacementSettings",
            "load_signal",
            "'instant' or 'bound_work'",
            self.load_signal,
        )
        require(
            self.footprint_signal in ("instant", "bound"),
            "SagaPlacementSettings",
            "footprint_signal",
            "'instant' or 'bound'",
            self.footprint_signal,
        )
        # Validate the composed parts now, so a bad value fails at load time naming the field.
        self.load_settings()
        self.admission_weights()

    def load_settings(self) -> LoadSettings:
        """The load(w) part."""
        return LoadSettings(request_weight=self.request_weight, token_weight=self.token_weight)

    def admission_weights(self) -> AdmissionWeights:
        """The admission part."""
        return AdmissionWeights(
            load_weight=self.load_weight,
            footprint_weight=self.footprint_weight,
            locality_weight=self.locality_weight,
        )


class SagaPlacement:
    """Admission for new workflows, Eq. 7 affinity for bound ones."""

    name: ClassVar[str] = "saga"
    uses_completion_cost: bool
    """The scheduler must fill ``CallView``'s seconds fields for new workflows."""

    def __init__(
        self, settings: SagaPlacementSettings | None = None, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or SagaPlacementSettings()
        self._rng = rng if rng is not None else random.Random(0)
        self._load = self.settings.load_settings()
        self._weights = self.settings.admission_weights()
        self.uses_completion_cost = self.settings.new_workflow == "completion_cost"

    def place(self, call: CallView, workers: Sequence[WorkerView], now_s: float) -> Placement:
        s = self.settings
        if call.affinity_worker_id is None and s.new_workflow == "completion_cost":
            w = cheapest(call, workers, self._rng, self._weights.tie_epsilon)
            if log.isEnabledFor(logging.INFO):
                log.info("new workflow %s (%d prompt tokens) -> %s; %s", call.workflow_id,
                         call.prompt_tokens, w.worker_id, _priced(call, workers))
            return Placement(worker_id=w.worker_id, reason=PlacementReason.COMPLETION_COST)
        if call.affinity_worker_id is None and s.new_workflow == "admission":
            w = admit(
                call,
                workers,
                self._weights,
                self._load,
                s.theta,
                self._rng,
                s.load_signal == "bound_work",
                s.footprint_signal == "bound",
            )
            return Placement(worker_id=w.worker_id, reason=PlacementReason.ADMISSION)
        stay = affinity_placement(call, workers, s.theta, self._load)
        if stay is not None:
            return stay
        w = least_loaded(workers, self._load, self._rng)
        return Placement(worker_id=w.worker_id, reason=PlacementReason.LEAST_LOADED)


def _priced(call: CallView, workers: Sequence[WorkerView]) -> str:
    """Each candidate's price and its parts, for the decision log."""
    parts = []
    healthy = [w for w in workers if w.is_healthy]
    for w in healthy:
        wid = w.worker_id
        out = call.outstanding_s.get(wid, ())
        parts.append(
            f"{wid} {completion_cost_s(call, w, healthy):.3f}s"
            f" = pre-fill {call.uncached_prefill_s.get(wid, 0.0):.3f}"
            f" + decode {call.decode_s:.3f} + queue {sum(out):.2f}s of {len(out)} calls"
            f" + kv {kv_pressure_s(call, w, healthy):.3f} (match {call.prefix_match_tokens.get(wid, 0)},"
            f" resident {call.resident_kv_tokens.get(wid, 0)}/{w.kv_capacity_tokens},"
            f" overflow {kv_overflow_tokens(call, w, healthy)})"
        )
    return (f"need {call.predicted_kv_tokens} tokens over {call.remaining_calls:.1f} calls at"
            f" {call.reprefill_s_per_token * 1e3:.3f} ms/token: " + "; ".join(parts))

if TYPE_CHECKING:
    _check: PlacementPolicy = SagaPlacement()
