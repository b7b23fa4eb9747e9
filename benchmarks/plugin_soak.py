"""Soak of the saga worker plugin: agent workflows against a real CPU worker while a second client
floods the control socket with valid, malformed and hostile messages.

Setup: one real SGLang 0.5.23 CPU worker (tiny Llama, dummy weights) with ``--radix-eviction-policy
saga``, a small KV pool (``--kv-tokens``, default 1024) and the control channel on loopback.

Two phases of ``--duration`` seconds each on the same worker, same workload generator and seed,
run as ``--blocks`` alternating blocks (quiet, flood, quiet, flood, ...) so that a change in the
machine's background load hits both phases alike:

1. **quiet**: ``--workflows`` (16) concurrent multi-step agent workflows. Each step sends the
   workflow's growing context to ``/generate`` with a ``saga.reuse`` hint (rid ``<workflow>:<step>``),
   then, like a router, pushes ``ToolStarted`` over the control socket, sleeps the tool's latency,
   pushes ``ToolFinished``; after its last step, ``WorkflowFinished``; then a new workflow starts.
2. **flood**: the same, while a flooder pushes control messages as fast as ZMQ accepts them, in
   equal parts: valid messages for unknown workflows, valid messages for live workflows with
   extreme values (TTL one day, next use 0), malformed bytes, hostile payloads (NaN/inf/negative
   times, 100,000-character tool names, wrong types, oversized frames).

Figures (printed, and written to ``--out`` as JSON, markdown and a PNG): requests, errors on normal
requests, latency p50/p99 per phase and the p99 ratio flood/quiet, whether the worker stayed up,
the scheduler's RSS (start, max, end of each phase), messages the flooder sent, and the plugin's
counters from ``/metrics``. The issue's bar: 0 errors, worker up, RSS bounded, p99 within 1.5x.

    python benchmarks/plugin_soak.py                  # 2 x 120 s
    python benchmarks/plugin_soak.py --duration 15    # quick

Numbers depend on the machine (named in the output); on a shared machine compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from saga_sgl.local_workers import TINY_VOCAB_SIZE, WorkerProcess, WorkerSpec, free_port, running_workers
from saga_sgl.protocol import (
    ReuseHint,
    ToolFinished,
    ToolStarted,
    TtlChanged,
    WorkflowFinished,
    encode_control,
    encode_kv_hints,
    request_id,
)
from saga_sgl.worker.settings import CONTROL_ADDRESS_ENV

TOOLS = (("search", 0.05, 0.4), ("code", 0.1, 0.8), ("browser", 0.2, 1.2))
"""(tool, min latency s, max latency s) of the simulated tool calls."""


@dataclass
class PhaseStats:
    """What one phase measured."""

    name: str
    duration_s: float
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    by_urgency: dict[float, list[float]] = field(default_factory=dict)
    workflows_finished: int = 0
    flood_sent: int = 0
    rss_mb: list[float] = field(default_factory=list)
    worker_alive: bool = True

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)
        return {
            "phase": self.name,
            "duration_s": round(self.duration_s, 1),
            "requests": self.requests,
            "errors": self.errors,
            "error_samples": self.error_samples[:5],
            "workflows_finished": self.workflows_finished,
            "p50_s": round(_quantile(lat, 0.50), 4),
            "p99_s": round(_quantile(lat, 0.99), 4),
            "max_s": round(lat[-1], 4) if lat else math.nan,
            "p99_s_by_urgency": {
                str(u): round(_quantile(sorted(v), 0.99), 4) for u, v in sorted(self.by_urgency.items())
            },
            "flood_messages_sent": self.flood_sent,
            "rss_start_mb": round(self.rss_mb[0], 1) if self.rss_mb else math.nan,
            "rss_max_mb": round(max(self.rss_mb), 1) if self.rss_mb else math.nan,
            "rss_end_mb": round(self.rss_mb[-1], 1) if self.rss_mb else math.nan,
            "worker_alive": self.worker_alive,
        }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


# --- the normal clients -----------------------------------------------------------------------------


class ControlPusher:
    """A router-like PUSH socket (one per thread: ZMQ sockets are not thread-safe)."""

    def __init__(self, address: str) -> None:
        import zmq

        self._zmq = zmq
        self.sock: Any = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.connect(address)

    def send(self, data: bytes) -> bool:
        try:
            self.sock.send(data, self._zmq.NOBLOCK)
            return True
        except self._zmq.Again:
            return False

    def close(self) -> None:
        self.sock.close(linger=0)


def _generate(url: str, body: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def workflow_client(
    index: int,
    url: str,
    control_address: str,
    stop: threading.Event,
    stats: PhaseStats,
    seed: int,
    block: int,
) -> None:
    """Run workflows back to back until ``stop``; record each request's latency or error."""
    rng = random.Random(seed * 1000 + index + 100_000 * block)
    pusher = ControlPusher(control_address)
    lock = threading.Lock()
    serial = 0
    try:
        while not stop.is_set():
            serial += 1
            workflow = f"{stats.name}{block}-c{index}-w{serial}"
            context = [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(rng.randint(24, 48))]
            steps = rng.randint(3, 6)
            for step in range(steps):
                if stop.is_set():
                    break
                tool, low, high = rng.choice(TOOLS)
                latency = rng.uniform(low, high)
                terminal = step == steps - 1
                hint = ReuseHint(
                    workflow_id=workflow,
                    step=step,
                    tool="" if terminal else tool,
                    reuse_prob=0.0 if terminal else 0.9,
                    next_use_in_s=None if terminal else latency + 0.1,
                    ttl_s=0.0 if terminal else 2.0 * high,
                    terminal=terminal,
                    urgency=rng.choice((0.2, 1.0, 3.0)),
                )
                rid = request_id(workflow, step)
                body = {
                    "input_ids": context,
                    "rid": rid,
                    "routing_key": workflow,
                    "sampling_params": {"max_new_tokens": 4, "temperature": 0},
                    "kv_hints": encode_kv_hints(hint),
                }
                started = time.monotonic()
                try:
                    reply = _generate(url, body)
                    output = reply.get("output_ids") or []
                    ok = isinstance(output, list) and len(output) >= 1
                    error = None if ok else f"no output ids: {str(reply)[:200]}"
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    output = []
                elapsed = time.monotonic() - started
                with lock:
                    stats.requests += 1
                    if error is None:
                        stats.latencies_s.append(elapsed)
                        stats.by_urgency.setdefault(hint.urgency, []).append(elapsed)
                    else:
                        stats.errors += 1
                        stats.error_samples.append(error)
                context = context + [int(t) % TINY_VOCAB_SIZE for t in output]
                context += [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(rng.randint(16, 40))]
                if terminal:
                    break
                pusher.send(encode_control(ToolStarted(workflow_id=workflow, tool=tool, ttl_s=2.0 * high)))
                stop.wait(latency)
                pusher.send(encode_control(ToolFinished(workflow_id=workflow, tool=tool)))
            pusher.send(encode_control(WorkflowFinished(workflow_id=workflow)))
            with lock:
                stats.workflows_finished += 1
    finally:
        pusher.close()


# --- the flooder --------------------------------------------------------------------------------------


def flood_messages(rng: random.Random, live_prefix: str) -> list[bytes]:
    """One round of valid, malformed and hostile control messages (equal parts)."""
    enc = msgspec.msgpack.encode
    unknown = f"ghost-{rng.randrange(10**9)}"
    live = f"{live_prefix}-c{rng.randrange(16)}-w{rng.randint(1, 3)}"  # the flood phase's workflow ids
    return [
        # valid, for workflows this worker never served
        encode_control(ToolStarted(workflow_id=unknown, tool="web", ttl_s=300.0, next_use_in_s=1.0)),
        encode_control(WorkflowFinished(workflow_id=unknown)),
        # valid, for (probably) live workflows, extreme values
        encode_control(TtlChanged(workflow_id=live, ttl_s=86_400.0)),
        encode_control(ToolStarted(workflow_id=live, tool="x" * 256, ttl_s=86_400.0, next_use_in_s=0.0)),
        # malformed
        b"\x93not a control message",
        rng.randbytes(rng.randint(1, 64)),
        enc({"type": "tool_started"}),
        # hostile payloads
        enc({"type": "tool_started", "workflow_id": live, "tool": "t", "next_use_in_s": math.nan}),
        enc({"type": "tool_started", "workflow_id": live, "tool": "t", "ttl_s": math.inf}),
        enc({"type": "ttl_changed", "workflow_id": live, "ttl_s": -5.0}),
        enc({"type": "ttl_changed", "workflow_id": live, "ttl_s": 1e308}),
        enc({"type": "tool_started", "workflow_id": live, "tool": "t" * 100_000}),
        enc({"type": "workflow_finished", "workflow_id": ["not", "a", "string"]}),
        enc({"type": "tool_finished", "workflow_id": "w" * 10_000}),
    ]


def flooder(control_address: str, stop: threading.Event, stats: PhaseStats, seed: int, block: int) -> None:
    rng = random.Random(seed + 7919 * block)
    pusher = ControlPusher(control_address)
    try:
        while not stop.is_set():
            for data in flood_messages(rng, f"flood{block}"):
                if pusher.send(data):
                    stats.flood_sent += 1
                else:
                    time.sleep(0.001)  # the worker pushes back: its queue is full
    finally:
        pusher.close()


# --- the run ---------------------------------------------------------------------------------------------


def scheduler_rss_mb(worker: WorkerProcess) -> float:
    """RSS of the worker's scheduler process (the one that hosts the plugin), in MiB."""
    import psutil

    for child in psutil.Process(worker.process.pid).children(recursive=True):
        try:
            if "scheduler" in " ".join(child.cmdline()) or "scheduler" in child.name():
                return float(child.memory_info().rss) / 2**20
        except psutil.Error:
            continue
    return math.nan


def run_block(
    stats: PhaseStats,
    worker: WorkerProcess,
    control_address: str,
    *,
    duration_s: float,
    num_workflows: int,
    flood: bool,
    seed: int,
    block: int,
    progress: Callable[[float], None] | None = None,
) -> PhaseStats:
    """Run one block of a phase, adding to ``stats``."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=workflow_client,
            args=(i, worker.url, control_address, stop, stats, seed, block),
            daemon=True,
        )
        for i in range(num_workflows)
    ]
    if flood:
        threads.append(
            threading.Thread(target=flooder, args=(control_address, stop, stats, seed, block), daemon=True)
        )
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while (elapsed := time.monotonic() - started) < duration_s:
        stats.rss_mb.append(scheduler_rss_mb(worker))
        if worker.process.poll() is not None:
            stats.worker_alive = False
            break
        if progress is not None:
            progress(elapsed)
        time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    stats.rss_mb.append(scheduler_rss_mb(worker))
    stats.worker_alive = stats.worker_alive and worker.process.poll() is None and _healthy(worker.url)
    return stats


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def plugin_counters(url: str) -> dict[str, float]:
    import re

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^saga_worker_([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            key = match.group(1) + (match.group(2) or "")
            out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


def run_soak(
    *,
    duration_s: float,
    num_workflows: int = 16,
    kv_tokens: int = 1024,
    seed: int = 0,
    log_dir: Path | None = None,
    show_progress: bool = True,
    blocks: int = 4,
) -> dict[str, Any]:
    """Start a worker, run the quiet and the flood phase in alternating blocks, return the figures."""
    control_address = f"tcp://127.0.0.1:{free_port()}"
    spec = WorkerSpec(
        port=free_port(),
        eviction_policy="saga",
        max_total_tokens=kv_tokens,
        extra_args=("--chunked-prefill-size", "256"),
        env={CONTROL_ADDRESS_ENV: control_address},
    )
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="saga-soak-"))
    phases = [
        PhaseStats(name="quiet", duration_s=duration_s),
        PhaseStats(name="flood", duration_s=duration_s),
    ]
    block_s = duration_s / blocks
    with running_workers([spec], log_dir, ready_timeout_s=600) as (worker,):
        bar = None
        if show_progress:
            from tqdm import tqdm

            bar = tqdm(total=int(2 * duration_s), desc="soak", unit="s")
        for block in range(blocks):
            for stats, flood in ((phases[0], False), (phases[1], True)):
                done = bar.n if bar is not None else 0

                def tick(elapsed: float, bar: Any = bar, done: int = done) -> None:
                    if bar is not None:
                        bar.n = done + int(elapsed)
                        bar.refresh()

                run_block(
                    stats,
                    worker,
                    control_address,
                    duration_s=block_s,
                    num_workflows=num_workflows,
                    flood=flood,
                    seed=seed,
                    block=block,
                    progress=tick,
                )
                if bar is not None:
                    bar.n = done + int(block_s)
                if not stats.worker_alive:
                    break
        if bar is not None:
            bar.close()
        counters = plugin_counters(worker.url) if worker.process.poll() is None else {}
        log_tail = worker.log_tail(20)
    quiet, flood_phase = (p.summary() for p in phases)
    ratio = flood_phase["p99_s"] / quiet["p99_s"] if quiet["p99_s"] > 0 else math.nan
    rss_growth = flood_phase["rss_max_mb"] - quiet["rss_start_mb"]
    return {
        "settings": {
            "duration_s_per_phase": duration_s,
            "alternating_blocks": blocks,
            "workflows": num_workflows,
            "kv_tokens": kv_tokens,
            "seed": seed,
        },
        "phases": [quiet, flood_phase],
        "p99_ratio_flood_vs_quiet": round(ratio, 3),
        "rss_growth_mb": round(rss_growth, 1),
        "plugin_counters": counters,
        "worker_log_tail": log_tail if not flood_phase["worker_alive"] else "",
        "latencies_s": {p.name: p.latencies_s for p in phases},
        "rss_series_mb": {p.name: p.rss_mb for p in phases},
    }


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    rows = [
        "| phase | requests | errors | workflows done | p50 s | p99 s | max s | flood msgs sent "
        "| RSS start/max/end MiB | worker up | p99 s by urgency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for p in result["phases"]:
        rows.append(
            f"| {p['phase']} | {p['requests']} | {p['errors']} | {p['workflows_finished']} | {p['p50_s']} "
            f"| {p['p99_s']} | {p['max_s']} | {p['flood_messages_sent']} "
            f"| {p['rss_start_mb']}/{p['rss_max_mb']}/{p['rss_end_mb']} | {p['worker_alive']} "
            f"| {p['p99_s_by_urgency']} |"
        )
    counters = result["plugin_counters"]
    keys = (
        'malformed_messages_total{channel="control"}',
        "unknown_workflow_messages_total",
        "dropped_control_messages_total",
        'hint_updates_total{source="control"}',
        'hint_updates_total{source="kv_hints"}',
        "forgotten_workflows_total",
        "tracked_workflows",
    )
    counter_line = ", ".join(f"{k} = {counters.get(k, 0):g}" for k in keys)
    hook_failures = sum(v for k, v in counters.items() if k.startswith("hook_failures"))
    return "\n".join(
        [
            "# Worker plugin soak",
            "",
            f"Machine: {machine}",
            f"Settings: {result['settings']}",
            "",
            *rows,
            "",
            f"p99 ratio flood/quiet: **{result['p99_ratio_flood_vs_quiet']}** (bar: <= 1.5); "
            f"scheduler RSS growth over the run: {result['rss_growth_mb']} MiB; "
            f"plugin hook failures: {hook_failures:g}",
            "",
            f"Plugin counters: {counter_line}",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, latencies in result["latencies_s"].items():
        if latencies:
            values = sorted(latencies)
            left.plot(values, [i / len(values) for i in range(len(values))], label=name)
    left.set_xscale("log")
    left.set_xlabel("request latency (s)")
    left.set_ylabel("CDF")
    left.set_title("Normal requests")
    left.legend()
    for name, series in result["rss_series_mb"].items():
        right.plot(range(len(series)), series, label=name)
    right.set_xlabel("time in phase (s)")
    right.set_ylabel("scheduler RSS (MiB)")
    right.set_title("Scheduler memory")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per phase (quiet, then flood)")
    parser.add_argument(
        "--workflows", type=int, default=16, help="concurrent agent workflows (client threads)"
    )
    parser.add_argument("--kv-tokens", type=int, default=1024, help="worker KV pool (--max-total-tokens)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload and flood generators")
    parser.add_argument(
        "--blocks",
        type=int,
        default=4,
        help="alternating quiet/flood blocks per phase (pairs background load)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results",
        help="directory for JSON, markdown, PNG",
    )
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._machine import cpu_model

    machine = {"cpu": cpu_model(), "note": "shared 2-core VM; compare the ratio, not seconds"}
    result = run_soak(
        duration_s=args.duration,
        num_workflows=args.workflows,
        kv_tokens=args.kv_tokens,
        seed=args.seed,
        blocks=args.blocks,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(result, machine)
    print(table)
    summary = {k: v for k, v in result.items() if k not in ("latencies_s", "rss_series_mb")}
    summary["machine"] = machine
    print(json.dumps({k: v for k, v in summary.items() if k != "plugin_counters"}, indent=1))
    (args.out / "plugin_soak.json").write_text(json.dumps(summary, indent=1))
    (args.out / "plugin_soak.md").write_text(table)
    plot(result, args.out / "plugin_soak.png")
    print(f"wrote {args.out}/plugin_soak.{{json,md,png}}")
    print(
        "median latency quiet/flood:",
        {n: statistics.median(v) for n, v in result["latencies_s"].items() if v},
    )


if __name__ == "__main__":
    main()
