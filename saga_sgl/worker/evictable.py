"""SGLang's evictable device leaves, kept in the policy core's ``VictimIndex`` (O(log n) victims).

SGLang's ``FullComponent`` rebuilds a heap of *every* evictable device leaf on each eviction call:
O(leaves) key computations per call, whatever the policy. The plugin instead mirrors SGLang's leaf
set (``UnifiedTreeCore._update_evictable_leaf_sets``, the one place that adds to it) into the core
``saga_sgl.policy.victim_index.VictimIndex`` (the same index the simulator uses, with the same key
and key-equality rule), and the eviction walk pops from it.

Recency guard (``policy.eviction.guard``): the index compares the policy's victim with LRU's and
learns from later reads which chose better. A radix node's id does not survive its eviction (a
re-inserted prefix is a new node), so the guard remembers a node by its *content* (``node_content``:
where it starts and the tokens around its start, which a split keeps), and ``note_reads`` reports
each checkpointed request's path.

This module only maps radix nodes to the index's entry ids and views: the view of a node is the
strategy's (``SagaEvictionStrategy.entry_view``, one rule for shared prefixes), so the keys are
exactly those SGLang's stock heap would see through ``get_priority``. A stored view goes stale
when the node's mark or one of its workflows' records changes; the host then calls ``resync`` or
``touch_workflow`` (the workflow -> nodes map makes that O(nodes of the workflow)). Time-driven key
changes (TTL deadlines, pressure) are the index's own business.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.worker.hints import MARK_ATTR, NodeMark

CONTENT_TOKENS = 16
"""Tokens on each side of a node's start that identify its content for the recency guard."""

CONTENT_ATTR = "_saga_content"
"""Node attribute: (key, parent's key, start depth, ``node_content``) of the last read."""

WATCH_ATTR = "_saga_watched"
"""Node attribute: the recency guard has paired this node's content (its reads are evidence)."""

VICTIM_KEY_ATTR = "_saga_victim_key"
"""Node attribute: the key the index chose the node by (``strategy.victim_tier`` counts its tier)."""

if TYPE_CHECKING:
    from saga_sgl.worker.strategy import SagaEvictionStrategy


class EvictableLeaves:
    """The evictable device leaves of one ``UnifiedTreeCore``, ordered by the core index."""

    def __init__(self, strategy: SagaEvictionStrategy, leaf_set: set[Any]) -> None:
        self.strategy = strategy
        self.leaf_set = leaf_set
        """SGLang's ``evictable_device_leaves`` this index mirrors (``reset()`` replaces the set)."""
        self.victims = VictimIndex(strategy.policy, content_of=self._content_of)
        strategy.runtime.metrics.set_gauge("victim_index_native", float(self.victims.backend == "native"))
        self._nodes: dict[int, Any] = {}
        self._workflows_of: dict[int, frozenset[str]] = {}
        self._by_workflow: defaultdict[str, set[int]] = defaultdict(set)
        self._dirty: dict[int, Any] = {}
        """Nodes whose leaf status or view may have changed since the last selection (see ``flush``)."""
        self.popped: list[Any] = []
        """Nodes handed to the current eviction walk (re-synced when it ends)."""
        for node in list(leaf_set):
            self._dirty[node.id] = node

    def __len__(self) -> int:
        self.flush()
        return len(self._nodes)

    def _content_of(self, view: Any) -> Hashable:
        node = self._nodes[view.entry_id]
        # The guard pairs this node's content (as a victim or the spared one): its reads must reach
        # the guard from now on (``on_path``).
        node.__dict__[WATCH_ATTR] = True
        return cached_content(node)

    def note_reads(self, path: list[Any]) -> None:
        """A request read (hit or inserted) the nodes of ``path``: the recency guard's evidence."""
        self.on_path(path, resync=False)

    def on_path(self, path: list[Any], *, resync: bool = True) -> None:
        """A request was checkpointed through ``path`` (leaf first): its nodes' marks changed
        (``resync``) and the recency guard gets the reads.

        The guard only acts on contents it paired (``RecencyGuard.on_use`` is a no-op for any
        other), and a pair's contents come from ``_content_of``, which flags the node. So only
        flagged nodes and nodes whose content is new (a new node, a split) are passed on; the
        others would be no-ops. Same evidence, in the same order."""
        if resync and path:
            # Only the path's end can be a leaf (every other node has the next one as a child), so
            # only it can be indexed; an inner node that becomes a leaf later is synced then.
            self._dirty[path[0].id] = path[0]
        victims = self.victims
        if victims.guard is None:
            return
        if victims.ghost is not None:
            self._ghost_path(path)
            return
        note_use = victims.note_use
        depth = 0
        for node in reversed(path):  # root side first: each node's start depth in one pass
            content, fresh = _read_content(node, depth)
            if fresh or WATCH_ATTR in node.__dict__:
                note_use(content)
            depth += len(node.key)

    def _ghost_path(self, path: list[Any]) -> None:
        """The ghost guard (``policy.eviction.ghost``) takes every node of the path with its tokens,
        root first (an LRU of the pool's size must see every read); the pool's size it learns at
        the index's evictions."""
        depth = 0
        contents: list[Hashable] = []
        tokens: list[int] = []
        for node in reversed(path):
            contents.append(_read_content(node, depth)[0])
            n = len(node.key)
            tokens.append(n)
            depth += n
        self.victims.note_path(contents, tokens)

    def __contains__(self, node_id: object) -> bool:
        self.flush()
        return node_id in self._nodes

    def node_ids(self) -> set[int]:
        """Ids of the indexed leaves (tests compare them with SGLang's leaf set)."""
        self.flush()
        return set(self._nodes)

    @property
    def protected_tokens(self) -> int:
        """Tokens of indexed leaves whose stored key is in the PROTECTED tier."""
        self.flush()
        return self.victims.protected_tokens

    # Changes are recorded, and applied once per node before the next selection (``flush``): a
    # request touches a leaf several times (insert, lock, hint, marks, unlock), and only its state at
    # the selection matters. Exact: the index re-validates every key at selection time, so a key
    # computed at ``flush`` orders like one computed at each change.

    def sync(self, node: Any) -> None:
        """SGLang changed ``node``'s membership in its leaf set (or its view)."""
        self._dirty[node.id] = node

    add = resync = sync

    def touch_workflow(self, workflow_id: str) -> None:
        """Refresh the view of every indexed leaf the workflow uses (its record changed or left)."""
        dirty, nodes = self._dirty, self._nodes
        for node_id in self._by_workflow.get(workflow_id, ()):
            dirty[node_id] = nodes[node_id]

    def flush(self) -> None:
        """Apply the recorded changes: index each changed node that is a leaf now, drop the rest."""
        dirty = self._dirty
        if not dirty:
            return
        leaf_set = self.leaf_set
        while dirty:
            node_id, node = dirty.popitem()
            if node in leaf_set:
                self._index(node)
            elif node_id in self._nodes:
                self.remove(node_id)

    def _index(self, node: Any) -> None:
        """Index ``node`` or refresh its view."""
        now_s, pressure = self.strategy.runtime.key_now()
        self.victims.add(self.strategy.entry_view(node), now_s, pressure)
        self._nodes[node.id] = node
        mark: NodeMark | None = node.__dict__.get(MARK_ATTR)
        workflows = frozenset(mark.workflows) if mark is not None else frozenset()
        old = self._workflows_of.get(node.id)
        if old != workflows:
            if old:
                self._unlink(node.id, old)
            self._workflows_of[node.id] = workflows
            for workflow_id in workflows:
                self._by_workflow[workflow_id].add(node.id)

    def remove(self, node_id: int) -> None:
        self.victims.remove(node_id)
        self._nodes.pop(node_id, None)
        workflows = self._workflows_of.pop(node_id, None)
        if workflows:
            self._unlink(node_id, workflows)

    def _unlink(self, node_id: int, workflows: frozenset[str]) -> None:
        for workflow_id in workflows:
            ids = self._by_workflow.get(workflow_id)
            if ids is not None:
                ids.discard(node_id)
                if not ids:
                    del self._by_workflow[workflow_id]

    def pop(self, now_s: float, pressure: float) -> Any | None:
        """Remove and return the leaf to evict now (None if none)."""
        self.flush()
        while True:
            item = self.victims.pop_keyed(now_s, pressure)
            if item is None:
                return None
            view, key = item
            node = self._nodes.get(view.entry_id)
            self.remove(view.entry_id)
            if node is not None and node in self.leaf_set:  # else SGLang dropped it silently
                node.__dict__[VICTIM_KEY_ATTR] = key
                self.strategy.runtime.metrics.inc("index_victims", backend=self.victims.backend)
                return node


def _read_content(node: Any, depth: int) -> tuple[Hashable, bool]:
    """The content of ``node`` read at start ``depth`` (memoised on the node) and whether it is new:
    a split gives the node (or its parent) a new key object, so its content is new then."""
    attrs = node.__dict__
    key = node.key
    memo = attrs.get(CONTENT_ATTR)
    parent = node.parent
    parent_key = None if parent is None else parent.key
    if memo is None or memo[0] is not key or memo[1] is not parent_key or memo[2] != depth:
        attrs[CONTENT_ATTR] = memo = (key, parent_key, depth, node_content(node, depth))
        return memo[3], True
    return memo[3], False


def cached_content(node: Any) -> Hashable:
    """``node_content(node)``, from the memo of the node's last read (``on_path``) while it holds.

    It holds while neither the node nor its parent was split (a split gives them new key objects):
    a node's start depth never changes otherwise (evictions only remove leaves), so no walk to the
    root is needed."""
    memo = node.__dict__.get(CONTENT_ATTR)
    parent = node.parent
    if memo is not None and memo[0] is node.key and memo[1] is (None if parent is None else parent.key):
        return memo[3]  # type: ignore[no-any-return]
    return node_content(node)


def node_content(node: Any, start_depth: int | None = None) -> Hashable:
    """What a radix node holds, as an identity that outlives the node: (start depth, the last
    ``CONTENT_TOKENS`` tokens before it, its first ``CONTENT_TOKENS`` tokens, its namespace). A split
    keeps it for the upper half; a re-inserted evicted prefix gets it back. ``start_depth``: the
    tokens above the node when the caller knows them (else counted up to the root)."""
    key = node.key
    parent = node.parent
    before: tuple[int, ...] = ()
    if parent is not None and parent.parent is not None:
        pkey = parent.key
        n = len(pkey)
        before = tuple(pkey.token_ids[max(0, n - CONTENT_TOKENS) : n])
    depth = 0
    if start_depth is not None:
        depth = start_depth
    else:
        up = parent
        while up is not None and up.parent is not None:
            depth += len(up.key)
            up = up.parent
    return (depth, before, tuple(key.token_ids[:CONTENT_TOKENS]), getattr(key, "extra_key", None))
