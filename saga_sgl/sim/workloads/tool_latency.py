"""Tool-latency distributions for the workload generators (sampling only; no policy here).

``TABLE1`` holds the SAGA paper's Table 1 percentiles (production tool latencies, ms):

=============== ====== ====== =======
tool             P50    P95    P99
=============== ====== ====== =======
code execution   180   2,400  28,000
file operations   45     320   1,200
web / API        850   4,500  45,000
database         120     890   3,500
=============== ====== ====== =======

A log-normal fitted through P50 and P95 predicts P99s far below the table (7.0 s / 0.72 s / 9.0 s /
2.0 s), so Table 1 is heavier-tailed than a log-normal. ``SplicedLatency`` matches all three
percentiles exactly: a log-normal body through (P50, P95) up to P95, then a Pareto tail from P95 with
the exponent that puts P99 where the table does, capped at ``max_s`` (the Pareto tail of the code and
web rows has an infinite mean without a cap). ``LogNormalLatency`` is the paper's CV-sweep model:
mean held fixed, sigma = sqrt(ln(1 + CV^2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_Z95 = NormalDist().inv_cdf(0.95)


@dataclass(frozen=True, slots=True, kw_only=True)
class SplicedLatency:
    """Log-normal body through (P50, P95), Pareto tail from P95 through P99, capped at ``max_s``."""

    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float = 120.0
    """Hard cap of a single tool call (seconds); a named limit, not a silent clamp."""

    def __post_init__(self) -> None:
        if not 0 < self.p50_s < self.p95_s < self.p99_s <= self.max_s:
            raise ValueError(f"need 0 < p50 < p95 < p99 <= max, got {self}")

    @property
    def sigma(self) -> float:
        return math.log(self.p95_s / self.p50_s) / _Z95

    @property
    def tail_alpha(self) -> float:
        """Pareto exponent: P(X > P99 | X > P95) = 0.01 / 0.05."""
        return math.log(5.0) / math.log(self.p99_s / self.p95_s)

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF at uniforms ``u`` in [0, 1)."""
        u = np.asarray(u, dtype=float)
        body = self.p50_s * np.exp(self.sigma * _ndtri(np.minimum(u, 0.95)))
        tail = self.p95_s * (0.05 / np.maximum(1.0 - u, 1e-12)) ** (1.0 / self.tail_alpha)
        return np.minimum(np.where(u <= 0.95, body, tail), self.max_s)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.quantile(rng.random(n))


@dataclass(frozen=True, slots=True, kw_only=True)
class LogNormalLatency:
    """Log-normal with a given mean and coefficient of variation (the paper's CV sweep)."""

    mean_s: float = 1.2
    cv: float = 1.0

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log(1.0 + self.cv**2))

    def quantile(self, u: np.ndarray) -> np.ndarray:
        mu = math.log(self.mean_s) - self.sigma**2 / 2
        return np.exp(mu + self.sigma * _ndtri(np.asarray(u, dtype=float)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.quantile(rng.random(n))


_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _ndtri(u: np.ndarray) -> np.ndarray:
    """Standard normal inverse CDF, vectorised (Acklam's rational approximation, rel. error < 1.2e-9)."""
    p = np.clip(np.asarray(u, dtype=float), 1e-15, 1 - 1e-15)
    out = np.empty_like(p)
    lo, hi = p < 0.02425, p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    num = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1
    out[mid] = num / den
    for mask, sign in ((lo, 1.0), (hi, -1.0)):
        pp = p[mask] if sign > 0 else 1 - p[mask]
        qq = np.sqrt(-2 * np.log(pp))
        num = ((((_C[0] * qq + _C[1]) * qq + _C[2]) * qq + _C[3]) * qq + _C[4]) * qq + _C[5]
        den = (((_D[0] * qq + _D[1]) * qq + _D[2]) * qq + _D[3]) * qq + 1
        out[mask] = sign * num / den
    result: np.ndarray = out
    return result


TABLE1: dict[str, SplicedLatency] = {
    "code": SplicedLatency(p50_s=0.180, p95_s=2.4, p99_s=28.0),
    "file": SplicedLatency(p50_s=0.045, p95_s=0.320, p99_s=1.2),
    "web": SplicedLatency(p50_s=0.850, p95_s=4.5, p99_s=45.0),
    "db": SplicedLatency(p50_s=0.120, p95_s=0.890, p99_s=3.5),
}
"""SAGA paper Table 1, as spliced distributions (see module docstring)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolMix:
    """Which tool follows a call, and how long it takes."""

    weights: tuple[tuple[str, float], ...]
    """(tool, probability) pairs; probabilities sum to 1."""
    scale: float = 1.0
    """Multiplies every latency (the tool-latency-scale sensitivity axis)."""
    cv_override: float | None = None
    """If set, every tool draws from LogNormalLatency(mean_s=cv_mean_s, cv=cv_override) instead of
    Table 1 (the paper's Table 10 sweep holds the mean at 1.2 s)."""
    cv_mean_s: float = 1.2

    def __post_init__(self) -> None:
        total = sum(w for _, w in self.weights)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"ToolMix weights must sum to 1, got {total}")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
        names = [t for t, _ in self.weights]
        idx = rng.choice(len(names), size=n, p=[w for _, w in self.weights])
        u = rng.random(n)
        lat = np.empty(n)
        for i, name in enumerate(names):
            mask = idx == i
            if not mask.any():
                continue
            dist: SplicedLatency | LogNormalLatency = (
                TABLE1[name]
                if self.cv_override is None
                else LogNormalLatency(mean_s=self.cv_mean_s, cv=self.cv_override)
            )
            lat[mask] = dist.quantile(u[mask])
        return [names[i] for i in idx], lat * self.scale


SWE_TOOL_MIX = ToolMix(weights=(("code", 0.45), ("file", 0.40), ("web", 0.10), ("db", 0.05)))
"""SWE-bench tool mix of the paper's generator [R]."""
WEB_TOOL_MIX = ToolMix(weights=(("web", 0.75), ("file", 0.15), ("code", 0.05), ("db", 0.05)))
"""WebArena tool mix of the paper's generator [R]."""
TENANT_TOOL_MIX = ToolMix(weights=(("code", 0.5), ("web", 0.5)))
"""BurstGPT-derived multi-tenant mix: tools 50/50 code/web [R]."""
