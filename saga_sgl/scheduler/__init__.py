"""The host-neutral workflow scheduler: events in, actions out.

Hosts (the router ``saga_router`` and the simulator ``saga_sgl.sim``) feed a ``WorkflowScheduler``
the events they observe and carry out the actions it returns; a host makes no decision of its own.
The scheduler keeps one record per workflow (held, queued, running, in a tool gap, finished; its
binding and steals), feeds the models (tool-latency EMA, AEG from a submitted graph / tool hints /
pattern inference, reuse, next-use and remaining-work predictions, the per-agent-type footprint
EMA, the service ledger), runs the 100 ms epoch (AFS, tool-gap re-keys at log-spaced ages, stealing,
preemption, admission releases) and turns each policy-core decision into actions. No I/O, no
threads, no wall clock: time comes from the injected ``Clock``.

Usage (a router)::

    from saga_sgl.clock import SystemClock
    from saga_sgl.scheduler import (WorkflowScheduler, SchedulerSettings, AdmissionControlSettings,
                                    CallArrived, CallFinished, ToolStarted, WorkerLoads, Dispatch)

    sched = WorkflowScheduler(
        SchedulerSettings(placement="saga", admission=AdmissionControlSettings(enabled=True)),
        clock=SystemClock(),
    )
    sched.handle(WorkerLoads(workers=tuple(views_from_v1_loads)))        # every poll
    for action in sched.handle(CallArrived(call_id=rid, workflow_id=wf, prompt_tokens=n)):
        if isinstance(action, Dispatch):
            forward(rid, action.worker_id, priority=action.priority,
                    kv_hints=encode_kv_hints(action.hint) if action.hint else None)
        ...                                                                # Hold: keep the request
    sched.handle(CallFinished(call_id=rid, workflow_id=wf, worker_id=w,
                              prompt_tokens=p, output_tokens=o, cached_tokens=c))
    every settings.epoch_s:  carry_out(sched.epoch())

Events (``saga_sgl.scheduler.events``): ``WorkflowSubmitted`` (optional), ``CallArrived``,
``CallAdmitted`` (optional, simulator only), ``CallFinished``, ``CallFailed``, ``ToolStarted``,
``ToolFinished``, ``WorkflowFinished``, ``WorkerLoads``, ``WorkerUp``, ``WorkerDown``.

Actions (``saga_sgl.scheduler.actions``; the table there says how each host carries them out):
``Dispatch`` (worker, reason, priority, urgency, kv_hints payload, routing key), ``Hold`` /
``Release`` (admission control), ``Rebind`` + ``Redirect`` / ``Prefill`` (a steal: move a queued
call, or pre-fill the workflow's context on the thief), ``Control`` (a control-channel message for
the worker plugin: tool started with TTL and next use, tool finished, workflow finished) and
``Preempt``.

What the scheduler needs, and where a live router gets it:

* worker loads: ``WorkerLoads`` events (``/v1/loads``) or an injected ``WorkerSource``; in-flight
  counts and idle times are derived from the scheduler's own bookkeeping when a view lacks them;
* RUNNING vs waiting: invisible live. Without ``CallAdmitted`` a dispatched call counts as queued
  until it finishes, and no preemption is planned (it needs to know who runs);
* prefix matches and cached(w*, s): an injected ``PrefixLookup`` (a KV-event index); without one,
  cached(w*, s) is "its last call finished on w*" and new workflows get no locality score;
* a workflow's peak KV: never its exact final size. The client's ``predicted_kv_tokens`` if it
  sends one, else ``FootprintModel`` (EMA of finished workflows' peak context per agent type);
* its AEG: a submitted graph or tool hints, else pattern inference per agent type after 30
  finished workflows (cold start: no AEG, so no reuse/remaining-work predictions; TTL and next
  use still work from the tool the client announces);
* its deadline: admission + ``slo_factor`` x ``expected_completion_s`` of its AEG (infinite while
  it has none).

Queries a host may make (pure reads): ``workflow(id)``, ``workflow_views()``, ``cache_hints(id)``
(the worker-side hint record the simulator's eviction views read), ``order_waiting(pending)`` (a
worker's AFS queue order), ``fair_share``, ``held``, ``needs_epoch``, ``counters``.

Workflow-level admission control (``AdmissionControlSettings``) is our rule, not the paper's (its
"Hybrid" strategy, Table 8, is the closest): a new workflow is admitted only where the predicted
footprint of the live workflows bound to a worker, plus its own, stays within a fraction of the
KV pool (and under an optional agents-per-worker cap); otherwise it is held and released in AFS
order. With ``park_after_steps`` (least attained service, ours) a long-held newcomer also makes an
admitted workflow that is that many steps ahead wait at its next call (``Hold`` reason ``park``),
and held workflows are released fewest steps first. The placement of new workflows is ours too:
by the expected completion time of the call in seconds (``policy.placement.completion_cost``: queueing
behind the worker's outstanding calls plus the pre-fill of the prompt's uncached part, at the rates
the host measured or the cost model's), from service estimates the scheduler keeps per call
(``scheduler.service_time``); the earlier weighted score (``policy.placement.admission``) is an
ablation.
"""

from saga_sgl.scheduler.actions import (
    Action,
    Control,
    Dispatch,
    Hold,
    Preempt,
    Prefill,
    Rebind,
    Redirect,
    Release,
)
from saga_sgl.scheduler.events import (
    CallAdmitted,
    CallArrived,
    CallFailed,
    CallFinished,
    Event,
    ToolFinished,
    ToolStarted,
    WorkerDown,
    WorkerLoads,
    WorkerUp,
    WorkflowFinished,
    WorkflowSubmitted,
)
from saga_sgl.scheduler.footprint import FootprintModel
from saga_sgl.scheduler.ports import PrefixLookup, WorkerSource
from saga_sgl.scheduler.settings import AdmissionControlSettings, SchedulerSettings
from saga_sgl.scheduler.workflow_scheduler import CacheHints, WorkflowRecord, WorkflowScheduler

__all__ = [
    "Action",
    "AdmissionControlSettings",
    "CacheHints",
    "CallAdmitted",
    "CallArrived",
    "CallFailed",
    "CallFinished",
    "Control",
    "Dispatch",
    "Event",
    "FootprintModel",
    "Hold",
    "Preempt",
    "Prefill",
    "PrefixLookup",
    "Rebind",
    "Redirect",
    "Release",
    "SchedulerSettings",
    "ToolFinished",
    "ToolStarted",
    "WorkerDown",
    "WorkerLoads",
    "WorkerSource",
    "WorkerUp",
    "WorkflowFinished",
    "WorkflowRecord",
    "WorkflowScheduler",
    "WorkflowSubmitted",
]
