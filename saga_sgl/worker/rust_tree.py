"""SGLang's Rust tree core with the saga policy's victims (issue 14, the native fast path).

SGLang's Rust tree core does match and insert in native code but only knows its built-in eviction
orders. This core is the Rust core plus a *mirror* of its tree shape in Python: one small
``MirrorNode`` per radix node (id, parent, children, key, lock anchors), kept in step from what the
core reports (the path of each insert, an unknown node after a match, the evicted leaf). The
mirror emulates exactly the two things of SGLang's Python tree core the plugin builds on:
``evictable_device_leaves`` with its one update point (``_update_evictable_leaf_sets``, here
``_sync``), and ``node_by_id``. So the plugin's marks, keys and leaf index (``evictable.py``) run
unchanged, and the device eviction walk takes its victims from that index and evicts them with
the core's own ``evict_device_leaf``: the exact policy's victims, at the Rust core's match/insert
cost. Node ids are the core's (the same creation order as the Python core, so ties break alike).

Scope: FULL-only trees without host tiers (the caches the plugin's leaf index serves); anything
else keeps the Python tree core (``supported``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.rust_tree_core.adapter import RustUnifiedTreeCore
from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
from sglang.srt.mem_cache.unified_cache.unified_tree_core_interface import (
    EvictDeviceLeafResult,
    EvictDeviceNextNodeResult,
)

from saga_sgl.worker.hooks import RUST_BACKEND as BACKEND_NAME
from saga_sgl.worker.strategy import SagaEvictionStrategy

log = logging.getLogger(__name__)

_FULL = ComponentType.FULL


class MirrorNode:
    """The mirror of one radix node of the Rust core (what the plugin reads of a node).

    Not slotted: the plugin keeps its mark and key memo in ``__dict__`` as on SGLang's nodes."""

    def __init__(self, node_id: int, parent: MirrorNode | None, key: RadixKey | None) -> None:
        self.id = node_id
        self.parent = parent
        self.key = key
        self.children: dict[Any, MirrorNode] = {}
        self.child_key: Any = None
        """This node's key in its parent's ``children``."""
        self.locks = 0
        """Locks and pins anchored here: a leaf is evictable only without any (a lock anchored
        below a node keeps that descendant, so the node is no leaf while it holds)."""

    def __repr__(self) -> str:
        return f"MirrorNode({self.id}, tokens={0 if self.key is None else len(self.key)})"


class SagaRustTreeCore(RustUnifiedTreeCore):  # type: ignore[misc]  # sglang is untyped here
    """SGLang's Rust tree core whose device victims come from the saga leaf index."""

    def __init__(self, params: Any) -> None:
        from sglang.srt.mem_cache.utils import get_eviction_strategy

        strategy = get_eviction_strategy(params.eviction_policy.lower(), params.eviction_policy_config)
        if not isinstance(strategy, SagaEvictionStrategy):
            raise ValueError(f"{BACKEND_NAME} serves saga eviction policies, not {params.eviction_policy!r}")
        # The native core orders nothing we use; any built-in policy keeps it content.
        super().__init__(dataclasses.replace(params, eviction_policy="lru", eviction_policy_config=None))
        self.eviction_strategy = strategy
        strategy.runtime.metrics.set_gauge("tree_core_native", 1.0)
        self.enable_session_radix_cache = False
        self._child_len = max(1, int(params.page_size))
        self._walk_quota: int | None = None
        self._core_walk = False
        """The core's own device walk was started (it builds a heap of every leaf: only when the
        walk must fall back to it)."""
        self._mirror_failed = False
        """The mirror disagreed with the core once: from then on the core's own walk (its LRU)."""
        self._clear_mirror()

    def _clear_mirror(self) -> None:
        self.nodes: dict[int, MirrorNode] = {}
        self.evictable_device_leaves: set[MirrorNode] = set()
        """Evictable device leaves (a new set object after ``reset``, as in the Python core)."""

    # --- the mirror ------------------------------------------------------------------------------

    def node_by_id(self, node_id: Any) -> MirrorNode:
        return self.nodes[node_id]

    def _child_key(self, key: RadixKey, start: int) -> Any:
        return key.child_key_at(start, self._child_len)  # SGLang's own child key (namespaces too)

    def _sync(self, node: MirrorNode) -> None:
        """``_update_evictable_leaf_sets``: the one place leaf membership changes."""
        if node.parent is not None and not node.children and not node.locks and node.id in self.nodes:
            self.evictable_device_leaves.add(node)
        else:
            self.evictable_device_leaves.discard(node)
        index = self.eviction_strategy.leaf_index
        if index is not None and index.leaf_set is self.evictable_device_leaves:
            index.sync(node)  # recorded; applied before the next selection
            return
        self.eviction_strategy.sync_leaf_at_hook(self, node)

    def _learn_path(self, end_node_id: Any, key: RadixKey) -> None:
        """Bring the mirror in step with the core's root-to-``end_node_id`` path of ``key``.

        Only the tail can be new: an insert adds at most a split fragment and a leaf, a match at
        most a split fragment. Known nodes end the walk."""
        path = self._binding.collect_path_info([end_node_id])[0]
        nodes = self.nodes
        first_new = len(path)
        while first_new > 0 and path[first_new - 1][0] not in nodes:
            first_new -= 1
        for node_id, parent_id, start, end, _value_len, _num_children in path[first_new:]:
            parent = nodes.get(parent_id)
            if parent is None:  # the first node under a root: roots join the mirror lazily
                parent = nodes[parent_id] = MirrorNode(parent_id, None, None)
            child_key = self._child_key(key, start)
            node = MirrorNode(node_id, parent, key[start:end])
            nodes[node_id] = node
            old = parent.children.get(child_key)
            parent.children[child_key] = node
            node.child_key = child_key
            if old is not None:  # a split: ``node`` is the upper fragment of ``old``
                old.parent = node
                assert old.key is not None
                old.key = old.key[end - start :]
                old.child_key = self._child_key(old.key, 0)
                node.children[old.child_key] = old
                node.locks = 0
                self._sync(node)
                self._sync(old)
            else:
                self._sync(parent)
                self._sync(node)

    # --- tree API overrides ------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self._clear_mirror()

    def match_prefix(self, params: Any) -> Any:
        result = super().match_prefix(params)
        last = result.last_device_node
        if last not in self.nodes and result.device_prefix_len > 0:
            self._learn_path(last, params.key)  # the match split a node
        return result

    def begin_insert(self, params: Any) -> Any:
        self._insert_key = params.key
        return self._after_insert_step(super().begin_insert(params))

    def resume_insert(self) -> Any:
        return self._after_insert_step(super().resume_insert())

    def _after_insert_step(self, step: Any) -> Any:
        result = step.result
        # Anything an insert adds (a leaf, a split fragment) ends its path: a new last node.
        last = None if result is None else result.last_device_node
        if last is not None and last not in self.nodes:
            self._learn_path(last, self._insert_key)
        return step

    def inc_lock_ref(self, node_id: Any, skip_lock_components: Sequence[ComponentType] = ()) -> Any:
        result = super().inc_lock_ref(node_id, skip_lock_components)
        self._lock(node_id, 1)
        return result

    def dec_lock_ref(self, node_id: Any, params: Any, skip_swa: bool = False) -> Any:
        result = super().dec_lock_ref(node_id, params, skip_swa)
        self._lock(node_id, -1)
        return result

    def inc_full_pin(self, node_id: Any) -> None:
        super().inc_full_pin(node_id)
        self._lock(node_id, 1)

    def dec_full_pin(self, node_id: Any) -> None:
        super().dec_full_pin(node_id)
        self._lock(node_id, -1)

    def _lock(self, node_id: Any, delta: int) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.parent is None:
            return  # a root (or a node the mirror never saw: none can be a victim before it does)
        node.locks += delta
        if node.locks in (0, 1) and not node.children:
            self._sync(node)

    # --- device eviction: victims from the saga leaf index -----------------------------------------

    def _index(self) -> Any:
        index = self.eviction_strategy.leaf_index
        if index is None or index.leaf_set is not self.evictable_device_leaves:
            return None
        return index

    def evict_device_start(self, component_type: ComponentType, request_cnt: int) -> None:
        if component_type == _FULL and not self._mirror_failed:
            # Our victims come from the leaf index: the core's walk (an O(leaves) heap build in
            # Rust, most of its eviction cost) starts only if this walk has to fall back to it.
            self._walk_quota = request_cnt
            index = self._index()
            if index is not None:
                index.popped = []
            return
        self._core_walk = True
        super().evict_device_start(component_type, request_cnt)

    def _core_next_node(self, component_type: ComponentType, tracker: dict[ComponentType, int]) -> Any:
        """The core's own walk (its LRU), started on first use."""
        if not self._core_walk:
            self._core_walk = True
            super().evict_device_start(component_type, self._walk_quota or 0)
        return super().evict_device_next_node(component_type, tracker)

    def evict_device_next_node(self, component_type: ComponentType, tracker: dict[ComponentType, int]) -> Any:
        if component_type != _FULL or self._walk_quota is None or self._mirror_failed:
            return self._core_next_node(component_type, tracker)
        if tracker.get(_FULL, 0) >= self._walk_quota:
            return EvictDeviceNextNodeResult()
        victim = self._pop_victim()
        if victim is None:
            return EvictDeviceNextNodeResult()
        # The core panics (and refuses all later calls) on a node that is not a device leaf: check
        # the mirror's answer with the core before handing it out.
        info = self._binding.collect_path_info([victim.id])[0]
        if not info or info[-1][0] != victim.id or info[-1][5] != 0 or info[-1][4] is None:
            self._mirror_failed = True
            self.eviction_strategy.runtime.hook_failed(
                "saga_rust_mirror", RuntimeError(f"mirror leaf {victim.id} is not a device leaf of the core")
            )
            return self._core_next_node(component_type, tracker)
        return EvictDeviceNextNodeResult(node_id=victim.id, made_progress=True)

    def _pop_victim(self) -> MirrorNode | None:
        strategy = self.eviction_strategy
        index = self._index()
        if index is not None:
            try:
                now_s, pressure = strategy.runtime.key_now()
                node: MirrorNode | None = index.pop(now_s, pressure)
                if node is not None:
                    index.popped.append(node)
                return node
            except Exception as exc:
                strategy.runtime.leaf_index_failed(index, exc)
        # No index (turned off, or failed): the policy's key over every evictable leaf.
        if not self.evictable_device_leaves:
            return None
        return min(self.evictable_device_leaves, key=strategy.get_priority)

    def evict_device_leaf(self, node_id: Any, is_write_back: bool) -> EvictDeviceLeafResult:
        result: EvictDeviceLeafResult = super().evict_device_leaf(node_id, is_write_back)
        node = self.nodes.pop(node_id, None)
        if node is not None and node.parent is not None:
            parent = node.parent
            if parent.children.get(node.child_key) is node:
                del parent.children[node.child_key]
            self._sync(node)
            if not parent.children:
                self._sync(parent)
        return result

    def evict_device_end(self, component_type: ComponentType) -> None:
        if self._core_walk:
            self._core_walk = False
            super().evict_device_end(component_type)
        if component_type == _FULL:
            self._walk_quota = None
            index = self._index()
            if index is not None:
                # A handed-out leaf the walk did not evict is a leaf again.
                for node in index.popped:
                    index.sync(node)
                index.popped = []

    def set_hicache_enabled(self) -> None:
        raise RuntimeError(
            f"the {BACKEND_NAME} tree core has no host tier; saga policies with HiCache use the "
            "Python tree core (this is a bug in the backend selection)"
        )


def supported(params: Any) -> str | None:
    """Why ``params`` needs the Python tree core instead of this one (None: supported)."""
    if params.tree_components is not None and tuple(params.tree_components) != (_FULL,):
        return "components other than FULL"
    if getattr(params, "enable_session_radix_cache", False):
        return "session-aware caching"
    if getattr(params, "is_eagle", False):
        return "EAGLE bigram keys"
    try:  # what SGLang's cache factory reads to attach a host tier after building the cache
        from sglang.srt.runtime_context import get_disagg, get_memory

        memory = get_memory()
        host_tier = bool(memory.enable_hierarchical_cache) or (
            get_disagg().disaggregation_decode_retraction_backup == "host_pool"
        )
        linker = bool(getattr(memory, "enable_unified_cache_external_linker", False))
    except (ImportError, RuntimeError, ValueError, AttributeError):
        host_tier = linker = False  # no runtime context published: an in-process cache, no host tier
    if host_tier:
        return "HiCache (host tier)"
    if linker:
        return "the external cache linker"
    return None
