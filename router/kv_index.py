"""What each worker really holds in its KV cache, rebuilt from SGLang's KV events.

SGLang 0.5.23 publishes ``BlockStored`` (hashes of consecutive blocks, the parent's hash, and the
token ids of those blocks), ``BlockRemoved`` (hashes) and ``AllBlocksCleared``. Hashes are opaque
(SGLang's own scheme), so the index keeps the token ids along the hash chain: a trie of blocks,
plus hash -> block for removal. A prompt's cached prefix on a worker is the depth of its walk down
that trie, in whole blocks, which is exactly what the worker's radix cache will match.

Workers that publish no events get the policy core's approximate index instead (what the router
sent there, never what was evicted); :class:`PrefixCatalog` hides which one a worker has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from saga_sgl.policy.placement.prefix_index import ApproxPrefixIndex
from saga_sgl.policy.views import WorkerId

log = logging.getLogger(__name__)


class _Block:
    __slots__ = ("children", "hashes", "key", "parent")

    def __init__(self, key: Any, parent: _Block | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[Any, _Block] = {}
        self.hashes: set[int] = set()


class ExactPrefixIndex:
    """One worker's cache as its KV events describe it (block trie keyed by token ids)."""

    def __init__(self, block_size: int = 1) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self._root = _Block(None, None)
        self._by_hash: dict[int, _Block] = {}
        self.orphan_blocks = 0
        """Stored blocks whose parent was unknown (missed events); they cannot be placed."""
        self.published_at_s: float | None = None
        """Worker wall-clock stamp of the newest event batch applied. SGLang 0.5.23 publishes its
        KV events only when its scheduler goes idle, so a busy worker's index lags its cache."""

    def __len__(self) -> int:
        """Blocks held."""
        return len(self._by_hash)

    def _key(self, tokens: Sequence[int], i: int) -> Any:
        if self.block_size == 1:
            return tokens[i]
        return tuple(tokens[i * self.block_size : (i + 1) * self.block_size])

    def store(self, block_hashes: Sequence[int], parent_hash: int | None, token_ids: Sequence[int]) -> None:
        if parent_hash is None:
            node = self._root
        else:
            found = self._by_hash.get(parent_hash)
            if found is None:
                self.orphan_blocks += len(block_hashes)
                return
            node = found
        if len(token_ids) < len(block_hashes) * self.block_size:
            raise ValueError(
                f"BlockStored has {len(token_ids)} token ids for {len(block_hashes)} blocks of "
                f"{self.block_size}"
            )
        for i, block_hash in enumerate(block_hashes):
            key = self._key(token_ids, i)
            child = node.children.get(key)
            if child is None:
                child = _Block(key, node)
                node.children[key] = child
            child.hashes.add(block_hash)
            self._by_hash[block_hash] = child
            node = child

    def remove(self, block_hashes: Iterable[int]) -> None:
        for block_hash in block_hashes:
            block = self._by_hash.pop(block_hash, None)
            if block is None:
                continue
            block.hashes.discard(block_hash)
            if block.hashes:
                continue
            # A removed block takes its descendants with it: they are unreachable by prefix match.
            if block.parent is not None:
                block.parent.children.pop(block.key, None)
            self._drop_subtree(block)

    def _drop_subtree(self, block: _Block) -> None:
        stack = list(block.children.values())
        block.children.clear()
        while stack:
            node = stack.pop()
            for h in node.hashes:
                self._by_hash.pop(h, None)
            stack.extend(node.children.values())
            node.children.clear()

    def clear(self) -> None:
        self._root = _Block(None, None)
        self._by_hash.clear()

    def match(self, tokens: Sequence[int]) -> int:
        """Tokens of ``tokens`` this worker holds as a cached prefix (whole blocks)."""
        node = self._root
        n_blocks = len(tokens) // self.block_size
        i = 0
        if self.block_size == 1:
            children = node.children
            for token in tokens:
                child = children.get(token)
                if child is None:
                    break
                children = child.children
                i += 1
            return i
        while i < n_blocks:
            child = node.children.get(self._key(tokens, i))
            if child is None:
                break
            node = child
            i += 1
        return i * self.block_size

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply one decoded KV event (a tagged map with ``type``); unknown types are ignored."""
        kind = event.get("type")
        if kind == "BlockStored":
            self.store(event["block_hashes"], event.get("parent_block_hash"), event["token_ids"])
        elif kind == "BlockRemoved":
            self.remove(event["block_hashes"])
        elif kind == "AllBlocksCleared":
            self.clear()


class PrefixCatalog:
    """Cached-prefix lengths of a prompt on every worker, exact where events flow, else approximate."""

    def __init__(self) -> None:
        self._exact: dict[WorkerId, ExactPrefixIndex] = {}
        self._approx = ApproxPrefixIndex()

    def use_exact(self, worker: WorkerId, block_size: int) -> ExactPrefixIndex:
        index = ExactPrefixIndex(block_size)
        self._exact[worker] = index
        self._approx.remove_tenant(worker)
        return index

    def use_approximate(self, worker: WorkerId) -> None:
        if self._exact.pop(worker, None) is not None:
            log.warning("worker %s: exact prefix index dropped, back to the approximate index", worker)

    def is_exact(self, worker: WorkerId) -> bool:
        return worker in self._exact

    def published_at(self, worker: WorkerId) -> float | None:
        """Stamp of the newest KV-event batch applied for ``worker`` (None: none, or no events)."""
        index = self._exact.get(worker)
        return None if index is None else index.published_at_s

    def forget(self, worker: WorkerId) -> None:
        self._exact.pop(worker, None)
        self._approx.remove_tenant(worker)

    def routed(self, worker: WorkerId, tokens: Sequence[int]) -> None:
        """A prompt was sent to ``worker``: the approximate index assumes it is now cached there."""
        if tokens and worker not in self._exact:
            self._approx.insert(tokens, worker)

    def match(self, tokens: Sequence[int]) -> dict[WorkerId, int]:
        if not tokens:
            return {}
        matches = {w: n for w, n in self._approx.match(tokens).items() if w not in self._exact}
        for worker, index in self._exact.items():
            n = index.match(tokens)
            if n:
                matches[worker] = n
        return matches

    def trim(self, max_size: int) -> None:
        self._approx.trim(max_size)
