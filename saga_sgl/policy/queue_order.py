"""Waiting-queue order with ageing: urgent classes first, no class waits unboundedly.

A worker's waiting queue holds calls of many workflows. Sorting strictly by urgency starves the
least urgent class under overload (measured on a CPU worker: p99 100.8 s for urgency < 0.2 against
5.5 s for > 0.8). AFS's stride order (``fairness.AgentFairShare.order``) restarts its virtual time at
each call, so when every class has one waiting call it degenerates into that same strict order.

This order is earliest-virtual-deadline-first: a call queued at ``t`` by a class with urgency ``u``
(the router's AFS urgency, carried in the hint) gets the virtual deadline

    t + horizon_s * (1 - u / u_max)                                         [I]

where ``u_max`` is the largest urgency in the queue. The most urgent class is served FCFS; a less
urgent call is overtaken only by calls queued less than ``horizon_s`` after it, so its extra wait
is bounded by the work that arrives in one horizon. Equal urgencies give plain FCFS. Ties keep the
host's order (SGLang's own policy order). O(P log P) per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saga_sgl.policy.settings import require_positive


@dataclass(frozen=True, slots=True, kw_only=True)
class AgeingSettings:
    """Settings of :func:`ageing_order`."""

    horizon_s: float = 5.0
    """Largest head start (seconds of queueing) the most urgent class gets over the least urgent. [I]"""

    def __post_init__(self) -> None:
        require_positive("AgeingSettings", "horizon_s", self.horizon_s)


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """One waiting call as the order sees it."""

    enqueued_at_s: float
    """Absolute time the call entered the queue."""
    urgency: float
    """Its class's urgency (>= 0; higher = sooner); 0 for calls without a prediction."""


def virtual_deadline_s(call: QueuedCall, max_urgency: float, settings: AgeingSettings) -> float:
    """``t + horizon_s * (1 - u / u_max)`` (module doc); plain ``t`` when no call has urgency."""
    if max_urgency <= 0.0:
        return call.enqueued_at_s
    share = min(max(call.urgency, 0.0) / max_urgency, 1.0)
    return call.enqueued_at_s + settings.horizon_s * (1.0 - share)


def ageing_order(calls: Sequence[QueuedCall], settings: AgeingSettings | None = None) -> list[int]:
    """Indices of ``calls`` in dispatch order (earliest virtual deadline first, stable)."""
    s = settings or AgeingSettings()
    top = max((c.urgency for c in calls), default=0.0)
    deadlines = [virtual_deadline_s(c, top, s) for c in calls]
    return sorted(range(len(calls)), key=deadlines.__getitem__)
