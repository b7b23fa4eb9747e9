"""The program graph of each workflow, recorded as its SGLang program runs (no I/O, thread-safe).

A workflow is one agent task: one SGLang program, or every program run inside one
``saga.workflow(...)`` block. Every backend call of its programs becomes a node; edges say why a node
follows another:

* ``next``: the following call of the same executor (or the first call of the next program of the
  block, linked from the previous program's last call);
* ``branch``: the fork's parent (its prefill) -> the first call of each branch;
* ``join``: the last call of each branch -> the parent's first call after ``join()``.

Node ids are deterministic for a given program shape: ``<executor path>/<k>``, where the root
executor of the n-th program is ``r<n>`` and branch i of the executor's f-th fork is
``<path>.f<f>.<i>``. The step (issue order, ``request_id``'s step) is not deterministic across
concurrently running branches.

Token counts come from the server's responses (``prompt_tokens``, ``completion_tokens``,
``cached_tokens``), which makes the recorded graph an AEG submission with measured token estimates.
Finished workflows are kept in a bounded store (oldest dropped first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from saga_sgl.protocol import AegSubmission, SubmittedEdge, SubmittedNode

DEFAULT_MAX_FINISHED = 256
"""Finished workflows kept for inspection (``SagaEndpoint.recorded``); older ones are dropped."""
DEFAULT_MAX_NODES = 4096
"""Nodes recorded per workflow (protocol.MAX_GRAPH_NODES); later calls are still tagged, not recorded."""


@dataclass(slots=True)
class NodeRecord:
    """One LLM call of a workflow."""

    node_id: str
    step: int
    call: str
    parents: list[tuple[str, str]]
    """(parent node id, edge kind), in the order the edges were created."""
    shared_prefix_tokens: int | None = None
    """For branch/join edges into this node: the fork prefix in tokens."""
    tool_before: str = ""
    tool_latency_s: float | None = None
    tool_after: str = ""
    """Set by ``saga.tool`` when the program runs a tool right after this call."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    started_at_s: float = 0.0
    finished_at_s: float | None = None
    worker_e2e_s: float | None = None
    """The worker's own latency of the call (SGLang ``meta_info.e2e_latency``: from its HTTP server's
    receipt to the answer); the client's latency minus this is what the router and transit added."""
    worker_queue_s: float | None = None
    """Time the call waited in the worker's scheduler queue (``meta_info.queue_time``; needs
    ``--enable-metrics``)."""
    error: str = ""


@dataclass(slots=True)
class WorkflowRecord:
    """The recorded graph of one workflow. Mutate only through ``Recorder`` (it holds the lock)."""

    workflow_id: str
    agent_type: str = ""
    tenant_id: str = ""
    slo_class: str = ""
    explicit: bool = False
    """True for a ``saga.workflow`` block (ends at block exit), False for a single program."""
    nodes: OrderedDict[str, NodeRecord] = field(default_factory=OrderedDict)
    calls: int = 0
    """Calls issued (also those past the recording limit)."""
    programs: int = 0
    last_node_id: str | None = None
    """Most recently finished node of any executor (links the next program of a block)."""
    revision: int = 0
    started_at_s: float = field(default_factory=time.monotonic)
    finished_at_s: float | None = None
    ok: bool = True
    open_roots: int = 0
    """Root executors whose programs have not ended yet (for single-program workflows)."""

    @property
    def finished(self) -> bool:
        return self.finished_at_s is not None

    def edges(self) -> list[tuple[str, str, str]]:
        """(src, dst, kind) of every recorded edge, in creation order."""
        return [(p, n.node_id, kind) for n in self.nodes.values() for p, kind in n.parents if p in self.nodes]

    def to_submission(self, *, complete: bool) -> AegSubmission:
        """The AEG submission of the graph so far; the last call is terminal when ``complete``."""
        nodes = list(self.nodes.values())
        successors: dict[str, list[NodeRecord]] = {}
        for n in nodes:
            for p, _ in n.parents:
                successors.setdefault(p, []).append(n)
        out_nodes = []
        for n in nodes:
            nxt = [m for m in successors.get(n.node_id, []) if (n.node_id, "next") in m.parents]
            # Tokens the program appended between this call and its successor (observation, user turn).
            obs = (
                max(0, nxt[0].prompt_tokens - n.prompt_tokens - n.output_tokens)
                if nxt and nxt[0].finished_at_s is not None
                else 0
            )
            out_nodes.append(
                SubmittedNode(
                    node_id=n.node_id,
                    call=n.call,
                    tool=n.tool_after,
                    prompt_tokens=n.prompt_tokens,
                    output_tokens=n.output_tokens,
                    cached_tokens=n.cached_tokens,
                    observation_tokens=obs,
                    terminal=complete and n.node_id not in successors,
                )
            )
        edges = [
            SubmittedEdge(
                src=src,
                dst=dst,
                kind=kind,
                shared_prefix_tokens=self.nodes[dst].shared_prefix_tokens
                if kind in ("branch", "join")
                else None,
            )
            for src, dst, kind in self.edges()
        ]
        return AegSubmission(
            workflow_id=self.workflow_id,
            revision=self.revision,
            complete=complete,
            agent_type=self.agent_type,
            tenant_id=self.tenant_id,
            slo_class=self.slo_class,
            nodes=out_nodes,
            edges=edges,
        )


class Recorder:
    """Live and finished workflows, behind one lock; finished ones in a bounded FIFO."""

    def __init__(
        self, *, max_finished: int = DEFAULT_MAX_FINISHED, max_nodes: int = DEFAULT_MAX_NODES
    ) -> None:
        if max_finished < 0 or max_nodes < 1:
            raise ValueError(f"max_finished must be >= 0 and max_nodes >= 1, got {max_finished}, {max_nodes}")
        self.lock = threading.RLock()
        self.max_finished = max_finished
        self.max_nodes = max_nodes
        self._live: dict[str, WorkflowRecord] = {}
        self._finished: OrderedDict[str, WorkflowRecord] = OrderedDict()
        self.dropped_finished = 0
        """Finished workflows dropped by the retention bound."""
        self.dropped_nodes = 0
        """Calls not recorded because their workflow hit ``max_nodes``."""

    def open(
        self,
        workflow_id: str,
        *,
        explicit: bool,
        agent_type: str = "",
        tenant_id: str = "",
        slo_class: str = "",
    ) -> WorkflowRecord:
        """The live record of ``workflow_id`` (created if needed). Reusing the id of a finished
        workflow starts a new record: the old one stays in the finished store until it ages out."""
        with self.lock:
            rec = self._live.get(workflow_id)
            if rec is None:
                rec = WorkflowRecord(
                    workflow_id=workflow_id,
                    agent_type=agent_type,
                    tenant_id=tenant_id,
                    slo_class=slo_class,
                    explicit=explicit,
                )
                self._live[workflow_id] = rec
            return rec

    def add_node(self, rec: WorkflowRecord, node: NodeRecord) -> bool:
        """Record ``node``; False (and counted) when the workflow is at its node limit."""
        with self.lock:
            if len(rec.nodes) >= self.max_nodes:
                self.dropped_nodes += 1
                return False
            rec.nodes[node.node_id] = node
            return True

    def next_step(self, rec: WorkflowRecord) -> int:
        with self.lock:
            step = rec.calls
            rec.calls += 1
            return step

    def finish(self, rec: WorkflowRecord, *, ok: bool) -> bool:
        """Mark ``rec`` finished and move it to the bounded store; False if it already was."""
        with self.lock:
            if rec.finished:
                return False
            rec.finished_at_s = time.monotonic()
            rec.ok = rec.ok and ok
            if self._live.get(rec.workflow_id) is rec:
                del self._live[rec.workflow_id]
            self._finished.pop(rec.workflow_id, None)
            self._finished[rec.workflow_id] = rec
            while len(self._finished) > self.max_finished:
                self._finished.popitem(last=False)
                self.dropped_finished += 1
            return True

    def get(self, workflow_id: str) -> WorkflowRecord | None:
        """The live record, else the finished one, else None."""
        with self.lock:
            return self._live.get(workflow_id) or self._finished.get(workflow_id)

    def live_ids(self) -> list[str]:
        with self.lock:
            return list(self._live)

    def finished_ids(self) -> list[str]:
        with self.lock:
            return list(self._finished)
