"""What the shipped agents share: scale knobs, seeded text of a given length, the tool gap.

With the dummy-weight CPU model the generated text is meaningless, so nothing here parses model
output: how many steps an agent takes, which tool follows each step and how long it runs come from
the workload model (``saga_sgl.sim.workloads``: the paper's tool mixes and Table 1 latencies), drawn
from a seeded generator. What the agents exercise is the *shape* of real agent traffic: a long
shared system prompt, a context that grows by actions and observations, tool gaps, forks.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from saga_sgl.frontend import tool

WORDS = [
    "the",
    "file",
    "test",
    "function",
    "value",
    "error",
    "patch",
    "class",
    "module",
    "import",
    "return",
    "result",
    "list",
    "page",
    "click",
    "button",
    "link",
    "search",
    "query",
    "table",
    "index",
    "cache",
    "token",
    "state",
    "step",
    "action",
    "observe",
    "repo",
    "issue",
    "fix",
    "branch",
    "commit",
    "diff",
    "line",
    "code",
    "run",
    "pass",
    "fail",
    "open",
    "close",
    "form",
    "field",
    "submit",
    "next",
    "plan",
    "idea",
]
CHARS_PER_TOKEN = 3.0
"""About what the tiny model's byte-level BPE packs into one token of this vocabulary (measured
roughly on its training corpus); only used to size synthetic text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentScale:
    """Shrinks the workload model's agents to what a CPU worker with the tiny model can serve."""

    token_scale: float = 0.03
    """Multiplies every token count of the workload model (system prompt 4,096 -> ~120)."""
    time_scale: float = 1.0
    """Multiplies every tool latency (0 = no sleeping; the tool events still carry the drawn value)."""
    max_steps: int = 8
    """Caps the calls per task drawn from the workload model."""
    max_new_tokens: int = 16
    """Caps each generation (the model's output is meaningless; its length is what matters)."""

    def __post_init__(self) -> None:
        if not (
            self.token_scale > 0 and self.time_scale >= 0 and self.max_steps >= 1 and self.max_new_tokens >= 1
        ):
            raise ValueError(f"invalid AgentScale: {self}")

    def tokens(self, n: float) -> int:
        return max(1, round(n * self.token_scale))


def text_of(name: str, num_tokens: int) -> str:
    """Deterministic filler text of about ``num_tokens`` tokens; the same ``name`` gives the same
    text in every agent (shared prefixes are shared)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    chars = 0
    target = num_tokens * CHARS_PER_TOKEN
    while chars < target:
        word = WORDS[int(rng.integers(len(WORDS)))]
        out.append(word)
        chars += len(word) + 1
    return " ".join(out)


def run_tool(name: str, s: Any, latency_s: float, scale: AgentScale) -> None:
    """One tool call of the program: timed and announced by ``saga.tool``, lasting ``latency_s``
    (drawn from the workload model) times ``scale.time_scale``."""
    with tool(name, s):
        if scale.time_scale > 0:
            time.sleep(latency_s * scale.time_scale)
