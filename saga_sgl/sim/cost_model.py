"""GPU cost of one engine iteration (Vidur-style), for the simulated workers.

Per iteration of a replica running model M with tensor-parallel degree t::

    T_iter = T_lin(n) + T_pf_attn + T_dec_attn + T_tp(n) + T_cpu
      n          prefill-chunk tokens + decode sequences in the batch
      T_lin(n)   linear ops (GEMMs, norms, rope, activation), piecewise-linear in Vidur's profiles
      T_pf_attn  sum over prefill chunks 4 L (H d) q (P + q/2) / (t eta_fa F_peak)  (q new, P cached)
      T_dec_attn sum over decode sequences kv_len B_kv / (t eta_bw BW)              (memory bound)
      T_tp       (t > 1) 2 L AR(n d_model 2 bytes), AR from Vidur's NCCL all-reduce profiles
      T_cpu      scheduler + sampling overhead per iteration

The profile tables are derived by ``saga_sgl.sim.derive_cost_constants`` and shipped as
``cost_constants.json``; ``ProfileCostModel.from_vidur_dir`` re-derives them from a profile folder.
Between two batch changes the decode iterations have a fixed composition whose KV grows by one token
per sequence per iteration, so ``decode_run_s`` sums them in closed form (decode fast-forward).

This module models *cost* only; it makes no scheduling decision. It implements the policy core's
``CostModel`` protocol (``prefill_time_s`` / ``decode_time_s``, for Eq. 9 predictions).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saga_sgl.sim.derive_cost_constants import derive

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import CostModel

CONSTANTS_PATH = Path(__file__).with_name("cost_constants.json")
DEFAULT_VIDUR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vidur"
"""``../shared/data/vidur`` relative to the repository root."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Transformer shape. Source: the models' HF configs (Vidur CSV columns agree)."""

    name: str
    num_layers: int
    d_model: int
    """Hidden size; equals n_heads x head_dim for Llama, the H d of the attention FLOP term."""
    num_kv_heads: int
    head_dim: int
    weight_bytes: float
    """bf16 weights, all shards together (8.03e9 / 70.6e9 params x 2 bytes)."""

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, all layers, bf16: 128 KiB (8B) / 320 KiB (70B; the Mooncake paper's 320 KB)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSpec:
    """One GPU. Vendor datasheets (A100-SXM4-80GB, H100-SXM5-80GB)."""

    name: str
    peak_bf16_flops: float
    """Dense bf16 peak: A100 312 TF/s, H100 SXM 989 TF/s."""
    hbm_bytes_per_s: float
    """HBM bandwidth: A100-80GB 2.039 TB/s, H100 SXM 3.35 TB/s."""
    memory_bytes: float
    """80 GB for both."""


MODELS: dict[str, ModelSpec] = {
    "llama-3-8b": ModelSpec(
        name="llama-3-8b", num_layers=32, d_model=4096, num_kv_heads=8, head_dim=128, weight_bytes=16.06e9
    ),
    "llama-3-70b": ModelSpec(
        name="llama-3-70b", num_layers=80, d_model=8192, num_kv_heads=8, head_dim=128, weight_bytes=141.2e9
    ),
}
GPUS: dict[str, GpuSpec] = {
    "a100": GpuSpec(name="a100", peak_bf16_flops=312e12, hbm_bytes_per_s=2.039e12, memory_bytes=80e9),
    "h100": GpuSpec(name="h100", peak_bf16_flops=989e12, hbm_bytes_per_s=3.35e12, memory_bytes=80e9),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CostSettings:
    """Efficiency factors and overheads of the analytic terms."""

    flash_attn_efficiency: float = 0.45
    """eta_fa: achieved fraction of bf16 peak in prefill attention. FA2 reaches ~0.6-0.73 on A100 and
    ~0.35 on H100, FA3 0.6-0.75 (arXiv 2307.08691, 2407.08608); 0.45 is the research note's middle."""
    hbm_efficiency: float = 0.75
    """eta_bw: achieved fraction of HBM bandwidth when decode attention streams the KV cache."""
    cpu_overhead_s: float = 0.001
    """T_cpu per iteration: scheduler and sampling not hidden by SGLang's overlap scheduler (0.5-2 ms)."""
    mem_fraction_static: float = 0.9
    """SGLang --mem-fraction-static: share of GPU memory for weights + KV pool."""
    activation_reserve_bytes_per_gpu: float = 4e9
    """Activations, CUDA graphs and allocator slack kept out of the KV pool, per GPU (~4 GB)."""

    def __post_init__(self) -> None:
        for name in ("flash_attn_efficiency", "hbm_efficiency", "mem_fraction_static"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"CostSettings.{name} must be in (0, 1], got {value}")
        if self.cpu_overhead_s < 0:
            raise ValueError(f"CostSettings.cpu_overhead_s must be >= 0, got {self.cpu_overhead_s}")


class _Piecewise:
    """Piecewise-linear y(x) through sorted points.

    Past the last point it extrapolates with a least-squares line over the upper half of the x range
    (GEMM time is linear in tokens there; two noisy end points alone can give a negative slope).
    """

    __slots__ = ("_slope", "_xs", "_y_at_max", "_ys")

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        if len(points) < 2:
            raise ValueError("a profile needs at least two points")
        # Profiles repeat some x values (several runs); average them so x is strictly increasing.
        merged: dict[float, list[float]] = {}
        for x, y in points:
            merged.setdefault(float(x), []).append(float(y))
        self._xs = sorted(merged)
        self._ys = [sum(merged[x]) / len(merged[x]) for x in self._xs]
        if len(self._xs) < 2:
            raise ValueError("a profile needs at least two distinct points")
        upper = [(x, y) for x, y in zip(self._xs, self._ys, strict=True) if x >= self._xs[-1] / 2]
        if len(upper) < 2:
            upper = list(zip(self._xs[-2:], self._ys[-2:], strict=True))
        mx = sum(x for x, _ in upper) / len(upper)
        my = sum(y for _, y in upper) / len(upper)
        self._slope = sum((x - mx) * (y - my) for x, y in upper) / sum((x - mx) ** 2 for x, _ in upper)
        self._y_at_max = my + self._slope * (self._xs[-1] - mx)

    def __call__(self, x: float) -> float:
        xs, ys = self._xs, self._ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return self._y_at_max + self._slope * (x - xs[-1])
        i = bisect.bisect_left(xs, x)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class ProfileCostModel:
    """Iteration time of one replica, linear ops interpolated from Vidur's profiles.

    ``model``/``gpu``/``tp`` select the profile (``llama-3-8b`` or ``llama-3-70b``; ``a100`` or
    ``h100``; tp in 1, 2, 4, 8). ``chunk_size_tokens`` is the chunked-prefill size used by the
    isolated ``prefill_time_s`` estimate.
    """

    def __init__(
        self,
        *,
        model: str = "llama-3-8b",
        gpu: str = "a100",
        tp: int = 1,
        settings: CostSettings | None = None,
        constants: dict[str, Any] | None = None,
        chunk_size_tokens: int = 8192,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose from {sorted(MODELS)}")
        if gpu not in GPUS:
            raise ValueError(f"unknown gpu {gpu!r}; choose from {sorted(GPUS)}")
        data = constants if constants is not None else load_constants()
        key = f"{model}/{gpu}/tp{tp}"
        if key not in data["linear_ms"]:
            raise ValueError(f"no linear-op profile for {key}")
        self.model = MODELS[model]
        self.gpu = GPUS[gpu]
        self.tp = tp
        self.settings = settings or CostSettings()
        self.chunk_size_tokens = chunk_size_tokens
        self._lin_ms = _Piecewise(data["linear_ms"][key]["points"])
        self._ar_ms = _Piecewise(data["all_reduce_ms_by_bytes"][f"{gpu}/tp{tp}"]) if tp > 1 else None
        # Per-iteration constant part c(n) is looked up for every event; memoise small n.
        self._const_cache: dict[int, float] = {}
        self._prefill_cache: dict[tuple[int, int], float] = {}
        """``prefill_time_s`` by its arguments: a pure function, asked again for the same running
        call every epoch (AFS weighs the cost of a preemption) and per candidate worker."""
        s = self.settings
        self._pf_attn_s_per_flop = 1.0 / (tp * s.flash_attn_efficiency * self.gpu.peak_bf16_flops)
        self.decode_attn_s_per_kv_token = self.model.kv_bytes_per_token / (
            tp * s.hbm_efficiency * self.gpu.hbm_bytes_per_s
        )
        """a: seconds one decode iteration spends per cached token it attends to."""

    @classmethod
    def from_vidur_dir(cls, vidur_dir: Path, **kwargs: Any) -> ProfileCostModel:
        """Build from a Vidur profiling folder instead of the shipped constants."""
        return cls(constants=derive(vidur_dir), **kwargs)

    # --- capacity -------------------------------------------------------------------------------
    def kv_capacity_tokens(self) -> int:
        """KV pool of one replica: (mem x tp x fraction - weights - reserve x tp) / bytes per token."""
        s = self.settings
        free = (
            self.gpu.memory_bytes * self.tp * s.mem_fraction_static
            - self.model.weight_bytes
            - s.activation_reserve_bytes_per_gpu * self.tp
        )
        if free <= 0:
            raise ValueError(f"{self.model.name} does not fit on {self.tp} x {self.gpu.name}")
        return int(free // self.model.kv_bytes_per_token)

    # --- terms ----------------------------------------------------------------------------------
    def linear_s(self, num_tokens: int) -> float:
        """T_lin(n) in seconds."""
        return self._lin_ms(num_tokens) / 1e3 if num_tokens > 0 else 0.0

    def tp_comm_s(self, num_tokens: int) -> float:
        """T_tp(n): two all-reduces per layer of n x d_model bf16 activations."""
        if self._ar_ms is None or num_tokens <= 0:
            return 0.0
        return 2 * self.model.num_layers * self._ar_ms(num_tokens * self.model.d_model * 2) / 1e3

    def prefill_attention_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        """T_pf_attn of one chunk of q new tokens attending to P cached ones (causal within the chunk)."""
        q = num_new_tokens
        flops = 4 * self.model.num_layers * self.model.d_model * q * (num_cached_tokens + q / 2)
        return flops * self._pf_attn_s_per_flop

    def iteration_constant_s(self, num_tokens: int) -> float:
        """c(n) = T_lin(n) + T_tp(n) + T_cpu: the part that depends only on the batch's token count."""
        c = self._const_cache.get(num_tokens)
        if c is None:
            c = self.linear_s(num_tokens) + self.tp_comm_s(num_tokens) + self.settings.cpu_overhead_s
            if num_tokens <= 65536:
                self._const_cache[num_tokens] = c
        return c

    # --- iterations -----------------------------------------------------------------------------
    def prefill_iteration_s(self, chunks: Sequence[tuple[int, int]]) -> float:
        """One prefill-only iteration (SGLang's default: prefill and decode batches alternate).

        ``chunks`` holds (new tokens, cached prefix tokens) per request in the batch.
        """
        n = sum(q for q, _ in chunks)
        return self.iteration_constant_s(n) + sum(self.prefill_attention_s(q, p) for q, p in chunks)

    def decode_run_s(self, num_seqs: int, sum_kv_tokens: int, num_iters: int) -> float:
        """k decode iterations of ``num_seqs`` sequences whose KV lengths sum to ``sum_kv_tokens``
        at the first iteration; each iteration adds one token per sequence. Closed form of
        sum_j c(n) + a (S + j n)."""
        if num_iters <= 0 or num_seqs <= 0:
            return 0.0
        k = num_iters
        a = self.decode_attn_s_per_kv_token
        return k * self.iteration_constant_s(num_seqs) + a * (k * sum_kv_tokens + num_seqs * k * (k - 1) / 2)

    def decode_iters_within(self, num_seqs: int, sum_kv_tokens: int, duration_s: float) -> int:
        """Largest k with ``decode_run_s(num_seqs, sum_kv_tokens, k) <= duration_s``."""
        if duration_s <= 0 or num_seqs <= 0:
            return 0
        a = self.decode_attn_s_per_kv_token
        c = self.iteration_constant_s(num_seqs)
        qa = a * num_seqs / 2
        qb = c + a * sum_kv_tokens - qa
        k = (
            int(duration_s / qb)
            if qa == 0
            else int((-qb + math.sqrt(qb * qb + 4 * qa * duration_s)) / (2 * qa))
        )
        # Guard against floating-point rounding at the boundary.
        while k > 0 and self.decode_run_s(num_seqs, sum_kv_tokens, k) > duration_s:
            k -= 1
        while self.decode_run_s(num_seqs, sum_kv_tokens, k + 1) <= duration_s:
            k += 1
        return k

    # --- CostModel protocol (isolated estimates, Eq. 9) -----------------------------------------
    def prefill_time_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        """Prefill ``num_new_tokens`` alone, in chunks of ``chunk_size_tokens``."""
        key = (num_new_tokens, num_cached_tokens)
        total = self._prefill_cache.get(key)
        if total is not None:
            return total
        total, done = 0.0, 0
        while done < num_new_tokens:
            q = min(self.chunk_size_tokens, num_new_tokens - done)
            total += self.prefill_iteration_s(((q, num_cached_tokens + done),))
            done += q
        if len(self._prefill_cache) >= 1 << 16:
            self._prefill_cache.clear()  # bounded memory on long runs
        self._prefill_cache[key] = total
        return total

    def decode_time_s(self, num_output_tokens: int, num_context_tokens: int) -> float:
        """Decode ``num_output_tokens`` alone (batch of one) from a context of ``num_context_tokens``."""
        return self.decode_run_s(1, num_context_tokens, num_output_tokens)


def load_constants(path: Path = CONSTANTS_PATH) -> dict[str, Any]:
    """The shipped constants (``cost_constants.json``)."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


if TYPE_CHECKING:
    _check: CostModel = ProfileCostModel()
