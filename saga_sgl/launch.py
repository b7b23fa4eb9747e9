"""``python -m saga_sgl.launch``: start a saga cluster on this machine and run agents through it.

It starts N SGLang workers with the saga plugin (control channel and KV events wired), the saga router
(``python -m saga_router``) in front of them, and prints the URLs. Then either it serves until Ctrl-C
(``--serve``), or it runs the bundled SGLang DSL agents (``saga_sgl.agents``: coding, browser,
tree-of-thought; shapes and tool latencies from the workload model) through the router and prints a
summary: task completion times, cached-token ratio, recomputed tokens, where each workflow ran,
steals and admissions held.

Without a visible GPU the workers serve a tiny 2-layer Llama with dummy weights on the CPU (the
default); with one, ``--model-path``, ``--tp`` and ``--gpus-per-worker`` choose the model and GPUs.
Every flag can also come from ``--config FILE`` (TOML or JSON; keys are the flag names, with dashes
or underscores); flags given on the command line win. Every child process is stopped on exit,
Ctrl-C, SIGTERM or any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from saga_sgl.cluster.curve import ControlKeys
from saga_sgl.cluster.processes import (
    ClusterDied,
    RouterProcess,
    RouterSpec,
    free_port,
    local_cluster,
    plugin_worker_spec,
)
from saga_sgl.local_workers import TINY_MODEL_DIR, WorkerSpec, WorkerStartError

log = logging.getLogger("saga_sgl.launch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saga_sgl.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or JSON file whose keys are any of these flags (e.g. workers = 2); "
        "command-line flags override it",
    )
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=int, default=2, help="SGLang workers to start (default 2)")
    g.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the router binds (default 127.0.0.1; 0.0.0.0 to serve the network)",
    )
    g.add_argument(
        "--port", type=int, default=0, help="router port (default 0: a free port, printed at start)"
    )
    g.add_argument(
        "--policy",
        default="saga",
        help="router policy: saga (workflow scheduler, default) or a baseline of "
        "`python -m saga_router --help` (cache_aware, round_robin, ...)",
    )
    g.add_argument(
        "--eviction-policy",
        default="saga",
        help="workers' --radix-eviction-policy: saga (default), reuse_time, wa_lru, or a stock "
        "SGLang policy such as lru (then the workers have no control channel)",
    )
    g.add_argument(
        "--max-total-tokens",
        type=int,
        default=1536,
        help="KV capacity per worker in tokens (default 1536: on the tiny CPU model, small "
        "enough that the agents' contexts do not all fit and eviction decides; 0 = SGLang's "
        "own sizing from memory, what you want on a GPU)",
    )
    g.add_argument(
        "--scheduler-config",
        default=None,
        help="JSON object of workflow-scheduler settings passed to the router, e.g. "
        '\'{"admission": {"enabled": true}}\'',
    )
    g.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where worker and router logs go (default: a fresh temporary directory, printed)",
    )
    g.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for each worker's /health (default 300; a CPU worker needs 20-60 "
        "s on an idle machine)",
    )
    g = p.add_argument_group("multi-node (Ray)")
    g.add_argument(
        "--ray-address",
        default=None,
        help="run the workers as Ray actors on this Ray cluster (e.g. auto, or HOST:6379 of the "
        "head); the router runs here, on the head, and workers register through its /workers API; "
        "a lost worker or node is removed from the router and restarted where resources allow",
    )
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="Ray: CPUs reserved in each worker's placement group (default 1); GPUs = --tp",
    )
    g.add_argument(
        "--supervise-interval",
        type=float,
        default=2.0,
        help="Ray: seconds between liveness checks of the worker actors (default 2)",
    )
    g = p.add_argument_group("model and devices")
    g.add_argument(
        "--device",
        default="auto",
        help="SGLang --device: auto (cuda if torch sees a GPU, else cpu; default), cpu, cuda",
    )
    g.add_argument(
        "--threads-per-worker",
        type=int,
        default=0,
        help="CPU workers: torch threads of each (OMP_NUM_THREADS; default 0 = this machine's cores / "
        "--workers, at least 1: more threads than cores make torch's spinning threads stall each other)",
    )
    g.add_argument(
        "--model-path",
        default=None,
        help="model directory or hub id (default: the shipped tiny Llama config with dummy "
        "weights on CPU; required on GPU)",
    )
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel size of each worker (default 1)")
    g.add_argument(
        "--gpus-per-worker",
        type=int,
        default=None,
        help="GPUs given to each worker through CUDA_VISIBLE_DEVICES (default: --tp); worker i "
        "gets GPUs i*g .. i*g+g-1",
    )
    g.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="extra argument for every `sglang.launch_server` (repeatable), e.g. "
        "--worker-arg=--mem-fraction-static=0.8",
    )
    g = p.add_argument_group("what to do once the cluster is up")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true", help="serve until Ctrl-C (or SIGTERM)")
    mode.add_argument(
        "--agents",
        type=int,
        default=8,
        help="run this many DSL agents through the router, print the summary, stop (the default, 8)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the agents' shapes and arrivals (default 0)")
    g.add_argument(
        "--kinds", default="coding,browser,tot", help="agent kinds to draw from (default coding,browser,tot)"
    )
    g.add_argument("--tenants", type=int, default=2, help="tenants the agents belong to (default 2)")
    g.add_argument("--concurrency", type=int, default=6, help="agents running at once (default 6)")
    g.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Poisson arrival rate in agents/s (default: all start at once, --concurrency at a time)",
    )
    g.add_argument(
        "--token-scale",
        type=float,
        default=0.03,
        help="multiplies the workload model's token counts (default 0.03: system prompt ~120 "
        "tokens, contexts of a few hundred, for the tiny CPU model)",
    )
    g.add_argument(
        "--time-scale",
        type=float,
        default=0.25,
        help="multiplies the workload model's tool latencies (default 0.25; 1 = the paper's "
        "Table 1 latencies, 0 = no tool gaps)",
    )
    g.add_argument("--max-steps", type=int, default=6, help="cap on LLM calls per agent loop (default 6)")
    g.add_argument("--max-new-tokens", type=int, default=16, help="cap on tokens per generation (default 16)")
    g.add_argument(
        "--json", type=Path, default=None, help="also write the summary and per-agent results here"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _config_defaults(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The config file as parser defaults; unknown keys and unreadable files are errors, not ignored."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        parser.error(f"--config {path}: {exc}")
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        parser.error(f"--config {path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}")
    if not isinstance(data, dict):
        parser.error(f"--config {path}: must be a table/object of flag names")
    known = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in known:
            parser.error(f"--config {path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        action = known[dest]
        if action.type is not None and value is not None and not isinstance(value, list):
            try:
                value = action.type(value)  # type: ignore[operator]
            except (TypeError, ValueError) as exc:
                parser.error(f"--config {path}: {key} = {value!r}: {exc}")
        out[dest] = value
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        parser.set_defaults(**_config_defaults(parser, first.config))
    args = parser.parse_args(argv)
    if args.workers < 1 or args.tp < 1 or args.agents < 1 or args.concurrency < 1 or args.tenants < 1:
        parser.error("--workers, --tp, --agents, --concurrency and --tenants must be >= 1")
    if args.device == "auto":
        args.device = "cuda" if _cuda_available() else "cpu"
    if args.device != "cpu" and args.model_path is None:
        parser.error(f"--device {args.device}: give --model-path (the tiny dummy model is for CPU only)")
    if args.scheduler_config is not None:
        try:
            if not isinstance(json.loads(args.scheduler_config), dict):
                raise ValueError("not an object")
        except ValueError as exc:
            parser.error(f"--scheduler-config must be a JSON object: {exc}")
    return args


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cpu_threads(args: argparse.Namespace) -> dict[str, str]:
    """OMP_NUM_THREADS for CPU workers (empty on GPU, or when the user's environment sets it)."""
    if args.device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return {}
    threads = args.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    return {"OMP_NUM_THREADS": str(threads)}


def worker_specs(args: argparse.Namespace) -> list[WorkerSpec]:
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else args.tp
    threads = cpu_threads(args)
    specs = [
        plugin_worker_spec(
            model_path=args.model_path or str(TINY_MODEL_DIR),
            device=args.device,
            max_total_tokens=args.max_total_tokens or None,
            eviction_policy=args.eviction_policy,
            tp=args.tp,
            gpu_ids=tuple(range(i * gpus, (i + 1) * gpus)) if args.device == "cuda" else (),
            extra_args=tuple(args.worker_arg),
        )
        for i in range(args.workers)
    ]
    return [dataclasses.replace(s, env={**s.env, **threads}) for s in specs]


def router_spec(args: argparse.Namespace) -> RouterSpec:
    extra = ("--scheduler-config", args.scheduler_config) if args.scheduler_config else ()
    return RouterSpec(
        port=args.port or free_port(),
        host=args.host,
        policy=args.policy,
        model_path=args.model_path or str(TINY_MODEL_DIR),
        extra_args=extra,
    )


class _Stop(Exception):
    """SIGTERM/SIGHUP arrived: unwind so that every child is stopped."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


class RunningCluster(Protocol):
    """What serving and the workload need of a cluster: local (``LocalCluster``) or on Ray."""

    router: RouterProcess | None
    log_dir: Path

    def check(self) -> None: ...

    def worker_urls(self) -> list[str]: ...


def serve(cluster: RunningCluster) -> int:
    assert cluster.router is not None
    print(f"\nsaga router: {cluster.router.url}  (OpenAI /v1, /generate, /workers, /metrics)")
    for url in cluster.worker_urls():
        print(f"  worker:    {url}")
    print("serving; Ctrl-C to stop\n", flush=True)
    while True:
        cluster.check()
        time.sleep(1.0)


def run_workload(cluster: RunningCluster, args: argparse.Namespace) -> dict[str, Any]:
    from saga_sgl.agents.common import AgentScale
    from saga_sgl.agents.workload import run_agents
    from saga_sgl.cluster.report import RunSummary, metric_delta, placements_from_log, recomputed_tokens
    from saga_sgl.frontend import SagaEndpoint

    assert cluster.router is not None
    router = cluster.router
    print(f"\nsaga router: {router.url}; workers: {', '.join(cluster.worker_urls())}")
    print(
        f"running {args.agents} agent(s), {args.concurrency} at a time (logs in {cluster.log_dir})\n",
        flush=True,
    )
    scale = AgentScale(
        token_scale=args.token_scale,
        time_scale=args.time_scale,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
    )
    backend = SagaEndpoint(router.url)
    before = router.metrics()
    held_peak = 0
    done = threading.Event()

    def watch() -> None:  # admissions held is a gauge: sample it, and notice a dying child
        nonlocal held_peak
        while not done.wait(0.5):
            held = router.metrics().get("saga_router_admissions_held", 0.0)
            held_peak = max(held_peak, int(held))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        results = run_agents(
            router.url,
            args.agents,
            seed=args.seed,
            kinds=[k for k in args.kinds.split(",") if k],
            tenants=args.tenants,
            concurrency=args.concurrency,
            arrival_rate_per_s=args.rate,
            scale=scale,
            backend=backend,
        )
    finally:
        done.set()
        watcher.join()
    wall = time.monotonic() - t0
    if backend.events is not None:
        # The last WorkflowFinished events are still on the sender thread: let the router have them
        # before the summary reads its counters and the cluster stops (else: broken-pipe warnings).
        backend.events.flush(10.0)
    cluster.check()
    after = router.metrics()
    summary = RunSummary(
        results=results,
        recomputed={r.workflow_id: recomputed_tokens(backend.recorded(r.workflow_id)) for r in results},
        placements=placements_from_log(router.log_text()),
        router_counters=metric_delta(before, after, "saga_router_"),
        admissions_held_peak=held_peak,
        wall_s=wall,
    )
    print("\n" + summary.render() + "\n", flush=True)
    return {"summary": summary.as_dict(), "agents": [dataclasses.asdict(r) for r in results]}


@contextlib.contextmanager
def _start(args: argparse.Namespace, log_dir: Path) -> Iterator[RunningCluster]:
    if args.ray_address is None:
        with local_cluster(
            worker_specs(args), router_spec(args), log_dir, ready_timeout_s=args.ready_timeout
        ) as cluster:
            yield cluster
        return
    from saga_sgl.cluster.ray_pool import ray_cluster

    # Workers on other nodes bind their control socket on the node's address: CurveZMQ, with keys
    # made for this cluster (secrets go through the environment only).
    keys = ControlKeys.generate()
    log.info(
        "control channels: CurveZMQ (router key %s, workers' key %s)", keys.router_public, keys.worker_public
    )
    worker_kwargs: dict[str, Any] = {
        "control_keys": keys,
        "model_path": args.model_path or str(TINY_MODEL_DIR),
        "device": args.device,
        "max_total_tokens": args.max_total_tokens or None,
        "eviction_policy": args.eviction_policy,
        "tp": args.tp,
        "extra_args": tuple(args.worker_arg),
    }
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else args.tp
    with ray_cluster(
        args.ray_address,
        dataclasses.replace(router_spec(args), env=keys.router_env()),
        num_workers=args.workers,
        worker_kwargs=worker_kwargs,
        log_dir=log_dir,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=gpus if args.device == "cuda" else 0,
        ready_timeout_s=args.ready_timeout,
        supervise_interval_s=args.supervise_interval,
    ) as cluster:
        yield cluster


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="saga-cluster-"))
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    log.info(
        "starting %d %s worker(s) (eviction %s, KV %s tokens each) and the saga router (policy %s); "
        "logs in %s",
        args.workers,
        args.device,
        args.eviction_policy,
        args.max_total_tokens or "auto",
        args.policy,
        log_dir,
    )
    t0 = time.monotonic()
    try:
        with _start(args, log_dir) as cluster:
            log.info("cluster ready after %.1f s", time.monotonic() - t0)
            if args.serve:
                return serve(cluster)
            out = run_workload(cluster, args)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=str))
        failed = int(out["summary"]["failed"])
        return 1 if failed else 0
    except (KeyboardInterrupt, _Stop) as exc:
        log.info(
            "stopping (%s); every worker and the router are stopped",
            type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else exc,
        )
        return 130
    except (WorkerStartError, ClusterDied) as exc:
        log.error("%s", exc)
        return 1
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
