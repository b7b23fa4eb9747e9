"""Prompts the router sent to a worker that the worker's KV events do not show yet.

SGLang 0.5.23 publishes KV events when it schedules a prefill batch, every decode-log interval and
when it goes idle; a prompt's own blocks reach the router only at the publish after its prefill ran.
Until then the exact index under-reports: a workflow's next step, or a sibling agent with the same
system prompt, would see "nothing cached" on the worker the router just sent that prefix to.
sglang-router's cache_aware has no such lag (it inserts each prompt into its tree when it routes it).

The overlay holds, per worker, the prompts routed there since (a token trie with reference counts).
An entry leaves it when the real events take over:

* stored: the exact index now matches the whole prompt (``BlockStored`` arrived);
* described: the call ended before the newest event batch's stamp, so that batch already includes
  whatever became of the prompt (stored, or stored and evicted: ``BlockRemoved``); trusting the
  overlay then would over-promise an evicted prefix;
* aged: routed ``MAX_AGE_S`` ago and still not described (a lost answer, a silent publisher).

Stamps are wall-clock (``time.time()``), the worker's own in its event batches: router and worker
clocks must agree to well under a call's duration (one host, or NTP).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_AGE_S = 120.0
"""An entry no event batch has described after this long is dropped (its answer was lost)."""
MAX_ENTRIES = 512
"""Per worker; the oldest go first (a worker that never publishes must not grow the router)."""


class _Node:
    __slots__ = ("children", "refs")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.refs = 0


@dataclass(slots=True)
class _Entry:
    tokens: tuple[int, ...]
    routed_s: float
    ended_s: float | None = None


class RoutedOverlay:
    """One worker's routed-but-unpublished prompts (see the module docstring)."""

    def __init__(self) -> None:
        self._root = _Node()
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, tokens: Sequence[int], now_s: float) -> None:
        """``key`` (one per forward of a call) was routed here with prompt ``tokens``."""
        if key in self._entries:
            self._drop(key)
        entry = _Entry(tuple(tokens), now_s)
        self._entries[key] = entry
        node = self._root
        for token in entry.tokens:
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node()
            child.refs += 1
            node = child
        while len(self._entries) > MAX_ENTRIES:
            self._drop(next(iter(self._entries)))

    def ended(self, key: str, now_s: float) -> None:
        """The forward ``key`` answered (or failed): its prefill, if any, is in the worker's tree."""
        entry = self._entries.get(key)
        if entry is not None and entry.ended_s is None:
            entry.ended_s = now_s

    def match(self, tokens: Sequence[int]) -> int:
        node = self._root
        n = 0
        for token in tokens:
            child = node.children.get(token)
            if child is None:
                break
            node = child
            n += 1
        return n

    def reconcile(self, published_s: float | None, exact_match: Callable[[Sequence[int]], int],
                  block_size: int, now_s: float) -> Counter[str]:
        """Drop the entries the exact index now describes (see the module docstring); returns how
        many were dropped, by reason (stored / described / aged)."""
        gone: dict[str, str] = {}
        for key, entry in self._entries.items():
            whole = len(entry.tokens) // block_size * block_size
            if exact_match(entry.tokens) >= whole:
                gone[key] = "stored"
            elif published_s is not None and entry.ended_s is not None and entry.ended_s <= published_s:
                gone[key] = "described"
            elif now_s - entry.routed_s > MAX_AGE_S:
                gone[key] = "aged"
        for key in gone:
            self._drop(key)
        return Counter(gone.values())

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        node = self._root
        for token in entry.tokens:
            child = node.children[token]
            child.refs -= 1
            if child.refs == 0:
                del node.children[token]
                return
            node = child
