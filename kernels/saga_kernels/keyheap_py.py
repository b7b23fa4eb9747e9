"""Pure-Python ``KeyHeap``: the fallback twin of the native ``_keyheap.KeyHeap``.

Same semantics, same decisions: an index of keys (tier, primary, tiebreak, entry_id), one per entry
id, ordered lexicographically after the same conversions the native code applies (tier and id to
int, primary and tiebreak to float; NaN refused). ``heapq`` with lazy deletion: a heap item is live
while it equals the entry's current key; stale items are skipped and compacted away.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Sequence

Key = tuple[int, float, float, int]

_MIN_ID = -(2**63)
_MAX_ID = 2**63 - 1

COMPACT_SLACK = 64
"""Stale heap items tolerated beyond the live ones before a compaction (memory bound only)."""


def as_key(key: Sequence[object]) -> Key:
    """``key`` converted as the native heap converts it (TypeError/ValueError on bad input)."""
    if not isinstance(key, tuple) or len(key) != 4:
        raise TypeError("KeyHeap key must be a 4-tuple (tier, primary, tiebreak, entry_id)")
    tier, primary, tiebreak, entry_id = key
    out = (_as_int(tier), _as_float(primary), _as_float(tiebreak), _as_int(entry_id))
    if math.isnan(out[1]) or math.isnan(out[2]):
        raise ValueError("KeyHeap key has NaN in primary or tiebreak (clean the key first)")
    return out


def _as_int(value: object) -> int:
    out = operator.index(value)  # type: ignore[arg-type]  # TypeError like the native code
    if not -(2**63) <= out < 2**63:
        raise OverflowError("Python int too large to convert to C long long")
    return out


def _as_float(value: object) -> float:
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]  # TypeError like the native code


class KeyHeap:
    """Indexed min-heap of (tier, primary, tiebreak, entry_id) keys (pure Python)."""

    __slots__ = ("_heap", "_keys")

    def __init__(self) -> None:
        self._keys: dict[int, Key] = {}
        self._heap: list[Key] = []

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, int) and entry_id in self._keys

    def push(self, key: Sequence[object]) -> None:
        """Index ``key[3]`` with ``key`` (replaces its old key)."""
        # Fast path for the common, already well-typed key (a policy's EvictionKey); as_key otherwise.
        if isinstance(key, tuple) and len(key) == 4:
            tier, primary, tiebreak, entry_id = key
            if (
                type(primary) is float
                and type(tiebreak) is float
                and type(entry_id) is int
                and primary == primary
                and tiebreak == tiebreak
                and _MIN_ID <= entry_id <= _MAX_ID
            ):
                k: Key = (operator.index(tier), primary, tiebreak, entry_id)  # type: ignore[arg-type]
                if not _MIN_ID <= k[0] <= _MAX_ID:
                    k = as_key(key)
            else:
                k = as_key(key)
        else:
            k = as_key(key)
        self._keys[k[3]] = k
        heapq.heappush(self._heap, k)
        if len(self._heap) > 2 * len(self._keys) + COMPACT_SLACK:
            self._heap = list(self._keys.values())
            heapq.heapify(self._heap)

    def remove(self, entry_id: int) -> bool:
        """Drop ``entry_id`` if indexed."""
        return self._keys.pop(_as_int(entry_id), None) is not None

    def _settle(self) -> Key | None:
        heap, keys = self._heap, self._keys
        while heap:
            k = heap[0]
            if keys.get(k[3]) == k:
                return k
            heapq.heappop(heap)
        return None

    def top(self) -> int | None:
        """Entry id of the smallest key, or None."""
        k = self._settle()
        return None if k is None else k[3]

    def pop(self) -> int | None:
        """Entry id of the smallest key, removed; or None."""
        k = self._settle()
        if k is None:
            return None
        heapq.heappop(self._heap)
        del self._keys[k[3]]
        return k[3]

    def min_key(self) -> Key | None:
        """The smallest key as stored, or None."""
        return self._settle()

    def key_of(self, entry_id: int) -> Key | None:
        """The stored key of ``entry_id``, or None."""
        return self._keys.get(_as_int(entry_id))

    def clear(self) -> None:
        """Drop every entry."""
        self._keys.clear()
        self._heap.clear()
