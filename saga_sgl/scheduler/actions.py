"""Actions the workflow scheduler returns; the host carries each one out and decides nothing.

A list of actions is ordered: carry them out in order (a ``Release`` precedes the ``Dispatch`` of the
released call; a ``Rebind`` precedes the ``Redirect`` or ``Prefill`` it implies).

How the two hosts carry them out:

============  ==============================================  =========================================
action        router (saga_router)                            simulator (saga_sgl.sim)
============  ==============================================  =========================================
Dispatch      forward the call to ``worker_id`` with          enqueue the call on the worker
              ``rid``, ``routing_key``, ``priority`` and
              ``kv_hints`` = ``encode_kv_hints(hint)``
Hold          keep the request open, send nothing yet         keep the call, send nothing yet
Release       log/metric only (a Dispatch follows)            metric only
Rebind        metric ``saga_steals_total``; bookkeeping       metric only
Redirect      move the call if it is still in the router's    move the call if it still waits in the
              own queue, else ignore (SGLang cannot move      victim's queue
              a waiting request)
Prefill       ``/generate`` with the workflow's last context  prefill-only call on the worker
              and ``max_new_tokens=0``
Control       PUSH ``encode_control(message)`` to the         apply to the worker's hint table (what
              worker plugin's control channel                 the plugin does); re-key the entries
Preempt       ``POST /abort_request`` with the call's rid     retract the running call back to the
              (not a streamed call), then re-send the same    waiting queue, as SGLang's retract does
              body to the same worker once the beneficiary
              runs; the client sees one response
============  ==============================================  =========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_sgl.policy.decisions import PlacementReason, PreemptionReason, Steal
from saga_sgl.policy.views import WorkerId, WorkflowId
from saga_sgl.protocol import ControlMessage, ReuseHint


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatch:
    """Send call ``call_id`` to ``worker_id`` now."""

    call_id: str
    workflow_id: WorkflowId
    worker_id: WorkerId
    reason: PlacementReason
    """Why this worker (a metric label)."""
    priority: int = 0
    """SGLang request ``priority`` (larger first): ``FairShareEpoch.priority`` of the tenant."""
    urgency: float = 0.0
    """AFS urgency of the workflow (per-workflow Eq. 8 term), for the worker's queue order."""
    hint: ReuseHint | None = None
    """The ``saga.reuse`` kv_hints payload; None for baselines (plain request)."""
    routing_key: str = ""
    """``X-SMG-Routing-Key`` / ``routing_key``: the workflow id."""
    rebound_from: WorkerId | None = None
    """The workflow was bound elsewhere and moves with this call (Eq. 7's second branch)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Admission control holds a new workflow's first call (no worker has room for it)."""

    workflow_id: WorkflowId
    call_id: str
    reason: str
    """Why (a metric label): ``kv_footprint`` or ``agents_per_worker``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """A held workflow is admitted; its first call's ``Dispatch`` follows in the same list."""

    workflow_id: WorkflowId
    held_s: float
    """How long it was held."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rebind:
    """A steal moved ``workflow_id``'s binding (its KV stays behind; see Redirect/Prefill)."""

    workflow_id: WorkflowId
    steal: Steal


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """Move the workflow's queued call from ``from_worker`` to ``to_worker`` if it has not started."""

    call_id: str
    workflow_id: WorkflowId
    from_worker: WorkerId
    to_worker: WorkerId


@dataclass(frozen=True, slots=True, kw_only=True)
class Prefill:
    """Pre-fill the workflow's last context (``prefix_tokens`` tokens) on ``worker_id``
    (a ``max_new_tokens=0`` request), so its KV is there before the agent comes back."""

    workflow_id: WorkflowId
    worker_id: WorkerId
    prefix_tokens: int
    reason: str
    """``steal_rebuild``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """A control message for the worker plugin on ``worker_id`` (protocol.py's control channel)."""

    worker_id: WorkerId
    message: ControlMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class Preempt:
    """Retract the running call of ``workflow_id`` on ``worker_id`` in favour of ``beneficiary``."""

    call_id: str
    workflow_id: WorkflowId
    worker_id: WorkerId
    beneficiary: WorkflowId
    reason: PreemptionReason


Action = Dispatch | Hold | Release | Rebind | Redirect | Prefill | Control | Preempt
"""Everything the scheduler returns."""
