"""The plugin's hint side table: what the router told this worker about each workflow.

Two kinds of state, both owned by the scheduler thread:

* :class:`HintTable`, keyed by workflow id: the latest prediction for the workflow (reuse
  probability, predicted next use, TTL deadline, terminal/finished). Request hints (``kv_hints``)
  and control messages update it in O(1); neither walks the tree.
* :class:`NodeMark`, one per radix node that a checkpointed request passed through, stored as an
  attribute on SGLang's node (both tree node classes take attributes). It names the workflows whose
  requests used the node, whether unhinted traffic used it, the plugin's own last-use time and the
  node's depth. The mark dies with the node, so the table cannot leak entries of evicted nodes.

All times are absolute seconds on the plugin's clock. Relative times from the wire
(``next_use_in_s``, ``ttl_s``) are converted exactly once, at receipt. Nothing here decides an
eviction order: the strategy turns these records into ``CacheEntryView`` objects for the policy.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from saga_sgl.protocol import (
    ControlMessage,
    ReuseHint,
    ToolFinished,
    ToolStarted,
    TtlChanged,
    WorkflowFinished,
)

MARK_ATTR = "_saga_mark"
"""Attribute name of the :class:`NodeMark` on SGLang radix nodes."""


@dataclass(slots=True)
class WorkflowHint:
    """Latest knowledge about one workflow (mutable; scheduler thread only)."""

    workflow_id: str
    reuse_prob: float | None = None
    next_use_at_s: float | None = None
    predicted_at_s: float | None = None
    """When the router's current gap prediction arrived (a ``ToolStarted``, sent at the tool start
    and again as the gap ages): the prediction is conditional on the gap's age then, so the key's
    wait runs from it (``CacheEntryView.predicted_at_s``). None for a request hint or a known return."""
    ttl_deadline_s: float | None = None
    call_ttl_s: float = 0.0
    """TTL of the current call's hint, started when the call ends (= when its tool starts)."""
    is_terminal: bool = False
    is_finished: bool = False
    finished_at_s: float | None = None
    urgency: float = 0.0
    tenant_id: str = ""
    step: int = 0
    tool: str = ""
    updated_at_s: float = 0.0
    version: int = 0
    """Bumped on every change (and when the record is dropped); per-node key memos check it."""
    ttl_expiry_counted: bool = False
    """The current TTL deadline has already been counted as expired."""
    dropped: bool = False
    """The table no longer holds this record (forgotten or past its finish grace)."""


@dataclass(slots=True)
class NodeMark:
    """What the plugin knows about one radix node."""

    workflows: set[str] = field(default_factory=set)
    """Workflows whose requests were checkpointed through this node."""
    unhinted_use: bool = False
    """A request without a ``saga.reuse`` hint used this node: it keeps an LRU candidacy."""
    last_use_s: float = 0.0
    """Plugin-clock time of the last checkpoint of a request whose path holds this node."""
    depth_tokens: int = 0
    """Tokens from the root through the end of this node."""
    version: int = 0
    """Bumped whenever the mark changes; the strategy's per-node key memo checks it."""
    pruned_at: int = 0
    """``HintTable.num_dropped`` when this mark was last pruned (prune only after new drops)."""


TTL_HEAP_SLACK = 64
"""TTL heap items tolerated beyond twice the tracked workflows before stale ones are dropped."""


class HintTable:
    """Workflow id -> :class:`WorkflowHint`, bounded, with TTL-expiry accounting.

    Only a request hint (``kv_hints``) creates a record: a control message for a workflow this
    worker never served is refused (``apply_control`` returns False), so a client that can reach the
    control socket cannot push real workflows out. Records leave the table three ways, each O(1)
    and *lazy* (no re-key of the tree; the caller re-keys only the dropped workflow's nodes, from
    ``take_dropped``): beyond ``max_workflows`` the least recently updated is forgotten; a finished
    workflow is dropped ``finished_grace_s`` after it finished; nothing else. TTLs are capped at
    ``max_ttl_s`` and the TTL heap never holds more than ~2 items per tracked workflow.
    """

    def __init__(
        self, max_workflows: int, *, max_ttl_s: float = 300.0, finished_grace_s: float = 60.0
    ) -> None:
        self.max_workflows = max_workflows
        """Bound on tracked workflows (``WorkerSettings.max_tracked_workflows``)."""
        self.max_ttl_s = max_ttl_s
        """TTLs longer than this are cut to it (``WorkerSettings.max_ttl_s``)."""
        self.finished_grace_s = finished_grace_s
        """A finished workflow's record is dropped this long after it finished."""
        self._by_id: OrderedDict[str, WorkflowHint] = OrderedDict()
        self._ttl_heap: list[tuple[float, str]] = []
        self._finished: deque[tuple[float, str]] = deque()
        self._dropped: list[str] = []
        self.num_forgotten = 0
        """Workflows dropped because the table was full."""
        self.num_expired = 0
        """Finished workflows dropped after their grace period."""
        self.num_ttl_expiries = 0
        """TTL deadlines that passed before being replaced or cleared, each counted once."""

    @property
    def num_dropped(self) -> int:
        """Records that left the table so far (forgotten + expired); marks prune after it moves."""
        return self.num_forgotten + self.num_expired

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, workflow_id: str) -> WorkflowHint | None:
        return self._by_id.get(workflow_id)

    def ttl_heap_size(self) -> int:
        return len(self._ttl_heap)

    def take_dropped(self) -> list[str]:
        """Workflow ids dropped since the last call (the host re-keys their nodes)."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def _drop(self, record: WorkflowHint) -> None:
        del self._by_id[record.workflow_id]
        record.dropped = True
        record.version += 1
        self._dropped.append(record.workflow_id)

    def _touch(self, workflow_id: str, now_s: float) -> WorkflowHint:
        record = self._by_id.get(workflow_id)
        if record is None:
            record = WorkflowHint(workflow_id=workflow_id)
            self._by_id[workflow_id] = record
            while len(self._by_id) > self.max_workflows:
                self._drop(next(iter(self._by_id.values())))
                self.num_forgotten += 1
        else:
            self._by_id.move_to_end(workflow_id)
        record.updated_at_s = now_s
        record.version += 1
        return record

    def _set_ttl(self, record: WorkflowHint, ttl_s: float | None, now_s: float) -> None:
        old = record.ttl_deadline_s
        if old is not None and old <= now_s and not record.ttl_expiry_counted:
            self.num_ttl_expiries += 1  # it expired before anyone drained the heap
        deadline_s = None if ttl_s is None or ttl_s <= 0 else now_s + min(ttl_s, self.max_ttl_s)
        record.ttl_deadline_s = deadline_s
        record.ttl_expiry_counted = False
        if deadline_s is not None:
            heapq.heappush(self._ttl_heap, (deadline_s, record.workflow_id))
            if len(self._ttl_heap) > 2 * len(self._by_id) + TTL_HEAP_SLACK:
                self._compact_ttl_heap()

    def _compact_ttl_heap(self) -> None:
        by_id = self._by_id
        self._ttl_heap = [
            (d, w) for d, w in self._ttl_heap if (r := by_id.get(w)) is not None and r.ttl_deadline_s == d
        ]
        heapq.heapify(self._ttl_heap)

    def apply_hint(self, hint: ReuseHint, received_at_s: float) -> WorkflowHint:
        """Record a request's ``saga.reuse`` hint, received at ``received_at_s`` (plugin clock).

        The hint's TTL protects the KV during the tool gap *after* this call, so it starts when the
        call ends (``start_call_ttl``), not at receipt: a long prefill or decode must not use it up.
        """
        record = self._touch(hint.workflow_id, received_at_s)
        record.reuse_prob = hint.reuse_prob
        record.next_use_at_s = None if hint.next_use_in_s is None else received_at_s + hint.next_use_in_s
        record.predicted_at_s = None
        # A new call means the previous tool returned: the old TTL has done its job.
        self._set_ttl(record, None, received_at_s)
        record.call_ttl_s = hint.ttl_s
        record.is_terminal = hint.terminal
        # A new call of the workflow shows it is alive, whatever was said before.
        record.is_finished = False
        record.finished_at_s = None
        record.urgency = hint.urgency
        record.tenant_id = hint.tenant_id
        record.step = hint.step
        record.tool = hint.tool
        return record

    def start_call_ttl(self, workflow_id: str, now_s: float) -> bool:
        """The workflow's call ended (its tool starts now): start the hint's TTL. False if no TTL."""
        record = self._by_id.get(workflow_id)
        if record is None or record.call_ttl_s <= 0 or record.is_finished:
            return False
        ttl_s, record.call_ttl_s = record.call_ttl_s, 0.0
        record.version += 1
        self._set_ttl(record, ttl_s, now_s)
        return True

    def apply_control(self, message: ControlMessage, now_s: float) -> bool:
        """Apply one router control message; False when it names a workflow this worker does not
        track (never served, forgotten or dropped): no record is created."""
        if message.workflow_id not in self._by_id:
            return False
        record = self._touch(message.workflow_id, now_s)
        match message:
            case ToolStarted(tool=tool, ttl_s=ttl_s, next_use_in_s=next_use_in_s, reuse_prob=reuse_prob):
                record.tool = tool
                record.call_ttl_s = 0.0
                self._set_ttl(record, ttl_s, now_s)
                if next_use_in_s is not None:
                    record.next_use_at_s = now_s + next_use_in_s
                    record.predicted_at_s = now_s
                if reuse_prob is not None:  # the router's ReusePredictor, refreshed as the gap ages
                    record.reuse_prob = reuse_prob
            case ToolFinished():
                # The tool returned: the next call is imminent, and the TTL has done its job
                # (the paper's repository clears the deadline when the tool returns).
                record.next_use_at_s = now_s
                record.predicted_at_s = None
                self._set_ttl(record, None, now_s)
            case WorkflowFinished():
                if not record.is_finished:
                    record.is_finished = True
                    record.finished_at_s = now_s
                    self._finished.append((now_s + self.finished_grace_s, record.workflow_id))
                record.next_use_at_s = record.predicted_at_s = None
                record.call_ttl_s = 0.0
                self._set_ttl(record, None, now_s)
            case TtlChanged(ttl_s=ttl_s):
                self._set_ttl(record, ttl_s, now_s)
        return True

    def expire(self, now_s: float) -> None:
        """Count passed TTL deadlines and drop finished workflows past their grace period."""
        while self._ttl_heap and self._ttl_heap[0][0] <= now_s:
            deadline_s, workflow_id = heapq.heappop(self._ttl_heap)
            record = self._by_id.get(workflow_id)
            if record is not None and record.ttl_deadline_s == deadline_s and not record.ttl_expiry_counted:
                record.ttl_expiry_counted = True
                self.num_ttl_expiries += 1
        # Grace is one constant, so the deque is in expiry order.
        while self._finished and self._finished[0][0] <= now_s:
            _, workflow_id = self._finished.popleft()
            record = self._by_id.get(workflow_id)
            if (
                record is not None
                and record.finished_at_s is not None
                and record.finished_at_s + self.finished_grace_s <= now_s
            ):
                self._drop(record)
                self.num_expired += 1

    pop_expired_ttls = expire

    def snapshot(self, limit: int = 20) -> dict[str, Any]:
        """Bounded debug view (no prompts, no token ids)."""
        items = list(self._by_id.values())[-limit:]
        return {
            "num_workflows": len(self._by_id),
            "num_forgotten": self.num_forgotten,
            "num_expired": self.num_expired,
            "recent": [
                {
                    "workflow_id": r.workflow_id,
                    "reuse_prob": r.reuse_prob,
                    "next_use_at_s": r.next_use_at_s,
                    "ttl_deadline_s": r.ttl_deadline_s,
                    "terminal": r.is_terminal,
                    "finished": r.is_finished,
                }
                for r in items
            ],
        }


def mark_path(
    path_leaf_to_root: list[Any],
    *,
    workflow_id: str | None,
    now_s: float,
    table: HintTable | None = None,
) -> None:
    """Mark every node of a checkpointed request's path (leaf first, root excluded).

    A node without a mark that has marked children is a split fragment (SGLang splits a node when a
    new request diverges inside it); it inherits the union of its children's workflows, since every
    workflow that used a child used its prefix too. With ``table``, workflows
    the table no longer knows are pruned from the marks on the way.
    """
    depth = 0
    dropped = -1 if table is None else table.num_dropped
    for node in reversed(path_leaf_to_root):
        depth += len(node.key)
        mark = node.__dict__.get(MARK_ATTR)
        if mark is None:
            mark = NodeMark()
            for child in node.children.values():
                child_mark = child.__dict__.get(MARK_ATTR)
                if child_mark is not None:
                    mark.workflows |= child_mark.workflows
                    mark.unhinted_use |= child_mark.unhinted_use
            setattr(node, MARK_ATTR, mark)
        mark.depth_tokens = depth
        mark.last_use_s = now_s
        mark.version += 1
        if workflow_id is None:
            mark.unhinted_use = True
        else:
            mark.workflows.add(workflow_id)
        if table is not None and mark.pruned_at != dropped:  # ``prune_forgotten``'s own check, hoisted
            prune_forgotten(mark, table)


def prune_forgotten(mark: NodeMark, table: HintTable) -> None:
    """Drop workflows the table no longer tracks from a node's mark (keeps per-node key cost bounded).

    O(1) unless the table dropped a workflow since this mark was last pruned.
    """
    if mark.pruned_at == table.num_dropped:
        return
    mark.pruned_at = table.num_dropped
    mark.workflows = {w for w in mark.workflows if table.get(w) is not None}
