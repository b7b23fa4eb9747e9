"""The router's one seam to scheduling decisions.

The router never decides where a call goes, when a workflow is admitted, what is stolen or what a
worker is told. It hands facts to a :class:`SchedulingHost` and carries out what comes back:

* ``dispatch(call)`` -> :class:`Dispatch` (worker, body fields to add, reason); it may wait while
  the scheduler holds the call (admission control, the AFS-ordered dispatch queue);
* ``finished(call, ...)``, ``client_event(...)``, ``worker_up/down(...)``: facts;
* ``epoch(now)``: the periodic work (fairness, stealing, preemption, admission release), whose
  actions the host carries out through the router (control messages to a worker's plugin,
  pre-fill requests).

``saga_router.hosts.SchedulerHost`` implements it over ``saga_sgl.scheduler.WorkflowScheduler``
for every ``--policy`` (the baselines are the same scheduler with a baseline placement policy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from saga_sgl.errors import NoEligibleWorker, UnknownWorkflow
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId
from saga_sgl.protocol import ClientEvent

from .identity import Identity

__all__ = [
    "Call",
    "Dispatch",
    "NoEligibleWorker",
    "SchedulingHost",
    "UnknownWorkflow",
]

@dataclass(slots=True, kw_only=True)
class Call:
    """One inbound LLM call, as the router parsed it."""

    call_id: str
    """Unique id of the call in this router (``<workflow>:<step>`` when the client numbers its steps)."""
    rid: str | None = None
    """The rid the client sent (forwarded unchanged); None: the router sends ``call_id``."""
    identity: Identity
    prompt_ids: Sequence[int]
    """Token ids (or, without a tokenizer, code points of the text) for prefix matching."""
    prompt_tokens: int
    arrived_s: float
    path: str = "/generate"
    max_output_tokens: int | None = None
    """The request's cap on generated tokens (``sampling_params.max_new_tokens``, ``max_tokens``)."""
    tried: set[WorkerId] = field(default_factory=set)
    """Workers this call already failed on (a retry goes elsewhere)."""
    preemptions: int = 0
    """Times the router aborted and re-sent this call for a preemption."""

    @property
    def workflow_id(self) -> WorkflowId:
        return WorkflowId(self.identity.workflow_id)


@dataclass(frozen=True, slots=True)
class Dispatch:
    worker: WorkerId
    reason: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Added to the forwarded JSON body: kv_hints, priority, routing_key, rid."""


class SchedulingHost(Protocol):
    name: str
    needs_worker_loads: bool
    """Whether the policy reads the workers' ``/v1/loads`` (the router polls them only then)."""

    async def dispatch(self, call: Call) -> Dispatch: ...

    def finished(
        self, call: Call, worker: WorkerId, meta: Mapping[str, Any] | None, ok: bool, now_s: float
    ) -> None: ...

    def client_event(self, event: ClientEvent, now_s: float) -> None: ...

    def worker_up(self, worker: WorkerId, now_s: float) -> None: ...

    def worker_down(self, worker: WorkerId, now_s: float) -> None: ...

    def call_admitted(
        self, call_id: str, workflow_id: WorkflowId, worker: WorkerId, preemptible: bool
    ) -> None:
        """The call is (inferred to be) running at ``worker`` now (``saga_router.running``)."""
        ...

    def observe_loads(self, workers: Sequence[WorkerView], now_s: float) -> None: ...

    def epoch(self, now_s: float) -> None: ...

    def queue_depth(self) -> int: ...

    def held(self) -> int: ...

    def knows(self, workflow_id: str) -> bool: ...
