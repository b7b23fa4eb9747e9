"""Task arrival processes: Poisson and bursty (Gamma inter-arrivals with a chosen CV)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrivals:
    """Open-loop arrivals of one tenant."""

    rate_per_min: float
    """Mean task arrival rate (tasks per minute)."""
    burst_cv: float = 1.0
    """Coefficient of variation of inter-arrival times: 1.0 = Poisson (exponential gaps); 2-4 is the
    BurstGPT/AlpaServe bursty regime (Gamma gaps with shape 1/CV^2)."""

    def __post_init__(self) -> None:
        if self.rate_per_min <= 0 or self.burst_cv <= 0:
            raise ValueError(f"Arrivals needs rate_per_min > 0 and burst_cv > 0, got {self}")

    def times(self, rng: np.random.Generator, horizon_s: float) -> np.ndarray:
        """Arrival times in [0, horizon_s)."""
        mean_gap = 60.0 / self.rate_per_min
        expected = int(horizon_s / mean_gap * 1.5) + 16
        out: list[np.ndarray] = []
        t0 = 0.0
        while True:
            if self.burst_cv == 1.0:
                gaps = rng.exponential(mean_gap, expected)
            else:
                shape = 1.0 / self.burst_cv**2
                gaps = rng.gamma(shape, mean_gap / shape, expected)
            ts = t0 + np.cumsum(gaps)
            out.append(ts[ts < horizon_s])
            if ts[-1] >= horizon_s:
                break
            t0 = float(ts[-1])
        return np.concatenate(out)
