"""Converts simulated entities into the policy core's read-only views (the simulator's adapter).

Like the router and the plugin, the simulator decides nothing here: it reports what the real host
could observe (``/v1/loads`` fields, a prefix index over the radix caches, the hint record the
scheduler's kv_hints and control messages set on each workflow) so the scheduler can decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from saga_sgl.policy.views import (
    CacheEntryView,
    PendingCallView,
    TenantId,
    TenantView,
    WorkerId,
    WorkerView,
    WorkflowId,
    WorkflowState,
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
                    residence_s=w.residence_s(now_s),
                )
            )
        return out

    # --- PrefixLookup (the simulator's exact counterpart of a router's KV-event index) -----------
    def prefix_match_tokens(self, call_id: str) -> Mapping[WorkerId, int]:
        call = self._cluster.calls[call_id]
        matches: dict[WorkerId, int] = {}
        for w in self._cluster.workers:
            _, m = w.cache.match(call.prompt)
            if m:
                matches[WorkerId(w.worker_id)] = m
        return matches

    def holds_workflow_kv(self, call_id: str, workflow_id: WorkflowId, worker_id: WorkerId) -> bool:
        """cached(w*, s) of Eq. 7: the deepest match on ``worker_id`` is KV only this workflow uses."""
        call = self._cluster.calls[call_id]
        node, _ = self._cluster.by_id[worker_id].cache.match(call.prompt)
        return node.owner is call.host and not node.shared

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
        task: SimTask = call.host
        return PendingCallView(
            call_id=call.call_id,
            workflow_id=task.wid,
            tenant_id=TenantId(task.spec.tenant),
            enqueued_at_s=call.enqueued_s,
        )

    # --- cache entries --------------------------------------------------------------------------
    def entry(self, node: Node, now_s: float) -> CacheEntryView:
        owner = node.owner
        cluster = self._cluster
        if owner is None or node.shared:
            return CacheEntryView(
                entry_id=node.entry_id,
                num_tokens=node.num_tokens,
                depth_tokens=node.depth_tokens,
                last_access_s=node.last_access_s,
            )
        task: SimTask = owner
        hints = cluster.scheduler.cache_hints(task.wid)
        if hints is None:
            return CacheEntryView(
                entry_id=node.entry_id,
                num_tokens=node.num_tokens,
                depth_tokens=node.depth_tokens,
                last_access_s=node.last_access_s,
                workflow_id=task.wid,
            )
        finished = hints.is_finished
        next_use = _oracle_next_use(task, node, now_s) if cluster.oracle_next_use else hints.next_use_at_s
        return CacheEntryView(
            entry_id=node.entry_id,
            num_tokens=node.num_tokens,
            depth_tokens=node.depth_tokens,
            last_access_s=node.last_access_s,
            workflow_id=task.wid,
            is_finished=finished,
            is_terminal=finished,
            reuse_prob=hints.reuse_prob,
            next_use_at_s=next_use,
            ttl_deadline_s=hints.ttl_deadline_s,
            predicted_at_s=None if cluster.oracle_next_use else hints.predicted_at_s,
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
