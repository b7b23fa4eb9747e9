"""What fraction of a GPU scheduler step the saga plugin's cache work costs, with and without the
native fast path (issue 14). Self-contained: torch (CUDA) and this repository only; no SGLang.

Three parts, each labelled in the output:

1. GPU, measured here: one forward step of a decoder **shaped like Llama-3-8B** (32 layers, hidden
   4096, 32 query / 8 KV heads of 128, SwiGLU FFN 14336, RMSNorm, vocab 128256) with **random bf16
   weights** (timing only: no checkpoint, no RoPE, no sampling). Decode steps at each ``--batches``
   size with ``--context`` tokens of KV per sequence (replayed from a CUDA graph, as SGLang runs
   decode; eager if capture fails), and one prefill chunk of ``--prefill-tokens``.
2. Host CPU of this machine, measured here: the policy part of the plugin's cache work, i.e. one
   victim decision (pop the victim and index a replacement, as ``benchmarks/policy_micro.py``) of the
   default saga policy in the core ``VictimIndex`` at ``--entries``, with the native saga_kernels
   KeyHeap and with its pure-Python fallback (built in place first if a C compiler is here).
3. The radix-tree part needs SGLang, which this machine lacks: the per-request cache work of
   ``lru/rust`` (SGLang's default), ``saga/python`` (native KeyHeap) and ``saga/python-pyheap``
   (fallback) is read from ``--overhead-json`` (``benchmarks/eviction_overhead.py``, measured on the
   CPU development VM; CPU µs per request), and labelled as such.

Share of a step: a scheduler step does the cache work of the requests it finishes and admits
(checkpoint, match, insert, evict); with ``--output-tokens`` decoded tokens per request, a decode
batch of B finishes about B / output_tokens requests per step and admits as many:
``share = (B / output_tokens) x cache µs per request / decode step µs``.

    python benchmarks/gpu_step_cost.py --out "$OUT"            # H100: about 2-3 minutes
    python benchmarks/gpu_step_cost.py --device cpu --layers 1 --batches 1 --context 64 \\
        --prefill-tokens 64 --iters 2 --entries 2048              # a smoke run without a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "kernels")]

from _machine import cpu_model  # noqa: E402  (benchmarks/ is the script's own folder)

# --- part 1: the GPU forward step -------------------------------------------------------------------


class Shape:
    """Llama-3-8B's shape (random weights)."""

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.hidden = 4096
        self.heads = 32
        self.kv_heads = 8
        self.head_dim = 128
        self.ffn = 14336
        self.vocab = 128256


def build_model(shape: Shape, device: str, dtype: Any) -> dict[str, Any]:
    import torch

    def w(*size: int) -> Any:
        return torch.randn(*size, device=device, dtype=dtype) * 0.02

    qkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    layers = [
        {
            "norm1": torch.ones(shape.hidden, device=device, dtype=dtype),
            "qkv": w(qkv, shape.hidden),
            "o": w(shape.hidden, shape.heads * shape.head_dim),
            "norm2": torch.ones(shape.hidden, device=device, dtype=dtype),
            "gate_up": w(2 * shape.ffn, shape.hidden),
            "down": w(shape.hidden, shape.ffn),
        }
        for _ in range(shape.layers)
    ]
    return {
        "layers": layers,
        "norm": torch.ones(shape.hidden, device=device, dtype=dtype),
        "lm_head": w(shape.vocab, shape.hidden),
    }


def forward(model: dict[str, Any], shape: Shape, x: Any, kv: list[tuple[Any, Any]] | None) -> Any:
    """x: [B, T, hidden]. kv: per layer (k, v) of [B, kv_heads, L, head_dim] (decode), or None
    (prefill: causal attention over the chunk itself)."""
    import torch.nn.functional as F

    b, t, _ = x.shape
    hd, nh, nkv = shape.head_dim, shape.heads, shape.kv_heads
    for i, layer in enumerate(model["layers"]):
        h = F.rms_norm(x, (shape.hidden,), layer["norm1"])
        q, k, v = (h @ layer["qkv"].T).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        q = q.view(b, t, nh, hd).transpose(1, 2)
        k = k.view(b, t, nkv, hd).transpose(1, 2)
        v = v.view(b, t, nkv, hd).transpose(1, 2)
        if kv is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            ck, cv = kv[i]
            ck[:, :, -1:].copy_(k)  # the new token's KV lands in the cache (fixed slot: timing only)
            cv[:, :, -1:].copy_(v)
            a = F.scaled_dot_product_attention(q, ck, cv, enable_gqa=True)
        x = x + a.transpose(1, 2).reshape(b, t, nh * hd) @ layer["o"].T
        h = F.rms_norm(x, (shape.hidden,), layer["norm2"])
        gate, up = (h @ layer["gate_up"].T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ layer["down"].T
    x = F.rms_norm(x[:, -1:], (shape.hidden,), model["norm"])
    return x @ model["lm_head"].T


def time_gpu(fn: Any, iters: int, device: str) -> list[float]:
    """Milliseconds per call of ``fn``, ``iters`` samples after 3 warm-up calls."""
    import torch

    for _ in range(3):
        fn()
    out = []
    for _ in range(iters):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_decode(model: dict[str, Any], shape: Shape, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """One decode step of ``batch`` sequences with ``args.context`` KV tokens each."""
    import torch

    device, dtype = args.device, torch.bfloat16
    size = (batch, shape.kv_heads, args.context, shape.head_dim)
    kv = [
        (torch.randn(size, device=device, dtype=dtype), torch.randn(size, device=device, dtype=dtype))
        for _ in range(shape.layers)
    ]
    x = torch.randn(batch, 1, shape.hidden, device=device, dtype=dtype)

    def step() -> Any:
        return forward(model, shape, x, kv)

    run, mode = step, "eager"
    if device.startswith("cuda") and not args.no_graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            run, mode = graph.replay, "cuda_graph"
        except Exception as exc:  # capture unsupported: eager timing, said so
            print(f"CUDA graph capture failed ({exc}); timing eager decode", file=sys.stderr)
    samples = time_gpu(run, args.iters, device)
    return {
        "batch": batch,
        "context": args.context,
        "mode": mode,
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
    }


def gpu_part(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    shape = Shape(args.layers)
    dtype = torch.bfloat16
    device = args.device
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(shape, device, dtype)
    result: dict[str, Any] = {
        "model": f"Llama-3-8B-shaped decoder, {shape.layers} layers, RANDOM bf16 weights (timing only)",
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "build_s": time.perf_counter() - t0,
        "decode": [],
    }
    with torch.inference_mode():
        x = torch.randn(1, args.prefill_tokens, shape.hidden, device=device, dtype=dtype)
        samples = time_gpu(lambda: forward(model, shape, x, None), args.iters, device)
        result["prefill"] = {"tokens": args.prefill_tokens, "median_ms": statistics.median(samples)}
        print(
            f"prefill {args.prefill_tokens} tokens: {result['prefill']['median_ms']:.2f} ms", file=sys.stderr
        )
        for batch in args.batches:
            row = time_decode(model, shape, batch, args)
            result["decode"].append(row)
            print(
                f"decode batch {batch} x {args.context} ({row['mode']}): {row['median_ms']:.2f} ms",
                file=sys.stderr,
            )
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return result


# --- part 2: the policy part of the cache work on this host's CPU --------------------------------


def policy_part(args: argparse.Namespace) -> dict[str, Any]:
    import saga_kernels

    built: str = "already built"
    if saga_kernels.NativeKeyHeap is None and not args.no_build:
        from saga_kernels import build

        built = "built now" if build.build() else "build failed or no compiler: fallback only"
        if built == "built now":  # a fresh interpreter would import it; re-import here
            import importlib

            importlib.reload(saga_kernels)
    from policy_micro import make_entry as entry  # the same random entries as policy_micro.py

    from saga_sgl.policy import registry
    from saga_sgl.policy.victim_index import VictimIndex

    backends = ["python"] if saga_kernels.NativeKeyHeap is None else ["native", "python"]
    out: dict[str, Any] = {
        "native_build": built,
        "cpu": cpu_model(),
        "policy": registry.DEFAULT_EVICTION,
        "victim_us": {},
    }
    for n in args.entries:
        for backend in backends:
            rng = random.Random(0)
            index = VictimIndex(registry.create_eviction("saga"), backend)
            now = 1000.0
            for i in range(n):
                index.add(entry(rng, i, now), now, 0.8)
            calls, repeats = 2000, 5
            fresh = iter([entry(rng, n + i, now + (i + 1) * 1e-3) for i in range(calls * repeats)])
            per_call = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(calls):
                    now += 1e-3
                    index.pop(now, 0.8)
                    index.add(next(fresh), now, 0.8)
                per_call.append((time.perf_counter() - t0) / calls * 1e6)
            out["victim_us"][f"{backend}@{n}"] = statistics.median(per_call)
            print(f"victim decision {backend} @ {n}: {statistics.median(per_call):.1f} us", file=sys.stderr)
    return out


# --- part 3 and the shares ----------------------------------------------------------------------------

TREE_ROWS = ("lru/rust", "priority/rust", "saga/python", "saga/python-pyheap")
"""eviction_overhead rows quoted: SGLang's default, option (a), option (c) native and fallback."""


def tree_part(path: Path, nodes: int) -> dict[str, float]:
    """CPU µs per request of the eviction_overhead rows at ``nodes`` (measured on the CPU dev VM)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    rows = {
        r["row"]: float(r.get("cpu_us_per_request") or r["us_per_request"])
        for r in data.get("results", [])
        if r["nodes"] == nodes
    }
    return {row: rows[row] for row in TREE_ROWS if row in rows}


def shares(gpu: dict[str, Any], tree: dict[str, float], output_tokens: int) -> list[dict[str, Any]]:
    rows = []
    for d in gpu["decode"]:
        per_step = d["batch"] / output_tokens
        step_us = d["median_ms"] * 1e3
        row: dict[str, Any] = {"batch": d["batch"], "step_ms": d["median_ms"], "requests_per_step": per_step}
        for name, us in tree.items():
            row[name] = per_step * us / step_us
        rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    gpu, pol, tree = report["gpu"], report["policy"], report["tree_cpu_us_per_request"]
    lines = [
        f"# Cache work per scheduler step beside a forward pass ({gpu['device_name']})",
        "",
        f"Model: {gpu['model']}; torch {gpu['torch']}. Prefill {gpu['prefill']['tokens']} tokens: "
        f"{gpu['prefill']['median_ms']:.2f} ms.",
        "",
        "| decode batch | context | mode | step ms |",
        "|---:|---:|---|---:|",
    ]
    lines += [
        f"| {d['batch']} | {d['context']} | {d['mode']} | {d['median_ms']:.2f} |" for d in gpu["decode"]
    ]
    lines += [
        "",
        f"Victim decision of `{pol['policy']}` on this host's CPU ({pol['cpu']}; native build: "
        f"{pol['native_build']}):",
        "",
        "| backend@entries | µs/decision |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in pol["victim_us"].items()]
    if tree:
        lines += [
            "",
            f"Cache work per request from `{report['settings']['overhead_json']}` "
            f"({report['settings']['tree_nodes']} nodes; CPU µs measured on the CPU dev VM, not here): "
            + ", ".join(f"{k} {v:.0f}" for k, v in tree.items()),
            "",
            f"Share of a decode step (requests per step = batch / {report['settings']['output_tokens']}):",
            "",
            "| batch | step ms | " + " | ".join(tree) + " |",
            "|---:|---:|" + "---:|" * len(tree),
        ]
        for s in report["shares"]:
            lines.append(
                f"| {s['batch']} | {s['step_ms']:.2f} | "
                + " | ".join(f"{100 * s[k]:.2f}%" for k in tree)
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--device", default="cuda", help="torch device for the forward pass (cuda, or cpu for a smoke run)"
    )
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (Llama-3-8B: 32)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128], help="decode batch sizes")
    ap.add_argument("--context", type=int, default=2048, help="KV tokens per sequence in decode")
    ap.add_argument("--prefill-tokens", type=int, default=2048, help="tokens of the prefill chunk (batch 1)")
    ap.add_argument("--iters", type=int, default=20, help="timed samples per configuration (median reported)")
    ap.add_argument("--no-graph", action="store_true", help="time eager decode instead of CUDA-graph replay")
    ap.add_argument(
        "--entries",
        type=int,
        nargs="+",
        default=[16_384, 50_000],
        help="entries in the victim index for the CPU policy part",
    )
    ap.add_argument("--no-build", action="store_true", help="do not try to compile the native kernels here")
    ap.add_argument(
        "--output-tokens",
        type=int,
        default=256,
        help="decoded tokens per request: a batch of B finishes and admits B/this requests a step",
    )
    ap.add_argument(
        "--overhead-json",
        type=Path,
        default=REPO / "benchmarks/results/eviction_overhead.json",
        help="eviction_overhead.py results (tree-core cache work per request, measured on CPU)",
    )
    ap.add_argument(
        "--tree-nodes", type=int, default=50_000, help="which tree size of --overhead-json to use"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT", REPO / "benchmarks/results")),
        help="folder for gpu_step_cost.{json,md} (default $OUT, else benchmarks/results)",
    )
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on the GPU machine, or pass --device cpu for a smoke run")
    t0 = time.perf_counter()
    policy = policy_part(args)  # CPU first: nothing else runs on the host meanwhile
    gpu = gpu_part(args)
    tree = tree_part(args.overhead_json, args.tree_nodes)
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "gpu": gpu,
        "policy": policy,
        "tree_cpu_us_per_request": tree,
        "shares": shares(gpu, tree, args.output_tokens),
        "wall_s": time.perf_counter() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_step_cost.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "gpu_step_cost.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten to {args.out}/gpu_step_cost.{{json,md}} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
