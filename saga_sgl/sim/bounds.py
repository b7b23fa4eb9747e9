"""A lower bound on a closed loop's mean task completion time that holds for every scheduler.

An oracle (it reads every task's true calls), labelled as such by the benchmark. Assumptions, all
of the simulator's cost model (``saga_sgl.sim.cost_model.ProfileCostModel``):

1. A decode iteration of ``n`` sequences takes ``c(n) + a * S`` seconds (``c`` =
   ``iteration_constant_s``, ``a`` = ``decode_attn_s_per_kv_token``, ``S`` = the sum of the
   batch's KV lengths) and emits one token per sequence.
2. Every task's calls, output lengths, contexts and tool latencies are the workload's: no scheduler
   changes them. Pre-fill, queueing, holds and recomputation are counted as zero (they only add).
3. Closed loop in steady state: ``N`` agents, each starting its next task when one finishes, on
   ``R`` replicas; Little's law gives ``mean TCT = N / X`` for the task throughput ``X``.

Let a task decode ``d`` tokens in total, with ``A`` = ``a`` x the sum over its decoded tokens of the
token's own context, and ``tool`` seconds of tools. If a fraction ``f(n)`` of all decoded tokens
is decoded in iterations of ``n`` sequences:

* GPU time per task >= ``G(f) = sum_n f(n) * d * c(n) / n + A`` (an iteration's ``c(n)`` is
  shared by its ``n`` tokens; its attention is at least each token's own context), and the ``R``
  replicas give ``X * G(f) <= R``;
* agent time per task >= ``L(f) = tool + sum_n f(n) * d * (c(n) + a * (n - 1) * k_min) + A``: a
  token's agent waits the whole iteration, whose attention covers its own context and ``n - 1``
  others, each at least ``k_min`` (the shortest prompt of any call in the workload: a sequence's KV
  is at least its prompt); so ``mean TCT >= L(f)``.

Hence ``mean TCT >= min over f of max(N * G(f) / R, L(f))``: batching more saves GPU time and costs
each agent latency; no scheduler escapes both. The minimum over mixes of two linear functions is
reached at one batch size or on the segment between two (solved exactly below). ``n`` ranges over
``1..min(N, max_running_requests)``; the KV pool's limit on ``n`` is ignored (a weaker, still valid
bound). It bounds the *ratio of mean TCTs* only: a scheduler may still trade long tasks' time for
short ones' in a per-task geomean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from saga_sgl.sim.workloads.model import TaskSpec


@dataclass(frozen=True, slots=True)
class TaskWork:
    """What a task asks of the GPU and of its agent, whatever the scheduler (assumption 2)."""

    decode_tokens: int
    attention_s: float
    """``a`` x the sum over its decoded tokens of the token's own context (prompt + earlier output)."""
    tool_s: float


def min_prompt_tokens(tasks: Sequence[TaskSpec]) -> int:
    """``k_min``: the shortest prompt of any call (every sequence in any batch holds at least this KV)."""
    return min(call.prompt_tokens for t in tasks for call in t.calls)


def task_work(task: TaskSpec, attn_s_per_kv_token: float) -> TaskWork:
    tokens = 0
    kv_token_sum = 0.0
    tool = 0.0
    for call in task.calls:
        p, k = call.prompt_tokens, call.output_tokens
        tokens += k
        # Token j (0-based) of the output attends to the prompt and the j tokens before it.
        kv_token_sum += k * p + k * (k - 1) / 2
        tool += call.tool_latency_s
    return TaskWork(decode_tokens=tokens, attention_s=attn_s_per_kv_token * kv_token_sum, tool_s=tool)


@dataclass(frozen=True, slots=True)
class ClosedLoopBound:
    mean_tct_s: float
    """No scheduler's steady-state mean TCT is lower (under the module's assumptions)."""
    batch_mix: tuple[tuple[int, float], ...]
    """The optimal mix: (batch size, fraction of decoded tokens) for one or two sizes."""
    gpu_bound_s: float
    """``N * G / R`` at the optimal mix (the replicas' capacity)."""
    agent_bound_s: float
    """``L`` at the optimal mix (each agent's own latency)."""


def closed_loop_mean_tct_bound(
    works: Sequence[TaskWork],
    agents: int,
    replicas: int,
    iteration_constant_s: Callable[[int], float],
    max_batch: int,
    co_batch_attention_s: float = 0.0,
) -> ClosedLoopBound:
    """The bound of the module docstring for the task mix ``works`` (their mean).
    ``co_batch_attention_s`` = ``a * k_min``: the least attention time each other sequence of a batch
    adds to an iteration (0 drops that term: a weaker bound)."""
    if not works or agents <= 0 or replicas <= 0 or max_batch <= 0 or co_batch_attention_s < 0:
        raise ValueError("closed_loop_mean_tct_bound needs tasks, agents, replicas and max_batch > 0")
    m = len(works)
    d = sum(w.decode_tokens for w in works) / m
    attn = sum(w.attention_s for w in works) / m
    tool = sum(w.tool_s for w in works) / m
    sizes = range(1, min(agents, max_batch) + 1)
    # Per batch size n: (gpu bound N * G(n) / R, agent bound L(n)); both linear in the mix.
    pts = []
    for n in sizes:
        c = iteration_constant_s(n)
        latency = c + (n - 1) * co_batch_attention_s
        pts.append((n, agents * (d * c / n + attn) / replicas, tool + d * latency + attn))
    best = ClosedLoopBound(float("inf"), (), float("inf"), float("inf"))
    for n, g, lat in pts:
        if max(g, lat) < best.mean_tct_s:
            best = ClosedLoopBound(max(g, lat), ((n, 1.0),), g, lat)
    # Segments between a size where the GPU binds (g > lat) and one where latency binds (g < lat):
    # the max of the two lines is lowest where they cross.
    gpu_side = [p for p in pts if p[1] > p[2]]
    lat_side = [p for p in pts if p[1] < p[2]]
    for n1, g1, l1 in gpu_side:
        for n2, g2, l2 in lat_side:
            # lam * (g1 - l1) + (1 - lam) * (g2 - l2) = 0
            lam = (l2 - g2) / ((g1 - l1) + (l2 - g2))
            value = lam * g1 + (1 - lam) * g2
            if value < best.mean_tct_s:
                best = ClosedLoopBound(value, ((n1, lam), (n2, 1 - lam)), value, lam * l1 + (1 - lam) * l2)
    return best
