"""What each worker really holds in its KV cache, rebuilt from SGLang's KV events.

SGLang 0.5.23 publishes ``BlockStored`` (hashes of consecutive blocks, the parent's hash, and the
token ids of those blocks), ``BlockRemoved`` (hashes) and ``AllBlocksCleared``. Hashes are opaque
(SGLang's own scheme), so the index keeps the token ids along the hash chain: a trie of blocks,
plus hash -> block for removal. A prompt's cached prefix on a worker is the depth of its walk down
that trie, in whole blocks, which is exactly what the worker's radix cache will match.

Workers that publish no events get the policy core's approximate index instead (what the router
sent there, never what was evicted); :class:`PrefixCatalog` hides which one a worker has. Over an
exact index it lays the prompts routed there since the worker last published
(:mod:`router.routed_overlay`), so the events' lag does not hide what the router just sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_sgl.policy.placement.prefix_index import ApproxPrefixIndex
from saga_sgl.policy.views import WorkerId

from .routed_overlay import RoutedOverlay

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


@dataclass(slots=True)
class LagStats:
    """How often a placement's prefix lookup found the exact index behind the router (the events'
    lag): a lookup is stale when, on some worker, the overlay matched more than the events showed."""

    lookups: int = 0
    stale_lookups: int = 0
    stale_tokens: int = 0
    """Prompt tokens the events did not show yet, summed over stale (lookup, worker) pairs."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Overlay entries handed over to the events, by reason (stored / described / aged)."""


class PrefixCatalog:
    """Cached-prefix lengths of a prompt on every worker, exact where events flow, else approximate."""

    def __init__(self, *, overlay: bool = True, wall_clock: Callable[[], float] = time.time) -> None:
        """``overlay`` False: matches come from the events alone (the overlay is still kept, to
        measure how stale they were)."""
        self._exact: dict[WorkerId, ExactPrefixIndex] = {}
        self._approx = ApproxPrefixIndex()
        self._use_overlay = overlay
        self._overlay: dict[WorkerId, RoutedOverlay] = {}
        self._wall = wall_clock
        self.lag = LagStats()

    def use_exact(self, worker: WorkerId, block_size: int) -> ExactPrefixIndex:
        index = ExactPrefixIndex(block_size)
        self._exact[worker] = index
        self._overlay[worker] = RoutedOverlay()
        self._approx.remove_tenant(worker)
        return index

    def use_approximate(self, worker: WorkerId) -> None:
        self._overlay.pop(worker, None)
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
        self._overlay.pop(worker, None)
        self._approx.remove_tenant(worker)

    def routed(self, worker: WorkerId, tokens: Sequence[int], key: str | None = None) -> None:
        """A prompt was sent to ``worker`` (``key``: that forward, to say when it ended)."""
        if not tokens:
            return
        if worker not in self._exact:
            self._approx.insert(tokens, worker)
            return
        overlay = self._overlay.get(worker)
        if overlay is not None and key is not None:  # kept even when unused: the lag is still measured
            overlay.add(key, tokens, self._wall())

    def ended(self, worker: WorkerId, key: str) -> None:
        """The forward ``key`` to ``worker`` answered or failed."""
        overlay = self._overlay.get(worker)
        if overlay is not None:
            overlay.ended(key, self._wall())

    def published(self, worker: WorkerId) -> None:
        """A KV-event batch of ``worker`` was applied: drop the overlay entries it now describes."""
        index = self._exact.get(worker)
        overlay = self._overlay.get(worker)
        if index is None or not overlay:
            return
        dropped = overlay.reconcile(index.published_at_s, index.match, index.block_size, self._wall())
        for reason, n in dropped.items():
            self.lag.dropped[reason] = self.lag.dropped.get(reason, 0) + n
        if dropped:
            log.debug("worker %s: routed prompts now described by its KV events: %s", worker, dict(dropped))

    def pending(self, worker: WorkerId) -> int:
        """Prompts routed to ``worker`` that its KV events do not describe yet."""
        overlay = self._overlay.get(worker)
        return 0 if overlay is None else len(overlay)

    def match(self, tokens: Sequence[int]) -> dict[WorkerId, int]:
        if not tokens:
            return {}
        matches = {w: n for w, n in self._approx.match(tokens).items() if w not in self._exact}
        stale = 0
        for worker, index in self._exact.items():
            n = index.match(tokens)
            overlay = self._overlay.get(worker)
            if overlay:
                extra = overlay.match(tokens)
                if extra > n:
                    stale += extra - n
                    if self._use_overlay:
                        n = extra
            if n:
                matches[worker] = n
        if self._exact:
            self.lag.lookups += 1
            if stale:
                self.lag.stale_lookups += 1
                self.lag.stale_tokens += stale
        return matches

    def trim(self, max_size: int) -> None:
        self._approx.trim(max_size)
