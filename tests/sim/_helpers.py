"""Tiny hand-built workloads for scripted simulator scenarios."""

from __future__ import annotations

from saga_sgl.sim.workloads.model import CallSpec, Segment, TaskSpec, Workload


def chain_task(
    task_id: str,
    arrival_s: float,
    head: list[Segment],
    steps: int,
    *,
    first_id: int,
    output_tokens: int = 20,
    obs_tokens: int = 50,
    tool_s: float = 1.0,
    tenant: str = "t",
) -> TaskSpec:
    """A cumulative-context task: prompt k = head + (out_0, obs_0, ..., out_{k-1}, obs_{k-1})."""
    calls = []
    hist: list[Segment] = []
    nid = first_id
    for k in range(steps):
        out_id = nid
        nid += 1
        last = k == steps - 1
        calls.append(
            CallSpec(
                step=k,
                prompt=(*head, *hist),
                output_tokens=output_tokens,
                output_seg_id=out_id,
                tool=None if last else "code",
                tool_latency_s=0.0 if last else tool_s,
            )
        )
        hist += [Segment(out_id, output_tokens), Segment(nid, obs_tokens)]
        nid += 1
    return TaskSpec(
        task_id=task_id,
        tenant=tenant,
        tenant_class=tenant,
        agent_type="test",
        arrival_s=arrival_s,
        calls=tuple(calls),
    )


def workload(*tasks: TaskSpec) -> Workload:
    return Workload(tasks=tuple(sorted(tasks, key=lambda t: (t.arrival_s, t.task_id))), name="scripted")
