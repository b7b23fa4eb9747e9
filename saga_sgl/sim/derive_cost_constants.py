"""Derive the simulator's GPU cost constants from Vidur's operator profiles and write them as JSON.

Run once (the output is committed, so the simulator never needs the profile folder)::

    python -m saga_sgl.sim.derive_cost_constants --vidur-dir ../shared/data/vidur \
        --out saga_sgl/sim/cost_constants.json

What is derived, and from where (Vidur, microsoft/vidur@7d47513, MIT, ``data/profiling``):

* ``linear``: per (model, gpu, tp) the time of all token-level operators of one forward pass,
  ``T_lin(n)`` in ms, as a function of the batch's token count ``n``. It is the *median* CUDA-event
  time of each operator in ``compute/<gpu>/meta-llama/<model>/mlp.csv``, summed as
  ``emb + L * (input_layernorm + attn_pre_proj + attn_rope + attn_post_proj +
  post_attention_layernorm + mlp_up_proj + mlp_act + mlp_down_proj + 2 * add)`` (two residual adds
  per layer). No attention kernel, all-reduce or CPU time is included.
  Vidur has no H100 Llama-3 profiles: H100 Llama-3-8B is Llama-2-7B scaled by ``H100_8B_SCALE``
  (= 1.08: linear FLOPs per token 6.98B vs 6.48B; the A100 ratio is 1.06 at large n and 1.09 at the
  decode floor), and H100 Llama-3-70B is Llama-2-70B unscaled (same layer shapes except vocabulary).
* ``all_reduce``: per (gpu, tp) median all-reduce time (ms) against the buffer size in *bytes*
  (``network/<gpu>_dgx/all_reduce.csv``, rows with ``num_workers == devices_per_node == tp``). Vidur's
  own predictor reads ``size`` as bytes; at 64 MiB on H100 TP8 that gives 208 GB/s algorithm
  bandwidth, the plausible NVLink figure (the fp16-elements reading would give an impossible 417 GB/s).

Nothing here reads a clock or a global; the output is deterministic for given inputs.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

OPS_PER_LAYER = (
    ("input_layernorm", 1),
    ("attn_pre_proj", 1),
    ("attn_rope", 1),
    ("attn_post_proj", 1),
    ("post_attention_layernorm", 1),
    ("mlp_up_proj", 1),
    ("mlp_act", 1),
    ("mlp_down_proj", 1),
    ("add", 2),
)
H100_8B_SCALE = 1.08
"""Llama-2-7B -> Llama-3-8B scale of the linear-op time on H100 (see module docstring)."""

# (model key, gpu, vidur model dir, n_layers, scale)
PROFILE_SOURCES: tuple[tuple[str, str, str, int, float], ...] = (
    ("llama-3-8b", "a100", "Meta-Llama-3-8B", 32, 1.0),
    ("llama-3-70b", "a100", "Meta-Llama-3-70B", 80, 1.0),
    ("llama-3-8b", "h100", "Llama-2-7b-hf", 32, H100_8B_SCALE),
    ("llama-3-70b", "h100", "Llama-2-70b-hf", 80, 1.0),
)


def linear_table(mlp_csv: Path, n_layers: int, scale: float) -> dict[int, list[list[float]]]:
    """``{tp: [[num_tokens, t_lin_ms], ...]}`` sorted by num_tokens."""
    by_tp: dict[int, list[list[float]]] = defaultdict(list)
    with mlp_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            per_layer = sum(float(row[f"time_stats.{op}.median"]) * k for op, k in OPS_PER_LAYER)
            total_ms = float(row["time_stats.emb.median"]) + n_layers * per_layer
            by_tp[int(row["num_tensor_parallel_workers"])].append(
                [int(row["num_tokens"]), round(total_ms * scale, 4)]
            )
    return {tp: sorted(rows) for tp, rows in sorted(by_tp.items())}


def all_reduce_table(ar_csv: Path) -> dict[int, list[list[float]]]:
    """``{tp: [[size_bytes, median_ms], ...]}`` for single-node rings."""
    by_tp: dict[int, list[list[float]]] = defaultdict(list)
    with ar_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            workers = int(row["num_workers"])
            if workers != int(row["devices_per_node"]):
                continue
            by_tp[workers].append([int(row["size"]), float(row["time_stats.all_reduce.median"])])
    return {tp: sorted(rows) for tp, rows in sorted(by_tp.items())}


def derive(vidur_dir: Path) -> dict[str, object]:
    linear: dict[str, dict[str, list[list[float]]]] = {}
    for model, gpu, vidur_model, n_layers, scale in PROFILE_SOURCES:
        path = vidur_dir / "compute" / gpu / "meta-llama" / vidur_model / "mlp.csv"
        table = linear_table(path, n_layers, scale)
        for tp, rows in table.items():
            linear[f"{model}/{gpu}/tp{tp}"] = {"points": rows}
    all_reduce: dict[str, list[list[float]]] = {}
    for gpu in ("a100", "h100"):
        for tp, rows in all_reduce_table(vidur_dir / "network" / f"{gpu}_dgx" / "all_reduce.csv").items():
            all_reduce[f"{gpu}/tp{tp}"] = rows
    return {
        "source": "microsoft/vidur@7d47513363ec447a741ac5e47241580b47724fbf data/profiling (MIT)",
        "derivation": "saga_sgl/sim/derive_cost_constants.py",
        "h100_llama3_8b_from_llama2_7b_scale": H100_8B_SCALE,
        "linear_ms": linear,
        "all_reduce_ms_by_bytes": all_reduce,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--vidur-dir", type=Path, default=Path("../shared/data/vidur"), help="Vidur profiling folder"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("cost_constants.json"), help="output JSON"
    )
    args = parser.parse_args(argv)
    data = derive(args.vidur_dir)
    args.out.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
