"""Which forwarded calls run at each worker, inferred from the ``/v1/loads`` counts.

SGLang 0.5.23 reports how many requests run and wait on a worker, never which. The router knows the
order in which it forwarded its calls there, and a worker on SGLang's default schedule
(``--schedule-policy fcfs``) moves them from its waiting queue into the running batch in that order.
So, after each load sample, the oldest forwarded calls are running, as many as
``min(running reported, forwarded - waiting reported)``: the second term leaves the newest calls
waiting, the first keeps a call the worker has not yet queued (the sample lags the forward) from
counting as running. A call once seen running stays so until it ends or is preempted.

What this cannot see: requests from other clients and the router's own pre-fills are counted by the
worker too (they make the inference conservative: fewer calls are taken as running), and a worker
that reorders its queue (priority scheduling, ``lpm``) may run a newer call first. The only use is
preemption, which re-checks at the worker: aborting a call that was in fact still waiting costs
its place in the queue, never its answer (the router re-sends it).
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_sgl.policy.views import WorkerId, WorkflowId


@dataclass(slots=True)
class ForwardedCall:
    call_id: str
    workflow_id: WorkflowId
    preemptible: bool
    """False for a streamed call: its output goes to the client as it is made."""
    running: bool = False


class RunningCalls:
    """Per worker, the router's calls there in forward order, and which of them run."""

    def __init__(self) -> None:
        self._by_worker: dict[WorkerId, dict[str, ForwardedCall]] = {}

    def forwarded(
        self, worker: WorkerId, call_id: str, workflow_id: WorkflowId, *, preemptible: bool
    ) -> None:
        calls = self._by_worker.setdefault(worker, {})
        calls.pop(call_id, None)  # a re-sent call joins at the back, as it does in the worker's queue
        calls[call_id] = ForwardedCall(call_id, workflow_id, preemptible)

    def ended(self, worker: WorkerId, call_id: str) -> None:
        calls = self._by_worker.get(worker)
        if calls is not None:
            calls.pop(call_id, None)

    def forget(self, worker: WorkerId) -> None:
        self._by_worker.pop(worker, None)

    def observe(self, worker: WorkerId, num_running: int, num_waiting: int) -> list[ForwardedCall]:
        """A load sample of ``worker``: the calls newly taken as running, oldest first."""
        calls = self._by_worker.get(worker)
        if not calls:
            return []
        running = min(max(0, num_running), max(0, len(calls) - max(0, num_waiting)))
        out: list[ForwardedCall] = []
        for call in calls.values():
            if running <= 0:
                break
            running -= 1
            if not call.running:
                call.running = True
                out.append(call)
        return out

    def is_running(self, worker: WorkerId, workflow_id: WorkflowId) -> bool:
        """A call of ``workflow_id`` is taken as running on ``worker``."""
        calls = self._by_worker.get(worker, {})
        return any(c.running for c in calls.values() if c.workflow_id == workflow_id)

    def has_call(self, worker: WorkerId, workflow_id: WorkflowId) -> bool:
        calls = self._by_worker.get(worker, {})
        return any(c.workflow_id == workflow_id for c in calls.values())
