"""A worker's radix KV cache at segment granularity (the mechanism; the eviction *order* is a policy).

A node is one prompt segment (a system prompt, an action, an observation) under its parent, so a
path from the root is a cached prefix. Running requests lock the path they matched (lock_ref > 0 up
to the root, as SGLang's ``inc_lock_ref``); only unlocked leaves are evictable. The cache reports
every node that becomes or stops being an evictable leaf to a ``LeafListener`` (the host keeps them
in the policy core's ``VictimIndex``, so victim selection is O(log n)); ``evict`` pops victims from
that index until enough tokens are free, and a parent left without children becomes a candidate,
as in SGLang's ``RadixCache.evict``.

Capacity accounting is in tokens rounded up to ``page_size`` per node (SGLang's default page size is
1; vLLM's block is 16). The cache only tracks tree tokens; requests' private tokens are accounted by
the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from saga_sgl.sim.workloads.model import Segment


class Node:
    __slots__ = (
        "children",
        "depth_tokens",
        "entry_id",
        "last_access_s",
        "lock_ref",
        "num_pages_tokens",
        "num_tokens",
        "owner",
        "parent",
        "seg_id",
        "shared",
    )

    def __init__(
        self, seg_id: int, num_tokens: int, parent: Node | None, entry_id: int, page_size: int, now_s: float
    ) -> None:
        self.seg_id = seg_id
        self.num_tokens = num_tokens
        self.num_pages_tokens = -(-num_tokens // page_size) * page_size
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.lock_ref = 0
        self.last_access_s = now_s
        self.entry_id = entry_id
        self.depth_tokens: int = (parent.depth_tokens if parent is not None else 0) + num_tokens
        self.owner: Any = None
        """Host object of the workflow that uses this node (for the policy views)."""
        self.shared = False
        """Used by more than one workflow (a system prompt, a repository context): no single owner."""


class LeafListener(Protocol):
    """Told when a node becomes (``leaf_added``) or stops being (``leaf_removed``) an evictable leaf."""

    def leaf_added(self, node: Node) -> None: ...

    def leaf_removed(self, node: Node) -> None: ...


class _NoListener:
    def leaf_added(self, node: Node) -> None:
        return None

    def leaf_removed(self, node: Node) -> None:
        return None


class RadixCache:
    """Segment-level prefix cache of one worker."""

    __slots__ = ("_next_id", "by_id", "evictable_tokens", "listener", "page_size", "root", "tree_tokens")

    def __init__(self, page_size: int = 1, listener: LeafListener | None = None) -> None:
        if page_size <= 0:
            raise ValueError(f"page_size must be > 0, got {page_size}")
        self.page_size = page_size
        self.root = Node(-1, 0, None, 0, page_size, 0.0)
        self.root.lock_ref = 1  # never evicted
        self._next_id = 0
        self.listener: LeafListener = listener or _NoListener()
        self.by_id: dict[int, Node] = {}
        self.tree_tokens = 0
        """Tokens (page-rounded) held by the tree, locked or not."""
        self.evictable_tokens = 0
        """Tokens (page-rounded) in nodes with lock_ref == 0."""

    def pages(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size) * self.page_size

    def match(self, prompt: Sequence[Segment]) -> tuple[Node, int]:
        """Deepest cached node along ``prompt`` and the matched tokens (whole segments)."""
        node = self.root
        matched = 0
        for seg in prompt:
            child = node.children.get(seg.seg_id)
            if child is None:
                break
            node = child
            matched += seg.num_tokens
        return node, matched

    def lock(self, node: Node, now_s: float, owner: Any) -> None:
        """Lock the path root..node (a request uses it) and stamp its access time."""
        if node is not self.root and node.lock_ref == 0 and not node.children:
            self.listener.leaf_removed(node)
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_tokens -= node.num_pages_tokens
            node.lock_ref += 1
            node.last_access_s = now_s
            if node.owner is not owner:
                node.shared = node.shared or node.owner is not None
                node.owner = owner
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: Node, now_s: float) -> None:
        deepest = node
        while node is not self.root:
            node.lock_ref -= 1
            node.last_access_s = now_s
            if node.lock_ref == 0:
                self.evictable_tokens += node.num_pages_tokens
            node = node.parent  # type: ignore[assignment]
        if deepest is not self.root and deepest.lock_ref == 0 and not deepest.children:
            self.listener.leaf_added(deepest)

    def insert(self, segments: Sequence[Segment], now_s: float, owner: Any) -> tuple[Node, int]:
        """Insert a finished sequence; returns (deepest node, page-rounded tokens newly added).

        Nodes are created unlocked (evictable). Existing nodes on the path are refreshed.
        """
        node = self.root
        added = 0
        listener = self.listener
        for seg in segments:
            child = node.children.get(seg.seg_id)
            if child is None:
                if node is not self.root and not node.children and node.lock_ref == 0:
                    listener.leaf_removed(node)
                self._next_id += 1
                child = Node(seg.seg_id, seg.num_tokens, node, self._next_id, self.page_size, now_s)
                node.children[seg.seg_id] = child
                self.by_id[child.entry_id] = child
                added += child.num_pages_tokens
                self.tree_tokens += child.num_pages_tokens
                self.evictable_tokens += child.num_pages_tokens
            child.last_access_s = now_s
            if child.owner is not owner:
                child.shared = child.shared or child.owner is not None
                child.owner = owner
            node = child
        if node is not self.root and not node.children and node.lock_ref == 0:
            listener.leaf_added(node)  # new leaf, or a refreshed one (the index replaces its view)
        return node, added

    def evictable_leaves(self) -> list[Node]:
        out: list[Node] = []
        stack = list(self.root.children.values())
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif n.lock_ref == 0:
                out.append(n)
        return out

    def evict(
        self, num_tokens: int, pop_victim: Callable[[], int | None], on_evict: Callable[[Node], None]
    ) -> int:
        """Evict victims given by ``pop_victim`` (entry ids of evictable leaves, in the policy's order)
        until ``num_tokens`` are freed or no victim is left. Returns the page-rounded tokens freed."""
        freed = 0
        while freed < num_tokens:
            entry_id = pop_victim()
            if entry_id is None:
                break
            victim = self.by_id.pop(entry_id)
            assert victim.lock_ref == 0 and not victim.children, "index offered a non-evictable node"
            parent = victim.parent
            assert parent is not None
            del parent.children[victim.seg_id]
            freed += victim.num_pages_tokens
            self.tree_tokens -= victim.num_pages_tokens
            self.evictable_tokens -= victim.num_pages_tokens
            on_evict(victim)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                self.listener.leaf_added(parent)
        return freed

    def iter_nodes(self) -> list[Node]:
        out: list[Node] = []
        stack = list(self.root.children.values())
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(n.children.values())
        return out
