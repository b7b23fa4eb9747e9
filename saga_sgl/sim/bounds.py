"""A lower bound on a closed loop's mean task completion time that holds for every scheduler.

An oracle (it reads every task's true calls), labelled as such by the benchmark. Assumptions, all
of the simulator (``saga_sgl.sim.cost_model.ProfileCostModel``, ``saga_sgl.sim.worker``):

1. A decode iteration of ``n`` sequences takes ``c(n) + a * S`` seconds (``c`` =
   ``iteration_constant_s``, ``a`` = ``decode_attn_s_per_kv_token``, ``S`` = the sum of the
   batch's KV lengths) and emits one token per sequence. A call's pre-fill emits its first output
   token; each later token ``g = 2..k`` is decoded with the sequence's KV at ``prompt + g - 1``.
2. Every task's calls, output lengths, contexts and tool latencies are the workload's: no scheduler
   changes them. Queueing, holds and recomputation are counted as zero (they only add); pre-fill
   only at its floor (4).
3. Closed loop in steady state: ``N`` agents, each starting its next task when one finishes, on
   ``R`` replicas; Little's law gives ``mean TCT = N / X`` for the task throughput ``X``.
4. Pre-fill (optional, ``TaskWork.prefill_*``; ``CacheablePrefixes``): a prefill iteration of
   ``T`` new tokens (at most the chunk budget ``B`` per call) costs ``c(T)`` plus each chunk's
   attention ``prefill_attention_s(q, P)``, which is additive over chunks; prefill and decode
   iterations do not overlap on a replica (SGLang's default, mixed chunks off). A call pre-fills at
   least its prompt minus the longest prefix that may be cached when it runs: one another task's
   prompt + output also has (any may have run first), or an earlier call of its own task. So a
   call with ``q`` such tokens after ``P`` costs the GPU at least ``max(q, 1) * min_T c(T) / T +
   attn(q, P)`` and its agent at least ``ceil(max(q, 1) / B) * min_T c(T) + attn(q, P)``.

Let a task decode ``d`` tokens in total, with ``A`` = ``a`` x the sum over its decoded tokens of the
token's own KV length, and ``tool`` seconds of tools. Let ``x(n, k)`` be the fraction of all decoded
tokens that have a KV length in bin ``k`` (at least ``kv_k``, the bin's lower edge) and are decoded
in an iteration of ``n`` sequences; the bins' shares ``p_k`` are the workload's (assumption 2).

* GPU time per task: an iteration's ``c(n)`` is shared by its ``n`` tokens and its attention is
  the sum of its sequences' own terms, so ``G(x) = d * sum x(n, k) c(n) / n + A (+ the pre-fill
  floor)``, and the ``R`` replicas give ``X * G(x) <= R``, i.e. ``mean TCT >= N * G(x) / R``.
* Agent time per task: a token's agent waits its whole iteration. Summed over an iteration's ``n``
  tokens that is ``n * c(n) + a * n * S``: each sequence's KV is paid once per token of the batch,
  i.e. ``n`` times. So the agents' decode time is ``sum over tokens of c(n) + a * n * kv`` and
  ``mean TCT >= L(x) = tool + A + d * sum x(n, k) (c(n) + a (n - 1) kv_k) (+ its pre-fill wait
  floor)``.

Hence ``mean TCT >= min over x of max(N * G(x) / R, L(x))`` subject to ``sum_n x(n, k) = p_k``,
``x >= 0``: a linear programme (solved exactly by HiGHS). Batching more saves GPU time and costs
each agent latency; the LP may put short-context tokens in large batches and long ones in small
ones (the least ``sum n * kv`` over all ways to pair the two), so no scheduler escapes it.
``n`` ranges over ``1..min(N, max_running_requests)``.

How tight each ingredient makes it (``co_batch`` pricing):
* one bin at 0: other sequences' attention ignored (the first, loosest form);
* one bin at ``k_min``, the workload's shortest prompt (every sequence's KV is at least its prompt);
* the decoded tokens' own KV-length distribution (``context_bins``): the tightest here;
each with or without the pre-fill floors (4).

What it leaves out (each only weakens it, so it stays valid): the KV pool's limit on ``S`` (shared
prefixes make the sum of KV lengths exceed the pool, so it is no valid per-batch cap), and any cost
of gathering agents into a batch of the LP's size. ``c(n)`` is not monotone in ``n`` (the profiled
GEMM times dip at 24-32 sequences); that dip is the cost model's and a scheduler may use it, so
the LP keeps it. "A batch holds at most the agents not in a tool" adds nothing in expectation:
by Little's law it is ``X * (decode + tool time per task) <= N``, i.e. ``mean TCT >= L``, already
a constraint. The bound is on the *ratio of mean TCTs* only: a scheduler may still trade long
tasks' time for short ones' in a per-task geomean.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saga_sgl.sim.workloads.model import CallSpec, Segment, TaskSpec


@dataclass(frozen=True, slots=True)
class TaskWork:
    """What a task asks of the GPU and of its agent, whatever the scheduler (assumption 2)."""

    decode_tokens: int
    attention_s: float
    """``a`` x the sum over its decoded tokens of the token's own KV length."""
    tool_s: float
    prefill_gpu_s: float = 0.0
    """A floor on the GPU time of its calls' pre-fills (``prefill_floors``; 0 = not counted)."""
    prefill_wait_s: float = 0.0
    """A floor on the time its agent waits for its own calls' pre-fills (0 = not counted)."""


@dataclass(frozen=True, slots=True)
class PrefillFloor:
    gpu_s: float
    wait_s: float


@dataclass(frozen=True, slots=True)
class ContextBin:
    """Decoded tokens whose KV length is at least ``kv_tokens``; ``share`` of all decoded tokens."""

    kv_tokens: float
    share: float


def min_prompt_tokens(tasks: Sequence[TaskSpec]) -> int:
    """``k_min``: the shortest prompt of any call (every sequence in any batch holds at least this KV)."""
    return min(call.prompt_tokens for t in tasks for call in t.calls)


def task_work(task: TaskSpec, attn_s_per_kv_token: float) -> TaskWork:
    tokens = 0
    kv_token_sum = 0.0
    tool = 0.0
    for call in task.calls:
        p, k = call.prompt_tokens, call.output_tokens
        if k > 1:
            # Tokens 2..k are decoded with KV p + 1 .. p + k - 1 (the pre-fill emits token 1).
            tokens += k - 1
            kv_token_sum += (k - 1) * p + k * (k - 1) / 2
        tool += call.tool_latency_s
    return TaskWork(decode_tokens=tokens, attention_s=attn_s_per_kv_token * kv_token_sum, tool_s=tool)


def decoded_kv_lengths(tasks: Sequence[TaskSpec]) -> np.ndarray:
    """Every decoded token's KV length (assumption 1), sorted."""
    starts: list[int] = []
    counts: list[int] = []
    for t in tasks:
        for call in t.calls:
            if call.output_tokens > 1:
                starts.append(call.prompt_tokens + 1)
                counts.append(call.output_tokens - 1)
    if not counts:
        return np.zeros(0, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    offsets = np.repeat(np.cumsum(c) - c, c)
    kv = np.repeat(np.asarray(starts, dtype=np.int64), c) + (np.arange(int(c.sum())) - offsets)
    kv.sort()
    return kv


def context_bins(tasks: Sequence[TaskSpec], num_bins: int = 64) -> tuple[ContextBin, ...]:
    """The decoded tokens' KV lengths in ``num_bins`` equal-count bins, each priced at its shortest
    (a lower bound for every token in it)."""
    if num_bins <= 0:
        raise ValueError("context_bins needs num_bins > 0")
    kv = decoded_kv_lengths(tasks)
    if kv.size == 0:
        return (ContextBin(0.0, 1.0),)
    edges = np.linspace(0, kv.size, min(num_bins, kv.size) + 1).astype(np.int64)
    return tuple(
        ContextBin(float(kv[lo]), (hi - lo) / kv.size) for lo, hi in itertools.pairwise(edges) if hi > lo
    )


class CacheablePrefixes:
    """Per call, the longest prompt prefix whose KV may be cached when it runs: one another task
    also has (any other task may have run first), or an earlier call of the same task has in its
    prompt + output. A segment trie over every call's prompt + output of ``workload_tasks``."""

    def __init__(self, workload_tasks: Sequence[TaskSpec]) -> None:
        # Per node: [children, tasks passing it, the last such task, that task's first step there].
        self._root: dict[int, list[Any]] = {}
        for t in workload_tasks:
            for call in t.calls:
                children = self._root
                for seg in (*call.prompt, Segment(call.output_seg_id, call.output_tokens)):
                    node = children.get(seg.seg_id)
                    if node is None:
                        node = children[seg.seg_id] = [{}, 0, None, call.step]
                    if node[2] != t.task_id:
                        node[1] += 1
                        node[2] = t.task_id
                        node[3] = call.step
                    children = node[0]

    def cacheable_tokens(self, call: CallSpec) -> int:
        children, shared = self._root, 0
        for seg in call.prompt:
            node = children.get(seg.seg_id)
            if node is None or not (node[1] >= 2 or node[3] < call.step):
                break
            shared += seg.num_tokens
            children = node[0]
        return shared

    def floors(
        self,
        tasks: Sequence[TaskSpec],
        iteration_constant_s: Callable[[int], float],
        prefill_attention_s: Callable[[int, int], float],
        chunk_tokens: int,
    ) -> dict[str, PrefillFloor]:
        """Per task: floors on its pre-fills' GPU time and its agent's wait for them (assumption 4)."""
        sizes = range(1, 2 * chunk_tokens + 1)
        per_token = min(iteration_constant_s(n) / n for n in sizes)
        c_min = min(iteration_constant_s(n) for n in sizes)
        out: dict[str, PrefillFloor] = {}
        for t in tasks:
            gpu = wait = 0.0
            for call in t.calls:
                shared = self.cacheable_tokens(call)
                new = call.prompt_tokens - shared
                attn = prefill_attention_s(new, shared) if new > 0 else 0.0
                # At least one token is computed even on a full hit (the worker recomputes the last).
                gpu += max(new, 1) * per_token + attn
                wait += math.ceil(max(new, 1) / chunk_tokens) * c_min + attn
            out[t.task_id] = PrefillFloor(gpu, wait)
        return out


@dataclass(frozen=True, slots=True)
class ClosedLoopBound:
    mean_tct_s: float
    """No scheduler's steady-state mean TCT is lower (under the module's assumptions)."""
    batch_mix: tuple[tuple[int, float], ...]
    """The optimal mix: (batch size, fraction of decoded tokens), sizes with a share > 1e-9."""
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
    co_batch: Sequence[ContextBin] = (ContextBin(0.0, 1.0),),
    attn_s_per_kv_token: float = 0.0,
) -> ClosedLoopBound:
    """The bound of the module docstring for the task mix ``works`` (their mean). ``co_batch``: the
    decoded tokens' KV lengths as bins (shares summing to 1), each token priced at its bin's lower
    edge as another sequence of a batch; the default (one bin at 0) drops that term."""
    if not works or agents <= 0 or replicas <= 0 or max_batch <= 0:
        raise ValueError("closed_loop_mean_tct_bound needs tasks, agents, replicas and max_batch > 0")
    shares = np.array([b.share for b in co_batch], dtype=float)
    kvs = np.array([b.kv_tokens for b in co_batch], dtype=float)
    if not co_batch or np.any(shares < 0) or abs(shares.sum() - 1.0) > 1e-6 or np.any(kvs < 0):
        raise ValueError("co_batch needs bins with shares >= 0 summing to 1 and KV lengths >= 0")
    if attn_s_per_kv_token < 0:
        raise ValueError("attn_s_per_kv_token must be >= 0")
    try:
        from scipy.optimize import linprog  # SGLang depends on scipy; so do saga-sgl's test extras
    except ImportError as e:
        raise ImportError("closed_loop_mean_tct_bound solves an LP with scipy: pip install scipy") from e
    m = len(works)
    d = sum(w.decode_tokens for w in works) / m
    attn = sum(w.attention_s for w in works) / m
    tool = sum(w.tool_s for w in works) / m
    pf_gpu = sum(w.prefill_gpu_s for w in works) / m
    pf_wait = sum(w.prefill_wait_s for w in works) / m
    sizes = np.arange(1, min(agents, max_batch) + 1)
    c = np.array([iteration_constant_s(int(n)) for n in sizes])
    nb, ns = len(kvs), len(sizes)
    # Variables: x[n, k] flattened n-major, then t. Minimise t.
    gpu_coef = np.repeat(agents * d * c / sizes / replicas, nb)
    lat_coef = d * (c[:, None] + attn_s_per_kv_token * (sizes[:, None] - 1) * kvs[None, :]).ravel()
    a_ub = np.vstack([np.append(gpu_coef, -1.0), np.append(lat_coef, -1.0)])
    b_ub = np.array([-agents * (attn + pf_gpu) / replicas, -(tool + attn + pf_wait)])
    a_eq = np.zeros((nb, ns * nb + 1))
    for k in range(nb):
        a_eq[k, k : ns * nb : nb] = 1.0
    cost = np.zeros(ns * nb + 1)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=shares, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"closed_loop_mean_tct_bound: the LP failed ({res.message})")
    x = np.clip(res.x[:-1], 0.0, None)
    g = float(gpu_coef @ x + agents * (attn + pf_gpu) / replicas)
    lat = float(lat_coef @ x + tool + attn + pf_wait)
    per_size = x.reshape(ns, nb).sum(axis=1)
    mix = tuple((int(n), float(f)) for n, f in zip(sizes, per_size, strict=True) if f > 1e-9)
    # HiGHS meets the constraints to ~1e-9: report the max of the two sides at its x (>= its t).
    return ClosedLoopBound(max(g, lat), mix, g, lat)


# --- A finite closed loop on CPU-priced workers -------------------------------------------------
#
# The LP above is a steady-state bound on a GPU cost model, where batching is what a scheduler trades.
# The live benchmark is different on both counts: a finite run (``M`` tasks, ``N`` at once, the next
# task starting when one finishes) on CPU workers whose iteration costs about the sum of its requests.
# The bound below holds for every scheduler of such a run under these assumptions (all of the
# simulator: ``saga_sgl.sim.worker``, ``benchmarks/sim_fidelity.CpuProfileCostModel``):
#
# A. An iteration costs ``c(T) + sum of per-request terms``: a pre-fill iteration of ``T`` new tokens
#    ``c(T) + sum_chunks prefill_attention_s(q, P)``, a decode iteration of ``n`` sequences
#    ``c(n) + a * sum of their KV lengths``. So a batch costs at least the sum of its requests' shares
#    ``T_i * min_T c(T) / T`` (pre-fill; ``T`` up to the chunk budget plus one token per full hit) and
#    ``min_{n <= N} c(n) / n`` per decoded token (a task has one call at a time, so a decode batch
#    has at most ``N`` sequences), plus their own attention. Batching saves at most the part of
#    ``c`` above that share (the CPU profile: ~3.5 ms of a 4-40 ms iteration).
# B. A call of prompt ``p`` pre-fills at least ``q = p - P`` new tokens (at least 1), ``P`` the
#    longest prefix some earlier call could have left cached (``CacheablePrefixes``: perfect cache).
#    Its pre-fill attention is at least ``prefill_attention_s(q, P)``: both forms (the GPU's
#    ``q (P + q/2)`` and the CPU worker's ``(P+q)^2/2 + (P+q)``) do not fall when the prefix grows
#    at a fixed prompt, and splitting a call into chunks only adds.
# C. Calls, outputs and tool gaps are the workload's; a call's agent waits at least its own
#    pre-fill (``c(q) + attention`` when ``c(T) / T`` never rises, so ``c`` is subadditive, else
#    ``ceil(q / B) * min c``) and ``k - 1`` decode iterations each at least ``min c + a * own KV``.
#    Queueing, holds, retractions and misses beyond B only add.
# D. ``R`` workers, each doing one iteration at a time, from time 0.
#
# Floors per task: ``w_i`` (worker seconds, A-B) and ``L_i`` (its critical path: tools + its own
# calls' waits, C). With completion times ``tau_1 <= ... <= tau_M`` and the closed loop starting task
# ``i >= N`` at ``tau_{i-N+1}``, the sum of TCTs is ``sum_i f_i - sum_{i>=N} s_i = tau_{M-N+1} + ...
# + tau_M`` (the last ``N`` completions). And
#   * ``tau_k >= T_k = max(sum of the k smallest w / R, the k-th smallest L)``: by ``tau_k`` the
#     ``k`` finished tasks have had all their work done on ``R`` workers, each took at least its L;
#   * ``f_i >= F_i``: ``L_i`` for the first ``N``, ``T_{i-N+1} + L_i`` for the others; so the
#     ``j``-th largest completion is at least the ``j``-th largest ``F``.
# Hence ``mean TCT >= (1/M) sum_{j=1..N} max(T_{M-j+1}, j-th largest F)`` (``finite_closed_loop_bound``).
# It counts each shared head as cached for every task (one of them must compute it) and ignores
# work that unfinished tasks have done by ``tau_k``: both only loosen it.


@dataclass(frozen=True, slots=True)
class TaskFloor:
    """What any scheduler must spend on one task (assumptions A-C)."""

    work_s: float
    """Worker seconds of its calls at least (perfect cache, batching priced at its best share)."""
    path_s: float
    """Its own critical path at least: tool gaps + its calls' pre-fill and decode waits."""


@dataclass(frozen=True, slots=True)
class FiniteLoopBound:
    mean_tct_s: float
    """No scheduler's mean TCT over this run is lower (assumptions A-D)."""
    work_only_s: float
    """The same with every path floor set to 0 (the workers' capacity alone)."""
    path_only_s: float
    """The same with every work floor set to 0 (the tasks' own critical paths alone)."""


def _subadditive(c: Sequence[float]) -> bool:
    """``c[T-1] / T`` never rises for ``T = 1..len(c)`` (then ``c`` is subadditive there)."""
    per = np.asarray(c) / np.arange(1, len(c) + 1)
    return bool(np.all(np.diff(per) <= 1e-15))


def task_floors(
    tasks: Sequence[TaskSpec],
    iteration_constant_s: Callable[[int], float],
    prefill_attention_s: Callable[[int, int], float],
    decode_attn_s_per_kv_token: float,
    chunk_tokens: int,
    agents: int,
    cacheable: CacheablePrefixes | None = None,
) -> dict[str, TaskFloor]:
    """Per task, ``TaskFloor`` (assumptions A-C); ``agents`` = ``N``, the most calls running at once."""
    if chunk_tokens <= 0 or agents <= 0:
        raise ValueError("task_floors needs chunk_tokens > 0 and agents > 0")
    prefixes = cacheable or CacheablePrefixes(tasks)
    t_max = chunk_tokens + agents  # the budget, plus one recomputed token per full hit
    c = [iteration_constant_s(n) for n in range(1, t_max + 1)]
    pf_share = min(cn / n for n, cn in enumerate(c, start=1))
    dec_share = min(c[n - 1] / n for n in range(1, agents + 1))
    c_min = min(c)
    subadd = _subadditive(c)
    a = decode_attn_s_per_kv_token
    out: dict[str, TaskFloor] = {}
    for t in tasks:
        work = path = 0.0
        for call in t.calls:
            p, k = call.prompt_tokens, call.output_tokens
            shared = prefixes.cacheable_tokens(call)
            q = max(p - shared, 1)
            attn = prefill_attention_s(q, p - q)
            work += q * pf_share + attn
            own = c[q - 1] if subadd and q <= t_max else math.ceil(q / chunk_tokens) * c_min
            path += own + attn + call.tool_latency_s
            if k > 1:  # tokens 2..k decoded with KV p + 1 .. p + k - 1
                kv = (k - 1) * p + k * (k - 1) / 2
                work += (k - 1) * dec_share + a * kv
                path += (k - 1) * c_min + a * kv
        out[t.task_id] = TaskFloor(work, path)
    return out


def _position_floors(
    works: Sequence[float], paths: Sequence[float], agents: int, replicas: int
) -> tuple[np.ndarray, list[float], list[float]]:
    """The plain bound's per-position floors (module comment above), tasks in start order: the
    cumulative sums of the smallest works, ``T_k`` (``done_by[k - 1]``) and the finish floors
    ``F_i``, largest first."""
    m = len(works)
    n = min(agents, m)
    cum = np.cumsum(sorted(works))
    paths_sorted = sorted(paths)
    done_by = [max(float(cum[k]) / replicas, paths_sorted[k]) for k in range(m)]  # T_{k+1}
    finish = sorted((paths[i] if i < n else done_by[i - n] + paths[i] for i in range(m)), reverse=True)
    return cum, done_by, finish


def finite_closed_loop_bound(floors: Sequence[TaskFloor], agents: int, replicas: int) -> FiniteLoopBound:
    """The bound on the mean TCT of a finite closed loop (module comment above): ``floors`` in the
    order the loop starts the tasks, ``agents`` at once, on ``replicas`` workers."""
    if not floors or agents <= 0 or replicas <= 0:
        raise ValueError("finite_closed_loop_bound needs tasks, agents > 0 and replicas > 0")

    def bound(works: Sequence[float], paths: Sequence[float]) -> float:
        m = len(works)
        n = min(agents, m)
        _, done_by, finish = _position_floors(works, paths, agents, replicas)
        return sum(max(done_by[m - 1 - j], finish[j]) for j in range(n)) / m

    works = [f.work_s for f in floors]
    paths = [f.path_s for f in floors]
    zeros = [0.0] * len(floors)
    return FiniteLoopBound(bound(works, paths), bound(works, zeros), bound(zeros, paths))


# --- The same loop, with each task on one worker at a time (a fluid relaxation) -------------------
#
# ``finite_closed_loop_bound`` lets the ``k`` tasks done first share all ``R`` workers' capacity up to
# ``tau_k``. But a task runs one call at a time on one worker, so its work advances at most at the
# rate of one worker. Attribute to each task its floor share of every iteration it is in (A: the
# shares of an iteration's requests sum to at most its duration, each at most the duration): the
# task's attributed work accrues at rate <= 1, all tasks' together at rate <= R, and a task's total
# is at least ``w_i``. Between the ``l``-th and ``(l+1)``-th completions the tasks finishing at
# positions ``l+1..m`` are the only ones of the first ``m`` still running, and at most ``N`` tasks have
# started and not finished, so those ``m`` tasks' work (at least the ``m`` smallest ``w``) obeys
#
#     sum of the m smallest w  <=  sum_{l=0}^{m-1} min(R, N, m - l) * (tau_{l+1} - tau_l)     [E]
#
# (``tau_0 = 0``). For equal tasks of work ``w`` on 2 workers this gives the pairs
# ``tau_{2j-1} + tau_{2j} >= 2 j w``: one task per worker at a time is optimal, where the plain
# capacity bound allows ``tau_k = k w / 2``. [E] at every ``m`` plus the plain bound's per-position
# floors (``T_k``, the ``j``-th largest finish floor) and the start-dependent finish floors with the
# start a variable (task ``i >= N`` starts at ``tau_{i-N+1}``; the ``j`` largest completions sum to
# at least any ``j`` tasks' finish floors) form a linear programme in ``tau``; its least
# ``sum of the last N tau`` is a floor for every scheduler (assumptions A-D; still an oracle).


def fluid_closed_loop_bound(floors: Sequence[TaskFloor], agents: int, replicas: int) -> float:
    """``finite_closed_loop_bound`` tightened by [E] (comment above): the least mean TCT over the
    completion times that the fluid relaxation allows; never below the plain bound's ``mean_tct_s``."""
    plain = finite_closed_loop_bound(floors, agents, replicas)
    try:
        from scipy.optimize import linprog
    except ImportError as e:  # pragma: no cover - scipy ships with SGLang
        raise ImportError("fluid_closed_loop_bound solves an LP with scipy: pip install scipy") from e
    m_tasks, n = len(floors), min(agents, len(floors))
    works = [f.work_s for f in floors]
    paths = [f.path_s for f in floors]
    cum, done_by, finish = _position_floors(works, paths, agents, replicas)
    lower = list(done_by)
    for j in range(n):  # the j-th largest completion is at least the j-th largest finish floor
        lower[m_tasks - 1 - j] = max(lower[m_tasks - 1 - j], finish[j])
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    for k in range(m_tasks - 1):  # tau_k <= tau_{k+1}
        row = np.zeros(m_tasks)
        row[k], row[k + 1] = 1.0, -1.0
        rows.append(row)
        rhs.append(0.0)
    for m in range(1, m_tasks + 1):  # [E]
        rate = [min(replicas, agents, m - lvl) for lvl in range(m)] + [0]
        row = np.zeros(m_tasks)
        for j in range(1, m + 1):  # sum_l rate_l (tau_{l+1} - tau_l) = sum_j (rate_{j-1} - rate_j) tau_j
            row[j - 1] = -(rate[j - 1] - rate[j])
        rows.append(row)
        rhs.append(-float(cum[m - 1]))
    # start-dependent finish floors, starts as variables: the largest completion is at least each
    # task's, and the j largest together at least the j tasks' of largest constant floor
    started = [(i, i - n) for i in range(n, m_tasks)]  # task i starts at tau_{i-n+1} (index i - n)
    for i, s in started:
        row = np.zeros(m_tasks)
        row[s] += 1.0
        row[m_tasks - 1] -= 1.0
        rows.append(row)
        rhs.append(-paths[i])
    by_floor = sorted(range(m_tasks), key=lambda i: -(paths[i] if i < n else done_by[i - n] + paths[i]))
    for j in range(2, n + 1):
        row = np.zeros(m_tasks)
        row[m_tasks - j :] -= 1.0
        const = 0.0
        for i in by_floor[:j]:
            const += paths[i]
            if i >= n:
                row[i - n] += 1.0
        rows.append(row)
        rhs.append(-const)
    cost = np.zeros(m_tasks)
    cost[m_tasks - n :] = 1.0 / m_tasks
    res = linprog(
        cost,
        A_ub=np.vstack(rows),
        b_ub=np.asarray(rhs),
        bounds=[(lo, None) for lo in lower],
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"fluid_closed_loop_bound: the LP failed: {res.message}")
    # HiGHS meets the constraints to ~1e-9; the plain bound is a floor too
    return max(float(res.fun), plain.mean_tct_s)
