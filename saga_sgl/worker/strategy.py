"""SGLang eviction strategy adapter: radix node -> ``CacheEntryView`` -> core policy key.

SGLang's eviction loops (``FullComponent._evict_device_start`` in the unified tree,
``RadixCache.evict`` in the legacy tree) heap the evictable leaves by ``get_priority(node)`` and
pop the smallest first. This adapter returns the core policy's ``EvictionKey`` unchanged, so the
order is exactly the policy's: protection tier, the policy's primary quantity, its tie-break, the
node id. The adapter never orders anything itself.

Shared prefixes: a node used by several workflows (a system prompt) gets one view per workflow,
plus an unhinted view if hint-less traffic used it too, and keeps the *largest* key, i.e. the most
protective of its users' predictions. Nodes no hinted request touched get a view without a workflow,
which the policies order by last use (LRU).

This class does not subclass SGLang's ``EvictionStrategy`` so that importing it never imports
sglang; SGLang only calls ``get_priority``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.views import CacheEntryView, WorkflowId
from saga_sgl.worker.hints import mark_of, prune_forgotten

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy
    from saga_sgl.worker.runtime import WorkerRuntime


class SagaEvictionStrategy:
    """``get_priority(node)`` for SGLang, backed by one core ``EvictionPolicy``."""

    def __init__(self, runtime: WorkerRuntime, policy: EvictionPolicy) -> None:
        self.runtime = runtime
        self.policy = policy

    def __repr__(self) -> str:
        return f"SagaEvictionStrategy(policy={self.policy.name!r})"

    def get_priority(self, node: Any) -> EvictionKey:
        runtime = self.runtime
        now_s, pressure = runtime.key_context()
        try:
            key = max(self.policy.key(view, now_s, pressure) for view in self.views(node))
        except Exception as exc:  # a bad hint must never take the scheduler down
            runtime.hook_failed("eviction_key", exc)
            key = self.fallback_key(node)
        runtime.record_key(node, key)
        return key

    def views(self, node: Any) -> list[CacheEntryView]:
        """The views the policy scores for ``node`` (one per user of the node)."""
        runtime = self.runtime
        mark = mark_of(node)
        num_tokens = len(node.key)
        if mark is None:
            return [
                CacheEntryView(
                    entry_id=node.id,
                    num_tokens=num_tokens,
                    depth_tokens=_depth_tokens(node),
                    last_access_s=runtime.start_s,
                )
            ]
        prune_forgotten(mark, runtime.table)
        base = {
            "entry_id": node.id,
            "num_tokens": num_tokens,
            "depth_tokens": mark.depth_tokens,
            "last_access_s": mark.last_use_s,
        }
        views = [CacheEntryView(**base)] if mark.unhinted_use or not mark.workflows else []
        for workflow_id in sorted(mark.workflows):
            record = runtime.table.get(workflow_id)
            if record is None:
                continue
            views.append(
                CacheEntryView(
                    **base,
                    workflow_id=WorkflowId(workflow_id),
                    is_finished=record.is_finished,
                    is_terminal=record.is_terminal,
                    reuse_prob=record.reuse_prob,
                    next_use_at_s=record.next_use_at_s,
                    ttl_deadline_s=record.ttl_deadline_s,
                )
            )
        return views

    def fallback_key(self, node: Any) -> EvictionKey:
        """Plain last-use order, used only when building a view or key failed."""
        mark = mark_of(node)
        last_use_s = mark.last_use_s if mark is not None else self.runtime.start_s
        return EvictionKey(int(Tier.ORDINARY), last_use_s, 0.0, node.id)


def _depth_tokens(node: Any) -> int:
    depth = 0
    while node is not None and node.parent is not None:
        depth += len(node.key)
        node = node.parent
    return depth
