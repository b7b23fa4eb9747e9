"""SGLang eviction strategy adapter: radix node -> ``CacheEntryView`` -> core policy key.

SGLang's eviction loops (``FullComponent._evict_device_start`` in the unified tree,
``RadixCache.evict`` in the legacy tree) heap the evictable leaves by ``get_priority(node)`` and
pop the smallest first. This adapter returns the core policy's ``EvictionKey`` unchanged, so the
order is exactly the policy's: protection tier, the policy's primary quantity, its tie-break, the
node id. The adapter never orders anything itself.

Shared prefixes: the policy core's one rule (``saga_sgl.policy.victim_index.shared_entry_view``,
also used by the simulator): a node used by one workflow gets that workflow's view; a node used by
several workflows, or by a workflow and hint-less traffic, is unpredicted and ordered by last use.
Nodes no hinted request touched get a view without a workflow, which the policies order by last use.

Cost: SGLang rebuilds its heap from *every* evictable leaf on each eviction call, so keys are
memoised per node. By the ``EvictionPolicy`` contract a key changes only when its inputs change,
when a live TTL deadline passes, or when ``protects(pressure)`` flips; the memo is checked against
exactly those: the node's key object (a split replaces it), its mark and the mark's version, the
version of each workflow record it was built from, whether the table forgot any workflow since,
the ``protects`` flag, and the earliest live TTL deadline among its views. A memo hit costs a
handful of attribute reads.

This class does not subclass SGLang's ``EvictionStrategy`` so that importing it never imports
sglang; SGLang only calls ``get_priority``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.victim_index import entry_key, shared_entry_view
from saga_sgl.policy.views import CacheEntryView, WorkflowId
from saga_sgl.worker.evictable import VICTIM_KEY_ATTR, EvictableLeaves
from saga_sgl.worker.hints import MARK_ATTR, NodeMark, WorkflowHint

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy
    from saga_sgl.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)
_logged_backend: set[str] = set()

KEY_ATTR = "_saga_key"
"""Node attribute: the :class:`_Memo` of the last key computed for the node."""
_PROTECTED = int(Tier.PROTECTED)


class _Memo:
    """A node's last key and exactly the inputs that, by the policy contract, can change it."""

    __slots__ = (
        "key",
        "mark",
        "mark_version",
        "protects",
        "radix_key",
        "record",
        "record_version",
        "records",
        "valid_until_s",
    )

    def __init__(
        self,
        *,
        radix_key: Any,
        mark: NodeMark | None,
        records: list[Any],
        protects: bool,
        valid_until_s: float,
        key: EvictionKey,
    ) -> None:
        self.radix_key = radix_key
        self.mark = mark
        self.mark_version = -1 if mark is None else mark.version
        # One workflow per node is the common case: keep it out of a tuple for a cheap check.
        self.record = records[0] if len(records) == 1 else None
        self.record_version = records[0].version if len(records) == 1 else -1
        self.records = tuple((r, r.version) for r in records) if len(records) > 1 else None
        self.protects = protects
        self.valid_until_s = valid_until_s
        self.key = key


class SagaEvictionStrategy:
    """``get_priority(node)`` for SGLang, backed by one core ``EvictionPolicy``."""

    def __init__(self, runtime: WorkerRuntime, policy: EvictionPolicy) -> None:
        self.runtime = runtime
        self.policy = policy
        self._protects_at = math.nan
        self._protects = False
        self.use_leaf_index = True
        """Select victims from a persistent index (O(log n)) instead of SGLang's per-call heap;
        turned off for good if the index ever fails."""
        self.leaf_index: EvictableLeaves | None = None

    def __repr__(self) -> str:
        return f"SagaEvictionStrategy(policy={self.policy.name!r})"

    def get_priority(self, node: Any) -> EvictionKey:
        # Hot path: SGLang's stock walk calls this for every evictable leaf on every eviction call.
        runtime = self.runtime
        now_s = runtime.round_now_s if runtime.in_round else runtime.now_s()
        key = self.key_of(node, now_s, runtime.last_pressure)
        if key[0] == _PROTECTED and runtime.in_round:
            runtime.round_protected_tokens += len(node.key)
        return key

    def key_of(self, node: Any, now_s: float, pressure: float) -> EvictionKey:
        """The policy's key for ``node`` (memoised; the memo check is written out inline)."""
        try:  # zero-cost unless it raises: a bad hint or policy must never take the scheduler down
            if pressure != self._protects_at:
                self._protects = self.policy.protects(pressure)
                self._protects_at = pressure
            attrs = node.__dict__
            memo: _Memo | None = attrs.get(KEY_ATTR)
            if (
                memo is not None
                and memo.radix_key is node.key  # a split gives the node a new, shorter key object
                and memo.protects is self._protects
                and now_s < memo.valid_until_s
                and attrs.get(MARK_ATTR) is memo.mark
                and (memo.mark is None or memo.mark.version == memo.mark_version)
                and (memo.record is None or memo.record.version == memo.record_version)
                and (memo.records is None or all(r.version == v for r, v in memo.records))
            ):
                return memo.key
            return self._compute_key(node, now_s, pressure)
        except Exception as exc:
            self.runtime.hook_failed("eviction_key", exc)
            return self.fallback_key(node)

    def valid_until_s(self, node: Any) -> float:
        """Earliest live TTL deadline behind ``node``'s last key (inf if none)."""
        memo: _Memo | None = node.__dict__.get(KEY_ATTR)
        return math.inf if memo is None else memo.valid_until_s

    # --- persistent leaf index (unified tree) -----------------------------------------------------

    def sync_leaf(self, tree_core: Any, node: Any) -> None:
        """SGLang changed ``node``'s leaf status: mirror it in the leaf index."""
        index = self.leaf_index
        if index is None or index.leaf_set is not tree_core.evictable_device_leaves:
            if not self.use_leaf_index or tree_core.enable_session_radix_cache:
                return
            # First use, or SGLang's reset() replaced the leaf set: build from the current one.
            self.leaf_index = index = EvictableLeaves(self, tree_core.evictable_device_leaves)
            self.runtime.leaf_indices.append(index)
            if not _logged_backend:
                _logged_backend.add(index.victims.backend)
                log.info(
                    "saga: victims of %s come from a persistent leaf index ordered by the %s KeyHeap%s",
                    self.policy.name,
                    index.victims.backend,
                    "" if index.victims.backend == "native" else f" ({_native_absent_reason()})",
                )
            return
        index.sync(node)

    def sync_leaf_at_hook(self, tree_core: Any, node: Any) -> None:
        """``sync_leaf`` from a hook: a failure drops the leaf index (SGLang's own victim walk takes
        over) and is counted; it never reaches SGLang's caller."""
        if not self.use_leaf_index:
            return
        try:
            self.sync_leaf(tree_core, node)
        except Exception as exc:
            if self.leaf_index is not None:
                self.runtime.leaf_index_failed(self.leaf_index, exc)
            else:
                self.runtime.hook_failed("leaf_index", exc)
                self.use_leaf_index = False

    def _compute_key(self, node: Any, now_s: float, pressure: float) -> EvictionKey:
        view = self.entry_view(node)
        key = entry_key(self.policy, view, now_s, pressure)
        deadline = view.ttl_deadline_s
        valid_until_s = deadline if deadline is not None and deadline > now_s else math.inf
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
        table = self.runtime.table
        records = []
        if mark is not None:
            records = [r for r in (table.get(w) for w in mark.workflows) if r is not None]
        node.__dict__[KEY_ATTR] = _Memo(
            radix_key=node.key,
            mark=mark,
            records=records,
            protects=self._protects,
            valid_until_s=valid_until_s,
            key=key,
        )
        return key

    def entry_view(self, node: Any) -> CacheEntryView:
        """The one view the policy scores for ``node`` (shared prefixes: the core's rule)."""
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
        if mark is not None and not mark.unhinted_use and len(mark.workflows) == 1:
            # The common case, one tracked workflow and no other user: its view (what
            # ``user_views`` + ``shared_entry_view`` give), without the lists.
            (workflow_id,) = mark.workflows
            record = self.runtime.table.get(workflow_id)
            if record is not None:
                return _workflow_view(node.id, len(node.key), mark, workflow_id, record)
        return shared_entry_view(self.user_views(node))

    def user_views(self, node: Any) -> list[CacheEntryView]:
        """One view per user of ``node``: each tracked workflow, plus hint-less traffic."""
        runtime = self.runtime
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
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
        records = [(w, runtime.table.get(w)) for w in sorted(mark.workflows)]
        known = [(w, r) for w, r in records if r is not None]
        views = []
        if mark.unhinted_use or not known:
            views.append(
                CacheEntryView(
                    entry_id=node.id,
                    num_tokens=num_tokens,
                    depth_tokens=mark.depth_tokens,
                    last_access_s=mark.last_use_s,
                )
            )
        for workflow_id, record in known:
            views.append(_workflow_view(node.id, num_tokens, mark, workflow_id, record))
        return views

    def fallback_key(self, node: Any) -> EvictionKey:
        """Plain last-use order, used only when building a view or key failed."""
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
        last_use_s = mark.last_use_s if mark is not None else self.runtime.start_s
        return EvictionKey(int(Tier.ORDINARY), last_use_s, 0.0, node.id)

    def views(self, node: Any) -> list[CacheEntryView]:
        """The views the policy scores for ``node`` (one: see ``entry_view``)."""
        return [self.entry_view(node)]


def victim_tier(node: Any) -> int | None:
    """Tier of the key ``node`` was last ranked with (None if it never was)."""
    chosen = node.__dict__.pop(VICTIM_KEY_ATTR, None)
    if chosen is not None:
        return int(chosen[0])
    memo = node.__dict__.get(KEY_ATTR)
    return None if memo is None else int(memo.key[0])


def _native_absent_reason() -> str:
    import saga_kernels

    if saga_kernels.NativeKeyHeap is None:
        return f"native kernels not built: {saga_kernels.NATIVE_IMPORT_ERROR}; run scripts/setup.sh"
    return "SAGA_KERNELS=python"


def _workflow_view(
    entry_id: int, num_tokens: int, mark: NodeMark, workflow_id: str, record: WorkflowHint
) -> CacheEntryView:
    """One tracked workflow's view of a marked node: the hint's state at the node's last use."""
    return CacheEntryView(
        entry_id=entry_id,
        num_tokens=num_tokens,
        depth_tokens=mark.depth_tokens,
        last_access_s=mark.last_use_s,
        workflow_id=WorkflowId(workflow_id),
        is_finished=record.is_finished,
        is_terminal=record.is_terminal,
        reuse_prob=record.reuse_prob,
        next_use_at_s=record.next_use_at_s,
        ttl_deadline_s=record.ttl_deadline_s,
        predicted_at_s=record.predicted_at_s,
    )


def _depth_tokens(node: Any) -> int:
    depth = 0
    while node is not None and node.parent is not None:
        depth += len(node.key)
        node = node.parent
    return depth
