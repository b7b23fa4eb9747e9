"""Explicit schedules of the live workload's task model, priced by the calibrated CPU cost model.

Each is a schedule any router that holds calls could run (not the simulator's engine, and not run
live): how close to the all-schedulers floor (``saga_sgl.sim.bounds``) a concrete policy gets, so
that the optimum lies between the floor and the best of them. What varies (``Schedule``):

* ``order``, which ready call (or waiting task) goes first:
  ``oldest`` (the task started first: FCFS, what admission's held queue does today);
  ``srpt`` (least true remaining work: each remaining call's lone cost with a perfect cache; an
  oracle, it reads the task's future calls);
  ``predicted`` (what a live router knows: the agent type's mean calls per task learned from the
  tasks finished so far, 4 before any, minus the task's calls so far, times the type's measured
  mean call time; ties: oldest).
* ``slots``: calls a worker runs at once (1, or 2 batched by the iteration model below).
* ``mode``: ``call`` (preemptive at call boundaries: a freed slot takes the best ready call, so
  tasks fill each other's tool gaps and a better task overtakes between calls) or ``task``
  (run to completion: a task owns a slot from its first call to its end, idle in its tool gaps,
  like admission control with one workflow per slot; waiting tasks take freed slots in order).
* ``placement``: ``home`` (each task stays on the worker chosen at its start: fewest tasks, then
  the one holding its shared head) or ``free`` (any worker; a call on a worker without its context
  pre-fills it again).
* ``kv_tokens``: each worker's pool, LRU over whole task contexts and shared heads (a running call's
  context is never evicted; a second call waits while the two would not fit); ``math.inf``: an
  infinite pool (an oracle). ``perfect_cache``: every call finds cached what the floors assume,
  on any worker (the floor's own cache assumption; an oracle).

Iterations are SGLang's on the CPU workers: pre-fill iterations (all calls with new tokens, one
chunk each) take priority over decode iterations (all decoding calls), never mixed; an iteration
costs the cost model's ``prefill_iteration_s`` or ``c(n) + a * sum KV``. A call of ``p`` prompt
tokens with ``h`` of them cached pre-fills ``max(p - h, 1)``. Time is the tasks' own: completions,
tool returns and the closed loop's next task (task ``i >= N`` starts at the ``(i-N+1)``-th completion).
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from saga_sgl.sim.bounds import CacheablePrefixes
from saga_sgl.sim.cost_model import ProfileCostModel
from saga_sgl.sim.workloads.model import TaskSpec

Order = Literal["oldest", "srpt", "predicted"]
Mode = Literal["call", "task"]
Placement = Literal["home", "free"]

DEFAULT_CALLS = 4.0
"""Expected calls per task before any task of its type finished (the footprint model's default)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    order: Order = "oldest"
    slots: int = 1
    mode: Mode = "call"
    placement: Placement = "home"
    infinite_pool: bool = False
    perfect_cache: bool = False
    """Every call finds cached all that the floors assume (``CacheablePrefixes``), on any worker:
    the floor's own cache assumption, an oracle (implies an infinite pool)."""

    @property
    def label(self) -> str:
        pool = ", perfect cache" if self.perfect_cache else ", infinite pool" if self.infinite_pool else ""
        mode = "preemptive at calls" if self.mode == "call" else "run to completion"
        return f"{self.order}, {self.slots}/worker, {mode}, {self.placement}{pool}"

    @property
    def live_knowable(self) -> bool:
        return self.order != "srpt" and not self.infinite_pool and not self.perfect_cache


@dataclass(slots=True)
class _Running:
    task: int
    new_tokens: int  # still to pre-fill (0: decoding)
    cached: int
    decode_left: int
    kv: int


@dataclass(slots=True)
class _Worker:
    running: list[_Running] = field(default_factory=list)
    busy: bool = False
    owners: list[int] = field(default_factory=list)  # mode "task": tasks owning a slot
    cache: dict[Any, int] = field(default_factory=dict)  # LRU: entry -> tokens, most recent last


def schedule_tcts(
    tasks: Sequence[TaskSpec],
    cost: ProfileCostModel,
    *,
    agents: int,
    workers: int,
    kv_tokens: float,
    schedule: Schedule,
    overhead_s: float = 0.0,
) -> dict[str, float]:
    """Each task's completion time under ``schedule`` (module doc), plus ``overhead_s`` (the last
    call's request overhead, as the benchmark adds it to simulated TCTs)."""
    if schedule.slots < 1 or agents < 1 or workers < 1:
        raise ValueError("schedule_tcts needs slots, agents and workers >= 1")
    cap = math.inf if schedule.infinite_pool or schedule.perfect_cache else kv_tokens
    prefixes = CacheablePrefixes(tasks)
    heads = []
    for t in tasks:
        first, segs, n = t.calls[0], [], 0
        shared = prefixes.cacheable_tokens(first)
        for seg in first.prompt:
            if n + seg.num_tokens > shared:
                break
            segs.append(seg.seg_id)
            n += seg.num_tokens
        heads.append((tuple(segs), n))
    lone = [
        [
            cost.prefill_iteration_s([(q, c.prompt_tokens - q)])
            + cost.decode_run_s(1, c.prompt_tokens + 1, c.output_tokens - 1)
            for c in t.calls
            for q in [max(c.prompt_tokens - prefixes.cacheable_tokens(c), 1)]
        ]
        for t in tasks
    ]
    ws = [_Worker() for _ in range(workers)]
    home: dict[int, int] = {}
    start: dict[int, float] = {}
    step: dict[int, int] = {}  # next call
    ready_at: dict[int, float] = {}  # tasks whose next call waits (not running)
    dispatched: dict[int, float] = {}
    done_calls: dict[str, list[int]] = {}
    call_time: dict[str, list[float]] = {}
    tct: dict[str, float] = {}
    events: list[tuple[float, int, int]] = []  # (time, seq, worker) iteration ends
    seq = 0
    nxt = 0

    def predicted_left(i: int) -> float:
        t = tasks[i]
        done = done_calls.get(t.agent_type)
        calls = statistics.fmean(done) if done else DEFAULT_CALLS
        times = call_time.get(t.agent_type)
        per = statistics.fmean(times) if times else 1.0
        return max(calls - step[i], 1.0) * per

    def key(i: int) -> tuple[float, float, int]:
        if schedule.order == "srpt":
            return (sum(lone[i][step[i] :]), start[i], i)
        if schedule.order == "predicted":
            return (predicted_left(i), start[i], i)
        return (start[i], 0.0, i)

    def begin(i: int, now: float) -> None:
        start[i], step[i], ready_at[i] = now, 0, now
        if schedule.placement == "home" and schedule.mode == "call":
            counts = [sum(1 for j, w in home.items() if w == v and j not in tct_done) for v in range(workers)]
            home[i] = min(range(workers), key=lambda v: (counts[v], heads[i][0] not in ws[v].cache, v))

    tct_done: set[int] = set()

    def context(i: int, p: int, k: int) -> tuple[tuple[Any, int], tuple[Any, int]]:
        hk, hn = heads[i]
        return (hk, hn), (("task", i), p + k - hn)

    def running_kv(w: _Worker) -> int:
        return sum(r.kv + r.decode_left for r in w.running)

    def dispatch(v: int, i: int, now: float) -> bool:
        w = ws[v]
        call = tasks[i].calls[step[i]]
        p, k = call.prompt_tokens, call.output_tokens
        if w.running and running_kv(w) + p + k > cap:
            return False  # the two would not fit: wait for the running call
        (hk, hn), (own, own_n) = context(i, p, k)
        hit = hn if hk in w.cache else 0
        if own in w.cache:
            hit = max(hit, hn + w.cache[own])
        if schedule.perfect_cache:
            hit = prefixes.cacheable_tokens(call)
        q = max(p - min(hit, p), 1)
        for entry, n in ((hk, hn), (own, own_n)):
            w.cache.pop(entry, None)
            w.cache[entry] = n
        keep = {hk, own} | {e for r in w.running for e in (heads[r.task][0], ("task", r.task))}
        while sum(w.cache.values()) > cap:
            victim = next((e for e in w.cache if e not in keep), None)
            if victim is None:
                break
            del w.cache[victim]
        w.running.append(_Running(i, q, p - q, k - 1, p))
        del ready_at[i]
        dispatched[i] = now
        return True

    def eligible(v: int, now: float) -> list[int]:
        cands = [i for i, r in ready_at.items() if r <= now]
        if schedule.mode == "task":
            return [i for i in cands if i in ws[v].owners]
        if schedule.placement == "home":
            return [i for i in cands if home[i] == v]
        return cands

    def fill(v: int, now: float) -> None:
        w = ws[v]
        if w.busy:
            return
        if schedule.mode == "task":
            waiting = sorted((i for i in ready_at if all(i not in x.owners for x in ws)), key=key)
            while len(w.owners) < schedule.slots and waiting:
                w.owners.append(waiting.pop(0))
        while len(w.running) < schedule.slots:
            cands = [i for i in eligible(v, now) if all(r.task != i for r in w.running)]
            if not cands or not dispatch(v, min(cands, key=key), now):
                break
        if not w.running:
            return
        pre = [r for r in w.running if r.new_tokens > 0]
        if pre:
            dur = cost.prefill_iteration_s([(r.new_tokens, r.cached) for r in pre])
            for r in pre:  # it emits the first output token; decoding the next attends to p + 1
                r.kv, r.new_tokens = r.cached + r.new_tokens + 1, 0
        else:
            dur = cost.iteration_constant_s(len(w.running)) + cost.decode_attn_s_per_kv_token * sum(
                r.kv for r in w.running
            )
            for r in w.running:
                r.kv += 1
                r.decode_left -= 1
        nonlocal seq
        seq += 1
        w.busy = True
        heapq.heappush(events, (now + dur, seq, v))

    while nxt < min(agents, len(tasks)):
        begin(nxt, 0.0)
        nxt += 1
    now = 0.0
    for v in range(workers):
        fill(v, now)
    while events or ready_at:
        t_iter = events[0][0] if events else math.inf
        t_ready = min((r for r in ready_at.values() if r > now), default=math.inf)
        if t_ready < t_iter:
            now = t_ready
            for v in range(workers):
                fill(v, now)
            continue
        if not events:
            raise RuntimeError(f"{schedule.label}: calls ready but no worker can take them")
        now, _, v = heapq.heappop(events)
        w = ws[v]
        w.busy = False
        for r in [r for r in w.running if r.new_tokens == 0 and r.decode_left <= 0]:
            i = r.task
            w.running.remove(r)
            t = tasks[i]
            call = t.calls[step[i]]
            call_time.setdefault(t.agent_type, []).append(now - dispatched[i])
            step[i] += 1
            if step[i] < len(t.calls):
                ready_at[i] = now + call.tool_latency_s
                continue
            tct[t.task_id] = now - start[i] + overhead_s
            tct_done.add(i)
            done_calls.setdefault(t.agent_type, []).append(len(t.calls))
            w.cache.pop(("task", i), None)
            for x in ws:
                if i in x.owners:
                    x.owners.remove(i)
            if nxt < len(tasks):
                begin(nxt, now)
                nxt += 1
        for u in [v, *(x for x in range(workers) if x != v)]:
            fill(u, now)
    if len(tct) != len(tasks):
        raise RuntimeError(f"{schedule.label}: {len(tct)} of {len(tasks)} tasks finished")
    return tct


def all_schedules() -> list[Schedule]:
    """The grid the tightness study prices (``benchmarks/schedule_tightness.py``)."""
    return [
        Schedule(order, slots, mode, placement, pool == "infinite", pool == "perfect")
        for pool in ("finite", "infinite", "perfect")
        for mode in ("call", "task")
        for placement in ("home", "free")
        for slots in (1, 2)
        for order in ("oldest", "predicted", "srpt")
        if not (mode == "task" and placement == "free")  # a slot owner stays: placement is its slot
    ]
