"""Converts simulated entities into the policy core's read-only views (the simulator's adapter).

Like the router and the plugin, the simulator decides nothing here: it reports what the real host
could observe (``/v1/loads`` fields, the radix tree, workflow hints) so a policy can decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saga_sgl.policy.views import (
    CacheEntryView,
    CallView,
    PendingCallView,
    TenantId,
    TenantView,
    WorkerId,
    WorkerView,
    WorkflowState,
    WorkflowView,
)
from saga_sgl.sim.radix import Node
from saga_sgl.sim.worker import SimCall

if TYPE_CHECKING:
    from saga_sgl.sim.cluster import Cluster, SimTask

PREFIX_BLOCK_TOKENS = 64
"""Granularity of ``CallView.prefix`` ids handed to prefix-matching routers (cache_aware). One id per
64 prompt tokens keeps a 32K-token prompt at 512 ids while preserving the token-weighted match rate
within 64 tokens (sglang-router matches characters; our workload has no text)."""


class ViewBuilder:
    __slots__ = ("_cluster", "_prefix_cache")

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._prefix_cache: dict[int, tuple[int, ...]] = {}

    # --- workers --------------------------------------------------------------------------------
    def workers(self, now_s: float) -> list[WorkerView]:
        out = []
        for w in self._cluster.workers:
            locked = w.cache.tree_tokens - w.cache.evictable_tokens
            out.append(
                WorkerView(
                    worker_id=WorkerId(w.worker_id),
                    num_running_reqs=w.num_running,
                    num_waiting_reqs=len(w.waiting),
                    kv_used_tokens=min(locked + w.private_tokens, w.nominal_capacity_tokens),
                    kv_capacity_tokens=w.nominal_capacity_tokens,
                    max_running_reqs=w.settings.max_running_requests,
                    num_inflight_reqs=w.num_running + len(w.waiting),
                    idle_since_s=w.idle_since_s,
                )
            )
        return out

    # --- calls ----------------------------------------------------------------------------------
    def call(self, task: SimTask, call: SimCall) -> CallView:
        cluster = self._cluster
        affinity = task.worker_id
        cached = False
        if affinity is not None:
            node, _ = cluster.by_id[affinity].cache.match(call.prompt)
            # cached(w*, s) of Eq. 7: the worker still holds KV that only this workflow uses.
            cached = node.owner is task and not node.shared
        matches: dict[WorkerId, int] = {}
        bundle = cluster.bundle
        if bundle.wants_prefix_matches and affinity is None:
            for w in cluster.workers:
                _, m = w.cache.match(call.prompt)
                if m:
                    matches[WorkerId(w.worker_id)] = m
        return CallView(
            workflow_id=task.wid,
            prompt_tokens=call.prompt_tokens,
            prefix=self.prefix_ids(call) if bundle.wants_prefix_ids else (),
            tenant_id=TenantId(task.spec.tenant),
            affinity_worker_id=affinity,
            affinity_cached=cached,
            predicted_kv_tokens=bundle.predicted_kv_tokens(task),
            prefix_match_tokens=matches,
        )

    def prefix_ids(self, call: SimCall) -> tuple[int, ...]:
        """One id per ``PREFIX_BLOCK_TOKENS`` of the prompt; equal ids <=> equal content there."""
        ids: list[int] = []
        for seg in call.prompt:
            base = self._prefix_cache.get(seg.seg_id)
            n = -(-seg.num_tokens // PREFIX_BLOCK_TOKENS)
            if base is None or len(base) != n:
                base = tuple(seg.seg_id * 4096 + j for j in range(n))
                self._prefix_cache[seg.seg_id] = base
            ids.extend(base)
        return tuple(ids)

    def pending(self, call: SimCall) -> PendingCallView:
        task = call.host
        return PendingCallView(
            call_id=call.call_id,
            workflow_id=task.wid,
            tenant_id=TenantId(task.spec.tenant),
            enqueued_at_s=call.enqueued_s,
        )

    # --- cache entries --------------------------------------------------------------------------
    def entry(self, node: Node, now_s: float) -> CacheEntryView:
        owner = node.owner
        bundle = self._cluster.bundle
        if owner is None or node.shared:
            return CacheEntryView(
                entry_id=node.entry_id,
                num_tokens=node.num_tokens,
                depth_tokens=node.depth_tokens,
                last_access_s=node.last_access_s,
            )
        task: SimTask = owner
        if not bundle.predictions:
            return CacheEntryView(
                entry_id=node.entry_id,
                num_tokens=node.num_tokens,
                depth_tokens=node.depth_tokens,
                last_access_s=node.last_access_s,
                workflow_id=task.wid,
            )
        finished = task.is_finished
        if bundle.oracle_next_use:
            next_use = _oracle_next_use(task, node, now_s)
        elif task.state is WorkflowState.TOOL_GAP:
            next_use = task.next_use_s
        else:
            next_use = task.queued_since_s if task.state is WorkflowState.QUEUED else None
        return CacheEntryView(
            entry_id=node.entry_id,
            num_tokens=node.num_tokens,
            depth_tokens=node.depth_tokens,
            last_access_s=node.last_access_s,
            workflow_id=task.wid,
            is_finished=finished,
            is_terminal=finished,
            reuse_prob=0.0 if finished else task.reuse_prob,
            next_use_at_s=next_use,
            ttl_deadline_s=task.ttl_deadline_s,
        )

    # --- workflows and tenants ------------------------------------------------------------------
    def workflows(self, now_s: float) -> list[WorkflowView]:
        """Views of the active workflows; each is rebuilt only after its workflow changed."""
        out = []
        for task in self._cluster.active.values():
            view = task.view
            if view is None:
                view = task.view = self._workflow(task)
            out.append(view)
        return out

    def _workflow(self, task: SimTask) -> WorkflowView:
        gap = task.state is WorkflowState.TOOL_GAP
        return WorkflowView(
            workflow_id=task.wid,
            tenant_id=TenantId(task.spec.tenant),
            worker_id=task.worker_id,
            state=task.state,
            admitted_at_s=task.admitted_s,
            cached_prefix_tokens=task.last_seq_tokens if gap else 0,
            remaining_work_s=task.remaining_work_s,
            deadline_s=task.deadline_s,
            queued_since_s=task.queued_since_s if task.state is WorkflowState.QUEUED else None,
            tool_gap_ends_at_s=task.next_use_s if gap else None,
            times_stolen=task.times_stolen,
        )

    def tenants(self) -> list[TenantView]:
        return [TenantView(tenant_id=TenantId(t)) for t in self._cluster.workload.tenants]


def _oracle_next_use(task: SimTask, node: Node, now_s: float) -> float | None:
    """True next use of a workflow-private node (clairvoyant: the real tool end), for the Belady row.

    A node the next prompt no longer contains (observation masking dropped it) is never used again.
    """
    if task.is_finished:
        return float("inf")
    if task.state is WorkflowState.TOOL_GAP:
        nxt = task.spec.calls[task.next_step]
        if not any(s.seg_id == node.seg_id for s in nxt.prompt):
            return float("inf")
        return task.oracle_next_use_s
    return now_s
