"""Simulator eviction cost against Belady on the agent workloads under KV pressure, on ONE fixed schedule.

Why a fixed schedule: in the simulator the eviction policy changes the timing (a hit shortens a
prefill), so each row's run reads its own access sequence, and the old metric (each row against
Belady on that row's own sequence) had a different denominator per row: the Belady row itself
scored 0.72-1.33. Here, per scenario and seed, the simulator runs ONCE with ``--schedule-row``
(default: the SAGA row: its placement, fairness, admission, stealing, and its scheduler's hints),
and ``saga_sgl.replay.sim_schedule`` records each worker's accesses (admission, prompt segments,
output, finish) and the scheduler's hint record of every workflow whenever the simulator would
re-key it. That same schedule is then replayed (``saga_sgl.replay.schedule_replay``) through every
eviction policy and through Belady (prefix-closed MIN on the true next reads; labelled oracle), each
worker with its recorded KV pool x ``--capacity-scales``. Every ratio has the same denominator and
the oracle row is 1.000 by construction.

Metric: eviction recompute = prompt tokens recomputed on a worker that had computed them before
and evicted them since (bypassed segments excluded: the pool was all pinned, no policy could keep
them); first reads are the same for every row. ``/ Belady`` = row / Belady; ``/ LRU`` = row / LRU.
Scale 1.0 is the pool the recorded run had (KV pressure); < 1 adds pressure (more of the pool is
pinned by running calls: bypass grows), > 1 relieves it (Belady's cost falls towards 0 and the
ratios of small numbers grow).

Rows: ``lru`` (SGLang radix LRU), ``vllm_prefix`` (vLLM's order), ``wa_lru``, ``reuse_time``,
``saga`` (the registry default: reuse density behind the recency guard), ``saga no guard`` (the key
alone), ``saga no TTL`` and ``belady (oracle)``. The project rows see the scheduler's recorded hints
(what a live plugin is told), nothing clairvoyant. Two more oracles isolate what the prediction of
tool return times costs: ``saga, true returns`` and ``reuse_time, true returns`` get each workflow's
true next admission on the worker as its next use (P = 1, or never) instead of the prediction,
the wait measured from the moment the view is built; ``saga key alone, true returns`` drops the TTL
tier, the recency guard and the depth weight, to show the key's rule itself given perfect returns.
The scheduler re-keys each tool gap at log-spaced ages (``SchedulerSettings.gap_rekey_ages_s``:
P(return | age) and the expected remaining wait from its learned gap distribution, the wait
anchored at the re-key), and ``saga`` sees those hint updates as it sees any. The horizon of P is
horizon_factor x the residence time of the worker that holds the workflow's context, as that
worker measured it (``SchedulerSettings.residence_horizon``; the simulator's worker, as the
plugin on ``/v1/loads``). The recording also keeps the hints the scheduler would have sent without
it (``CacheHints.baseline``, same instants, same gap model): ``saga, horizon without residence
(s8)`` replays those on the same schedule (session 8's saga, paired). Note that the recorded
residence time is the recorded run's pool's: a replay at another scale sees hints made for the
recorded pressure. Three rows show what the re-keys are worth: ``saga, tool-start hints only``
ignores every re-prediction made during a gap (the ablation, on the same schedule);
``saga, re-keyed by age (s7 emulation)`` is session 7's benchmark-side emulation on the s8 hints
(its own gap model learned from the replay, horizon 4x the replayed cache's residence time);
``saga, known gap distribution (oracle)`` (and its ``s8 hints`` twin) keeps the scheduler's re-key instants
and P but takes the wait from the workload's TRUE per-tool latency distribution given the age
(``schedule_replay.KnownGaps``): what a perfect model of the gap distribution gives, without
knowing each draw. A breakdown says what the victims of Belady, LRU and saga were (their
workflow's state) when evicted.

    python benchmarks/eviction_sim.py        # swe, web-history; seeds 7 8; 4 workers x 90K tokens
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model

from saga_sgl.policy import registry
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.views import WorkflowState
from saga_sgl.replay.schedule_replay import (
    KnownGaps,
    ScheduleStats,
    ViewMode,
    belady_policy,
    replay_schedule,
)
from saga_sgl.replay.sim_schedule import HintChange, Schedule, record_schedule
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import ClusterSettings
from saga_sgl.sim.worker import WorkerSettings
from saga_sgl.sim.workloads import WorkloadSpec, generate
from saga_sgl.sim.workloads.tool_latency import TABLE1, SplicedLatency

SCHEDULE_ROWS = {r.label: r for r in (*rows.MAIN_ROWS, *rows.ABLATIONS)}
TARGET = 1.15
"""Issue 10's target: saga's eviction recompute / Belady's on the agent workloads under KV pressure."""


@dataclass(frozen=True)
class Row:
    label: str
    mode: ViewMode
    make: Callable[[], EvictionPolicy]
    oracle: bool = False
    baseline: bool = False
    """Replays the hints the scheduler would have sent without the workers' residence times
    (``CacheHints.baseline``, recorded at the same instants), on the same schedule."""


def _key_alone() -> EvictionPolicy:
    """The reuse-density key with no TTL tier, recency guard or depth weight: its rule alone."""
    return registry.create_eviction(
        "saga", {"ttl_protection": False, "recency_guard": False, "cost_weight": 0.0}
    )


ROWS = (
    Row("belady (oracle)", ViewMode.ORACLE, belady_policy, oracle=True),
    Row("lru", ViewMode.PLAIN, lambda: registry.create_eviction("lru")),
    Row("vllm_prefix", ViewMode.PLAIN, lambda: registry.create_eviction("vllm_prefix")),
    Row("wa_lru", ViewMode.HINTS, lambda: registry.create_eviction("wa_lru")),
    Row("reuse_time", ViewMode.HINTS, lambda: registry.create_eviction("reuse_time")),
    Row("saga", ViewMode.HINTS, lambda: registry.create_eviction("saga")),
    Row("saga no guard", ViewMode.HINTS, lambda: registry.create_eviction("saga", {"recency_guard": False})),
    Row("saga no TTL", ViewMode.HINTS, lambda: registry.create_eviction("saga", {"ttl_protection": False})),
    Row(
        "saga, horizon without residence (s8)",
        ViewMode.HINTS,
        lambda: registry.create_eviction("saga"),
        baseline=True,
    ),
    Row(
        "saga, tool-start hints only (no age re-keys)",
        ViewMode.HINTS_AT_TOOL_START,
        lambda: registry.create_eviction("saga"),
    ),
    Row(
        "saga, re-keyed by age (s7 emulation)",
        ViewMode.HINTS_BY_AGE,
        lambda: registry.create_eviction("saga"),
        baseline=True,  # it scales session 8's hints (horizon without residence), as it was built to
    ),
    Row(
        "saga, known gap distribution (oracle)",
        ViewMode.KNOWN_GAP,
        lambda: registry.create_eviction("saga"),
        True,
    ),
    Row(
        "saga, known gap distribution, s8 hints (oracle)",
        ViewMode.KNOWN_GAP,
        lambda: registry.create_eviction("saga"),
        True,
        baseline=True,
    ),
    Row("saga, true returns (oracle)", ViewMode.TRUE_RETURN, lambda: registry.create_eviction("saga"), True),
    Row("saga key alone, true returns (oracle)", ViewMode.TRUE_RETURN, lambda: _key_alone(), True),
    Row(
        "reuse_time, true returns (oracle)",
        ViewMode.TRUE_RETURN,
        lambda: registry.create_eviction("reuse_time", {"ttl_protection": False}),
        True,
    ),
)
BLAMED = ("belady (oracle)", "lru", "saga")
"""Rows whose eviction recompute is broken down by what the victim was when evicted."""


def ratio(num: float, den: float) -> float | None:
    """num / den; 1.0 when both are 0; None (undefined) when only the denominator is."""
    if den > 0:
        return num / den
    return 1.0 if num == 0 else None


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def known_gaps(spec: WorkloadSpec) -> KnownGaps:
    """The workload's true per-tool latency distributions (the generator's; oracle input)."""
    if spec.tool_cv is not None:
        raise ValueError("the known-gap oracle covers Table 1's spliced latencies, not --tool-cv sweeps")
    scale = spec.tool_scale

    def scaled(dist: SplicedLatency) -> Callable[[np.ndarray], np.ndarray]:
        return lambda u: dist.quantile(u) * scale

    return KnownGaps({tool: scaled(dist) for tool, dist in TABLE1.items()})


def hint_traffic(schedule: Any) -> dict[str, float]:
    """Tool gaps in the recorded schedule and the hint updates the scheduler sent during them after
    the tool start (age re-keys and overdue re-predictions: ``CacheHints.predicted_at_s`` set)."""
    gaps = rekeys = most = 0
    open_gaps: dict[Any, int] = {}
    for e in schedule.events:
        if not isinstance(e, HintChange):
            continue
        if e.hints is None or e.hints.state is not WorkflowState.TOOL_GAP:
            open_gaps.pop(e.workflow, None)
            continue
        if e.workflow not in open_gaps:
            open_gaps[e.workflow] = 0
            gaps += 1
        elif e.hints.predicted_at_s is not None:
            open_gaps[e.workflow] += 1
            rekeys += 1
            most = max(most, open_gaps[e.workflow])
    return {
        "tool_gaps": gaps,
        "rekeys": rekeys,
        "rekeys_per_gap": rekeys / gaps if gaps else 0.0,
        "max_per_gap": most,
    }


def baseline_schedule(schedule: Schedule) -> Schedule:
    """The same schedule with every hint record replaced by the scheduler's baseline record (what it
    would have sent without the workers' residence times, predicted at the same instants)."""
    events = [
        dataclasses.replace(e, hints=e.hints.baseline)
        if isinstance(e, HintChange) and e.hints is not None and e.hints.baseline is not None
        else e
        for e in schedule.events
    ]
    return dataclasses.replace(schedule, events=events)


def run_cell(
    schedule: Schedule, scale: float, gaps: KnownGaps | None = None, baseline: Schedule | None = None
) -> list[dict[str, Any]]:
    blames: dict[str, dict[str, int]] = {label: {} for label in BLAMED}
    stats: dict[str, ScheduleStats] = {
        r.label: replay_schedule(
            baseline if r.baseline and baseline is not None else schedule,
            r.make,
            r.mode,
            scale,
            blame=blames.get(r.label),
            known_gaps=gaps,
        )
        for r in ROWS
        if not r.baseline or baseline is not None
    }

    belady = stats["belady (oracle)"].evicted_recompute_tokens
    lru = stats["lru"].evicted_recompute_tokens
    return [
        {
            "row": label,
            "evicted_recompute_tokens": st.evicted_recompute_tokens,
            "recomputed_tokens": st.recomputed_tokens,
            "compulsory_tokens": st.compulsory_tokens,
            "bypassed_tokens": st.bypassed_tokens,
            "read_tokens": st.read_tokens,
            "hit_ratio": st.hit_ratio,
            "evictions": st.evictions,
            "ratio_to_belady": ratio(st.evicted_recompute_tokens, belady),
            "ratio_to_lru": ratio(st.evicted_recompute_tokens, lru),
            "blame": blames.get(label),
        }
        for label, st in stats.items()
    ]


def summarise(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario and scale: each row's summed eviction recompute over seeds / Belady's sum."""
    cells: dict[tuple[str, float], dict[str, float]] = {}
    blames: dict[tuple[str, float], dict[str, dict[str, float]]] = {}
    for cell in out:
        key = (cell["scenario"], cell["scale"])
        acc = cells.setdefault(key, {})
        for r in cell["rows"]:
            acc[r["row"]] = acc.get(r["row"], 0.0) + r["evicted_recompute_tokens"]
            if r.get("blame") is not None:
                b = blames.setdefault(key, {}).setdefault(r["row"], {})
                for kind, tokens in r["blame"].items():
                    b[kind] = b.get(kind, 0.0) + tokens
    summary = []
    for (sc, scale), acc in sorted(cells.items()):
        b = acc["belady (oracle)"]
        summary.append(
            {
                "scenario": sc,
                "scale": scale,
                "belady_tokens": b,
                "lru_over_belady": ratio(acc["lru"], b),
                "ratios": {k: ratio(v, b) for k, v in acc.items()},
                "blame": blames.get((sc, scale), {}),
            }
        )
    return summary


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    labels = [r.label for r in ROWS]
    lines = [
        "# Simulator eviction cost vs Belady on one fixed schedule (agent workloads, KV pressure)",
        "",
        f"Command: `{report['command']}`. Machine: {report['machine']} (2-core shared VM, other jobs "
        f"running). Wall time {report['wall_s']:.0f} s. Schedule recorded once per scenario and seed "
        f"with the `{s['schedule_row']}` row on {s['workers']} workers x {s['kv_tokens']:,} KV tokens, "
        f"{s['horizon_s']:g} s of arrivals at {s['rate_per_min']:g}/min; every row below replays it.",
        "",
        "Eviction recompute / Belady's (summed over seeds; the oracle is 1.000 by construction). "
        f"Scale = KV pool / the recorded pool (1.0 = the pressure of the recorded run). Target for "
        f"`saga`: <= {TARGET} under KV pressure.",
        "",
        "| scenario | scale | Belady tokens | " + " | ".join(labels) + " |",
        "|---|---:|---:|" + "---:|" * len(labels),
    ]
    for c in report["summary"]:
        lines.append(
            f"| {c['scenario']} | {c['scale']:g} | {c['belady_tokens']:,.0f} | "
            + " | ".join(fmt(c["ratios"].get(label)) for label in labels)
            + " |"
        )
    lines += [
        "",
        "## Where the eviction recompute comes from",
        "",
        "Eviction recompute tokens (summed over seeds) by what the victim was when it was evicted: its "
        "workflow's recorded state (`tool gap, TTL live`: the tool-aware TTL had not expired; `workflow "
        "finished`: a segment only that workflow had read, read again later by another one), or "
        "`shared by workflows` (read by several: a system prompt).",
        "",
        "| scenario | scale | victim was | " + " | ".join(BLAMED) + " |",
        "|---|---:|---|" + "---:|" * len(BLAMED),
    ]
    for c in report["summary"]:
        kinds = sorted({k for b in c["blame"].values() for k in b})
        for kind in kinds:
            lines.append(
                f"| {c['scenario']} | {c['scale']:g} | {kind} | "
                + " | ".join(f"{c['blame'].get(label, {}).get(kind, 0):,.0f}" for label in BLAMED)
                + " |"
            )
    lines += [
        "",
        "Per seed (eviction recompute tokens, / Belady, / LRU; bypassed tokens are the same pool-full "
        "misses for every row). `sim own` is what the simulator itself counted for the recording row "
        "(its own timing and accounting; context only, not comparable across rows).",
        "",
        "| scenario | seed | scale | row | evict recompute | / Belady | / LRU | hit ratio | bypassed |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cell in report["runs"]:
        for r in cell["rows"]:
            lines.append(
                f"| {cell['scenario']} | {cell['seed']} | {cell['scale']:g} | {r['row']} | "
                f"{r['evicted_recompute_tokens']:,} | {fmt(r['ratio_to_belady'])} | "
                f"{fmt(r['ratio_to_lru'])} | "
                f"{r['hit_ratio']:.4f} | {r['bypassed_tokens']:,} |"
            )
        lines.append(
            f"| {cell['scenario']} | {cell['seed']} | {cell['scale']:g} | sim own ({s['schedule_row']}) "
            f"| {cell['sim_recomputed_evicted']:,.0f} | | | | |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({c["scenario"] for c in report["summary"]})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, sc in zip(axes[0], scenarios, strict=True):
        cells = [c for c in report["summary"] if c["scenario"] == sc]
        xs = [c["scale"] for c in cells]
        for r in ROWS:
            ys = [c["ratios"].get(r.label) for c in cells]
            ys_plot = [math.nan if y is None else y for y in ys]
            ax.plot(xs, ys_plot, "--" if r.mode is ViewMode.PLAIN else "-", marker="o", label=r.label)
        ax.axhline(TARGET, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("KV pool / recorded pool")
        ax.set_ylabel("eviction recompute / Belady")
        ax.set_title(sc)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kv-tokens", type=int, default=90_000, help="KV pool per worker in the recorded run")
    ap.add_argument("--workers", type=int, default=4, help="simulated workers")
    ap.add_argument("--scenarios", nargs="+", default=["swe", "web-history"], help="agent workload scenarios")
    ap.add_argument("--horizon-s", type=float, default=180.0, help="arrival window of the workload, seconds")
    ap.add_argument("--rate-per-min", type=float, default=20.0, help="task arrivals per minute")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8], help="workload and simulator seeds")
    ap.add_argument(
        "--capacity-scales",
        type=float,
        nargs="+",
        default=[0.75, 1.0, 1.5],
        help="replay each worker with this multiple of its recorded KV pool (1.0 = the recorded pressure)",
    )
    ap.add_argument(
        "--schedule-row",
        default="saga",
        choices=sorted(SCHEDULE_ROWS),
        help="simulator row whose run is recorded (placement, scheduling and the hints the rows see)",
    )
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "eviction_sim.json"),
        help="JSON output (a markdown table and a PNG plot are written next to it)",
    )
    args = ap.parse_args(argv)
    if args.kv_tokens <= 0 or args.workers <= 0 or args.horizon_s <= 0 or args.rate_per_min <= 0:
        ap.error("--kv-tokens, --workers, --horizon-s and --rate-per-min must be > 0")
    if not all(s > 0 for s in args.capacity_scales):
        ap.error("--capacity-scales must be > 0")
    settings = ClusterSettings(
        num_workers=args.workers, worker=WorkerSettings(kv_capacity_tokens=args.kv_tokens)
    )
    t0 = time.perf_counter()
    out: list[dict[str, Any]] = []
    jobs = [(sc, seed) for sc in args.scenarios for seed in args.seeds]
    bar = tqdm(total=len(jobs) * (1 + len(args.capacity_scales)), desc="eviction_sim", file=sys.stderr)
    for sc, seed in jobs:
        bar.set_postfix_str(f"{sc} seed {seed}: recording {args.schedule_row}")
        spec = WorkloadSpec(scenario=sc, seed=seed, horizon_s=args.horizon_s, rate_per_min=args.rate_per_min)
        wl = generate(spec)
        gaps = known_gaps(spec)
        row = dataclasses.replace(SCHEDULE_ROWS[args.schedule_row], record_baseline_hints=True)
        schedule, result = record_schedule(wl, row, settings, seed=seed)
        baseline = baseline_schedule(schedule)
        bar.update()
        for scale in args.capacity_scales:
            bar.set_postfix_str(f"{sc} seed {seed}: replay x{scale:g}")
            out.append(
                {
                    "scenario": sc,
                    "seed": seed,
                    "scale": scale,
                    "sim_recomputed_evicted": result.counters.get("recomputed_evicted", 0),
                    "rows": run_cell(schedule, scale, gaps, baseline),
                    "hint_traffic": hint_traffic(schedule),
                }
            )
            bar.update()
    bar.close()
    report: dict[str, Any] = {
        "benchmark": "eviction_sim",
        "command": "python benchmarks/eviction_sim.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": cpu_model(),
        "settings": vars(args),
        "wall_s": time.perf_counter() - t0,
        "summary": summarise(out),
        "runs": out,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    md = render(report)
    path.with_suffix(".md").write_text(md)
    plot(report, path.with_suffix(".png"))
    print(md)
    return report


if __name__ == "__main__":
    main()
