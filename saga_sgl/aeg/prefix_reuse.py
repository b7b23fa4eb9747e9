"""PrefixReuse: which part of a workflow's last prompt its next call reads again, learned online.

A workflow's next call does not read all of its previous prompt's KV: with block-hashed prefix
caches (Mooncake, vLLM) the last, partial block of a prompt is never matched by a continuation
(the continuation's block at that position holds more tokens, so its hash differs), and agents that
elide old observations drop whole tails. Such KV is dead the moment the workflow goes idle, yet a
per-workflow prediction ("it returns in 2 s") would keep it as if it were live [I].

The router sees what it needs to learn this: the blocks of a workflow's previous call and of its next
call (their longest common prefix is what the next call reads). ``observe(previous, current)``
counts, per class (agent type) and per offset from the tail of the previous prompt (0 = its last
block; buckets 0, 1, 2, 3, 4-7, 8-15, 16+), how often the block at that offset was read by the next
call. ``share(offset)`` is that frequency (with a Beta prior that starts at "read", so without data
every block counts as live, as before), falling back to the population when the class has too few
samples. A block that is no longer on the workflow's current prompt (a branch it left) is not read
by its workflow again: ``on_path`` tells the host. O(length of the prompt) per observation, O(1)
per query. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saga_sgl.policy.settings import require, require_positive


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixReuseSettings:
    """Settings of ``PrefixReuse``."""

    prior_reads: float = 1.0
    """Pseudo-observations "read" behind each offset bucket (the prior says: every block is live) [I]."""
    min_class_samples: int = 20
    """Observations an (agent type, offset) bucket needs before it is used instead of the population [I]."""

    def __post_init__(self) -> None:
        require_positive("PrefixReuseSettings", "prior_reads", self.prior_reads)
        require(
            self.min_class_samples >= 1,
            "PrefixReuseSettings",
            "min_class_samples",
            ">= 1",
            self.min_class_samples,
        )


NUM_BUCKETS = 7


def offset_bucket(offset: int) -> int:
    """0, 1, 2, 3 for offsets 0-3; 4 for 4-7; 5 for 8-15; 6 for 16 and more."""
    if offset < 4:
        return max(offset, 0)
    if offset < 8:
        return 4
    return 5 if offset < 16 else 6


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two block-id sequences."""
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def on_path(blocks: Sequence[int], position: int, block: int) -> bool:
    """Is ``block`` at ``position`` part of the workflow's current prompt ``blocks``?"""
    return 0 <= position < len(blocks) and blocks[position] == block


class PrefixReuse:
    """Per agent type and offset from the prompt's tail: the share of blocks the next call reads."""

    def __init__(self, settings: PrefixReuseSettings | None = None) -> None:
        self.settings = settings or PrefixReuseSettings()
        # class -> per bucket [reads, observations]; "" is the population.
        self._counts: dict[str, list[list[float]]] = {}

    def _hist(self, agent_type: str) -> list[list[float]]:
        hist = self._counts.get(agent_type)
        if hist is None:
            hist = self._counts[agent_type] = [[0.0, 0.0] for _ in range(NUM_BUCKETS)]
        return hist

    def observe(self, previous: Sequence[int], current: Sequence[int], *, agent_type: str = "") -> int:
        """A workflow's call with blocks ``current`` followed its call with blocks ``previous``.

        Returns the number of blocks of ``previous`` that ``current`` reads (their common prefix).
        """
        matched = common_prefix(previous, current)
        n = len(previous)
        for key in {agent_type, ""}:
            hist = self._hist(key)
            for j in range(n):
                cell = hist[offset_bucket(n - 1 - j)]
                cell[0] += j < matched
                cell[1] += 1.0
        return matched

    def share(self, offset: int, *, agent_type: str = "") -> float:
        """P(the next call reads the block at ``offset`` from the tail of the last prompt)."""
        b = offset_bucket(offset)
        prior = self.settings.prior_reads
        cell = self._counts.get(agent_type, [[0.0, 0.0]] * NUM_BUCKETS)[b]
        if cell[1] < self.settings.min_class_samples:
            cell = self._counts.get("", [[0.0, 0.0]] * NUM_BUCKETS)[b]
        return (cell[0] + prior) / (cell[1] + prior)
