"""Named, seeded random streams: one independent numpy Generator per (root seed, purpose).

The purpose name is mixed in through sha256 (never Python's salted ``hash()``), so adding a draw to
one stream never shifts another: the workload stays identical when a policy changes how it draws,
which is what keeps common-random-numbers comparisons honest.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def _purpose_words(purpose: str) -> list[int]:
    digest = hashlib.sha256(purpose.encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def stream(seed: int, purpose: str) -> np.random.Generator:
    """numpy Generator for ``purpose`` under root ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *_purpose_words(purpose)]))


def py_stream(seed: int, purpose: str) -> random.Random:
    """``random.Random`` for ``purpose`` under root ``seed`` (for policies that take one)."""
    return random.Random(int(stream(seed, purpose).integers(0, 2**63 - 1)))
