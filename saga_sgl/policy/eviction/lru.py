"""LRU: SGLang's default radix-cache order (``LRUStrategy``: last access time, oldest first).

Key: (ORDINARY, last_access_s, 0, entry_id). No protection tiers, no workflow knowledge: the
baseline every SAGA policy is compared with. O(1) per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.views import CacheEntryView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import EvictionPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class LruSettings:
    """LRU has no constants; the class exists so every policy loads settings the same way."""


class LruEviction:
    """Evict the least recently used entry first; ties by entry id."""

    name: ClassVar[str] = "lru"

    def __init__(self, settings: LruSettings | None = None) -> None:
        self.settings = settings or LruSettings()

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
        return EvictionKey(Tier.ORDINARY, entry.last_access_s, 0.0, entry.entry_id)

    def protects(self, pressure: float) -> bool:
        return False


if TYPE_CHECKING:
    _check: EvictionPolicy = LruEviction()
