"""What a host may plug into the scheduler: pull-style sources of worker state and prefix matches.

Both are optional and pure lookups (no decisions). A router implements ``PrefixLookup`` over its
KV-event index; the simulator over its radix caches. Without them the scheduler uses the last
``WorkerLoads`` snapshot and its own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId


class WorkerSource(Protocol):
    """Fresh views of every known worker (called at most once per ``handle``/``epoch``)."""

    def __call__(self) -> Sequence[WorkerView]: ...


class PrefixLookup(Protocol):
    """Per-worker prefix-cache knowledge about a call the host holds (by its ``call_id``)."""

    def prefix_match_tokens(self, call_id: str) -> Mapping[WorkerId, int]:
        """Tokens of the call's prompt already cached on each worker (missing = 0)."""
        ...

    def holds_workflow_kv(self, call_id: str, workflow_id: WorkflowId, worker_id: WorkerId) -> bool:
        """cached(w*, s) of Eq. 7: ``worker_id`` still holds KV of this workflow that the call reuses."""
        ...
