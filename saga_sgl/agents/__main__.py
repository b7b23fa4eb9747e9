"""``python -m saga_sgl.agents``: run the shipped DSL agents against a running endpoint."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from saga_sgl.agents.common import AgentScale
from saga_sgl.agents.workload import AGENT_KINDS, run_agents


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saga_sgl.agents",
        description="Run N SGLang DSL agents (coding, browser, tree-of-thought) concurrently against a "
        "text-serving SGLang worker, sglang-router or the saga router, through SagaEndpoint. Shapes, "
        "tools and tool latencies come from the workload model, seeded.",
    )
    p.add_argument("--url", required=True, help="endpoint base URL, e.g. http://127.0.0.1:30000")
    p.add_argument("--agents", type=int, default=6, help="number of agents (workflows) to run (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agents' shapes and arrivals (default 0)")
    p.add_argument(
        "--kinds",
        default=",".join(AGENT_KINDS),
        help=f"comma-separated agent kinds to draw from (default {','.join(AGENT_KINDS)})",
    )
    p.add_argument("--tenants", type=int, default=2, help="tenants the agents are spread over (default 2)")
    p.add_argument("--concurrency", type=int, default=4, help="agents running at once (default 4)")
    p.add_argument(
        "--rate", type=float, default=None, help="Poisson arrival rate in agents/s (default: all at once)"
    )
    p.add_argument(
        "--token-scale",
        type=float,
        default=0.03,
        help="multiplies the workload model's token counts (default 0.03)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies tool latencies; 0 = no sleeping (default 1.0)",
    )
    p.add_argument(
        "--max-steps", type=int, default=8, help="cap on LLM calls per agent step loop (default 8)"
    )
    p.add_argument("--max-new-tokens", type=int, default=16, help="cap on tokens per generation (default 16)")
    p.add_argument("--json", type=Path, default=None, help="write the per-agent results here")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    scale = AgentScale(
        token_scale=args.token_scale,
        time_scale=args.time_scale,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
    )
    results = run_agents(
        args.url,
        args.agents,
        seed=args.seed,
        kinds=[k for k in args.kinds.split(",") if k],
        tenants=args.tenants,
        concurrency=args.concurrency,
        arrival_rate_per_s=args.rate,
        scale=scale,
    )
    failed = [r for r in results if r.error]
    durations = [r.duration_s for r in results if not r.error]
    print(f"{len(results)} agents, {len(failed)} failed, {sum(r.calls for r in results)} LLM calls")
    if durations:
        print(f"task time: median {statistics.median(durations):.2f} s, max {max(durations):.2f} s")
    prompt = sum(r.prompt_tokens for r in results)
    cached = sum(r.cached_tokens for r in results)
    print(f"prompt tokens {prompt}, cached {cached} ({cached / max(prompt, 1):.1%})")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
