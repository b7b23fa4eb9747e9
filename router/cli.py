"""``python -m saga_router``: the command line (sglang-router 0.3.2's flags where they mean the same)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from .router_config import BASELINE_POLICIES, SAGA_POLICY, UNSUPPORTED_POLICIES, RouterConfig

log = logging.getLogger("saga_router")

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _policy_help() -> str:
    lines = [f"{SAGA_POLICY}: the workflow scheduler (SAGA placement, stealing, AFS, admission; default)"]
    lines += [f"{name}: {what}" for name, what in BASELINE_POLICIES.items()]
    lines += [f"{name}: refused ({why})" for name, why in UNSUPPORTED_POLICIES.items()]
    return "Routing policy. " + "; ".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saga_router",
        description="SAGA router: a drop-in for sglang-router 0.3.2 that schedules whole agent workflows "
        "(workflow-atomic placement, work stealing with KV pre-fill, Agent Fair Share, admission control) "
        "in front of SGLang workers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("server and workers")
    g.add_argument("--host", default="0.0.0.0", help="address to bind the router's HTTP server")
    g.add_argument("--port", type=int, default=30000, help="port of the router's HTTP server")
    g.add_argument("--worker-urls", nargs="*", default=[], help="SGLang worker URLs (more via POST /workers)")
    g.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on all but probes")
    g.add_argument("--max-payload-size", type=int, default=512 * 1024 * 1024,
                   help="largest request body in bytes; larger ones get 413")
    g.add_argument("--request-timeout-secs", type=float, default=1800.0,
                   help="give up on a worker's answer after this many seconds")
    g.add_argument("--log-level", choices=sorted(LOG_LEVELS), default="info", help="logging level")

    g = p.add_argument_group("routing policy")
    g.add_argument("--policy", default=SAGA_POLICY, help=_policy_help())
    g.add_argument("--cache-threshold", type=float, default=0.3,
                   help="cache_aware: minimum prefix match rate (0-1) to follow the cache")
    g.add_argument("--balance-abs-threshold", type=int, default=64,
                   help="cache_aware: balance when max load - min load exceeds this (and the relative one)")
    g.add_argument("--balance-rel-threshold", type=float, default=1.5,
                   help="cache_aware: balance when max load exceeds this x min load (and the absolute one)")
    g.add_argument("--eviction-interval-secs", type=float, default=60.0,
                   help="cache_aware: seconds between trims of the approximate prefix tree")
    g.add_argument("--max-tree-size", type=int, default=67108864,
                   help="cache_aware: elements kept per worker in the approximate tree after a trim")
    g.add_argument("--scheduler-config", default="{}",
                   help="JSON of extra workflow-scheduler settings (saga policy), e.g. "
                   '\'{"admission": {"enabled": true, "kv_threshold_frac": 0.9}}\'')
    g.add_argument("--epoch-interval-secs", type=float, default=0.1,
                   help="scheduler epoch (fairness, stealing, preemption, admission release)")

    g = p.add_argument_group("live worker state")
    g.add_argument("--model-path", default=None,
                   help="model directory: config.json gives the vocabulary size (out-of-range token ids "
                   "get 400), tokenizer.json tokenizes text prompts for counting and prefix matching")
    g.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (overrides --model-path)")
    g.add_argument("--load-poll-interval-secs", type=float, default=0.05,
                   help="period of /v1/loads polling (stealing's 100 ms idle trigger needs <= 0.05)")
    g.add_argument("--no-kv-events", action="store_true",
                   help="do not subscribe to workers' KV events; use the approximate prefix index")
    g.add_argument("--no-routed-overlay", action="store_true",
                   help="match prompts against the workers' KV events alone, without the prompts routed "
                   "there since their last publish (an ablation: the events lag by up to a call)")

    g = p.add_argument_group("health checks, retries and limits")
    g.add_argument("--health-failure-threshold", type=int, default=3,
                   help="failed checks in a row before a worker is taken out")
    g.add_argument("--health-success-threshold", type=int, default=2,
                   help="good checks in a row before a worker is re-admitted")
    g.add_argument("--health-check-timeout-secs", type=float, default=5.0, help="timeout of one health check")
    g.add_argument("--health-check-interval-secs", type=float, default=60.0,
                   help="seconds between checks of a healthy worker (an unhealthy one is re-checked with "
                   "back-off from 0.25 s up to this)")
    g.add_argument("--health-check-endpoint", default="/health", help="worker path probed for health")
    g.add_argument("--disable-health-check", action="store_true", help="no periodic health checks")
    g.add_argument("--retry-max-retries", type=int, default=5,
                   help="attempts per request; above 1, a request that fails before streaming is retried "
                   "once on another worker (never more: a dead worker must not multiply load)")
    g.add_argument("--disable-retries", action="store_true", help="never retry")
    g.add_argument("--max-concurrent-requests", type=int, default=-1,
                   help="requests forwarded at once; -1 = unlimited")
    g.add_argument("--queue-size", type=int, default=100,
                   help="requests waiting for a slot when the concurrency limit is reached; beyond: 429")
    g.add_argument("--queue-timeout-secs", type=float, default=60.0,
                   help="longest wait for a slot before 408")

    g = p.add_argument_group("metrics")
    g.add_argument("--prometheus-host", default="0.0.0.0", help="address of the separate /metrics server")
    g.add_argument("--prometheus-port", type=int, default=29000,
                   help="port of the separate /metrics server (0 = only /metrics on the main port)")
    return p


def config_from_args(args: argparse.Namespace) -> RouterConfig:
    if args.policy in UNSUPPORTED_POLICIES:
        raise SystemExit(f"--policy {args.policy}: {UNSUPPORTED_POLICIES[args.policy]}")
    if args.policy != SAGA_POLICY and args.policy not in BASELINE_POLICIES:
        known = ", ".join([SAGA_POLICY, *BASELINE_POLICIES])
        raise SystemExit(f"--policy {args.policy}: unknown policy (known: {known})")
    try:
        scheduler_config = json.loads(args.scheduler_config)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--scheduler-config is not JSON: {exc}") from exc
    if not isinstance(scheduler_config, dict):
        raise SystemExit("--scheduler-config must be a JSON object")
    return RouterConfig(
        host=args.host,
        port=args.port,
        worker_urls=tuple(args.worker_urls),
        policy=args.policy,
        cache_threshold=args.cache_threshold,
        balance_abs_threshold=args.balance_abs_threshold,
        balance_rel_threshold=args.balance_rel_threshold,
        eviction_interval_secs=args.eviction_interval_secs,
        max_tree_size=args.max_tree_size,
        max_payload_size=args.max_payload_size,
        log_level=args.log_level,
        prometheus_host=args.prometheus_host,
        prometheus_port=args.prometheus_port,
        request_timeout_secs=args.request_timeout_secs,
        max_concurrent_requests=args.max_concurrent_requests,
        queue_size=args.queue_size,
        queue_timeout_secs=args.queue_timeout_secs,
        retry_max_retries=args.retry_max_retries,
        disable_retries=args.disable_retries,
        health_failure_threshold=args.health_failure_threshold,
        health_success_threshold=args.health_success_threshold,
        health_check_timeout_secs=args.health_check_timeout_secs,
        health_check_interval_secs=args.health_check_interval_secs,
        health_check_endpoint=args.health_check_endpoint,
        disable_health_check=args.disable_health_check,
        api_key=args.api_key,
        model_path=args.model_path,
        vocab_size=args.vocab_size,
        load_poll_interval_secs=args.load_poll_interval_secs,
        epoch_interval_secs=args.epoch_interval_secs,
        kv_events=not args.no_kv_events,
        routed_overlay=not args.no_routed_overlay,
        scheduler_config=scheduler_config,
    )


async def serve(config: RouterConfig) -> None:
    from .app import SERVICE_KEY, build_app, metrics

    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    # Everything imported and built so far lives as long as the router: keep it out of the cyclic
    # collector's full passes, which otherwise re-scan it every few hundred requests (measured by
    # benchmarks/router_overhead.py: about a seventh of the router's CPU per request).
    gc.collect()
    gc.freeze()
    log.info("saga router on http://%s:%d (policy %s)", config.host, config.port, config.policy)
    metrics_runner = None
    if config.prometheus_port:
        metrics_app = web.Application()
        metrics_app[SERVICE_KEY] = app[SERVICE_KEY]
        metrics_app.router.add_get("/metrics", metrics)
        metrics_runner = web.AppRunner(metrics_app, access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, config.prometheus_host, config.prometheus_port).start()
        log.info("metrics on http://%s:%d/metrics", config.prometheus_host, config.prometheus_port)
    try:
        await asyncio.Event().wait()
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    config = config_from_args(args)
    logging.basicConfig(
        level=LOG_LEVELS[config.log_level], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        log.info("uvloop not installed; using asyncio's default loop")
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        sys.exit(0)
