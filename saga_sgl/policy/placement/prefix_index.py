"""ApproxPrefixIndex: sglang-router's approximate multi-tenant radix tree (one tenant per worker).

The router inserts every routed prompt into the chosen worker's tenancy and never sees the
workers' own evictions; a periodic trim removes each tenant's least recently used leaves until the
tenant holds at most ``max_size`` elements. Elements are ints: token ids, or the code points of the
prompt text for sglang-router's character-level tree.

A compressed radix tree: nodes carry a run of elements and, per tenant, the tick of its last use.
A node's tenants include all its descendants' tenants, so the deepest matched node names the
tenants with the longest match. insert/match O(len(seq)); trim O(nodes log nodes).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from saga_sgl.policy.views import WorkerId


class _Node:
    __slots__ = ("children", "key", "parent", "tenants")

    def __init__(self, key: tuple[int, ...], parent: _Node | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.tenants: dict[WorkerId, int] = {}


def _common(a: tuple[int, ...], seq: Sequence[int], start: int) -> int:
    n = min(len(a), len(seq) - start)
    k = 0
    while k < n and a[k] == seq[start + k]:
        k += 1
    return k


class ApproxPrefixIndex:
    """Which worker has (probably) cached how much of a prompt."""

    def __init__(self) -> None:
        self._root = _Node((), None)
        self._size: dict[WorkerId, int] = {}
        self._tick = 0

    def tenant_size(self, tenant: WorkerId) -> int:
        """Elements held by ``tenant`` (sglang-router's tree size per worker)."""
        return self._size.get(tenant, 0)

    def insert(self, seq: Sequence[int], tenant: WorkerId) -> None:
        """Record that ``tenant`` now holds ``seq``."""
        self._tick += 1
        tick = self._tick
        self._size.setdefault(tenant, 0)
        node, i = self._root, 0
        while i < len(seq):
            child = node.children.get(seq[i])
            if child is None:
                leaf = _Node(tuple(seq[i:]), node)
                leaf.tenants[tenant] = tick
                node.children[seq[i]] = leaf
                self._size[tenant] += len(leaf.key)
                return
            k = _common(child.key, seq, i)
            if k < len(child.key):
                child = self._split(child, k)
            if tenant not in child.tenants:
                self._size[tenant] += len(child.key)
            child.tenants[tenant] = tick
            node, i = child, i + k

    def match(self, seq: Sequence[int]) -> dict[WorkerId, int]:
        """Matched prefix length of ``seq`` per tenant (tenants with no match are absent)."""
        out: dict[WorkerId, int] = {}
        node, i = self._root, 0
        while i < len(seq):
            child = node.children.get(seq[i])
            if child is None:
                break
            k = _common(child.key, seq, i)
            for t in child.tenants:
                out[t] = i + k
            if k < len(child.key):
                break
            node, i = child, i + k
        return out

    def trim(self, max_size: int) -> None:
        """Remove each tenant's least recently used leaves until it holds at most ``max_size``."""
        for tenant in sorted(self._size):
            if self._size[tenant] > max_size:
                self._trim_tenant(tenant, max_size)

    def remove_tenant(self, tenant: WorkerId) -> None:
        """Forget ``tenant`` entirely (the worker left)."""
        self._trim_tenant(tenant, 0)
        self._size.pop(tenant, None)

    # -- internals -------------------------------------------------------------------------------

    def _split(self, child: _Node, k: int) -> _Node:
        parent = child.parent
        assert parent is not None
        mid = _Node(child.key[:k], parent)
        mid.tenants = dict(child.tenants)
        parent.children[mid.key[0]] = mid
        child.key = child.key[k:]
        child.parent = mid
        mid.children[child.key[0]] = child
        return mid

    def _is_tenant_leaf(self, node: _Node, tenant: WorkerId) -> bool:
        return tenant in node.tenants and not any(tenant in c.tenants for c in node.children.values())

    def _trim_tenant(self, tenant: WorkerId, max_size: int) -> None:
        heap: list[tuple[int, int, _Node]] = []
        stack = list(self._root.children.values())
        seq = 0
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if self._is_tenant_leaf(node, tenant):
                heap.append((node.tenants[tenant], seq, node))
                seq += 1
        heapq.heapify(heap)
        while heap and self._size.get(tenant, 0) > max_size:
            _, _, node = heapq.heappop(heap)
            del node.tenants[tenant]
            self._size[tenant] -= len(node.key)
            parent = node.parent
            if not node.tenants and not node.children and parent is not None:
                del parent.children[node.key[0]]
            if parent is not None and parent is not self._root and self._is_tenant_leaf(parent, tenant):
                heapq.heappush(heap, (parent.tenants[tenant], seq, parent))
                seq += 1
