"""Events a host feeds the workflow scheduler (``WorkflowScheduler.handle``).

Each event says something the host *observed*; none carries a decision. Times are never part of an
event: the scheduler reads its injected clock when it handles one. Every field here is something a
live router can know (from the client's request and out-of-band events, from ``/v1/loads``, from the
response's ``meta_info``), except where a docstring says the event is optional and only a simulator
can send it; the scheduler then works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from saga_sgl.aeg.graph import AEG
from saga_sgl.policy.views import AgentType, TenantId, WorkerId, WorkerView, WorkflowId

DEFAULT_TENANT: Final = TenantId("default")
"""Tenant of a workflow whose client names none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSubmitted:
    """A client announced a workflow (optional: a call of an unknown workflow registers it too)."""

    workflow_id: WorkflowId
    tenant_id: TenantId = DEFAULT_TENANT
    agent_type: AgentType | None = None
    """Pattern-inference and footprint-model key; None = the tenant's id."""
    aeg: AEG | None = None
    """A graph the client submitted (tier 1). None: pattern inference, or cold start."""
    tool_hints: tuple[str, ...] = ()
    """A planned tool sequence the client announced (tier 1, ``from_tool_hints``); ignored if ``aeg``."""
    predicted_kv_tokens: int | None = None
    """The client's estimate of the workflow's peak KV (tokens); None = the scheduler's footprint model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallArrived:
    """An LLM call of a workflow reached the host and needs a worker.

    The scheduler answers with ``Dispatch`` (now) or ``Hold`` (admission control; a ``Dispatch`` for
    this call follows later, from ``handle`` or ``epoch``). A call of a workflow in a tool gap also
    ends that gap (as if ``ToolFinished`` had arrived).
    """

    call_id: str
    """Host's id of the call (SGLang ``rid``, ``"<workflow>:<step>"``)."""
    workflow_id: WorkflowId
    prompt_tokens: int
    step: int | None = None
    """Index of the call in its workflow, if the client says it."""
    prefix: tuple[int, ...] = ()
    """Prompt as ids for prefix-matching baselines (token ids or code points); empty if unused."""
    tenant_id: TenantId | None = None
    """Used only if the workflow is not yet known (implicit submission)."""
    agent_type: AgentType | None = None
    """Used only if the workflow is not yet known (implicit submission)."""
    max_output_tokens: int | None = None
    """The request's cap on generated tokens, if it states one: decode is priced at no more."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAdmitted:
    """Optional: the worker moved the call from its waiting queue into the running batch. The
    simulator knows it; the router infers it from ``/v1/loads`` counts (``saga_router.running``).
    Without it the scheduler treats a dispatched call as queued until it finishes, and plans no
    preemption."""

    call_id: str
    workflow_id: WorkflowId
    worker_id: WorkerId
    preemptible: bool = True
    """False: the host cannot retract this call (the router: a streamed response, whose output
    already reaches the client); it is never chosen for preemption."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFinished:
    """A call's response came back (``meta_info``: prompt, completion and cached token counts)."""

    call_id: str
    workflow_id: WorkflowId
    worker_id: WorkerId
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFailed:
    """A dispatched call did not complete (worker error, rejected, client gone). The workflow stays
    known; if the client retries, the retry is a new ``CallArrived``."""

    call_id: str
    workflow_id: WorkflowId
    worker_id: WorkerId
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStarted:
    """The agent started a tool call after its last LLM call (client event ``tool_started``).

    Without it the scheduler assumes a tool gap after every finished call, with the tool its AEG
    predicts, from the next epoch on.
    """

    workflow_id: WorkflowId
    tool: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFinished:
    """The tool returned (client event ``tool_finished``); the next call is imminent."""

    workflow_id: WorkflowId
    tool: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFinished:
    """The workflow ended (client event ``workflow_finished``, or the host saw its last call)."""

    workflow_id: WorkflowId
    failed: bool = False
    """True if it ended without completing (not learned from by the models)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLoads:
    """A fresh load snapshot of the workers (router: a ``/v1/loads`` poll; it replaces the previous
    one). ``idle_since_s`` may be None: the scheduler then derives it from successive snapshots,
    and ``num_inflight_reqs`` None: the scheduler fills in its own dispatch bookkeeping."""

    workers: tuple[WorkerView, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerUp:
    """A worker joined or became healthy again (its view comes with the next ``WorkerLoads``)."""

    worker_id: WorkerId


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDown:
    """A worker left or failed health checks: nothing more is dispatched there; workflows bound to
    it are re-placed at their next call."""

    worker_id: WorkerId


Event = (
    WorkflowSubmitted
    | CallArrived
    | CallAdmitted
    | CallFinished
    | CallFailed
    | ToolStarted
    | ToolFinished
    | WorkflowFinished
    | WorkerLoads
    | WorkerUp
    | WorkerDown
)
"""Everything ``WorkflowScheduler.handle`` accepts."""
