"""The discrete-event engine: a heap of events keyed ``(time_s, kind_rank, seq)``.

Mental model: every event is a small object whose ``fire(now_s)`` mutates the simulated state and
returns its follow-up events; the engine pushes them and pops the next one. Simultaneous events run
in a fixed, documented order (``EventKind``), then in creation order (``seq``, a counter owned by this
engine, never by a class). Nothing here knows about workers or policies.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from enum import IntEnum
from typing import Protocol


class EventKind(IntEnum):
    """Tie order of simultaneous events (smaller runs first).

    Iteration ends go first so that KV freed by a finishing call is visible to everything else at
    that instant; then new tasks and calls arrive; then the router dispatches them; the periodic
    epochs (AFS, stealing) run last so that they see the settled state of the instant.
    """

    WORKER_STEP = 0
    """A worker finished an iteration (or a fast-forwarded decode run) and plans the next one."""
    TASK_ARRIVAL = 1
    """A new task (workflow) arrives."""
    CALL_RELEASE = 2
    """A tool call ended: the task's next LLM call is released."""
    DISPATCH = 3
    """A call reaches a worker's waiting queue (after any router-side delay)."""
    EPOCH = 4
    """Periodic policy epoch (AFS, work stealing)."""


class Event(Protocol):
    kind: EventKind

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        """Apply the event at ``now_s``; return follow-ups as (time_s, event)."""
        ...


class Engine:
    """Runs events in ``(time_s, kind_rank, seq)`` order until the heap is empty or ``until_s``."""

    __slots__ = ("_heap", "_seq", "now_s", "num_events")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Event]] = []
        self._seq = 0
        self.now_s = 0.0
        self.num_events = 0

    def schedule(self, time_s: float, event: Event) -> None:
        if time_s < self.now_s:
            raise ValueError(f"cannot schedule in the past: {time_s} < {self.now_s}")
        self._seq += 1
        heapq.heappush(self._heap, (time_s, int(event.kind), self._seq, event))

    def run(self, until_s: float = float("inf")) -> float:
        """Process events up to ``until_s``; returns the time of the last processed event."""
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            time_s, _, _, event = heapq.heappop(heap)
            self.now_s = time_s
            self.num_events += 1
            for t, follow in event.fire(time_s):
                self.schedule(t, follow)
        return self.now_s

    def __len__(self) -> int:
        return len(self._heap)
