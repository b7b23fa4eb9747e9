"""Statistics for benchmarks/cluster.py: paired ratios, bootstrap CIs, SLO, Jain, Belady replay."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from saga_sgl.sim.metrics import SimResult, TaskRecord


def window(tasks: Sequence[TaskRecord], horizon_s: float, frac: float = 0.1) -> list[TaskRecord]:
    """Tasks that arrived in the middle (1 - 2 frac) of the arrival window (drop warm-up/cool-down)."""
    lo, hi = frac * horizon_s, (1 - frac) * horizon_s
    return [t for t in tasks if lo <= t.arrival_s < hi]


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x > 0]
    return float(math.exp(np.mean(np.log(xs)))) if xs else float("nan")


def tct_summary(tasks: Sequence[TaskRecord]) -> dict[str, float]:
    tct = np.array([t.tct_s for t in tasks]) if tasks else np.array([float("nan")])
    return {
        "tct_geomean_s": geomean(list(tct)),
        "tct_p50_s": float(np.percentile(tct, 50)),
        "tct_p99_s": float(np.percentile(tct, 99)),
        "slowdown_geomean": geomean([t.slowdown for t in tasks]),
    }


def paired_ratio(
    base: dict[str, float], ours: dict[str, float], rng: np.random.Generator, n_boot: int = 2000
) -> dict[str, float]:
    """Geomean of TCT_base / TCT_ours over task ids finished in both, bootstrap 95% CI, Wilcoxon p."""
    ids = sorted(set(base) & set(ours))
    if len(ids) < 2:
        return {
            "ratio": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "p_value": float("nan"),
            "n": len(ids),
        }
    r = np.log(np.array([base[i] for i in ids]) / np.array([ours[i] for i in ids]))
    boots = rng.choice(r, size=(n_boot, len(r)), replace=True).mean(axis=1)
    try:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(r).pvalue) if np.any(r != 0) else 1.0
    except ImportError:  # scipy is in the test extras; the ratio and CI do not need it
        p = float("nan")
    return {
        "ratio": float(np.exp(r.mean())),
        "ci_low": float(np.exp(np.percentile(boots, 2.5))),
        "ci_high": float(np.exp(np.percentile(boots, 97.5))),
        "p_value": p,
        "n": len(ids),
    }


def slo_by_class(tasks: Sequence[TaskRecord], slo_factor: float) -> dict[str, float]:
    by: dict[str, list[bool]] = defaultdict(list)
    for t in tasks:
        ok = t.tct_s <= slo_factor * t.isolated_s
        by[t.tenant_class].append(ok)
        by["overall"].append(ok)
    return {k: float(np.mean(v)) for k, v in sorted(by.items())}


def jain_fairness(tasks: Sequence[TaskRecord]) -> float:
    """Jain's index over tenants of the mean slowdown (1 = perfectly even)."""
    by: dict[str, list[float]] = defaultdict(list)
    for t in tasks:
        by[t.tenant].append(t.slowdown)
    x = np.array([np.mean(v) for v in by.values()])
    if len(x) == 0:
        return float("nan")
    return float(x.sum() ** 2 / (len(x) * (x**2).sum()))


def _path_ids(trace: Sequence[tuple[tuple[int, int], ...]]) -> list[list[tuple[int, int]]]:
    """Rename segments by their whole path so that every id has one parent (observation masking can
    put a segment behind a different parent)."""
    ids: dict[tuple[int, int], int] = {}
    out = []
    for access in trace:
        parent = -1
        chain = []
        for seg, tokens in access:
            key = (parent, seg)
            pid = ids.get(key)
            if pid is None:
                pid = ids[key] = len(ids)
            chain.append((pid, tokens))
            parent = pid
        out.append(chain)
    return out


def config_metrics(
    result: SimResult, horizon_s: float, slo_factor: float, closed_loop: bool
) -> dict[str, Any]:
    tasks = result.tasks if closed_loop else window(result.tasks, horizon_s)
    out: dict[str, Any] = tct_summary(tasks)
    out.update(result.summary())
    out["num_window_tasks"] = len(tasks)
    out["slo_attainment"] = slo_by_class(tasks, slo_factor)
    out["jain_fairness"] = jain_fairness(tasks)
    first = min((t.arrival_s for t in result.tasks), default=0.0)
    last = max((t.finished_s for t in result.tasks), default=1.0)
    out["throughput_tasks_per_min"] = len(result.tasks) / max(last - first, 1e-9) * 60
    out["throughput_tokens_per_s"] = result.counters.get("output_tokens", 0) / max(last - first, 1e-9)
    return out
