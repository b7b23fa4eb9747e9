"""O(log n) victim selection for SGLang's unified radix tree (Python tree core).

SGLang's ``FullComponent`` rebuilds a heap of *every* evictable device leaf on each eviction call:
O(leaves) key computations per call, whatever the policy. With this index the plugin keeps the
evictable leaves in a persistent heap instead, updated when SGLang changes a node's leaf status
(``UnifiedTreeCore._update_evictable_leaf_sets``, the one place that adds to the leaf set) and when
a workflow's hints change, and the eviction walk pops from it.

Mental model (the same as ``saga_sgl.policy.victim_index.VictimIndex``, over radix nodes whose key
is the strategy's, i.e. the most protective key of the node's users): a min-heap of
(key, version, node id) with lazy deletion. A stored key can only become too low or too high
through:

1. a TTL deadline passing, or ``protects(pressure)`` turning off: a second heap of the protected
   entries' deadlines is drained before each pop and those entries are re-keyed;
2. a change of the node's mark or of one of its workflows' records: the host calls ``resync`` /
   ``touch_workflow``, which re-keys the node;
3. anything else (a key that went *up*): caught at pop, where the key is recomputed (a memo hit,
   see ``strategy.py``) and the entry pushed back if it differs.

Entries whose node left SGLang's leaf set are skipped when popped. Costs: O(log n) per update and
per victim, plus O(k log n) for k expired TTLs.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.worker.hints import MARK_ATTR, NodeMark

if TYPE_CHECKING:
    from saga_sgl.worker.strategy import SagaEvictionStrategy

_PROTECTED = int(Tier.PROTECTED)
COMPACT_SLACK = 64
"""Stale heap items tolerated beyond twice the live entries before a compaction (memory only)."""


class LeafIndex:
    """The evictable device leaves of one ``UnifiedTreeCore``, ordered by the strategy's keys."""

    def __init__(self, strategy: SagaEvictionStrategy, leaf_set: set[Any]) -> None:
        self.strategy = strategy
        self.leaf_set = leaf_set
        """SGLang's ``evictable_device_leaves`` this index mirrors (``reset()`` replaces the set)."""
        self._entries: dict[int, tuple[Any, EvictionKey, int]] = {}
        self._heap: list[tuple[EvictionKey, int, int]] = []
        self._deadlines: list[tuple[float, int, int]] = []
        self._workflows_of: dict[int, frozenset[str]] = {}
        self._by_workflow: defaultdict[str, set[int]] = defaultdict(set)
        self._version = 0
        self.protected_tokens = 0
        """Tokens of indexed leaves whose stored key is in the PROTECTED tier."""
        self.popped: list[Any] = []
        """Nodes handed to the current eviction walk (re-synced when it ends)."""
        for node in list(leaf_set):
            self.add(node)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def sync(self, node: Any) -> None:
        """Mirror ``node``'s membership in SGLang's leaf set (and re-key it if it stays)."""
        if node in self.leaf_set:
            self.add(node)
        else:
            self.remove(node.id)

    def add(self, node: Any) -> None:
        """Index ``node`` or re-key it."""
        now_s, pressure = self.strategy.runtime.key_now()
        key = self.strategy.key_of(node, now_s, pressure)
        self._drop(node.id)
        version = self._version
        self._version += 1
        self._entries[node.id] = (node, key, version)
        heapq.heappush(self._heap, (key, version, node.id))
        if key[0] == _PROTECTED:
            self.protected_tokens += len(node.key)
            heapq.heappush(self._deadlines, (self.strategy.valid_until_s(node), version, node.id))
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
        workflows = frozenset(mark.workflows) if mark is not None else frozenset()
        self._workflows_of[node.id] = workflows
        for workflow_id in workflows:
            self._by_workflow[workflow_id].add(node.id)
        if len(self._heap) > 2 * len(self._entries) + COMPACT_SLACK:
            self._compact()

    def remove(self, node_id: int) -> None:
        self._drop(node_id)

    def _drop(self, node_id: int) -> None:
        entry = self._entries.pop(node_id, None)
        if entry is None:
            return
        node, key, _ = entry
        if key[0] == _PROTECTED:
            self.protected_tokens -= len(node.key)
        for workflow_id in self._workflows_of.pop(node_id, ()):
            ids = self._by_workflow.get(workflow_id)
            if ids is not None:
                ids.discard(node_id)
                if not ids:
                    del self._by_workflow[workflow_id]

    def resync(self, node: Any) -> None:
        """Re-key ``node`` if it is indexed (its mark changed)."""
        if node.id in self._entries:
            self.add(node)

    def touch_workflow(self, workflow_id: str) -> None:
        """Re-key every indexed leaf the workflow uses (its record changed)."""
        for node_id in list(self._by_workflow.get(workflow_id, ())):
            self.add(self._entries[node_id][0])

    def rekey_all(self) -> None:
        """Re-key everything (after the hint table forgot workflows; rare)."""
        for node, _, _ in list(self._entries.values()):
            self.add(node)

    def pop(self, now_s: float, pressure: float) -> Any | None:
        """Remove and return the leaf to evict now (None if none)."""
        self._release_protections(now_s, pressure)
        while self._heap:
            key, version, node_id = self._heap[0]
            entry = self._entries.get(node_id)
            if entry is None or entry[2] != version:
                heapq.heappop(self._heap)
                continue
            node = entry[0]
            if node not in self.leaf_set:  # SGLang discarded it without a status update
                heapq.heappop(self._heap)
                self._drop(node_id)
                continue
            fresh = self.strategy.key_of(node, now_s, pressure)
            if fresh != key:
                heapq.heappop(self._heap)
                self.add(node)
                continue
            heapq.heappop(self._heap)
            self._drop(node_id)
            return node
        return None

    def _release_protections(self, now_s: float, pressure: float) -> None:
        if not self.strategy.policy.protects(pressure):
            pending, self._deadlines = self._deadlines, []
            for _, version, node_id in pending:
                self._rekey_if_current(node_id, version)
            return
        while self._deadlines and self._deadlines[0][0] <= now_s:
            _, version, node_id = heapq.heappop(self._deadlines)
            self._rekey_if_current(node_id, version)

    def _rekey_if_current(self, node_id: int, version: int) -> None:
        entry = self._entries.get(node_id)
        if entry is not None and entry[2] == version:
            self.add(entry[0])

    def _compact(self) -> None:
        live = self._entries
        self._heap = [(k, v, i) for (k, v, i) in self._heap if i in live and live[i][2] == v]
        heapq.heapify(self._heap)
        self._deadlines = [(d, v, i) for (d, v, i) in self._deadlines if i in live and live[i][2] == v]
        heapq.heapify(self._deadlines)
