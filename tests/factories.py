"""Builders with keyword defaults for the policy views (vLLM test-helper style).

Unit, simulator and plugin tests use these so each test states only what it is about.
Import as ``from factories import make_entry`` (``tests/`` is on sys.path via its conftest) or
``from tests.factories import make_entry`` when running ``python -m pytest`` from the repo root.
"""

from __future__ import annotations

from collections.abc import Mapping

from saga_sgl.policy.views import (
    BlockingView,
    CacheEntryView,
    CallView,
    PendingCallView,
    TenantId,
    TenantView,
    WorkerId,
    WorkerView,
    WorkflowId,
    WorkflowState,
    WorkflowView,
)


def make_entry(
    entry_id: int = 0,
    *,
    num_tokens: int = 256,
    depth_tokens: int | None = None,
    last_access_s: float = 0.0,
    workflow_id: str | None = "wf0",
    is_finished: bool = False,
    is_terminal: bool = False,
    reuse_prob: float | None = None,
    next_use_at_s: float | None = None,
    ttl_deadline_s: float | None = None,
) -> CacheEntryView:
    """A cache entry; depth defaults to its own size (a child of the root)."""
    return CacheEntryView(
        entry_id=entry_id,
        num_tokens=num_tokens,
        depth_tokens=num_tokens if depth_tokens is None else depth_tokens,
        last_access_s=last_access_s,
        workflow_id=None if workflow_id is None else WorkflowId(workflow_id),
        is_finished=is_finished,
        is_terminal=is_terminal,
        reuse_prob=reuse_prob,
        next_use_at_s=next_use_at_s,
        ttl_deadline_s=ttl_deadline_s,
    )


def make_worker(
    worker_id: str = "w0",
    *,
    running: int = 0,
    waiting: int = 0,
    kv_used_tokens: int = 0,
    kv_capacity_tokens: int = 100_000,
    max_running_reqs: int = 100,
    inflight: int | None = None,
    idle_since_s: float | None = None,
    healthy: bool = True,
) -> WorkerView:
    """A worker; max_running_reqs 100 makes running + waiting read as a percentage."""
    return WorkerView(
        worker_id=WorkerId(worker_id),
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        kv_used_tokens=kv_used_tokens,
        kv_capacity_tokens=kv_capacity_tokens,
        max_running_reqs=max_running_reqs,
        num_inflight_reqs=inflight,
        idle_since_s=idle_since_s,
        is_healthy=healthy,
    )


def make_call(
    workflow_id: str = "wf0",
    *,
    prompt_tokens: int = 1000,
    prefix: tuple[int, ...] = (),
    tenant_id: str | None = None,
    affinity_worker_id: str | None = None,
    affinity_cached: bool = False,
    predicted_kv_tokens: int = 0,
    prefix_match_tokens: Mapping[str, int] | None = None,
) -> CallView:
    """A call; a new workflow unless ``affinity_worker_id`` is given."""
    return CallView(
        workflow_id=WorkflowId(workflow_id),
        prompt_tokens=prompt_tokens,
        prefix=prefix,
        tenant_id=None if tenant_id is None else TenantId(tenant_id),
        affinity_worker_id=None if affinity_worker_id is None else WorkerId(affinity_worker_id),
        affinity_cached=affinity_cached,
        predicted_kv_tokens=predicted_kv_tokens,
        prefix_match_tokens={WorkerId(k): v for k, v in (prefix_match_tokens or {}).items()},
    )


def make_workflow(
    workflow_id: str = "wf0",
    *,
    tenant_id: str = "t0",
    worker_id: str | None = "w0",
    state: WorkflowState = WorkflowState.QUEUED,
    admitted_at_s: float = 0.0,
    cached_prefix_tokens: int = 1000,
    remaining_work_s: float = 1.0,
    deadline_s: float = float("inf"),
    queued_since_s: float | None = None,
    tool_gap_ends_at_s: float | None = None,
    times_stolen: int = 0,
) -> WorkflowView:
    """A workflow bound to ``w0`` and queued."""
    return WorkflowView(
        workflow_id=WorkflowId(workflow_id),
        tenant_id=TenantId(tenant_id),
        worker_id=None if worker_id is None else WorkerId(worker_id),
        state=state,
        admitted_at_s=admitted_at_s,
        cached_prefix_tokens=cached_prefix_tokens,
        remaining_work_s=remaining_work_s,
        deadline_s=deadline_s,
        queued_since_s=queued_since_s,
        tool_gap_ends_at_s=tool_gap_ends_at_s,
        times_stolen=times_stolen,
    )


def make_tenant(tenant_id: str = "t0", *, weight: float = 1.0) -> TenantView:
    """A tenant of weight 1."""
    return TenantView(tenant_id=TenantId(tenant_id), weight=weight)


def make_pending(
    call_id: str, *, tenant_id: str = "t0", workflow_id: str | None = None, enqueued_at_s: float = 0.0
) -> PendingCallView:
    """A pending call; its workflow defaults to ``wf-<call_id>``."""
    return PendingCallView(
        call_id=call_id,
        workflow_id=WorkflowId(workflow_id or f"wf-{call_id}"),
        tenant_id=TenantId(tenant_id),
        enqueued_at_s=enqueued_at_s,
    )


def make_blocking(
    holder: str, waiter: str, *, worker_id: str = "w0", blocked_since_s: float = 0.0
) -> BlockingView:
    """``holder`` blocks ``waiter`` on ``worker_id`` since ``blocked_since_s``."""
    return BlockingView(
        holder=WorkflowId(holder),
        waiter=WorkflowId(waiter),
        worker_id=WorkerId(worker_id),
        blocked_since_s=blocked_since_s,
    )
