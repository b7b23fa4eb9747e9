"""Live benchmark: the same SGLang DSL agent workload through real routers in front of real SGLang CPU
workers, one run, several seeds.

Rows (each a router + worker eviction policy; every row replays the identical agents per seed):

* ``sglang-router cache_aware + LRU``: sglang-router 0.3.2 (pip) ``--policy cache_aware``, stock SGLang
  workers (``--radix-eviction-policy lru``) -- the production baseline;
* ``sglang-router round_robin + LRU``;
* ``saga``: the saga router (``--policy saga``: workflow scheduler) + workers with the saga plugin;
* ``saga-router saga + LRU``: the saga router's full scheduling on stock LRU workers (what the plugin's
  eviction adds is the difference to ``saga``);
* ``saga-router <baseline> + LRU``: the saga router running each of its baseline policies;
* ``saga, GPU-priced`` (not with --quick): ``saga`` whose scheduler prices calls with the router's
  default (GPU) cost model instead of the CPU workers' calibration. Every other saga-policy row is
  given the calibration (``--cpu-cost-profile``, ``benchmarks/calibrate_cpu.py``), as a deployment
  configures its router with the cost profile of its hardware: it prices pre-fill until the router
  has measured the workers' rate, and every decode;
* ``saga, events-only index``: ``saga`` with the router's prefix index fed by the workers' KV events
  alone (``--no-routed-overlay``), without the prompts routed since a worker's last publish: what
  the events' lag costs. Every saga-router row reports how many of its placements' prefix lookups
  found the events behind the router (stale lookups, from the router's ``/server_info``).

The workload is ``saga_sgl.agents.run_agents`` (coding, browser and tree-of-thought DSL agents, shapes
and tool latencies drawn from the workload model, tool gaps really slept, scaled by --time-scale).

Sizing, so that prefill cost and eviction pressure are real on a CPU: the workers serve a
dummy-weight Llama that is wider and deeper than the launcher's tiny one (--hidden-size, --layers;
the tiny model's 512-id tokenizer), so a prefill of a few hundred tokens costs tens of ms; the agents'
token counts are scaled (--token-scale) so that one agent's context reaches several hundred to ~2000
tokens; and each worker's KV pool (--kv-tokens) holds only a few agents' contexts while --concurrency
agents run at once, so eviction decides what is recomputed.

Comparable rows: one worker set per eviction policy (stock SGLang LRU workers; plugin workers) is
started once and both sets stay up for the whole run, so every row sees the same machine. Rows are
interleaved: for each seed every row runs once, in an order rotated by the seed (no row always goes
first), and each row starts with every worker's radix cache flushed (``/flush_cache``) and a fresh
router. The control row ``saga-router cache_aware + LRU`` is our router running sglang-router's
policy on the same LRU workers: it separates what the router implementation costs from what the
policy and the plugin buy.

Attribution (second table): what each row's router cost and made the workers do, measured from
outside the processes the same way for sglang-router and ours (``benchmarks/_live_meters.py``):
router CPU seconds, worker CPU seconds (the row's set and the idle set), the HTTP requests each worker
logged per endpoint, the tokens it prefilled, per call the time spent outside the worker (client
latency - SGLang's ``meta_info.e2e_latency``) and the worker's queue time, workflows that changed
worker (from the rids in the workers' request logs), own-context misses, steals with their rebuilt
tokens and preemptions (from the saga router's log).

Agent kinds default to coding and browser (the tree-of-thought agent forks, and the simulator's task
model is a chain of calls, so ``benchmarks/sim_fidelity.py`` could not replay it). Writes JSON
(with every call's token counts, for the fidelity check), markdown and a PNG to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cluster_stats import geomean, paired_ratio
from benchmarks._live_meters import (
    LogCursor,
    busiest_thread_delta,
    group_cpu_s,
    group_sched_s,
    router_actions,
    thread_sched_s,
    worker_activity,
)
from benchmarks._machine import cpu_model
from saga_sgl.agents.common import AgentScale
from saga_sgl.agents.workload import run_agents
from saga_sgl.cluster.processes import (
    LocalCluster,
    RouterSpec,
    free_port,
    http_json,
    plugin_worker_spec,
    start_router,
)
from saga_sgl.cluster.report import recomputed_tokens
from saga_sgl.frontend import SagaEndpoint
from saga_sgl.local_workers import TINY_MODEL_DIR, start_worker

log = logging.getLogger("live")

OURS = "saga"
EVENTS_ONLY = "saga, events-only index"
GPU_PRICED = "saga, GPU-priced"
DEFAULT_CPU_PROFILE = Path(__file__).resolve().parent / "results" / "cpu_profile.json"
REQUEST_LOG_ARGS = ("--log-requests", "--log-requests-level", "0", "--log-requests-format", "json")


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    router: str
    """'sglang' (sglang-router 0.3.2) or 'saga'."""
    policy: str
    eviction: str
    router_flags: tuple[str, ...] = ()
    """Extra flags of the saga router (an ablation)."""


def rows(quick: bool, cpu_priced: bool = False) -> list[Row]:
    out = [
        Row("sglang-router cache_aware + LRU", "sglang", "cache_aware", "lru"),
        Row("sglang-router round_robin + LRU", "sglang", "round_robin", "lru"),
        Row(OURS, "saga", "saga", "saga"),
        # Ablation: the saga router's scheduling on stock LRU workers (no plugin eviction).
        Row("saga-router saga + LRU", "saga", "saga", "lru"),
    ]
    baselines = ["cache_aware"] if quick else ["cache_aware", "round_robin", "consistent_hash"]
    out += [Row(f"saga-router {b} + LRU", "saga", b, "lru") for b in baselines]
    if not quick:
        out.append(Row(EVENTS_ONLY, "saga", "saga", "saga", ("--no-routed-overlay",)))
    if cpu_priced and not quick:
        out.append(Row(GPU_PRICED, "saga", "saga", "saga"))
    return out


def cpu_cost_model(profile_path: Path) -> dict[str, float]:
    """The scheduler's ``linear`` cost-model coefficients from a CPU profile (``calibrate_cpu.py``'s
    fit): pre-fill = k0 + k1 q + c_attn q (P + q/2); a decode step = c(1) + a x context."""
    profile = json.loads(profile_path.read_text())
    fit = profile["fit"]
    return {
        "prefill_fixed_s": fit["k0_s"],
        "prefill_per_token_s": fit["k1_s"],
        "prefill_attn_s_per_token2": profile["prefill_attn_s_per_token2"],
        "decode_step_s": fit["d0_s"] + fit["d1_s"],
        "decode_kv_read_s_per_token": profile["decode_attn_s_per_kv_token"],
    }


def model_dir(out: Path, hidden: int, layers: int) -> Path:
    """The tiny model's files (tokenizer included) with a wider/deeper config (dummy weights)."""
    dst = out / f"llama-{layers}x{hidden}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(TINY_MODEL_DIR, dst)
    cfg = json.loads((dst / "config.json").read_text())
    heads = max(4, hidden // 64)
    cfg.update(
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
    )
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: 1 seed, 8 agents, the saga router's cache_aware as its only baseline",
    )
    p.add_argument("--seeds", type=int, default=3, help="workload seeds (default 3; --quick: 1)")
    p.add_argument("--agents", type=int, default=16, help="agents per seed (default 16; --quick: 8)")
    p.add_argument("--concurrency", type=int, default=8, help="agents running at once (default 8)")
    p.add_argument("--workers", type=int, default=2, help="SGLang CPU workers per set (default 2)")
    p.add_argument(
        "--kv-tokens",
        type=int,
        default=3072,
        help="KV pool of each worker in tokens (default 3072: a few agents' contexts)",
    )
    p.add_argument("--hidden-size", type=int, default=256, help="model width (default 256)")
    p.add_argument("--layers", type=int, default=4, help="model depth (default 4)")
    p.add_argument(
        "--token-scale",
        type=float,
        default=0.08,
        help="multiplies the workload model's token counts (default 0.08: contexts of "
        "several hundred to ~2000 tokens)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        help="multiplies the workload model's tool latencies (default 0.1)",
    )
    p.add_argument(
        "--unscaled-priors",
        action="store_true",
        help="give the saga router paper Table 1's tool-latency priors even though the tools sleep "
        "only --time-scale of their drawn latency (default: the router's priors are scaled by "
        "--time-scale too, as a deployment's router knows its own tools' latencies)",
    )
    p.add_argument(
        "--saga-scheduler-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra workflow-scheduler settings for the rows running the saga policy (an ablation), "
        'e.g. \'{"policy_config": {"placement": {"locality_weight": 0.8}}}\'; said in the title. '
        'Those rows run with admission control on; \'{"admission": {"enabled": false}}\' turns it off',
    )
    p.add_argument(
        "--plugin-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="settings of the plugin workers' eviction policy (an ablation), e.g. "
        '\'{"decay_s": 6.0}\'; said in the title',
    )
    p.add_argument(
        "--cpu-cost-profile",
        type=Path,
        default=DEFAULT_CPU_PROFILE,
        metavar="CPU_PROFILE_JSON",
        help="the CPU workers' cost calibration (benchmarks/calibrate_cpu.py) the saga-policy rows' "
        "scheduler prices calls with, as a deployment configures its router for its hardware "
        "(default benchmarks/results/cpu_profile.json; 'none': the router's GPU default for every "
        "row); the row 'saga, GPU-priced' keeps the GPU default as an ablation",
    )
    p.add_argument("--max-steps", type=int, default=8, help="cap on LLM calls per agent loop (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="cap on tokens per generation (default 16)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of each worker (default 1: both worker sets stay up, the active one's "
        "two workers get a core each; more threads than cores make torch's spinning threads stall "
        "each other under load)",
    )
    p.add_argument("--tenants", type=int, default=2, help="tenants (default 2)")
    p.add_argument(
        "--kinds",
        default="coding,browser",
        help="agent kinds, comma-separated, of coding/browser/tot (default coding,browser: the chains "
        "the simulator can replay)",
    )
    p.add_argument(
        "--rows",
        default=None,
        help="row names to run, comma-separated, or semicolon-separated when a name has a comma "
        "(default: all)",
    )
    p.add_argument("--out", type=Path, default=Path("out/live"), help="output directory (default out/live)")
    p.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="LIVE_JSON",
        help="run nothing: rebuild live.md and live.png in --out from an earlier run's live.json",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def flush(urls: list[str]) -> None:
    """Empty every worker's radix cache (SGLang answers in plain text) so rows start alike."""
    for url in urls:
        req = urllib.request.Request(url + "/flush_cache", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{url}/flush_cache answered {resp.status}")


def idle_call_s(url: str, scale: AgentScale) -> float:
    """Median latency of one uncached call of a typical prompt on an idle worker (for the SLO)."""
    from saga_sgl.agents.common import text_of

    lat = []
    for i in range(3):
        body = {
            "text": text_of(f"idle-probe-{i}", scale.tokens(8000)),
            "sampling_params": {"max_new_tokens": scale.max_new_tokens, "temperature": 0, "ignore_eos": True},
        }
        t0 = time.monotonic()
        http_json("POST", url + "/generate", body, timeout_s=120)
        lat.append(time.monotonic() - t0)
    return statistics.median(lat)


LIVE_ADMISSION = {"enabled": True, "shared_prefix_once": True}
"""The saga-policy rows' admission control (``--saga-scheduler-config`` can replace it): hold a new
workflow while no worker has room for its predicted KV footprint, a shared prompt head counted once
per worker (the paper's Hybrid). At this benchmark's sizing it made saga 1.18-1.29x faster than
sglang-router cache_aware where without it saga was at parity (``results/live_s7_analysis.md``).
Not the router's default (its ``--scheduler-config`` turns it on): admission trades per-tenant SLO
and p90 for throughput (the analysis says by how much), and with one small worker it runs one
workflow at a time; an operator chooses that knowingly."""


def saga_router_args(row: Row, args: argparse.Namespace) -> tuple[str, ...]:
    """``--scheduler-config`` of a saga-router row: the scaled tool-latency priors, and for the
    ``saga`` policy rows admission control (``LIVE_ADMISSION``) and whatever --saga-scheduler-config
    adds."""
    if row.router == "sglang":
        return ()
    config: dict[str, Any] = {}
    if not args.unscaled_priors:
        config["tool_latency"] = {"prior_scale": args.time_scale}
    if row.policy == "saga":
        config["admission"] = dict(LIVE_ADMISSION)
        config.update(args.saga_scheduler_config)
    if row.policy == "saga" and args.cpu_cost_profile is not None and row.name != GPU_PRICED:
        config["cost_model"] = cpu_cost_model(args.cpu_cost_profile)
    return (*(("--scheduler-config", json.dumps(config)) if config else ()), *row.router_flags)


def run_row(
    row: Row,
    cluster: LocalCluster,
    seed: int,
    args: argparse.Namespace,
    scale: AgentScale,
    model: Path,
    log_dir: Path,
    every_worker: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row: its agents' records and the row's attribution (see ``attribution``)."""
    urls = [w.url for w in cluster.workers]
    flush(urls)
    cursors = {url: LogCursor(w.log_path) for url, w in every_worker.items()}
    spec = RouterSpec(
        port=free_port(),
        policy=row.policy,
        worker_urls=tuple(urls),
        model_path=str(model),
        sglang_router=row.router == "sglang",
        extra_args=saga_router_args(row, args),
        log_level="info",
    )
    router = start_router(spec, log_dir)
    router_log = LogCursor(router.log_path)
    router_log.offset = 0
    try:
        router.wait_ready(len(urls), timeout_s=90)
        cpu0 = {url: group_cpu_s(w.process.pid) for url, w in every_worker.items()}
        sched0 = {url: group_sched_s(every_worker[url].process.pid) for url in urls}
        threads0 = {url: thread_sched_s(every_worker[url].process.pid) for url in urls}
        router_cpu0 = group_cpu_s(router.process.pid)
        t0 = time.monotonic()
        backend = SagaEndpoint(router.url)
        results = run_agents(
            router.url,
            args.agents,
            seed=seed,
            kinds=args.kinds,
            tenants=args.tenants,
            concurrency=args.concurrency,
            scale=scale,
            backend=backend,
            progress=False,
        )
        wall = time.monotonic() - t0
        router_cpu = group_cpu_s(router.process.pid) - router_cpu0
        worker_cpu = {url: group_cpu_s(w.process.pid) - cpu0[url] for url, w in every_worker.items()}
        sched = [
            [a - b for a, b in zip(group_sched_s(every_worker[url].process.pid), sched0[url], strict=True)]
            for url in urls
        ]
        engine = [busiest_thread_delta(threads0[url], thread_sched_s(every_worker[url].process.pid))
                  for url in urls]
        out = []
        for r in results:
            rec = backend.recorded(r.workflow_id)
            tool_s = sum(n.tool_latency_s or 0.0 for n in rec.nodes.values()) if rec else 0.0
            out.append(
                {
                    "row": row.name,
                    "seed": seed,
                    "workflow_id": r.workflow_id,
                    "kind": r.kind,
                    "tenant": r.tenant_id,
                    "tct_s": r.duration_s,
                    "calls": r.calls,
                    "prompt_tokens": r.prompt_tokens,
                    "cached_tokens": r.cached_tokens,
                    "recomputed_tokens": recomputed_tokens(rec),
                    "tool_s": tool_s,
                    "error": r.error,
                    # per call, in call order: (prompt, output, cached) tokens as the worker counted them
                    "call_tokens": [
                        [n.prompt_tokens, n.output_tokens, n.cached_tokens] for n in rec.nodes.values()
                    ]
                    if rec
                    else [],
                    # per call: (client latency, worker e2e latency, worker queue time) in seconds
                    "call_times": [
                        [
                            (n.finished_at_s or n.started_at_s) - n.started_at_s,
                            n.worker_e2e_s,
                            n.worker_queue_s,
                        ]
                        for n in rec.nodes.values()
                    ]
                    if rec
                    else [],
                }
            )
        cluster.check()
        lag = prefix_lag(router.url) if row.router == "saga" else None
        activity = {url: worker_activity(c.read_new()) for url, c in cursors.items()}
        attribution = {
            "wall_s": wall,
            "router_cpu_s": router_cpu,
            "worker_cpu_s": worker_cpu,
            # the row's workers: seconds on a core, seconds runnable but waiting for one (other load)
            "worker_sched_s": {
                "cpu": sum(c for c, _ in sched),
                "wait": sum(w for _, w in sched),
                "engine_cpu": sum(c for c, _ in engine),
                "engine_wait": sum(w for _, w in engine),
            },
            "row_workers": urls,
            "worker_requests": {url: dict(a.requests) for url, a in activity.items()},
            "worker_prefill": {
                url: {
                    "batches": a.prefill_batches,
                    "new_tokens": a.prefill_new_tokens,
                    "cached_tokens": a.prefill_cached_tokens,
                }
                for url, a in activity.items()
            },
            "worker_switches": worker_switches({url: a.rids for url, a in activity.items()}, out),
            "first_worker": first_workers({url: a.rids for url, a in activity.items()}),
            "router_actions": dataclasses.asdict(router_actions(router_log.read_new())),
            "prefix_lag": lag,
        }
        return out, attribution
    finally:
        router.stop()


PLUGIN_SERIES = ("saga_worker_evicted_tokens_total", "saga_worker_ttl_expiries_total")


def plugin_eviction(ports: dict[str, int], cluster: LocalCluster) -> dict[str, float]:
    """The plugin workers' eviction counters summed over the row's workers (evicted tokens by the tier
    of their key: ``protected`` = a live TTL was honoured and still lost; TTL expiries), from each
    plugin's metrics port; {} for stock workers."""
    out: dict[str, float] = {}
    for w in cluster.workers:
        port = ports.get(w.url)
        if port is None:
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except OSError as exc:  # the row's other figures stand without it
            log.warning("plugin metrics of %s unreadable: %s", w.url, exc)
            continue
        for line in text.splitlines():
            if line.startswith(PLUGIN_SERIES):
                name, _, value = line.rpartition(" ")
                out[name] = out.get(name, 0.0) + float(value)
    return out


def prefix_lag(router_url: str) -> dict[str, Any] | None:
    """The saga router's count of prefix lookups that found a worker's KV events behind what it had
    routed there (``router/routed_overlay.py``); None from a router that does not report it."""
    try:
        info = http_json("GET", router_url + "/server_info", None, timeout_s=10)
    except Exception as exc:  # the row's figures stand without it
        log.warning("router %s: no prefix-lag figures (%s)", router_url, exc)
        return None
    lag = info.get("prefix_lag") if isinstance(info, dict) else None
    return lag if isinstance(lag, dict) else None


def first_workers(rids_by_worker: dict[str, list[str]]) -> dict[str, str]:
    """workflow -> the worker its first call (step 0) went to: which agents shared a worker."""
    return {rid[:-2]: url for url, rids in rids_by_worker.items() for rid in rids if rid.endswith(":0")}


def worker_switches(rids_by_worker: dict[str, list[str]], agents: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a workflow's call went to another worker than its previous call (from the rids each
    worker logged: the same count for every router). Pre-fills and health checks are not calls."""
    where: dict[str, dict[int, str]] = defaultdict(dict)
    for url, rids in rids_by_worker.items():
        for rid in rids:
            wf, _, step = rid.rpartition(":")
            if wf and step.isdigit():
                where[wf][int(step)] = url
    switches = 0
    calls = 0
    moved = 0
    for a in agents:
        steps = where.get(a["workflow_id"], {})
        seq = [steps[k] for k in sorted(steps)]
        calls += len(seq)
        n = sum(1 for x, y in itertools.pairwise(seq) if x != y)
        switches += n
        moved += n > 0
    return {"calls_seen": calls, "switches": switches, "workflows_moved": moved, "workflows": len(agents)}


def aggregate(records: list[dict[str, Any]], names: list[str], idle_s: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_row[r["row"]].append(r)
    ours = {(r["seed"], r["workflow_id"]): r["tct_s"] for r in by_row.get(OURS, []) if not r["error"]}
    table: dict[str, Any] = {}
    for name in names:
        rs = by_row.get(name, [])
        ok = [r for r in rs if not r["error"]]
        tct = {(r["seed"], r["workflow_id"]): r["tct_s"] for r in ok}
        prompt = sum(r["prompt_tokens"] for r in rs)
        slo: dict[str, list[bool]] = defaultdict(list)
        for r in rs:  # deadline 1.5 x isolated TCT, isolated ~ tool time + calls x idle call latency
            met = not r["error"] and r["tct_s"] <= 1.5 * (r["tool_s"] + r["calls"] * idle_s)
            slo[r["tenant"]].append(met)
        pr = paired_ratio({str(k): v for k, v in tct.items()}, {str(k): v for k, v in ours.items()}, rng)
        common = sorted(set(tct) & set(ours))
        table[name] = {
            "agents": len(rs),
            "failed": len(rs) - len(ok),
            "tct_mean_s": statistics.fmean(tct.values()) if tct else math.nan,
            "tct_geomean_s": geomean(list(tct.values())),
            "tct_p90_s": float(np.percentile(list(tct.values()), 90)) if tct else math.nan,
            "vs_saga_paired_geomean": pr["ratio"],
            "vs_saga_ci": [pr["ci_low"], pr["ci_high"]],
            "vs_saga_ratio_of_means": (sum(tct[k] for k in common) / sum(ours[k] for k in common))
            if common
            else math.nan,
            "cached_token_ratio": sum(r["cached_tokens"] for r in rs) / prompt if prompt else math.nan,
            "recomputed_tokens": sum(r["recomputed_tokens"] for r in rs),
            "prompt_tokens": prompt,
            "slo_by_tenant": {t: sum(v) / len(v) for t, v in sorted(slo.items())},
        }
    return table


def own_context_missed(call_tokens: list[list[int]]) -> tuple[int, int]:
    """(tokens, calls): of each call's previous context (prompt + output - 1, what SGLang cached),
    what the next call of the same workflow did not find cached, summed over calls missing > 50 (the
    few tokens at the boundary, re-tokenized text, always miss). Eviction during the tool gap and a
    move to another worker show here; the first call's misses (shared prefixes) do not."""
    tokens = calls = 0
    for (p0, o0, _), (_, _, c1) in itertools.pairwise(call_tokens):
        missed = max(0, p0 + o0 - 1 - c1)
        if missed > 50:
            tokens += missed
            calls += 1
    return tokens, calls


def time_breakdown(records: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """Per row, the mean task split into where its time went (seconds): its tools, its calls'
    waits in a worker's queue, their time in the worker's engine (pre-fill and decode, shared with
    the other calls in the batch), their time outside the worker (router, admission holds,
    transit), and the rest (the agent's own code). And its uncached prompt tokens split into the new
    ones (not in the task's previous context: the shared head on a first call, the tool result and
    new turn later) and the re-pre-filled ones (context the task had, evicted in a tool gap or left
    behind by a move): only the latter can any placement, eviction or admission policy save."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        ok = [r for r in records if r["row"] == name and not r["error"] and r.get("call_times")]
        if not ok:
            continue
        acc: Counter[str] = Counter()
        for r in ok:
            times = [(c, e or 0.0, q or 0.0) for c, e, q in r["call_times"]]
            acc["tct"] += r["tct_s"]
            acc["tool"] += r["tool_s"]
            acc["queue"] += sum(q for _, _, q in times)
            acc["engine"] += sum(e - q for _, e, q in times)
            acc["outside"] += sum(c - e for c, e, _ in times)
            acc["rest"] += r["tct_s"] - r["tool_s"] - sum(c for c, _, _ in times)
            prev = 0
            for i, (p, o, cached) in enumerate(r.get("call_tokens", [])):
                uncached = max(0, p - cached)
                new = uncached if i == 0 else min(uncached, max(0, p - prev))
                acc["new_tokens"] += new
                acc["repre_tokens"] += uncached - new
                prev = p + o
        out[name] = {k: v / len(ok) for k, v in acc.items()} | {"tasks": float(len(ok))}
    return out


def breakdown_markdown(parts: dict[str, dict[str, float]]) -> str:
    lines = [
        "",
        "Where a task's time goes, mean per task (s): tools; its calls' wait in a worker's queue; their "
        "time in the worker's engine (pre-fill and decode, sharing the batch); outside the worker "
        "(router, admission holds, transit); the rest (agent code). Uncached prompt tokens per task: "
        "new (not in the task's previous context) + re-pre-filled (context it had: evicted or moved; "
        "the only part a placement, eviction or admission policy can save).",
        "",
        "| row | TCT | tools | worker queue | worker engine | outside worker | rest | uncached tokens: new + "
        "re-pre-filled |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, b in parts.items():
        lines.append(
            f"| {name} | {b['tct']:.2f} | {b['tool']:.2f} | {b['queue']:.2f} | {b['engine']:.2f} | "
            f"{b['outside']:.2f} | {b['rest']:.2f} | {b['new_tokens']:.0f} + {b['repre_tokens']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def summarize_attribution(
    attributions: list[dict[str, Any]], records: list[dict[str, Any]], names: list[str]
) -> dict[str, Any]:
    """Per row, summed over seeds: what the router cost and made the workers do, and per call how
    long the call spent outside the worker (client latency - the worker's e2e latency)."""
    out: dict[str, Any] = {}
    for name in names:
        rows = [a for a in attributions if a["row"] == name]
        if not rows:
            continue
        requests: Counter[str] = Counter()
        prefilled = 0
        row_cpu = other_cpu = 0.0
        for a in rows:
            for url in a["row_workers"]:
                requests.update(a["worker_requests"].get(url, {}))
                prefilled += a["worker_prefill"].get(url, {}).get("new_tokens", 0)
            row_cpu += sum(v for u, v in a["worker_cpu_s"].items() if u in a["row_workers"])
            other_cpu += sum(v for u, v in a["worker_cpu_s"].items() if u not in a["row_workers"])
        times = [t for r in records if r["row"] == name for t in r.get("call_times", []) if t[1] is not None]
        outside = [c - e for c, e, _ in times]
        queue = [q for _, _, q in times if q is not None]
        steals = [s for a in rows for s in a["router_actions"]["steals"]]
        missed = [own_context_missed(r.get("call_tokens", [])) for r in records if r["row"] == name]
        out[name] = {
            "runs": len(rows),
            "wall_s": sum(a["wall_s"] for a in rows),
            "router_cpu_s": sum(a["router_cpu_s"] for a in rows),
            "row_worker_cpu_s": row_cpu,
            "other_worker_cpu_s": other_cpu,
            "worker_requests": dict(requests.most_common()),
            "worker_prefilled_tokens": prefilled,
            "own_context_missed_tokens": sum(t for t, _ in missed),
            "own_context_missed_calls": sum(c for _, c in missed),
            "calls_timed": len(times),
            "outside_worker_median_ms": 1e3 * statistics.median(outside) if outside else math.nan,
            "outside_worker_mean_ms": 1e3 * statistics.fmean(outside) if outside else math.nan,
            "worker_e2e_mean_s": statistics.fmean(e for _, e, _ in times) if times else math.nan,
            "worker_queue_mean_s": statistics.fmean(queue) if queue else math.nan,
            "workflows_moved": sum(a["worker_switches"]["workflows_moved"] for a in rows),
            "worker_switches": sum(a["worker_switches"]["switches"] for a in rows),
            "workflows": sum(a["worker_switches"]["workflows"] for a in rows),
            "steals": len(steals),
            "steal_rebuild_tokens": sum(s["rebuild_tokens"] for s in steals),
            "prefills_done": sum(a["router_actions"]["prefills_done"] for a in rows),
            "admission_holds": sum(a["router_actions"]["admission_holds"] for a in rows),
            "preemptions_applied": sum(a["router_actions"]["preemptions"].get("applied", 0) for a in rows),
            "worker_sched_cpu_s": sum((a.get("worker_sched_s") or {}).get("cpu", 0.0) for a in rows),
            "worker_sched_wait_s": sum((a.get("worker_sched_s") or {}).get("wait", 0.0) for a in rows),
            "engine_sched_cpu_s": sum((a.get("worker_sched_s") or {}).get("engine_cpu", 0.0) for a in rows),
            "engine_sched_wait_s": sum((a.get("worker_sched_s") or {}).get("engine_wait", 0.0) for a in rows),
            "prefix_lookups": sum((a.get("prefix_lag") or {}).get("lookups", 0) for a in rows),
            "prefix_stale_lookups": sum((a.get("prefix_lag") or {}).get("stale_lookups", 0) for a in rows),
            "prefix_stale_tokens": sum((a.get("prefix_lag") or {}).get("stale_tokens", 0) for a in rows),
        }
    return out


def attribution_markdown(att: dict[str, Any]) -> str:
    lines = [
        "",
        "Attribution, summed over the seeds (measured from outside every process, the same way for both "
        "routers): router CPU = its process group's CPU seconds while the agents ran; worker CPU = the "
        "row's two workers (the other, idle set in brackets); requests = HTTP requests the row's workers "
        "logged; prefilled = tokens the workers computed in prefill (calls, steal pre-fills, health-check "
        "generations); own context missed = tokens of a workflow's previous context that its next call "
        "did not find cached (calls missing > 50 tokens; evicted in the tool gap, or moved); outside "
        "worker = client latency - the worker's own e2e latency per call (router and transit); "
        "moved = workflows whose calls ran on more than one worker (switches); stale lookups = the saga "
        "router's placement lookups in which a worker's KV events showed less of the prompt than the "
        "router had routed there since their last publish (tokens hidden by the lag; '-': sglang-router "
        "or a baseline policy that does not look); stretch = (on-CPU + runnable-but-waiting) / on-CPU "
        "seconds of each worker's busiest thread, its scheduler (all its threads' in brackets; "
        "schedstat): how much the machine's other load slowed the engine.",
        "",
        "| row | wall s | router CPU s | worker CPU s | /generate | /v1/loads | /health | other requests | "
        "prefilled tokens | own context missed tokens (calls) | outside worker median / mean ms | "
        "worker queue mean s | worker e2e mean s | "
        "moved (switches) | steals (rebuilt tokens) | preemptions applied | stale lookups / lookups "
        "(tokens hidden) | stretch |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, a in att.items():
        req = dict(a["worker_requests"])
        gen = req.pop("POST /generate", 0)
        loads = req.pop("GET /v1/loads", 0)
        health = req.pop("GET /health", 0)
        req.pop("POST /flush_cache", None)
        other = ", ".join(f"{k} {v}" for k, v in req.items()) or "-"
        lines.append(
            f"| {name} | {a['wall_s']:.0f} | {a['router_cpu_s']:.1f} | {a['row_worker_cpu_s']:.0f} "
            f"({a['other_worker_cpu_s']:.0f}) | {gen} | {loads} | {health} | {other} | "
            f"{a['worker_prefilled_tokens']} | {a['own_context_missed_tokens']} "
            f"({a['own_context_missed_calls']}) | {a['outside_worker_median_ms']:.1f} / "
            f"{a['outside_worker_mean_ms']:.1f} | {a['worker_queue_mean_s']:.2f} | "
            f"{a['worker_e2e_mean_s']:.2f} | {a['workflows_moved']}/{a['workflows']} "
            f"({a['worker_switches']}) | {a['steals']} ({a['steal_rebuild_tokens']}) | "
            f"{a['preemptions_applied']} | {stale_cell(a)} | {stretch_cell(a)} |"
        )
    return "\n".join(lines) + "\n"


def stretch_cell(a: dict[str, Any]) -> str:
    """Engine thread's stretch (all threads' in brackets); '-' where the run predates it."""
    cpu = a.get("worker_sched_cpu_s") or 0.0
    if cpu <= 0:
        return "-"
    group = f"{(cpu + a['worker_sched_wait_s']) / cpu:.2f}"
    ecpu = a.get("engine_sched_cpu_s") or 0.0
    return f"{(ecpu + a['engine_sched_wait_s']) / ecpu:.2f} ({group})" if ecpu > 0 else f"- ({group})"


def stale_cell(a: dict[str, Any]) -> str:
    if not a.get("prefix_lookups"):
        return "-"
    return (f"{a['prefix_stale_lookups']} / {a['prefix_lookups']} "
            f"({a['prefix_stale_lookups'] / a['prefix_lookups']:.0%}; {a['prefix_stale_tokens']})")


def markdown(table: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# Live benchmark ({meta['machine']}; {meta['command']})",
        "",
        f"{meta['workers']} SGLang CPU workers per row, dummy Llama {meta['layers']}x{meta['hidden_size']}, "
        f"KV {meta['kv_tokens']} tokens each; {meta['agents']} agents x {len(meta['seeds'])} seed(s), "
        f"{meta['concurrency']} at once; token scale {meta['token_scale']}, tool time scale "
        f"{meta['time_scale']}; idle call {meta['idle_call_s']:.3f} s.",
        "x saga = TCT(row) / TCT(saga) per agent: > 1 means saga was faster. SLO: TCT <= 1.5 x "
        "(tool time + calls x idle call latency), per tenant.",
        "",
        "| row | agents (failed) | TCT mean s | TCT p90 s | x saga paired geomean [95% CI] | x saga ratio "
        "of means | cached-token ratio | recomputed tokens | SLO met per tenant |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, t in table.items():
        slo = ", ".join(f"{k} {v:.0%}" for k, v in t["slo_by_tenant"].items())
        lines.append(
            f"| {name} | {t['agents']} ({t['failed']}) | {t['tct_mean_s']:.2f} | {t['tct_p90_s']:.2f} | "
            f"{t['vs_saga_paired_geomean']:.2f} [{t['vs_saga_ci'][0]:.2f}, {t['vs_saga_ci'][1]:.2f}] | "
            f"{t['vs_saga_ratio_of_means']:.2f} | {t['cached_token_ratio']:.1%} | {t['recomputed_tokens']} | "
            f"{slo} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].barh(names, [table[n]["tct_mean_s"] for n in names], color="tab:blue")
    axes[0].set_xlabel("mean task completion time (s)")
    axes[1].barh(names, [table[n]["cached_token_ratio"] for n in names], color="tab:green")
    axes[1].set_xlabel("cached-token ratio")
    axes[1].set_yticklabels([])
    for ax in axes:
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_only(path: Path, out: Path) -> int:
    """Re-render an earlier run (its measurements unchanged) with this version's tables."""
    data = json.loads(path.read_text())
    meta, records, runs = data["meta"], data["agents"], data.get("runs", [])
    names = list(data["table"])
    table = aggregate(records, names, meta["idle_call_s"])
    attribution = summarize_attribution(runs, records, names)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(table, meta) + (attribution_markdown(attribution) if attribution else "")
    md += breakdown_markdown(time_breakdown(records, names))
    (out / "live.md").write_text(md)
    plot(table, out / "live.png")
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.report_only is not None:
        return report_only(args.report_only, args.out)
    # SIGTERM (a background run has SIGINT ignored) unwinds like Ctrl-C: every worker is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.seeds, args.agents = min(args.seeds, 1), min(args.agents, 8)
    if args.cpu_cost_profile is not None and args.cpu_cost_profile.name == "none":
        args.cpu_cost_profile = None
    selected = rows(args.quick, cpu_priced=args.cpu_cost_profile is not None)
    if args.rows:
        wanted = [n.strip() for n in args.rows.split(";" if ";" in args.rows else ",")]
        unknown = set(wanted) - {r.name for r in selected}
        if unknown:
            raise SystemExit(f"--rows: unknown {sorted(unknown)}; known: {[r.name for r in selected]}")
        selected = [r for r in selected if r.name in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="saga-live-"))
    model = model_dir(log_dir, args.hidden_size, args.layers)
    scale = AgentScale(
        token_scale=args.token_scale,
        time_scale=args.time_scale,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
    )
    seeds = list(range(args.seeds))
    records: list[dict[str, Any]] = []
    attributions: list[dict[str, Any]] = []
    failures: list[str] = []
    row_order: list[list[str]] = []
    evictions = sorted({r.eviction for r in selected})
    clusters = {e: LocalCluster(log_dir=log_dir) for e in evictions}
    plugin_metrics_port: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        # Both sets up at once (started in parallel, then awaited): every row runs on the same machine.
        for e, cluster in clusters.items():
            for _ in range(args.workers):
                metrics = {"metrics_port": free_port()} if e != "lru" else {}
                spec = plugin_worker_spec(
                    model_path=str(model),
                    max_total_tokens=args.kv_tokens,
                    eviction_policy=e,
                    policy_config={**args.plugin_config, **metrics},
                )
                spec = dataclasses.replace(
                    spec,
                    env={**spec.env, "OMP_NUM_THREADS": str(args.threads)},
                    # The rid of every request in the worker's log: which worker served each call.
                    extra_args=(*spec.extra_args, *REQUEST_LOG_ARGS),
                )
                cluster.workers.append(start_worker(spec, log_dir))
                if metrics:
                    plugin_metrics_port[cluster.workers[-1].url] = metrics["metrics_port"]
        for cluster in clusters.values():
            for w in cluster.workers:
                w.wait_ready(900)
        log.warning("worker sets %s ready after %.0f s", evictions, time.monotonic() - t0)
        idle_s = idle_call_s(clusters[evictions[0]].workers[0].url, scale)
        every_worker = {w.url: w for c in clusters.values() for w in c.workers}
        with tqdm(total=len(selected) * len(seeds), desc="live rows x seeds", unit="run") as bar:
            for seed in seeds:
                k = seed % len(selected)
                order = selected[k:] + selected[:k]
                row_order.append([r.name for r in order])
                for row in order:
                    bar.set_postfix_str(f"{row.name} seed {seed}")
                    try:
                        before = plugin_eviction(plugin_metrics_port, clusters[row.eviction])
                        agents, attribution = run_row(
                            row, clusters[row.eviction], seed, args, scale, model, log_dir, every_worker
                        )
                        after = plugin_eviction(plugin_metrics_port, clusters[row.eviction])
                        attribution["plugin_eviction"] = {k: after[k] - before.get(k, 0.0) for k in after}
                        records.extend(agents)
                        attributions.append({"row": row.name, "seed": seed, **attribution})
                    except Exception as exc:  # a row that breaks is reported, the others still run
                        log.error("row %s seed %d failed: %s", row.name, seed, exc)
                        failures.append(f"{row.name} seed {seed}: {exc!r}")
                    (args.out / "live.partial.json").write_text(
                        json.dumps({"agents": records, "attribution": attributions})
                    )
                    bar.update(1)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    names = [r.name for r in selected]
    table = aggregate(records, names, idle_s)
    attribution = summarize_attribution(attributions, records, names)
    meta = {
        "machine": f"{cpu_model()}, {platform.node()}",
        "command": "python benchmarks/live.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "workers": args.workers,
        "layers": args.layers,
        "hidden_size": args.hidden_size,
        "kv_tokens": args.kv_tokens,
        "agents": args.agents,
        "seeds": seeds,
        "concurrency": args.concurrency,
        "token_scale": args.token_scale,
        "time_scale": args.time_scale,
        "router_prior_scale": 1.0 if args.unscaled_priors else args.time_scale,
        "threads_per_worker": args.threads,
        "kinds": args.kinds,
        "tenants": args.tenants,
        "max_steps": args.max_steps,
        "max_new_tokens": args.max_new_tokens,
        "row_order_per_seed": row_order,
        # what the saga-policy rows' router ran with beyond the priors (sim_fidelity reads it)
        "saga_scheduler_config": {"admission": dict(LIVE_ADMISSION), **args.saga_scheduler_config},
        "idle_call_s": idle_s,
        "wall_s": time.monotonic() - t0,
        "failed_runs": failures,
        "logs": str(log_dir),
    }
    (args.out / "live.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "table": table,
                "attribution": attribution,
                "runs": attributions,
                "agents": records,
            },
            indent=2,
        )
    )
    md = markdown(table, meta) + attribution_markdown(attribution)
    md += breakdown_markdown(time_breakdown(records, names))
    (args.out / "live.md").write_text(md)
    plot(table, args.out / "live.png")
    print(md)
    print(f"wrote {args.out}/live.json, live.md, live.png (logs {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
