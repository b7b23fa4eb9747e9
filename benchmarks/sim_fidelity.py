"""Simulator fidelity: replay the live benchmark's workload in the simulator, calibrated to the CPU
workers, and compare row by row with the live run.

Inputs: a live run (``benchmarks/live.py``'s ``live.json``) and a CPU profile
(``benchmarks/calibrate_cpu.py``'s ``cpu_profile.json``). What is simulated:

* the workload: for each seed, the same agents ``saga_sgl.agents.run_agents`` ran (same kinds,
  tenants, plans, drawn with the same seeds), turned into the simulator's task model. Each prompt
  piece the SGLang program appends is tokenized with the tiny model's tokenizer, shared pieces
  (system prompts, repository contexts) get a shared segment id, each generation is one segment of
  ``max_new_tokens`` tokens, and each tool gap is the slept latency plus the measured per-request
  overhead (HTTP, tokenizer and detokenizer processes: time a call takes that no engine iteration
  accounts for);
* the load: closed loop, ``concurrency`` agents at once in index order whatever their tenant, as the
  live agent pool runs them (``ClusterSettings.closed_loop_shared``);
* the hardware: ``--workers`` replicas whose iteration cost is the calibrated CPU profile (a
  ``ProfileCostModel`` whose linear-op table, attention and KV terms are the CPU measurements), the
  workers' KV pool, and SGLang's CPU defaults (chunked prefill 4096). The prefill attention is the
  CPU worker's own (the profile's ``extend`` form): SGLang's ``torch_native`` backend pads each
  request's query to its whole sequence and gathers all its K and V, so a cached prefix is cheap to
  keep but not free to extend: a chunk of q new tokens behind P cached ones costs
  ``c2 (P+q)^2/2 + e (P+q)``, not the GPU kernels' ``q (P + q/2)``. With the GPU form the simulated
  engine time per task was 25-35% below the live one (``sim_fidelity_s4_cpupriced.md``);
* the rows: each live row mapped to the simulator's row with the same placement and eviction
  (sglang-router's cache_aware and our router's cache_aware are the same policy to the simulator).

* the machine's load: the live workers share a 2-core VM with other processes, which stretch every
  forward pass; ``live.py`` records, per (row, seed), the row's worker threads' on-CPU and
  run-queue-wait seconds (``schedstat``). By default (``--speed stretch``, when the live run has them
  and the profile is load-free) each (row, seed) is simulated with every cost term multiplied by its
  own stretch (cpu + wait) / cpu: what the kernel says the other load cost those workers, the same
  measure for every row; the simulator still decides placement, batching and eviction itself.
  ``--speed pooled`` applies one stretch for the whole live run instead (over all its rows and
  seeds), so the simulated rows differ only by their own decisions; it is closer where the rows ran
  under similar load and far off where they did not (``sim_fidelity_s7.md`` compares both over eight
  live runs). ``--speed probe`` is the older single factor (the live run's idle probe),
  ``--speed none`` the profile as measured.

Reported per row: live and simulated mean TCT, their ratio error (also per seed), both "x saga"
ratios and the ratio error between them, cached-token ratios, whether the ranking of rows by mean TCT
agrees, the paired x-saga geomeans with their CIs (the ranking is decided only where the live CI
excludes 1); a breakdown of each task's time (``PARTS``: engine, queue, transit, tools); and worker
seconds (live: on-CPU seconds of the row's workers; sim: busy seconds at the run's speed over that
speed, i.e. unloaded seconds).

``--bound`` adds, per row at that row's speed, a floor on the mean TCT that no scheduler beats under
this cost model (``saga_sgl.sim.bounds.fluid_closed_loop_bound``, an oracle), every simulated
baseline, SAGA and oracle row checked against it, and one explicit priority schedule's mean
(``priority_schedule_mean_tct``): how far the live and simulated rows are from what is possible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cluster_stats import paired_ratio
from saga_sgl.agents.browser import plan_browser_task
from saga_sgl.agents.coding import plan_coding_task
from saga_sgl.agents.common import AgentScale, text_of
from saga_sgl.local_workers import TINY_MODEL_DIR
from saga_sgl.scheduler.settings import AdmissionControlSettings
from saga_sgl.sim import rows as sim_rows
from saga_sgl.sim.bounds import (
    CacheablePrefixes,
    FiniteLoopBound,
    TaskFloor,
    finite_closed_loop_bound,
    fluid_closed_loop_bound,
    task_floors,
)
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.cost_model import CostSettings, ModelSpec, ProfileCostModel, _Piecewise
from saga_sgl.sim.metrics import SimResult
from saga_sgl.sim.policies import RowSpec, build_row
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads.model import CallSpec, Segment, SegmentIds, TaskSpec, Workload

SGLANG_CPU_CHUNKED_PREFILL = 4096
"""``chunked_prefill_size`` SGLang 0.5.23 picks on this CPU box (the workers' server_args log)."""


class CpuProfileCostModel(ProfileCostModel):
    """``ProfileCostModel`` with the terms measured on a CPU worker instead of Vidur's GPU profiles.

    Same iteration formula, ``c(n)`` + prefill attention per chunk + ``a`` per attended KV token in
    decode, with ``c(n)`` from the profile's ``linear_ms`` table (it already contains the
    per-iteration CPU overhead). The prefill attention of a chunk of ``q`` new tokens behind ``P``
    cached ones is the worker's own form when the profile has it (``extend``: SGLang's CPU backend,
    ``torch_native``, pads the query to the whole sequence and gathers its K and V, so a chunk costs
    ``c2 (P+q)^2/2 + e (P+q)``), else the GPU form ``c_attn q (P + q/2)``."""

    def __init__(self, profile: dict[str, Any], *, chunk_size_tokens: int, speed: float = 1.0) -> None:
        """``speed``: multiplies every term (the machine is ``speed`` times slower than when it was
        profiled; see ``speed_factor``)."""
        hidden, layers = int(profile["meta"]["hidden_size"]), int(profile["meta"]["layers"])
        # Not calling super().__init__: there is no GPU here, every term it derives is set below.
        self.model = ModelSpec(
            name=f"cpu-llama-{layers}x{hidden}",
            num_layers=layers,
            d_model=hidden,
            num_kv_heads=max(1, max(4, hidden // 64) // 2),
            head_dim=64,
            weight_bytes=0.0,
        )
        self.tp = 1
        self.settings = CostSettings(cpu_overhead_s=0.0)
        self.chunk_size_tokens = chunk_size_tokens
        extend = profile.get("extend")
        table = (extend or profile)["linear_ms"]["points"]
        self._lin_ms = _Piecewise([[n, ms * speed] for n, ms in table])
        self._ar_ms = None
        self._const_cache: dict[int, float] = {}
        self._prefill_cache: dict[tuple[int, int], float] = {}
        # GPU form: prefill_attention_s = 4 L d q (P + q/2) * s_per_flop  ==  c_attn q (P + q/2)
        self._pf_attn_s_per_flop = speed * profile["prefill_attn_s_per_token2"] / (4 * layers * hidden)
        self._extend: tuple[float, float] | None = (
            (speed * extend["attn_s_per_seq_token2"], speed * extend["s_per_seq_token"]) if extend else None
        )
        self.decode_attn_s_per_kv_token = speed * profile["decode_attn_s_per_kv_token"]

    def prefill_attention_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        if self._extend is None:
            return super().prefill_attention_s(num_new_tokens, num_cached_tokens)
        c2, e = self._extend
        seq = num_cached_tokens + num_new_tokens
        return c2 * seq * seq / 2 + e * seq

    def kv_capacity_tokens(self) -> int:
        raise ValueError(
            "CPU profile: set WorkerSettings.kv_capacity_tokens (the workers' --max-total-tokens)"
        )


# live row name -> simulator row
def live_saga_row(admission: dict[str, Any] | None = None) -> RowSpec:
    """The saga router's ``--policy saga``: SAGA with the admission control the live run gave it
    (``admission``: ``AdmissionControlSettings`` fields, the ``admission`` key of the live run's
    ``--saga-scheduler-config``; none: off, the router's default until session 7)."""
    return dataclasses.replace(
        sim_rows.SAGA, label="saga", admission=AdmissionControlSettings(**(admission or {}))
    )


def sim_row_for(name: str, admission: dict[str, Any] | None = None) -> RowSpec:
    """The simulator's row for a live row; ``admission`` applies to the saga-policy rows only."""
    if name == "saga" or name.startswith("saga, "):  # ablations of the live router only (the
        return dataclasses.replace(live_saga_row(admission), label=name)  # sim's index has no lag)
    if name == "saga-router saga + LRU":  # the saga router's scheduling on stock LRU workers
        return dataclasses.replace(live_saga_row(admission), label=name, eviction="lru")
    placement = name.split()[1]
    label = name
    return RowSpec(label=label, placement=placement, eviction="lru", fairness="fcfs")


class Tokens:
    """Token counts of prompt pieces with the tiny model's tokenizer (what the workers count)."""

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(TINY_MODEL_DIR))
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            n = self._cache[text] = len(self._tok(text, add_special_tokens=False).input_ids)
        return n


def _chain(
    task_id: str,
    tenant: str,
    kind: str,
    head: list[tuple[str | None, str]],
    steps: list[tuple[str, str | None, float]],
    ids: SegmentIds,
    tokens: Tokens,
    scale: AgentScale,
    overhead_s: float,
) -> TaskSpec:
    """``head``: (shared name or None, text) pieces before the first call; ``steps``: per call the
    text appended right before it (ending in the gen's prefix), its tool and the tool's latency."""
    prompt: list[Segment] = []
    for k, (name, text) in enumerate(head):
        n = tokens(text) + (1 if k == 0 else 0)  # BOS
        prompt.append(Segment(ids.named(name) if name else ids.new(), n))
    calls = []
    pending = ""
    for k, (before, tool, latency) in enumerate(steps):
        text = pending + before
        if text:
            prompt.append(Segment(ids.new(), tokens(text)))
        out = ids.new()
        last = k == len(steps) - 1
        calls.append(
            CallSpec(
                step=k,
                prompt=tuple(prompt),
                output_tokens=scale.max_new_tokens,
                output_seg_id=out,
                tool=tool,
                tool_latency_s=0.0 if last else latency * scale.time_scale + overhead_s,
            )
        )
        prompt.append(Segment(out, scale.max_new_tokens))
        pending = ""
    return TaskSpec(
        task_id=task_id, tenant=tenant, tenant_class=kind, agent_type=kind, arrival_s=0.0, calls=tuple(calls)
    )


def coding_task(
    task_id: str,
    tenant: str,
    seed: int,
    scale: AgentScale,
    ids: SegmentIds,
    tokens: Tokens,
    overhead_s: float,
) -> TaskSpec:
    """The text ``saga_sgl.agents.coding`` appends, piece by piece."""
    plan = plan_coding_task(seed, scale)
    head: list[tuple[str | None, str]] = [
        (
            "swe:system",
            "You are a software engineering agent. Tools: read_file(path), edit_code(patch), run_test(), "
            "fetch_url(url), sql(query).\n" + text_of("swe:system", plan["system_tokens"]) + "\n",
        ),
        (
            f"swe:repo{plan['repo']}",
            "Repository:\n" + text_of(f"swe:repo{plan['repo']}", plan["repo_tokens"]) + "\n",
        ),
        (None, "Task: " + text_of(f"swe:task:{task_id}", plan["task_tokens"]) + "\n"),
    ]
    steps = []
    after = ""
    for k, step in enumerate(plan["steps"]):
        if step.tool is None:
            steps.append((after + "Final answer:", None, 0.0))
            break
        steps.append((after + f"Thought {k}:", step.tool, step.latency_s))
        obs = text_of(f"swe:obs:{task_id}:{k}", step.observation_tokens)
        after = f"\nAction {k}: {step.tool}\n" + f"Observation {k}: " + obs + "\n"
    return _chain(task_id, tenant, "coding", head, steps, ids, tokens, scale, overhead_s)


def browser_task(
    task_id: str,
    tenant: str,
    seed: int,
    scale: AgentScale,
    ids: SegmentIds,
    tokens: Tokens,
    overhead_s: float,
) -> TaskSpec:
    """The text ``saga_sgl.agents.browser`` appends, piece by piece."""
    plan = plan_browser_task(seed, scale)
    head: list[tuple[str | None, str]] = [
        (
            "web:system",
            "You are a web agent. Actions: click [id], type [id] [text], scroll, goto [url], stop [answer].\n"
            + text_of("web:system", plan["system_tokens"])
            + "\n",
        ),
    ]
    steps = []
    after = "Objective: " + text_of(f"web:intent:{task_id}", plan["intent_tokens"]) + "\n"
    for k, step in enumerate(plan["steps"]):
        page = f"Page {k}: " + text_of(f"web:page:{task_id}:{k}", step.observation_tokens) + "\n"
        if step.tool is None:
            steps.append((after + page + "Action: stop [", None, 0.0))
            break
        steps.append((after + page + f"Action {k}:", step.tool, step.latency_s))
        after = "\n"
    return _chain(task_id, tenant, "browser", head, steps, ids, tokens, scale, overhead_s)


BUILDERS = {"coding": coding_task, "browser": browser_task}


def live_workload(meta: dict[str, Any], seed: int, tokens: Tokens, overhead_s: float) -> Workload:
    """The agents ``run_agents(seed=seed, ...)`` runs, as the simulator's task model (same draws)."""
    kinds = list(meta["kinds"])
    unknown = [k for k in kinds if k not in BUILDERS]
    if unknown:
        raise SystemExit(
            f"the simulator replays chains only; live run used {unknown} (run live.py --kinds coding,browser)"
        )
    scale = AgentScale(
        token_scale=meta["token_scale"],
        time_scale=meta["time_scale"],
        max_steps=meta["max_steps"],
        max_new_tokens=meta["max_new_tokens"],
    )
    rng = np.random.default_rng(seed)  # the same draws, in the same order, as run_agents
    picks = rng.integers(len(kinds), size=meta["agents"])
    tenant_ids = rng.integers(meta["tenants"], size=meta["agents"])
    ids = SegmentIds()
    tasks = []
    for i in range(meta["agents"]):
        kind = kinds[int(picks[i])]
        wid = f"{kind}-s{seed}-{i}"
        tasks.append(
            BUILDERS[kind](
                wid, f"tenant-{int(tenant_ids[i])}", seed * 1_000_003 + i, scale, ids, tokens, overhead_s
            )
        )
    # run_agents' pool: `concurrency` agents at once, in index order, whatever their tenant
    # (ClusterSettings.closed_loop_shared).
    return Workload(tasks=tuple(tasks), name=f"live-seed{seed}", closed_loop_agents=meta["concurrency"])


def speed_factor(profile: dict[str, Any], meta: dict[str, Any], tokens: Tokens) -> float:
    """How much slower the machine ran during the live run than during profiling, from the one probe
    the live run makes before any row (``live.py``'s idle call: an uncached typical prompt on an idle
    worker): measured latency / the profile's prediction of that same call. 1.0 without the probe.
    On a shared VM the load changes between profiling and the run; this is the only correction, and
    it uses nothing a row measured."""
    measured = meta.get("idle_call_s")
    if not measured or not math.isfinite(measured):
        return 1.0
    scale = AgentScale(
        token_scale=meta["token_scale"], time_scale=meta["time_scale"], max_new_tokens=meta["max_new_tokens"]
    )
    n = int(statistics.median(tokens(text_of(f"idle-probe-{i}", scale.tokens(8000))) + 1 for i in range(3)))
    cost = CpuProfileCostModel(profile, chunk_size_tokens=SGLANG_CPU_CHUNKED_PREFILL)
    predicted = (
        profile["request_overhead_s"]
        + cost.prefill_time_s(n, 0)
        + cost.decode_time_s(meta["max_new_tokens"] - 1, n)
    )
    return float(measured / predicted)


def simulate(
    workload: Workload,
    row: RowSpec,
    profile: dict[str, Any],
    meta: dict[str, Any],
    seed: int,
    speed: float = 1.0,
) -> SimResult:
    worker = WorkerSettings(
        chunked_prefill_size=SGLANG_CPU_CHUNKED_PREFILL, kv_capacity_tokens=meta["kv_tokens"]
    )
    settings = ClusterSettings(num_workers=meta["workers"], worker=worker, closed_loop_shared=True)
    cost = CpuProfileCostModel(profile, chunk_size_tokens=SGLANG_CPU_CHUNKED_PREFILL, speed=speed)
    return Cluster(workload, build_row(row, seed), settings, cost_model=cost).run()


def run_stretch(live: dict[str, Any]) -> dict[tuple[str, int], float]:
    """(row, seed) -> (cpu + wait) / cpu of that run's engine threads (each worker's busiest thread),
    or of all the workers' threads in runs that predate the engine figures (that over-counts threads
    waiting side by side); empty when the live run has neither."""
    out = {}
    for run in live.get("runs", []):
        sched = run.get("worker_sched_s") or {}
        key = (run["row"], int(run["seed"]))
        if sched.get("engine_cpu", 0) > 0:
            out[key] = (sched["engine_cpu"] + sched["engine_wait"]) / sched["engine_cpu"]
        elif sched.get("cpu", 0) > 0:
            out[key] = (sched["cpu"] + sched["wait"]) / sched["cpu"]
    return out


def pooled_stretch(live: dict[str, Any]) -> float:
    """One stretch for the whole live run: (cpu + wait) / cpu of every run's engine threads together.
    The same for every row, so a row that happened to run while the machine was busier is not
    simulated slower; the simulated rows then differ only by their own decisions (``--speed pooled``)."""
    cpu = wait = 0.0
    for run in live.get("runs", []):
        sched = run.get("worker_sched_s") or {}
        if sched.get("engine_cpu", 0) > 0:
            cpu, wait = cpu + sched["engine_cpu"], wait + sched["engine_wait"]
        elif sched.get("cpu", 0) > 0:
            cpu, wait = cpu + sched["cpu"], wait + sched["wait"]
    return (cpu + wait) / cpu if cpu > 0 else 1.0


def cpu_task_floors(workload: Workload, profile: dict[str, Any], speed: float) -> dict[str, TaskFloor]:
    """Each task's floors (``saga_sgl.sim.bounds.task_floors``) under the CPU cost model at ``speed``."""
    cost = CpuProfileCostModel(profile, chunk_size_tokens=SGLANG_CPU_CHUNKED_PREFILL, speed=speed)
    return task_floors(
        workload.tasks,
        cost.iteration_constant_s,
        cost.prefill_attention_s,
        cost.decode_attn_s_per_kv_token,
        SGLANG_CPU_CHUNKED_PREFILL,
        workload.closed_loop_agents,
    )


def mean_tct_bound(
    workload: Workload, profile: dict[str, Any], meta: dict[str, Any], speed: float
) -> FiniteLoopBound:
    """The all-schedulers floor on this seed's mean TCT under the CPU cost model at ``speed`` (an
    oracle: it reads every task's calls): ``mean_tct_s`` is the tightest, with each task on one
    worker at a time (``saga_sgl.sim.bounds.fluid_closed_loop_bound``; session 7 reported
    ``finite_closed_loop_bound``'s, about 6% lower here); ``work_only_s`` / ``path_only_s`` are the
    plain bound's two sides. The last call's request overhead is added as ``compare`` adds it to the
    simulated TCTs. ``workload``'s tool gaps must carry the overhead at the same speed
    (``live_workload(..., overhead_s)``)."""
    floors = cpu_task_floors(workload, profile, speed)
    ordered = [floors[t.task_id] for t in workload.tasks]
    agents, workers = workload.closed_loop_agents, meta["workers"]
    b = finite_closed_loop_bound(ordered, agents, workers)
    fluid = fluid_closed_loop_bound(ordered, agents, workers)
    o = profile["request_overhead_s"] * speed
    return FiniteLoopBound(fluid + o, b.work_only_s + o, b.path_only_s + o)


def priority_schedule_mean_tct(
    workload: Workload, profile: dict[str, Any], meta: dict[str, Any], speed: float
) -> float:
    """Mean TCT of one explicit schedule priced by the same cost model (not run in the engine; an
    estimate of what a scheduler can reach, so OPT lies between the floor and it): a router that
    holds calls and sends each worker one call at a time, the ready call of its oldest task first
    (tasks fill the others' tool gaps but never slow the oldest down), tasks placed at their start
    on the worker with the fewest tasks (ties: the one holding their shared head). A lone call costs
    ``c(q) + attention + (k - 1) c(1) + a * KV`` with ``q`` its tokens not cached on that worker:
    each worker keeps whole task contexts and shared heads in LRU order within its pool."""
    cost = CpuProfileCostModel(profile, chunk_size_tokens=SGLANG_CPU_CHUNKED_PREFILL, speed=speed)
    tasks, n_agents, cap = workload.tasks, workload.closed_loop_agents, meta["kv_tokens"]
    prefixes = CacheablePrefixes(tasks)
    o = profile["request_overhead_s"] * speed

    def head_of(t: TaskSpec) -> tuple[tuple[int, ...], int]:
        first = t.calls[0]
        shared, key, n = prefixes.cacheable_tokens(first), [], 0
        for seg in first.prompt:
            if n + seg.num_tokens > shared:
                break
            key.append(seg.seg_id)
            n += seg.num_tokens
        return tuple(key), n

    heads = [head_of(t) for t in tasks]
    n_workers = meta["workers"]
    lru: list[dict[Any, int]] = [{} for _ in range(n_workers)]  # entry -> tokens (own part)
    free = [0.0] * n_workers
    home: dict[int, int] = {}
    ready: dict[int, tuple[float, int]] = {}  # task -> (ready time, next call)
    start: dict[int, float] = {}
    tct: list[float] = []
    nxt = 0

    def begin(i: int, now: float) -> None:
        counts = [sum(1 for j in ready if home[j] == w) for w in range(n_workers)]
        home[i] = min(range(n_workers), key=lambda w: (counts[w], heads[i][0] not in lru[w], w))
        start[i], ready[i] = now, (now, 0)

    while nxt < min(n_agents, len(tasks)):
        begin(nxt, 0.0)
        nxt += 1
    while ready:
        w = min(
            (home[i] for i in ready),
            key=lambda v: max(free[v], min(r[0] for j, r in ready.items() if home[j] == v)),
        )
        mine = {i: r for i, r in ready.items() if home[i] == w}
        now = max(free[w], min(r[0] for r in mine.values()))
        i = min((j for j, r in mine.items() if r[0] <= now), key=lambda j: (start[j], j))
        call = tasks[i].calls[mine[i][1]]
        p, k = call.prompt_tokens, call.output_tokens
        key, head_n = heads[i]
        cache = lru[w]
        hit = head_n if key in cache else 0
        if ("task", i) in cache:
            hit = max(hit, head_n + cache[("task", i)])
        q = max(p - min(hit, p), 1)
        dur = cost.prefill_iteration_s([(q, p - q)])
        if k > 1:
            dur += cost.decode_run_s(1, p + 1, k - 1)
        end = now + dur
        # the call's context is now cached: its head and its own part, most recent last
        for entry, n in ((key, head_n), (("task", i), p + k - head_n)):
            cache.pop(entry, None)
            cache[entry] = n
        while sum(cache.values()) > cap:
            victim = next(e for e in cache if e not in (key, ("task", i)))
            del cache[victim]
        free[w] = end
        step = mine[i][1] + 1
        if step < len(tasks[i].calls):
            ready[i] = (end + call.tool_latency_s, step)
            continue
        del ready[i]
        cache.pop(("task", i), None)
        tct.append(end - start[i] + o)
        if nxt < len(tasks):
            begin(nxt, end)
            nxt += 1
    return statistics.fmean(tct)


BOUND_CHECK_ROWS = (*sim_rows.MAIN_ROWS,)
"""Simulated rows checked against the bound besides the live rows' own (``--bound``): every
baseline, SAGA, and the oracles (Belady eviction, an infinite KV pool)."""


def saga_admission(meta: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any] | None:
    """The admission control the live saga rows ran with: ``override`` (``--saga-scheduler-config``),
    else the live run's recorded ``saga_scheduler_config``, else none (off)."""
    config = override if override is not None else meta.get("saga_scheduler_config")
    admission = (config or {}).get("admission")
    return dict(admission) if admission else None


def compare(
    live: dict[str, Any],
    profile: dict[str, Any],
    *,
    speed_mode: str = "auto",
    saga_scheduler_config: dict[str, Any] | None = None,
    bound: bool = False,
) -> dict[str, Any]:
    """``bound``: also each row's all-schedulers floor on the mean TCT at that row's speed
    (``mean_tct_bound``), and every ``BOUND_CHECK_ROWS`` row simulated at that speed to check it."""
    meta = live["meta"]
    admission = saga_admission(meta, saga_scheduler_config)
    tokens = Tokens()
    stretch = run_stretch(live)
    load_free = "load-free" in str(profile.get("meta", {}).get("timing", ""))
    if speed_mode == "auto":
        speed_mode = "stretch" if stretch and load_free else "probe"
    if speed_mode in ("stretch", "pooled") and not stretch:
        raise SystemExit(f"--speed {speed_mode}: this live run has no worker_sched_s (rerun live.py)")
    speed = 1.0
    if speed_mode == "probe":
        speed = speed_factor(profile, meta, tokens)
    elif speed_mode == "pooled":
        speed = pooled_stretch(live)

    def run_speed(name: str, seed: int) -> float:
        return stretch.get((name, seed), 1.0) if speed_mode == "stretch" else speed

    overhead = profile["request_overhead_s"] * speed
    names = list(dict.fromkeys(a["row"] for a in live["agents"]))
    sim_tct: dict[str, dict[str, float]] = {n: {} for n in names}
    sim_cached: dict[str, list[float]] = {n: [0.0, 0.0] for n in names}
    sim_steals: dict[str, float] = {n: 0.0 for n in names}
    sim_parts: dict[str, dict[str, list[float]]] = {n: {k: [] for k in PARTS} for n in names}
    sim_busy: dict[str, float] = {n: 0.0 for n in names}
    sim_prompt_by_task: dict[str, int] = {}
    bounds: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in names}
    seeds = sorted({a["seed"] for a in live["agents"]})
    for seed in tqdm(seeds, desc="simulating seeds"):
        for name in names:
            s_run = run_speed(name, seed)
            o_run = profile["request_overhead_s"] * s_run
            wl = live_workload(meta, seed, tokens, o_run)
            for t in wl.tasks:
                sim_prompt_by_task[t.task_id] = sum(c.prompt_tokens for c in t.calls)
            res = simulate(wl, sim_row_for(name, admission), profile, meta, seed, s_run)
            # Each call also pays the request overhead once outside the engine: the tool gaps carry it
            # between calls; add the last call's here.
            for rec in res.tasks:
                sim_tct[name][rec.task_id] = rec.tct_s + o_run
                queue = rec.queued_s + rec.held_s
                sim_parts[name]["engine"].append(queue + rec.prefill_s + rec.decode_s)
                sim_parts[name]["queue"].append(queue)
                sim_parts[name]["transit"].append(0.0)  # not modelled: no router or client hop
                sim_parts[name]["tools"].append(rec.tool_s + o_run)
            sim_busy[name] += res.counters["busy_frac"] * res.end_s * meta["workers"] / s_run
            sim_cached[name][0] += res.counters["hit_tokens"]
            sim_cached[name][1] += res.counters["prompt_tokens"]
            sim_steals[name] += res.counters.get("steals", 0.0)
            if bound:
                bounds[name][seed] = bound_check(wl, name, admission, profile, meta, seed, s_run)
                bounds[name][seed]["sim_row_mean_s"] = statistics.fmean(
                    rec.tct_s + o_run for rec in res.tasks
                )
    live_tct: dict[str, dict[str, float]] = {n: {} for n in names}
    live_prompt_by_task: dict[str, int] = {}
    for a in live["agents"]:
        if not a["error"]:
            live_tct[a["row"]][a["workflow_id"]] = a["tct_s"]
            live_prompt_by_task.setdefault(a["workflow_id"], a["prompt_tokens"])
    out: dict[str, Any] = {"rows": {}}
    live_cpu = {
        n: sum(
            sum(v for u, v in run["worker_cpu_s"].items() if u in run["row_workers"])
            for run in live.get("runs", [])
            if run["row"] == n
        )
        for n in names
    }
    rng = np.random.default_rng(0)
    for name in names:
        common = sorted(set(live_tct[name]) & set(sim_tct[name]))
        vs_live = paired_ratio(live_tct[name], live_tct.get("saga", {}), rng)
        vs_sim = paired_ratio(sim_tct[name], sim_tct.get("saga", {}), rng)
        lm = statistics.fmean(live_tct[name][k] for k in common) if common else math.nan
        sm = statistics.fmean(sim_tct[name][k] for k in common) if common else math.nan
        out["rows"][name] = {
            "tasks": len(common),
            "live_tct_mean_s": lm,
            "sim_tct_mean_s": sm,
            "tct_ratio_error": sm / lm - 1 if lm else math.nan,
            "live_cached_token_ratio": sum(a["cached_tokens"] for a in live["agents"] if a["row"] == name)
            / max(1, sum(a["prompt_tokens"] for a in live["agents"] if a["row"] == name)),
            "sim_cached_token_ratio": sim_cached[name][0] / sim_cached[name][1]
            if sim_cached[name][1]
            else math.nan,
            "sim_steals": sim_steals[name],
            "live_parts_s": live_parts(live["agents"], name),
            "sim_parts_s": {k: statistics.fmean(v) if v else math.nan for k, v in sim_parts[name].items()},
            "live_worker_cpu_s": live_cpu.get(name, math.nan),
            "sim_worker_busy_unloaded_s": sim_busy[name],
            "stretch": [stretch[(name, sd)] for sd in seeds if (name, sd) in stretch],
            "per_seed_ratio_error": {
                str(sd): per_seed_error(live_tct[name], sim_tct[name], sd) for sd in seeds
            },
            "live_vs_saga_paired": vs_live,
            "sim_vs_saga_paired": vs_sim,
        }
        if bound:
            out["rows"][name]["bound"] = bound_summary(bounds[name], live_tct[name], seeds)
    ref = out["rows"].get("saga")
    for r in out["rows"].values():
        if ref:
            r["live_x_saga"] = r["live_tct_mean_s"] / ref["live_tct_mean_s"]
            r["sim_x_saga"] = r["sim_tct_mean_s"] / ref["sim_tct_mean_s"]
            r["x_saga_ratio_error"] = r["sim_x_saga"] / r["live_x_saga"] - 1
    live_rank = sorted(names, key=lambda n: out["rows"][n]["live_tct_mean_s"])
    sim_rank = sorted(names, key=lambda n: out["rows"][n]["sim_tct_mean_s"])
    both = sorted(set(live_prompt_by_task) & set(sim_prompt_by_task))
    out["ranking"] = {"live": live_rank, "sim": sim_rank, "same": live_rank == sim_rank}
    out["ranking_vs_saga"] = {n: ranking_vs_saga(r) for n, r in out["rows"].items() if n != "saga"}
    out["prompt_tokens_sim_over_live"] = (
        sum(sim_prompt_by_task[k] for k in both) / sum(live_prompt_by_task[k] for k in both)
        if both
        else math.nan
    )
    out["request_overhead_s"] = overhead
    out["speed_factor"] = speed
    out["speed_mode"] = speed_mode
    out["saga_admission"] = admission
    return out


def bound_check(
    wl: Workload,
    name: str,
    admission: dict[str, Any] | None,
    profile: dict[str, Any],
    meta: dict[str, Any],
    seed: int,
    speed: float,
) -> dict[str, Any]:
    """The bound of one (row, seed) at its speed, and every ``BOUND_CHECK_ROWS`` row's simulated
    mean TCT at that speed (the saga row also with admission control flipped)."""
    b = mean_tct_bound(wl, profile, meta, speed)
    o = profile["request_overhead_s"] * speed
    checks = list(BOUND_CHECK_ROWS)
    flipped = None if admission else {"enabled": True, "shared_prefix_once": True}
    checks.append(
        dataclasses.replace(live_saga_row(flipped), label=f"saga, admission {'on' if flipped else 'off'}")
    )
    sim = {}
    for row in checks:
        res = simulate(wl, row, profile, meta, seed, speed)
        if len(res.tasks) != len(wl.tasks):
            raise RuntimeError(f"{row.label}: {len(res.tasks)} of {len(wl.tasks)} tasks finished")
        sim[row.label] = statistics.fmean(rec.tct_s + o for rec in res.tasks)
    return {
        "speed": speed,
        "priority_schedule_s": priority_schedule_mean_tct(wl, profile, meta, speed),
        "bound_mean_s": b.mean_tct_s,
        "work_only_s": b.work_only_s,
        "path_only_s": b.path_only_s,
        "check_rows_mean_s": sim,
    }


def bound_summary(
    per_seed: dict[int, dict[str, Any]], live_tct: dict[str, float], seeds: list[int]
) -> dict[str, Any]:
    """A row's bound over its seeds (each at the row's own speed), its live and simulated means,
    and the smallest simulated or live mean / bound of any seed (< 1 would break the bound)."""
    live_seed = {
        sd: statistics.fmean(v for k, v in live_tct.items() if k.split("-")[1] == f"s{sd}") for sd in seeds
    }
    ratios = {}
    for sd in seeds:
        b = per_seed[sd]["bound_mean_s"]
        rows = {**per_seed[sd]["check_rows_mean_s"], "this row, simulated": per_seed[sd]["sim_row_mean_s"]}
        ratios[str(sd)] = {
            "live": live_seed[sd] / b,
            **{f"sim {k}": v / b for k, v in rows.items()},
        }
    return {
        "bound_mean_s": statistics.fmean(per_seed[sd]["bound_mean_s"] for sd in seeds),
        "work_only_s": statistics.fmean(per_seed[sd]["work_only_s"] for sd in seeds),
        "path_only_s": statistics.fmean(per_seed[sd]["path_only_s"] for sd in seeds),
        "priority_schedule_s": statistics.fmean(per_seed[sd]["priority_schedule_s"] for sd in seeds),
        "per_seed": {str(sd): per_seed[sd] for sd in seeds},
        "mean_over_bound_per_seed": ratios,
        "min_sim_over_bound": min(v for r in ratios.values() for k, v in r.items() if k.startswith("sim")),
        "min_live_over_bound": min(r["live"] for r in ratios.values()),
    }


def per_seed_error(live: dict[str, float], sim: dict[str, float], seed: int) -> float:
    """Ratio error of one seed's mean TCT (its tasks are ``<kind>-s<seed>-<i>``)."""
    keys = [k for k in live if k in sim and k.split("-")[1] == f"s{seed}"]
    if not keys:
        return math.nan
    return statistics.fmean(sim[k] for k in keys) / statistics.fmean(live[k] for k in keys) - 1


PARTS = ("engine", "queue", "transit", "tools")
"""Per task, mean seconds. engine: the worker's e2e latency of every call (live: SGLang's
``e2e_latency``; sim: queued + held + prefill + decode); queue: its waiting part (live: SGLang's
``queue_time``, which starts when the scheduler takes the request off its socket, after the iteration
running at its arrival; sim: from dispatch to admission, that iteration included, + admission holds);
transit: client latency - worker e2e (router, HTTP; the simulator has none); tools: the rest (tool
gaps and the per-request overhead)."""


def live_parts(agents: list[dict[str, Any]], name: str) -> dict[str, float]:
    """``PARTS`` of the live run's tasks of row ``name``."""
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    for a in agents:
        if a["row"] != name or a["error"] or not a.get("call_times"):
            continue
        times = [t for t in a["call_times"] if t[1] is not None]
        e2e = sum(e for _, e, _ in times)
        client = sum(c for c, _, _ in times)
        parts["engine"].append(e2e)
        parts["queue"].append(sum(q or 0.0 for _, _, q in times))
        parts["transit"].append(client - e2e)
        parts["tools"].append(a["tct_s"] - client)
    return {k: statistics.fmean(v) if v else math.nan for k, v in parts.items()}


def ranking_vs_saga(row: dict[str, Any]) -> dict[str, Any]:
    """Whether the simulator ranks a row against saga as the live run does (paired geomean of
    TCT(row) / TCT(saga)). Decided only where the live run's 95% CI excludes 1; at live parity the
    order is noise, and what can be checked is whether the simulated ratio lies inside the live CI."""
    live, sim = row["live_vs_saga_paired"], row["sim_vs_saga_paired"]
    lo, hi = live["ci_low"], live["ci_high"]
    decided = not (lo <= 1.0 <= hi)
    return {
        "live_decided": decided,
        "same_side": (live["ratio"] > 1.0) == (sim["ratio"] > 1.0) if decided else None,
        "sim_inside_live_ci": lo <= sim["ratio"] <= hi,
    }


def markdown(res: dict[str, Any], live_path: Path, profile_path: Path) -> str:
    lines = [
        f"# Simulator fidelity ({live_path} vs the simulator calibrated with {profile_path})",
        "",
        "Workload bridge check: simulated prompt tokens / live prompt tokens = "
        f"{res['prompt_tokens_sim_over_live']:.3f}; per-request overhead "
        f"{res['request_overhead_s'] * 1e3:.0f} ms (unloaded); speed: "
        + (
            "per run, the live workers' stretch (cpu + run-queue wait) / cpu (column 'stretch')"
            if res.get("speed_mode") == "stretch"
            else f"{res['speed_factor']:.2f} for every run (pooled: the live workers' stretch over all runs)"
            if res.get("speed_mode") == "pooled"
            else f"{res['speed_factor']:.2f} for every run ({res.get('speed_mode', 'probe')}: the live run's "
            "idle probe / the profile's prediction of it; 1.00 = uncorrected)"
        )
        + ".",
        f"Saga rows' admission control: {res.get('saga_admission') or 'off'}.",
        f"Ranking by mean TCT: live {res['ranking']['live']}; sim {res['ranking']['sim']}; "
        f"same: {res['ranking']['same']}.",
        "",
        "| row | tasks | live TCT mean s | sim TCT mean s | ratio error | live x saga (means) | "
        "sim x saga (means) | x-saga ratio error | live cached | sim cached |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["rows"].items():
        lines.append(
            f"| {name} | {r['tasks']} | {r['live_tct_mean_s']:.2f} | {r['sim_tct_mean_s']:.2f} | "
            f"{r['tct_ratio_error']:+.1%} | {r.get('live_x_saga', math.nan):.2f} | "
            f"{r.get('sim_x_saga', math.nan):.2f} | "
            f"{r.get('x_saga_ratio_error', math.nan):+.1%} | {r['live_cached_token_ratio']:.1%} | "
            f"{r['sim_cached_token_ratio']:.1%} |"
        )
    lines += [
        "",
        "Ranking against saga by paired geomean of TCT(row) / TCT(saga) (> 1: saga faster), with 95% "
        "bootstrap CIs. The ranking is decided only where the live CI excludes 1; at live parity the "
        "check is whether the simulated ratio lies inside the live CI.",
        "",
        "| row | live x saga [95% CI] | sim x saga [95% CI] | live decided | same side "
        "| sim inside live CI |",
        "|---|---|---|---|---|---|",
    ]
    for name, rk in res.get("ranking_vs_saga", {}).items():
        lv, sv = res["rows"][name]["live_vs_saga_paired"], res["rows"][name]["sim_vs_saga_paired"]
        lines.append(
            f"| {name} | {lv['ratio']:.2f} [{lv['ci_low']:.2f}, {lv['ci_high']:.2f}] | "
            f"{sv['ratio']:.2f} [{sv['ci_low']:.2f}, {sv['ci_high']:.2f}] | "
            f"{'yes' if rk['live_decided'] else 'no (parity)'} | "
            f"{'-' if rk['same_side'] is None else ('yes' if rk['same_side'] else 'NO')} | "
            f"{'yes' if rk['sim_inside_live_ci'] else 'no'} |"
        )
    lines += [
        "",
        "Where the time goes, per task (mean s, live / sim): engine = the worker's e2e latency of its "
        "calls (sim: queued + held + prefill + decode); queue = its waiting part (live: SGLang's "
        "queue_time, which starts only when the scheduler takes the request off its socket, after the "
        "iteration running at its arrival; sim: from dispatch, that iteration included, + admission "
        "holds): the two are not the same interval, compare 'engine'; transit = client latency - "
        "worker e2e (router, HTTP: not simulated); tools = the rest. worker s = live on-CPU seconds of "
        "the row's workers / simulated busy seconds unloaded (summed over seeds); stretch and the mean "
        "TCT's ratio error per seed.",
        "",
        "| row | engine | queue | transit | tools | worker s | stretch | ratio error per seed |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in res["rows"].items():
        lp, sp = r.get("live_parts_s") or {}, r.get("sim_parts_s") or {}
        cells = " | ".join(f"{lp.get(k, math.nan):.2f} / {sp.get(k, math.nan):.2f}" for k in PARTS)
        seeds = ", ".join(f"{e:+.0%}" for e in r.get("per_seed_ratio_error", {}).values())
        stretch = ", ".join(f"{x:.2f}" for x in r.get("stretch", [])) or "-"
        lines.append(
            f"| {name} | {cells} | {r.get('live_worker_cpu_s', math.nan):.0f} / "
            f"{r.get('sim_worker_busy_unloaded_s', math.nan):.0f} | {stretch} | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--live", type=Path, required=True, help="live.json of benchmarks/live.py")
    p.add_argument(
        "--profile",
        type=Path,
        default=Path("benchmarks/results/cpu_profile_s7.json"),
        help="CPU profile of benchmarks/calibrate_cpu.py (default benchmarks/results/cpu_profile_s7.json, "
        "measured with --prefixes 256,1024,2048; benchmarks/live.py prices the saga router with "
        "cpu_profile.json's linear form, which this one does not change)",
    )
    p.add_argument("--out", type=Path, default=Path("out/sim_fidelity"), help="output directory")
    p.add_argument(
        "--speed",
        choices=("auto", "stretch", "pooled", "probe", "none"),
        default="auto",
        help="machine-load correction: 'stretch' = per (row, seed) the live workers' (cpu + run-queue "
        "wait) / cpu; 'pooled' = one such stretch over all the live run's rows and seeds; 'probe' = one "
        "factor from the live run's idle probe (speed_factor); 'none' = the "
        "profile as measured; 'auto' (default) = stretch when the live run recorded it and the "
        "profile is load-free, else probe",
    )
    p.add_argument(
        "--saga-scheduler-config",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="the saga rows' scheduler config of the live run, as benchmarks/live.py took it; only its "
        "'admission' key is used (default: the live run's recorded saga_scheduler_config, else "
        "admission off)",
    )
    p.add_argument(
        "--bound",
        action="store_true",
        help="also each row's floor on the mean TCT that no scheduler beats under the CPU cost model "
        "(saga_sgl.sim.bounds.fluid_closed_loop_bound, an oracle), at that row's speed, checked "
        "against every simulated baseline, SAGA and oracle row at that speed (adds ~1 s per row and seed)",
    )
    return p


def bound_markdown(res: dict[str, Any]) -> str:
    """The ``--bound`` section: per row, its floor, live and simulated means over it."""
    lines = [
        "",
        "All-schedulers floor on the mean TCT (an oracle; saga_sgl.sim.bounds.fluid_closed_loop_bound), "
        "per row at that row's speed: live / floor = how much faster than this row any scheduler could "
        "be on the same machine load; min sim / floor over every simulated row (baselines, SAGA, Belady, "
        "infinite KV) and seed, < 1 would break the floor.",
        "",
        "| row | floor s | work-only s | path-only s | live mean s | live / floor | sim / floor "
        "| best sim row / floor | priority schedule / floor | min live / floor per seed | min sim / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["rows"].items():
        b = r.get("bound")
        if not b:
            continue
        fl = b["bound_mean_s"]
        best = statistics.fmean(min(x["check_rows_mean_s"].values()) for x in b["per_seed"].values())
        lines.append(
            f"| {name} | {fl:.2f} | {b['work_only_s']:.2f} | {b['path_only_s']:.2f} | "
            f"{r['live_tct_mean_s']:.2f} | {r['live_tct_mean_s'] / fl:.2f} | "
            f"{r['sim_tct_mean_s'] / fl:.2f} | "
            f"{best / fl:.2f} | {b['priority_schedule_s'] / fl:.2f} | {b['min_live_over_bound']:.2f} | "
            f"{b['min_sim_over_bound']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    live = json.loads(args.live.read_text())
    profile = json.loads(args.profile.read_text())
    for key in ("hidden_size", "layers"):
        if live["meta"][key] != profile["meta"][key]:
            raise SystemExit(f"{key}: live run {live['meta'][key]} but profile {profile['meta'][key]}")
    res = compare(
        live,
        profile,
        speed_mode=args.speed,
        saga_scheduler_config=args.saga_scheduler_config,
        bound=args.bound,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim_fidelity.json").write_text(json.dumps(res, indent=2))
    md = markdown(res, args.live, args.profile) + (bound_markdown(res) if args.bound else "")
    (args.out / "sim_fidelity.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
