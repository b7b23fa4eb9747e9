"""The router's one seam to scheduling decisions.

The router never decides where a call goes, when a workflow is admitted, what is stolen or what a
worker is told. It hands facts to a :class:`SchedulingHost` and carries out what comes back:

* ``dispatch(call)`` -> :class:`Dispatch` (worker, body fields to add, reason); it may wait while
  the scheduler holds the call (admission control, the AFS-ordered dispatch queue);
* ``finished(call, ...)``, ``client_event(...)``, ``worker_up/down(...)``: facts;
* ``epoch(now)``: the periodic work (fairness, stealing, preemption, admission release), whose
  actions reach the router through the :class:`Executor` it was built with (control messages to a
  worker's plugin, pre-fill requests).

Two hosts implement it: :class:`BaselineHost` (a baseline placement policy of the core per call,
nothing else: what sglang-router does) and ``saga_router.saga_host.SagaHost`` (the workflow
scheduler of ``saga_sgl.scheduler``).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from saga_sgl.errors import NoEligibleWorker, UnknownWorkflow
from saga_sgl.policy import registry
from saga_sgl.policy.views import CallView, WorkerId, WorkerView, WorkflowId
from saga_sgl.protocol import ClientEvent, ControlMessage

from .identity import Identity

__all__ = [
    "BaselineHost",
    "Call",
    "Dispatch",
    "Executor",
    "NoEligibleWorker",
    "SchedulingHost",
    "UnknownWorkflow",
]

MAX_KNOWN_WORKFLOWS = 100_000
"""Workflow ids a baseline host remembers (for the unknown-workflow check of /saga/events)."""


@dataclass(slots=True, kw_only=True)
class Call:
    """One inbound LLM call, as the router parsed it."""

    call_id: str
    """Unique id of the call in this router (``<workflow>:<step>`` when the client numbers its steps)."""
    rid: str | None = None
    """The rid the client sent (forwarded unchanged); None: the router sends ``call_id``."""
    identity: Identity
    prompt_ids: Sequence[int]
    """Token ids (or, without a tokenizer, code points of the text) for prefix matching."""
    prompt_tokens: int
    arrived_s: float
    path: str = "/generate"
    tried: set[WorkerId] = field(default_factory=set)
    """Workers this call already failed on (a retry goes elsewhere)."""

    @property
    def workflow_id(self) -> WorkflowId:
        return WorkflowId(self.identity.workflow_id)


@dataclass(frozen=True, slots=True)
class Dispatch:
    worker: WorkerId
    reason: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Added to the forwarded JSON body: kv_hints, priority, routing_key, rid."""


class Executor(Protocol):
    """What the router does on a scheduler's behalf."""

    def worker_views(self) -> list[WorkerView]: ...

    def prefix_matches(self, tokens: Sequence[int]) -> dict[WorkerId, int]: ...

    def send_control(self, worker: WorkerId, message: ControlMessage) -> None: ...

    def prefill(self, worker: WorkerId, workflow_id: WorkflowId, token_ids: Sequence[int]) -> None: ...

    def count(self, what: str, label: str = "", amount: float = 1.0) -> None: ...


class SchedulingHost(Protocol):
    name: str

    async def dispatch(self, call: Call) -> Dispatch: ...

    def finished(self, call: Call, worker: WorkerId, meta: Mapping[str, Any] | None, ok: bool, now_s: float) -> None: ...

    def client_event(self, event: ClientEvent, now_s: float) -> None: ...

    def worker_up(self, worker: WorkerId, now_s: float) -> None: ...

    def worker_down(self, worker: WorkerId, now_s: float) -> None: ...

    def observe_loads(self, workers: Sequence[WorkerView], now_s: float) -> None: ...

    def epoch(self, now_s: float) -> None: ...

    def queue_depth(self) -> int: ...

    def held(self) -> int: ...

    def knows(self, workflow_id: str) -> bool: ...


class BaselineHost:
    """A baseline router: one placement policy of the core per call, no workflow state beyond ids.

    Like sglang-router it adds nothing to the body and ignores client events (they are accepted
    so that the same client runs unchanged, and counted).
    """

    def __init__(
        self,
        policy: str,
        executor: Executor,
        clock: Callable[[], float],
        config: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = policy
        self._placement = registry.create_placement(policy, config, rng=rng or random.Random(0))
        self._executor = executor
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def dispatch(self, call: Call) -> Dispatch:
        views = [w for w in self._executor.worker_views() if w.worker_id not in call.tried]
        view = CallView(
            workflow_id=call.workflow_id,
            prompt_tokens=call.prompt_tokens,
            prefix=tuple(call.prompt_ids),
        )
        placement = self._placement.place(view, views, self._clock())
        self._remember(call.identity.workflow_id)
        return Dispatch(worker=placement.worker_id, reason=str(placement.reason))

    def finished(self, call: Call, worker: WorkerId, meta: Mapping[str, Any] | None, ok: bool, now_s: float) -> None:
        return None

    def client_event(self, event: ClientEvent, now_s: float) -> None:
        self._executor.count("client_events", type(event).__name__)

    def worker_up(self, worker: WorkerId, now_s: float) -> None:
        return None

    def worker_down(self, worker: WorkerId, now_s: float) -> None:
        return None

    def observe_loads(self, workers: Sequence[WorkerView], now_s: float) -> None:
        return None

    def epoch(self, now_s: float) -> None:
        return None

    def queue_depth(self) -> int:
        return 0

    def held(self) -> int:
        return 0

    def knows(self, workflow_id: str) -> bool:
        return workflow_id in self._seen

    def _remember(self, workflow_id: str) -> None:
        self._seen[workflow_id] = None
        self._seen.move_to_end(workflow_id)
        while len(self._seen) > MAX_KNOWN_WORKFLOWS:
            self._seen.popitem(last=False)
