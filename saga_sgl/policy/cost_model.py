"""LinearCostModel: an analytic per-request GPU-time model (the default ``CostModel``).

    T_prefill(q new tokens on P cached) = t_fixed + c_lin * q + c_attn * q * (P + q / 2)
    T_decode(o tokens from context C)   = o * (t_step + c_kv * (C + o / 2))

The linear term is the slope of Vidur's profiled per-iteration linear-op time for n >= 2048 tokens,
the attention term is 4 L (H d) q (P + q/2) / (eta_fa F_peak), and the decode term is one iteration
floor per token plus reading the KV (bytes per token / (eta_bw BW)) (research:
workloads-and-cost-model.md section 2.3). Defaults: Llama-3-8B, bf16, one H100 SXM, TP1.

It prices one request in isolation (GPU-seconds of work, as Eq. 9 needs), not a batch: the
simulator's profile-based model implements the same Protocol for batched iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.settings import require_non_negative

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import CostModel


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearCostSettings:
    """Coefficients of ``LinearCostModel`` (defaults: Llama-3-8B on one H100, TP1)."""

    prefill_fixed_s: float = 3.7e-3
    """t_fixed: per-prefill constant (Vidur Llama-2-7B H100 fit 3.4 ms x 1.08 for Llama-3-8B)."""
    prefill_per_token_s: float = 21.8e-6
    """c_lin: linear-op seconds per prefilled token (Vidur fit 20.2 us x 1.08)."""
    prefill_attn_s_per_token2: float = 1.18e-9
    """c_attn: 4 L (H d) / (eta_fa F_peak) = 4*32*4096 / (0.45 * 989e12) seconds per token^2."""
    decode_step_s: float = 6.0e-3
    """t_step: one decode iteration at batch 1 (Vidur T_lin(1) = 5.6 ms x 1.08)."""
    decode_kv_read_s_per_token: float = 5.2e-8
    """c_kv: KV bytes per token / (eta_bw BW) = 131072 / (0.75 * 3.35e12) seconds per context token."""

    def __post_init__(self) -> None:
        owner = "LinearCostSettings"
        for name in (
            "prefill_fixed_s",
            "prefill_per_token_s",
            "prefill_attn_s_per_token2",
            "decode_step_s",
            "decode_kv_read_s_per_token",
        ):
            require_non_negative(owner, name, getattr(self, name))


class LinearCostModel:
    """Analytic GPU time of prefill and decode for one request. Implements ``CostModel``."""

    name: ClassVar[str] = "linear"

    def __init__(self, settings: LinearCostSettings | None = None) -> None:
        self.settings = settings or LinearCostSettings()

    def prefill_time_s(self, num_new_tokens: int, num_cached_tokens: int) -> float:
        if num_new_tokens <= 0:
            return 0.0
        s = self.settings
        q = float(num_new_tokens)
        return (
            s.prefill_fixed_s
            + s.prefill_per_token_s * q
            + s.prefill_attn_s_per_token2 * q * (max(num_cached_tokens, 0) + q / 2.0)
        )

    def decode_time_s(self, num_output_tokens: int, num_context_tokens: int) -> float:
        if num_output_tokens <= 0:
            return 0.0
        s = self.settings
        o = float(num_output_tokens)
        return o * (s.decode_step_s + s.decode_kv_read_s_per_token * (max(num_context_tokens, 0) + o / 2.0))


if TYPE_CHECKING:
    _check: CostModel = LinearCostModel()
