"""``python -m saga_sgl.launch``: start a local SGLang cluster with the saga plugin, and optionally
replay a small agent workload against it.

Today this starts N real SGLang workers (CPU by default: the tiny Llama config with dummy weights)
with saga's predicted-reuse eviction, then either keeps them serving (``--serve``) or runs a short
agent demo (the default): several multi-step workflows whose calls carry ``saga.reuse`` kv_hints,
reporting per step how many prompt tokens the radix cache served. The multi-node router joins this
command when it lands; until then workflows are pinned to workers by a stable hash of their id.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from saga_sgl.local_workers import TINY_MODEL_DIR, TINY_VOCAB_SIZE, WorkerProcess, WorkerSpec, running_workers
from saga_sgl.protocol import ReuseHint, encode_kv_hints, request_id

log = logging.getLogger("saga_sgl.launch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saga_sgl.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=1, help="number of SGLang workers to start (default 1)")
    p.add_argument(
        "--base-port",
        type=int,
        default=30000,
        help="first worker port; worker i listens on base-port + i (default 30000)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="SGLang --device; 'cpu' uses the tiny dummy-weight model and the CPU shims (default cpu)",
    )
    p.add_argument(
        "--model-path",
        default=str(TINY_MODEL_DIR),
        help="model directory or hub id for the workers (default: the shipped tiny Llama config)",
    )
    p.add_argument(
        "--eviction-policy",
        default="saga",
        help="SGLang --radix-eviction-policy: 'saga' (our default), 'reuse_time', 'wa_lru', or a "
        "stock SGLang policy such as 'lru' for comparison (default saga)",
    )
    p.add_argument(
        "--max-total-tokens",
        type=int,
        default=768,
        help="KV capacity per worker in tokens; small on CPU so that the demo's workflows do not all fit "
        "and eviction decides what is recomputed (default 768)",
    )
    p.add_argument(
        "--compare-with",
        default="lru",
        help="demo: afterwards replay the same workload on fresh workers with this eviction policy and "
        "compare recomputed prompt tokens; 'none' to skip (default lru, SGLang's stock policy)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where worker logs go (default: a fresh temporary directory, printed at start)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=240.0,
        help="seconds to wait for each worker's /health (default 240)",
    )
    p.add_argument(
        "--serve-text",
        action="store_true",
        help="CPU: load the tiny model's committed tokenizer so workers accept text prompts (SGLang DSL "
        "programs, chat, grammars); without it CPU workers run --skip-tokenizer-init and take input_ids",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true", help="keep the workers serving until Ctrl-C")
    mode.add_argument(
        "--demo",
        action="store_true",
        help="run the agent demo and exit (the default when --serve is not given)",
    )
    p.add_argument("--workflows", type=int, default=6, help="demo: number of agent workflows (default 6)")
    p.add_argument("--steps", type=int, default=5, help="demo: LLM calls per workflow (default 5)")
    p.add_argument("--seed", type=int, default=0, help="demo: seed of the synthetic prompts (default 0)")
    p.add_argument("--json", type=Path, default=None, help="demo: also write the per-call results here")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


@dataclass(frozen=True, slots=True)
class CallResult:
    workflow_id: str
    step: int
    worker: str
    prompt_tokens: int
    cached_tokens: int
    latency_s: float


def _post(url: str, body: dict[str, object], timeout_s: float = 120.0) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _stable_index(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def run_demo(
    workers: list[WorkerProcess], *, num_workflows: int, num_steps: int, seed: int
) -> list[CallResult]:
    """Interleave several agent workflows step by step (round robin, as an agent fleet whose tool
    calls take similar time would): each call's prompt is the previous context plus the model output
    and a tool observation, so a cache that keeps the workflow's KV across the tool gap serves it again.

    Each call carries the hint a router would send: the workflow's next call comes after every other
    workflow had its turn, so its predicted next use is ``(num_workflows - 1)`` mean call latencies
    away; the last call of a workflow is terminal.
    """
    rng = random.Random(seed)
    system_prompt = [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(48)]  # shared by all workflows
    contexts = {
        f"demo-wf{i}": list(system_prompt) + [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(32)]
        for i in range(num_workflows)
    }
    tools = ["read_file", "edit_code", "run_test"]
    results: list[CallResult] = []
    mean_call_s = 0.05
    with tqdm(total=num_workflows * num_steps, desc="agent calls", unit="call") as bar:
        for step in range(num_steps):
            for wf_id, context in contexts.items():
                worker = workers[_stable_index(wf_id, len(workers))]
                terminal = step == num_steps - 1
                hint = ReuseHint(
                    workflow_id=wf_id,
                    step=step,
                    tool="" if terminal else tools[step % len(tools)],
                    reuse_prob=0.0 if terminal else 0.95,
                    next_use_in_s=None if terminal else (num_workflows - 1) * mean_call_s,
                    terminal=terminal,
                )
                t0 = time.monotonic()
                out = _post(
                    worker.url + "/generate",
                    {
                        "input_ids": context,
                        "sampling_params": {"max_new_tokens": 8, "temperature": 0},
                        "rid": request_id(wf_id, step),
                        "routing_key": wf_id,
                        "kv_hints": encode_kv_hints(hint),
                    },
                )
                latency_s = time.monotonic() - t0
                mean_call_s = 0.9 * mean_call_s + 0.1 * latency_s
                meta = out["meta_info"]
                assert isinstance(meta, dict)
                results.append(
                    CallResult(
                        wf_id,
                        step,
                        worker.url,
                        int(meta["prompt_tokens"]),
                        int(meta["cached_tokens"]),
                        latency_s,
                    )
                )
                # Next prompt: context + model output + a tool observation.
                output_ids = out.get("output_ids") or []
                assert isinstance(output_ids, list)
                context.extend(int(t) % TINY_VOCAB_SIZE for t in output_ids)
                context.extend(rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(rng.randint(16, 40)))
                bar.update(1)
    return results


def summarize(results: list[CallResult]) -> str:
    lines = ["| step | calls | prompt tokens | cached tokens | cache hit |", "|---:|---:|---:|---:|---:|"]
    for step in sorted({r.step for r in results}):
        rows = [r for r in results if r.step == step]
        prompt = sum(r.prompt_tokens for r in rows)
        cached = sum(r.cached_tokens for r in rows)
        lines.append(f"| {step} | {len(rows)} | {prompt} | {cached} | {cached / max(prompt, 1):.1%} |")
    prompt = sum(r.prompt_tokens for r in results)
    cached = sum(r.cached_tokens for r in results)
    lines.append(f"| all | {len(results)} | {prompt} | {cached} | {cached / max(prompt, 1):.1%} |")
    return "\n".join(lines)


def _specs(args: argparse.Namespace, policy: str) -> list[WorkerSpec]:
    return [
        WorkerSpec(
            port=args.base_port + i,
            model_path=args.model_path,
            device=args.device,
            max_total_tokens=args.max_total_tokens,
            eviction_policy=policy,
            serve_text=args.serve_text,
        )
        for i in range(args.workers)
    ]


def _serve(workers: list[WorkerProcess]) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("serving on %s; Ctrl-C to stop", ", ".join(w.url for w in workers))
    try:
        while not stop.wait(1.0):
            if any(w.process.poll() is not None for w in workers):
                log.error("a worker exited; shutting down")
                return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.workers < 1 or args.workflows < 1 or args.steps < 1:
        print("--workers, --workflows and --steps must be >= 1", file=sys.stderr)
        return 2
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="saga-workers-"))
    policies = [args.eviction_policy]
    if not args.serve and args.compare_with not in ("none", args.eviction_policy):
        policies.append(args.compare_with)
    all_results: dict[str, list[CallResult]] = {}
    for policy in policies:
        log.info(
            "starting %d SGLang worker(s) with --radix-eviction-policy %s, %d KV tokens each; logs in %s",
            args.workers,
            policy,
            args.max_total_tokens,
            log_dir,
        )
        t0 = time.monotonic()
        with running_workers(_specs(args, policy), log_dir, ready_timeout_s=args.ready_timeout) as workers:
            log.info("%d worker(s) ready after %.1f s", len(workers), time.monotonic() - t0)
            if args.serve:
                return _serve(workers)
            all_results[policy] = run_demo(
                workers, num_workflows=args.workflows, num_steps=args.steps, seed=args.seed
            )
        print(f"\n### --radix-eviction-policy {policy}\n\n{summarize(all_results[policy])}\n")
    if len(all_results) == 2:
        print(compare(all_results))
    if args.json:
        payload = {p: [dataclasses.asdict(r) for r in rs] for p, rs in all_results.items()}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def compare(all_results: dict[str, list[CallResult]]) -> str:
    """One line per policy: prompt tokens recomputed (not served from the radix cache)."""
    recomputed = {p: sum(r.prompt_tokens - r.cached_tokens for r in rs) for p, rs in all_results.items()}
    (ours, ours_n), (base, base_n) = recomputed.items()
    ratio = base_n / ours_n if ours_n else float("inf")
    return (
        f"recomputed prompt tokens: {ours} {ours_n}, {base} {base_n} "
        f"({ratio:.2f}x as many with {base}; same workload, seed and KV capacity)"
    )


if __name__ == "__main__":
    sys.exit(main())
