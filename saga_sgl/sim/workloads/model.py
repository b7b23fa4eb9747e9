"""The workload data model: tasks (agent workflows) made of chained LLM calls over prompt segments.

A prompt is a sequence of *segments*: runs of tokens with an identity (a system prompt, a repository
context, one action, one observation). Two prompts that start with the same segments share that KV
prefix, which is exactly what a radix cache at segment granularity can reuse. Segment ids are ints
unique within one workload; a shared segment (system prompt) has one id for every task using it.

Plain frozen data, no behaviour beyond derived sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of prompt tokens with an identity."""

    seg_id: int
    num_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSpec:
    """One LLM call of a task."""

    step: int
    """0-based index of the call within its task."""
    prompt: tuple[Segment, ...]
    """Full prompt, as segments, in order."""
    output_tokens: int
    """Tokens the call generates."""
    output_seg_id: int
    """Segment id the generated tokens get when a later prompt includes them."""
    tool: str | None
    """Tool the agent runs after this call (None after the last call)."""
    tool_latency_s: float
    """Wall time of that tool call (0 after the last call)."""

    @property
    def prompt_tokens(self) -> int:
        return sum(s.num_tokens for s in self.prompt)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One agent task (a workflow): its calls are released one after another, each one a tool
    latency after the previous call finished."""

    task_id: str
    tenant: str
    tenant_class: str
    """"heavy" / "medium" / "light" in the multi-tenant mix; the agent type otherwise."""
    agent_type: str
    arrival_s: float
    calls: tuple[CallSpec, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A generated (or loaded) workload. ``closed_loop_agents`` > 0 means the arrival times are
    ignored and that many tasks per tenant run concurrently, each started when one finishes."""

    tasks: tuple[TaskSpec, ...]
    name: str = "workload"
    closed_loop_agents: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_calls(self) -> int:
        return sum(len(t.calls) for t in self.tasks)

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(sorted({t.tenant for t in self.tasks}))


class SegmentIds:
    """Allocates segment ids for one workload (owned by the generator, never a class counter)."""

    __slots__ = ("_named", "_next")

    def __init__(self) -> None:
        self._next = 0
        self._named: dict[str, int] = {}

    def new(self) -> int:
        self._next += 1
        return self._next

    def named(self, name: str) -> int:
        """The id of a shared segment known by name (same name -> same id)."""
        seg = self._named.get(name)
        if seg is None:
            seg = self._named[name] = self.new()
        return seg
