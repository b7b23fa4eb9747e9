"""Read-only inputs of the policy core: id types and views.

A host (router, worker plugin, simulator) converts its own objects (radix nodes, HTTP bodies,
simulated segments) into these views, calls a policy, and applies the decision it gets back.
A view is the policy's declaration of its inputs: everything a policy reads is a field here.

Conventions: times are absolute float seconds on the host's monotonic clock (names end in ``_s``),
token counts end in ``_tokens``, fractions in ``_frac``. Nothing in this module does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

WorkflowId = NewType("WorkflowId", str)
"""A workflow (agent task, "session" in the paper). Routing key of all its calls."""
WorkerId = NewType("WorkerId", str)
"""A worker (one SGLang server / data-parallel rank)."""
TenantId = NewType("TenantId", str)
"""A tenant (AFS fairness unit)."""
StepId = NewType("StepId", str)
"""A step (AEG node) inside a workflow."""
ToolType = NewType("ToolType", str)
"""A tool type, e.g. ``code``, ``file``, ``web``, ``db`` (paper Table 1) or any name a host learns."""
AgentType = NewType("AgentType", str)
"""An agent program kind; pattern inference and cold start are per agent type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheEntryView:
    """One evictable KV entry as an eviction policy sees it.

    An entry is whatever the host evicts as a unit: a radix-tree node (worker plugin), a segment
    (simulator) or a whole session entry. Hosts only build views of *evictable* entries (unlocked
    leaves); a locked entry is never offered to a policy.
    """

    entry_id: int
    """Host's stable id for the entry (radix node id, segment id). Last, deterministic tie-break."""
    num_tokens: int
    """Tokens held by this entry (its size)."""
    depth_tokens: int
    """Tokens from the tree root through the end of this entry (>= num_tokens). Deeper = farther from
    the root; vLLM evicts the tail of a sequence first, and reuse-time ties go deepest first."""
    last_access_s: float
    """Absolute time of the last use (match, insert or release) of this entry."""
    workflow_id: WorkflowId | None = None
    """Workflow that owns this entry; None for request-level traffic or prefixes with no owner."""
    is_finished: bool = False
    """The owning workflow has finished: its KV will not be reused by it again."""
    is_terminal: bool = False
    """The owning workflow's last completed step is a terminal AEG step (no successor expected)."""
    reuse_prob: float | None = None
    """P_reuse of the owning workflow (Eq. 4-5) in [0, 1]; None when no prediction exists."""
    next_use_at_s: float | None = None
    """Predicted absolute time of the next use of this entry (earliest over the workflows sharing it);
    None when unknown. Absolute, so an eviction key built from it does not drift with the clock."""
    ttl_deadline_s: float | None = None
    """Absolute end of the tool-aware TTL (Algorithm 1) set when the owner's tool call started; None
    when no TTL is live. The policy decides whether a live TTL protects the entry."""
    predicted_at_s: float | None = None
    """When the prediction (``reuse_prob``, ``next_use_at_s``) was made, if later than the entry's last
    use: a predicting key measures the wait, and the decay of its estimate, from here. Set when the
    owner's next call is already waiting (its reuse is known to be due since then); None: from the
    last use."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerView:
    """One worker's state, as read from SGLang's ``/v1/loads`` (router) or the simulator."""

    worker_id: WorkerId
    """The worker."""
    num_running_reqs: int
    """Requests in the running batch."""
    num_waiting_reqs: int
    """Requests in the waiting queue."""
    kv_used_tokens: int
    """KV tokens in use (running requests plus cached prefixes that are not evictable)."""
    kv_capacity_tokens: int
    """Total KV pool capacity in tokens (> 0)."""
    max_running_reqs: int = 256
    """Batch-size cap of the worker (SGLang ``max_running_requests``); normalises the request load."""
    num_inflight_reqs: int | None = None
    """Requests the router has forwarded and not seen finish (sglang-router's ``load``); None lets
    policies fall back to running + waiting."""
    idle_since_s: float | None = None
    """Absolute time the worker's waiting queue last became empty; None while it has queued work.
    Drives the idle trigger of work stealing."""
    is_healthy: bool = True
    """Unhealthy workers are never chosen."""
    prefill_tokens_per_s: float | None = None
    """Pre-fill throughput the host measured on this worker (tokens/s); None until measured. The
    steal guards use it for the re-prefill time of a stolen context, instead of their setting."""
    residence_s: float = math.inf
    """The worker cache's recent residence time, seconds: cached tokens / eviction rate (Little's
    law, ``policy.pressure.ResidenceTracker``), as the worker measured it (the saga plugin's
    ``/v1/loads`` field, the simulator's worker). inf: unknown (a worker without the plugin, or no
    eviction yet). The scheduler's reuse horizon of the workflows whose KV is here follows it."""

    def __post_init__(self) -> None:
        if not self.residence_s > 0.0:  # also refuses NaN
            raise ValueError(f"WorkerView.residence_s must be > 0 (inf: unknown), got {self.residence_s}")
        if self.kv_capacity_tokens <= 0:
            raise ValueError(f"WorkerView.kv_capacity_tokens must be > 0, got {self.kv_capacity_tokens}")
        if self.max_running_reqs <= 0:
            raise ValueError(f"WorkerView.max_running_reqs must be > 0, got {self.max_running_reqs}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallView:
    """One LLM call (request) that needs a worker.

    Hosts fill the workflow-level fields from their workflow state; expensive per-call predictions
    (prefix matches, KV footprint) are computed once by the host and shared by all policies.
    """

    workflow_id: WorkflowId
    """The call's workflow; routing key for affinity and consistent hashing."""
    prompt_tokens: int
    """Prompt length in tokens."""
    prefix: tuple[int, ...] = ()
    """Prompt as a sequence of ids for prefix-matching baselines (token ids, or the code points of the
    prompt text for sglang-router's character-level tree). Empty when unavailable."""
    step_id: StepId | None = None
    """AEG step of this call, if known."""
    tenant_id: TenantId | None = None
    """Tenant, if known."""
    affinity_worker_id: WorkerId | None = None
    """w*_s of Eq. 7: the worker the workflow is bound to. None for a new workflow."""
    affinity_cached: bool = False
    """cached(w*_s, s) of Eq. 7: the affinity worker still holds the workflow's KV."""
    predicted_kv_tokens: int = 0
    """Predicted peak KV footprint of the whole workflow (admission of a new workflow)."""
    prefix_match_tokens: Mapping[WorkerId, int] = field(default_factory=dict)
    """Tokens of this prompt already cached per worker (router's prefix index). Missing = 0."""
    bound_work_s: Mapping[WorkerId, float] = field(default_factory=dict)
    """Predicted remaining work (seconds) of the live workflows bound to each worker, from the
    workflow scheduler (new workflows only; empty when unknown). Missing = 0."""
    bound_kv_tokens: Mapping[WorkerId, int] = field(default_factory=dict)
    """Predicted KV footprint (tokens) of the live workflows bound to each worker, from the workflow
    scheduler's admission control (new workflows only; empty when unknown). Missing = 0."""
    uncached_prefill_s: Mapping[WorkerId, float] = field(default_factory=dict)
    """Seconds to pre-fill the part of this prompt not cached on each worker, at the pre-fill rate the
    host measured there (else the scheduler's cost model); from the workflow scheduler, new
    workflows only. Missing = unknown."""
    outstanding_s: Mapping[WorkerId, tuple[float, ...]] = field(default_factory=dict)
    """Expected remaining service seconds of every call dispatched to each worker and not finished,
    at the same rates (the workflow scheduler's estimates; new workflows only). Missing = none."""
    decode_s: float = 0.0
    """Expected decode seconds of this call alone (the scheduler's learned output length at the cost
    model's rate); the same on every worker."""
    resident_kv_tokens: Mapping[WorkerId, int] = field(default_factory=dict)
    """Predicted KV the live workflows bound to each worker will hold, a prompt head they share
    counted once (the radix cache holds it once); from the workflow scheduler, new workflows only.
    Missing = 0."""
    remaining_calls: float = 1.0
    """Expected LLM calls of the workflow from this one on, this one included (learned per agent
    type from finished workflows); new workflows only."""
    reprefill_s_per_token: float = 0.0
    """Seconds to pre-fill one evicted token again at the host's rates (0: no KV-pressure term)."""


class WorkflowState(StrEnum):
    """Where a workflow is in its life cycle, as the stealer and AFS see it."""

    QUEUED = "queued"
    """Its next call waits in a worker queue (or the router queue)."""
    RUNNING = "running"
    """A call of it is in a running batch."""
    TOOL_GAP = "tool_gap"
    """Between calls: a tool is executing."""
    FINISHED = "finished"
    """Done; no further calls."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowView:
    """One admitted workflow as the work stealer and Agent Fair Share see it."""

    workflow_id: WorkflowId
    """The workflow."""
    tenant_id: TenantId
    """Its tenant."""
    worker_id: WorkerId | None
    """Worker it is bound to (affinity), None before placement."""
    state: WorkflowState
    """Life-cycle state."""
    admitted_at_s: float
    """Absolute admission time; the stealer's "oldest pending session" order."""
    cached_prefix_tokens: int = 0
    """Tokens of its KV on its worker; the rebuild cost (tokens to re-prefill) if it moves."""
    remaining_work_s: float = 0.0
    """work_remain (Eq. 9) in GPU-seconds, from ``aeg.predict``."""
    deadline_s: float = float("inf")
    """Absolute SLO deadline (admission + 1.5 x expected completion time)."""
    queued_since_s: float | None = None
    """Absolute time its current call entered a queue; None unless QUEUED."""
    tool_gap_ends_at_s: float | None = None
    """Predicted absolute end of its current tool call; None unless in a TOOL_GAP."""
    times_stolen: int = 0
    """How many times it has already been stolen; a stolen workflow is never stolen again."""
    call_at_worker: bool = False
    """Its current call has been sent to its worker and cannot be taken back (SGLang has no way to
    move a forwarded request); such a workflow is never stolen. False while the call waits in a
    queue the host can still redirect from, or while no call is out."""
    agent_type: AgentType | None = None
    """Its agent type: the key of the prompt head it shares with the other workflows of its type
    (the admission footprint uses the same key). None: it shares no head."""
    shared_prefix_tokens: int = 0
    """Head of its first prompt that was already cached somewhere when it arrived (shared with the
    workflows of its agent type, e.g. the system prompt)."""
    footprint_tokens: int = 0
    """Predicted peak KV of the workflow (the scheduler's admission footprint; 0: unknown, no
    KV-pressure term in the steal price)."""
    remaining_calls: float = 1.0
    """Expected LLM calls of the workflow from its next one on, that one included (learned per agent
    type from finished workflows). A stolen workflow overflows its thief's pool at each later one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantView:
    """A tenant as AFS sees it."""

    tenant_id: TenantId
    """The tenant."""
    weight: float = 1.0
    """Relative weight (> 0); multiplies the tenant's AFS urgency. 1.0 in the paper."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingCallView:
    """A call waiting for dispatch (router queue) or in a worker's waiting queue (AFS order)."""

    call_id: str
    """Host's id for the call (e.g. SGLang ``rid``)."""
    workflow_id: WorkflowId
    """Its workflow."""
    tenant_id: TenantId
    """Its tenant."""
    enqueued_at_s: float
    """Absolute time it was queued; FCFS order within a tenant."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockingView:
    """A running call of one workflow holding resources a queued call of another workflow waits for.

    The host reports these pairs (same worker, the waiter queued behind the holder); AFS decides
    whether to preempt the holder (500 ms rule).
    """

    holder: WorkflowId
    """Workflow whose call runs (or holds KV) on the worker."""
    waiter: WorkflowId
    """Workflow whose call waits behind it."""
    worker_id: WorkerId
    """The contended worker."""
    blocked_since_s: float
    """Absolute time the waiter started waiting behind the holder."""
    holder_remaining_s: float | None = None
    """Expected remaining service seconds of the holder's call (the scheduler's estimate); None when
    unknown."""
    preempt_cost_s: float | None = None
    """Seconds a preemption costs the holder's call: the pre-fill of its prompt again; None when
    unknown."""
