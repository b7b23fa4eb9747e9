"""How tight is the all-schedulers floor of the live workload, and what could a schedule gain?

For each live run (``benchmarks/live.py``'s ``live.json``) and each of its seeds, on the task model
``benchmarks/sim_fidelity.py`` builds from it, at the measured load stretch of a row (cache_aware's,
and saga's), under the calibrated CPU cost model:

* two floors no scheduler beats (oracles): ``finite_closed_loop_bound`` (session 7) and
  ``fluid_closed_loop_bound`` (each task on one worker at a time; ``saga_sgl.sim.bounds``);
* every explicit schedule of ``benchmarks/explicit_schedules.py`` (order x calls per worker x
  preemptive or run to completion x placement x pool), priced by the same model;
* the simulator's saga row (the engine, with the admission the live row ran) and cache_aware row.

Reported per run: each mean over the seeds, best schedule / floor, and the implied best gain over
live cache_aware: live cache_aware mean / the best schedule's mean at cache_aware's stretch (what
the best schedule we found would gain under the load cache_aware ran under); and
live cache_aware mean / (1.5 x floor): below 1 means no scheduler reaches 1.5x under this model.
Validity checks: no explicit schedule, simulated row or live row below the tight floor (recorded as
the smallest ratio; the run fails if any is below 1).

Command (~10-20 s per run, single process): ``python benchmarks/schedule_tightness.py --live
benchmarks/results/live_s7_final.json ... --out benchmarks/results/sim_fidelity_s8_tight.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import sim_fidelity as sf
from benchmarks.explicit_schedules import Schedule, all_schedules, schedule_tcts
from saga_sgl.policy.views import PendingCallView
from saga_sgl.scheduler.workflow_scheduler import WorkflowRecord, WorkflowScheduler
from saga_sgl.sim.bounds import finite_closed_loop_bound, fluid_closed_loop_bound

CACHE_AWARE = "sglang-router cache_aware + LRU"
ADMISSION_ON = {"enabled": True, "shared_prefix_once": True}


def saga_rtc(order: str) -> Schedule:
    """The explicit analogue of saga with admission control at this sizing: one workflow per
    worker, run to completion, held workflows released in ``order``."""
    return Schedule(order=order, slots=1, mode="task", placement="home")  # type: ignore[arg-type]


def seed_study(
    live: dict[str, Any],
    profile: dict[str, Any],
    tokens: sf.Tokens,
    row: str,
    seed: int,
    admission: dict[str, Any] | None,
) -> dict[str, Any]:
    meta = live["meta"]
    speed = sf.run_stretch(live).get((row, seed), 1.0)
    o = profile["request_overhead_s"] * speed
    wl = sf.live_workload(meta, seed, tokens, o)
    floors_by = sf.cpu_task_floors(wl, profile, speed)
    floors = [floors_by[t.task_id] for t in wl.tasks]
    agents, workers = wl.closed_loop_agents, meta["workers"]
    plain = finite_closed_loop_bound(floors, agents, workers).mean_tct_s + o
    fluid = fluid_closed_loop_bound(floors, agents, workers) + o
    cost = sf.CpuProfileCostModel(profile, chunk_size_tokens=sf.SGLANG_CPU_CHUNKED_PREFILL, speed=speed)
    schedules = {}
    for sc in all_schedules():
        tct = schedule_tcts(
            wl.tasks,
            cost,
            agents=agents,
            workers=workers,
            kv_tokens=meta["kv_tokens"],
            schedule=sc,
            overhead_s=o,
        )
        schedules[sc.label] = statistics.fmean(tct.values())
    sim = {}
    for name, r in (("saga", sf.sim_row_for("saga", admission)), (CACHE_AWARE, sf.sim_row_for(CACHE_AWARE))):
        res = sf.simulate(wl, r, profile, meta, seed, speed)
        sim[name] = statistics.fmean(rec.tct_s + o for rec in res.tasks)
    live_tct = [
        a["tct_s"] for a in live["agents"] if a["row"] == row and a["seed"] == seed and not a["error"]
    ]
    return {
        "speed": speed,
        "floor_plain_s": plain,
        "floor_fluid_s": fluid,
        "priority_schedule_s7_s": sf.priority_schedule_mean_tct(wl, profile, meta, speed),
        "schedules_s": schedules,
        "sim_s": sim,
        "live_row_s": statistics.fmean(live_tct) if live_tct else None,
    }


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted(per_seed)

    def mean(f: Any) -> float:
        return statistics.fmean(f(per_seed[s]) for s in seeds)

    labels = list(per_seed[seeds[0]]["schedules_s"])
    sched = {lb: mean(lambda d, lb=lb: d["schedules_s"][lb]) for lb in labels}
    knowable = {sc.label for sc in all_schedules() if sc.live_knowable}
    best = min(sched, key=sched.__getitem__)
    best_live = min((lb for lb in sched if lb in knowable), key=sched.__getitem__)
    floor = mean(lambda d: d["floor_fluid_s"])
    checked = [v / d["floor_fluid_s"] for d in per_seed.values() for v in d["schedules_s"].values()]
    checked += [v / d["floor_fluid_s"] for d in per_seed.values() for v in d["sim_s"].values()]
    checked += [
        d["live_row_s"] / d["floor_fluid_s"] for d in per_seed.values() if d["live_row_s"] is not None
    ]
    return {
        "floor_plain_s": mean(lambda d: d["floor_plain_s"]),
        "floor_fluid_s": floor,
        "priority_schedule_s7_s": mean(lambda d: d["priority_schedule_s7_s"]),
        "schedules_s": sched,
        "best_schedule": best,
        "best_schedule_s": sched[best],
        "best_live_knowable": best_live,
        "best_live_knowable_s": sched[best_live],
        "sim_s": {k: mean(lambda d, k=k: d["sim_s"][k]) for k in per_seed[seeds[0]]["sim_s"]},
        "live_row_s": mean(lambda d: d["live_row_s"]),
        "min_ratio_to_fluid_floor": min(checked),
        "per_seed": {str(s): per_seed[s] for s in seeds},
    }


def study(
    live_path: Path, profile: dict[str, Any], tokens: sf.Tokens, admission: dict[str, Any] | None
) -> dict[str, Any]:
    live = json.loads(live_path.read_text())
    seeds = sorted({a["seed"] for a in live["agents"]})
    out: dict[str, Any] = {"admission": admission, "rows": {}}
    for row in (CACHE_AWARE, "saga"):
        per = {
            s: seed_study(live, profile, tokens, row, s, admission)
            for s in tqdm(seeds, desc=f"{live_path.stem} {row}")
        }
        out["rows"][row] = summarize(per)
    ca = out["rows"][CACHE_AWARE]
    sg = out["rows"]["saga"]
    out["answer"] = {
        "live_cache_aware_s": ca["live_row_s"],
        "live_saga_s": sg["live_row_s"],
        "live_cache_aware_over_fluid_floor": ca["live_row_s"] / ca["floor_fluid_s"],
        "live_cache_aware_over_plain_floor": ca["live_row_s"] / ca["floor_plain_s"],
        "best_schedule_over_fluid_floor": ca["best_schedule_s"] / ca["floor_fluid_s"],
        "best_gain_over_live_cache_aware": ca["live_row_s"] / ca["best_schedule_s"],
        "best_live_knowable_gain_over_live_cache_aware": ca["live_row_s"] / ca["best_live_knowable_s"],
        "live_cache_aware_over_1p5_floor": ca["live_row_s"] / (1.5 * ca["floor_fluid_s"]),
        # at saga's stretch: the release orders of a held queue against the simulated saga row
        "saga_rtc_oldest_s": sg["schedules_s"][saga_rtc("oldest").label],
        "saga_rtc_predicted_s": sg["schedules_s"][saga_rtc("predicted").label],
        "saga_rtc_srpt_s": sg["schedules_s"][saga_rtc("srpt").label],
        "sim_saga_s": sg["sim_s"]["saga"],
    }
    return out


# --- the engine: does the order in which admission releases held workflows matter? ------------

HeldKey = Callable[[WorkflowRecord], float]


@contextlib.contextmanager
def held_release_order(key: HeldKey | None) -> Iterator[None]:
    """An experiment, not a policy: while active, every ``WorkflowScheduler`` orders its held queue
    (``_release_held`` asks ``order_waiting`` with only held calls) by ``key``, smallest first,
    instead of AFS / FCFS. ``None``: unchanged."""
    orig = WorkflowScheduler.order_waiting

    def ordered(self: WorkflowScheduler, pending: Sequence[PendingCallView]) -> list[PendingCallView]:
        out = orig(self, pending)
        held = self._held  # the experiment reads the held records by design
        if key is not None and out and all(p.workflow_id in held for p in out):
            out = sorted(out, key=lambda p: key(held[p.workflow_id]))
        return out

    WorkflowScheduler.order_waiting = ordered  # type: ignore[method-assign]
    try:
        yield
    finally:
        WorkflowScheduler.order_waiting = orig  # type: ignore[method-assign]


def saga_variants(
    live_paths: Sequence[Path],
    profile: dict[str, Any],
    tokens: sf.Tokens,
    variants: dict[str, tuple[dict[str, Any] | None, HeldKey | None]],
    baseline: str,
    work: dict[str, float],
) -> dict[str, Any]:
    """The simulated saga row at saga's stretch of every run and seed, per variant (its admission
    settings and held-queue order): mean TCTs and the gain over ``baseline`` (ratio of means).
    ``work`` receives each task's work floor before its seed is simulated (for oracle orders)."""
    means: dict[str, list[float]] = {k: [] for k in variants}
    cases = []
    for path in live_paths:
        live = json.loads(path.read_text())
        stretch = sf.run_stretch(live)
        for seed in sorted({a["seed"] for a in live["agents"]}):
            cases.append((path.stem, live["meta"], seed, stretch.get(("saga", seed), 1.0)))
    for _run, meta, seed, speed in tqdm(cases, desc="saga variants"):
        o = profile["request_overhead_s"] * speed
        wl = sf.live_workload(meta, seed, tokens, o)
        floors = sf.cpu_task_floors(wl, profile, speed)
        work.update({t.task_id: floors[t.task_id].work_s for t in wl.tasks})
        for name, (admission, key) in variants.items():
            with held_release_order(key):
                res = sf.simulate(wl, sf.sim_row_for("saga", admission), profile, meta, seed, speed)
            means[name].append(statistics.fmean(rec.tct_s + o for rec in res.tasks))
    base = statistics.fmean(means[baseline])
    return {
        "cases": [f"{run} seed {seed}" for run, _m, seed, _s in cases],
        "mean_tct_s": means,
        "gain": {k: base / statistics.fmean(v) for k, v in means.items()},
    }


def engine_release_orders(
    live_paths: Sequence[Path], profile: dict[str, Any], tokens: sf.Tokens
) -> dict[str, Any]:
    """The simulator's saga row with admission on, its held queue released FCFS (as built), by
    least true work (oracle), by most true work (oracle), and by the smallest first prompt
    (live-knowable: the held call's prompt tokens)."""
    work: dict[str, float] = {}
    on = dict(ADMISSION_ON)
    orders: dict[str, tuple[dict[str, Any] | None, HeldKey | None]] = {
        "fcfs (as built)": (on, None),
        "least true work first (oracle)": (on, lambda r: work[r.workflow_id]),
        "most true work first (oracle)": (on, lambda r: -work[r.workflow_id]),
        "smallest first prompt first": (
            on,
            lambda r: float(r.held_call.prompt_tokens) if r.held_call else 0.0,
        ),
    }
    return saga_variants(live_paths, profile, tokens, orders, "fcfs (as built)", work)


ADMISSION_VARIANTS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "on (as the live runs)": ADMISSION_ON,
    "kv_threshold_frac 1.25": {**ADMISSION_ON, "kv_threshold_frac": 1.25},
    "kv_threshold_frac 1.5": {**ADMISSION_ON, "kv_threshold_frac": 1.5},
    "kv_threshold_frac 2": {**ADMISSION_ON, "kv_threshold_frac": 2.0},
    "bound_footprint_frac 0.5": {**ADMISSION_ON, "bound_footprint_frac": 0.5},
    "bound_footprint_frac 0.75": {**ADMISSION_ON, "bound_footprint_frac": 0.75},
    "park_after_steps 2": {**ADMISSION_ON, "park_after_steps": 2},
    "park_after_steps 3, after 1 s held": {**ADMISSION_ON, "park_after_steps": 3, "park_after_held_s": 1.0},
    "2 per worker, threshold 3x": {**ADMISSION_ON, "kv_threshold_frac": 3.0, "max_workflows_per_worker": 2},
}
"""The admission settings ``--admission-sweep`` simulates on the saga row (held queue as built)."""


def admission_sweep(live_paths: Sequence[Path], profile: dict[str, Any], tokens: sf.Tokens) -> dict[str, Any]:
    """The simulated saga row under each ``ADMISSION_VARIANTS`` setting; gain over the live setting."""
    variants: dict[str, tuple[dict[str, Any] | None, HeldKey | None]] = {
        k: (v, None) for k, v in ADMISSION_VARIANTS.items()
    }
    return saga_variants(live_paths, profile, tokens, variants, "on (as the live runs)", {})


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(res: dict[str, Any]) -> str:
    head = [
        "live run",
        "floor s7 / fluid, s",
        "live cache_aware, s",
        "live ca / fluid floor",
        "best schedule / fluid floor (which)",
        "best live-knowable / floor",
        "implied best gain over live ca (live-knowable)",
        "live ca / (1.5 x floor)",
    ]
    lines = [_row(head), "|---|---|---:|---:|---|---:|---|---:|"]
    for run, r in res["runs"].items():
        ca, a = r["rows"][CACHE_AWARE], r["answer"]
        lines.append(
            _row(
                [
                    f"`{run}`",
                    f"{ca['floor_plain_s']:.2f} / {ca['floor_fluid_s']:.2f}",
                    f"{a['live_cache_aware_s']:.2f}",
                    f"{a['live_cache_aware_over_fluid_floor']:.3f}",
                    f"{a['best_schedule_over_fluid_floor']:.2f} ({ca['best_schedule']})",
                    f"{ca['best_live_knowable_s'] / ca['floor_fluid_s']:.2f}",
                    f"{a['best_gain_over_live_cache_aware']:.2f} "
                    f"({a['best_live_knowable_gain_over_live_cache_aware']:.2f})",
                    f"{a['live_cache_aware_over_1p5_floor']:.3f}",
                ]
            )
        )
    head = [
        "live run",
        "live saga",
        "sim saga (engine)",
        "run to completion 1/worker: oldest",
        "predicted shortest",
        "true SRPT (oracle)",
        "best live-knowable schedule (which)",
        "min ratio to the fluid floor (validity)",
    ]
    lines += [
        "",
        "At saga's stretch, mean TCT in s:",
        "",
        _row(head),
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run, r in res["runs"].items():
        a, sg = r["answer"], r["rows"]["saga"]
        mins = min(x["min_ratio_to_fluid_floor"] for x in r["rows"].values())
        lines.append(
            _row(
                [
                    f"`{run}`",
                    f"{a['live_saga_s']:.2f}",
                    f"{a['sim_saga_s']:.2f}",
                    f"{a['saga_rtc_oldest_s']:.2f}",
                    f"{a['saga_rtc_predicted_s']:.2f}",
                    f"{a['saga_rtc_srpt_s']:.2f}",
                    f"{sg['best_live_knowable_s']:.2f} ({sg['best_live_knowable']})",
                    f"{mins:.3f}",
                ]
            )
        )
    eng = res.get("engine_release_orders")
    if eng:
        lines += [
            "",
            f"Engine (simulated saga, admission on, {len(eng['cases'])} run-seeds at saga's stretch): "
            "held-queue release order",
            "",
            "| order | mean TCT, s | gain over FCFS (ratio of means) |",
            "|---|---:|---:|",
        ]
        for k, v in eng["mean_tct_s"].items():
            lines.append(_row([k, f"{statistics.fmean(v):.2f}", f"{eng['gain'][k]:.3f}"]))
    sw = res.get("admission_sweep")
    if sw:
        lines += [
            "",
            f"Engine (simulated saga, {len(sw['cases'])} run-seeds at saga's stretch): admission settings",
            "",
            "| setting | mean TCT, s | gain over the live setting (ratio of means) |",
            "|---|---:|---:|",
        ]
        for k, v in sw["mean_tct_s"].items():
            lines.append(_row([k, f"{statistics.fmean(v):.2f}", f"{sw['gain'][k]:.3f}"]))
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--live", type=Path, nargs="+", required=True, help="live.json files of benchmarks/live.py"
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=Path("benchmarks/results/cpu_profile_s7.json"),
        help="CPU profile (benchmarks/calibrate_cpu.py; default benchmarks/results/cpu_profile_s7.json)",
    )
    p.add_argument(
        "--admission-off",
        nargs="*",
        default=["live_s6_steal"],
        metavar="RUN",
        help="runs (file stems) whose saga row ran without admission control (default: live_s6_steal); "
        "the others are simulated with it on, as they ran",
    )
    p.add_argument(
        "--engine-orders",
        action="store_true",
        help="also simulate the saga row (admission on) with its held queue released in other orders "
        "(an experiment: held_release_order) on the runs that ran admission",
    )
    p.add_argument(
        "--admission-sweep",
        action="store_true",
        help="also simulate the saga row under each ADMISSION_VARIANTS setting on every run",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output JSON (the generated tables go to <stem>_table.md beside it)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for f in args.live:
        if not f.is_file():
            raise SystemExit(f"--live: no such file: {f}")
    profile = json.loads(args.profile.read_text())
    tokens = sf.Tokens()
    res: dict[str, Any] = {"profile": str(args.profile), "runs": {}}
    for f in args.live:
        admission = None if f.stem in args.admission_off else dict(ADMISSION_ON)
        res["runs"][f.stem] = study(f, profile, tokens, admission)
    if args.engine_orders:
        with_admission = [f for f in args.live if f.stem not in args.admission_off]
        res["engine_release_orders"] = engine_release_orders(with_admission, profile, tokens)
    if args.admission_sweep:
        res["admission_sweep"] = admission_sweep(args.live, profile, tokens)
    bad = {
        run: r["rows"][row]["min_ratio_to_fluid_floor"]
        for run, r in res["runs"].items()
        for row in r["rows"]
        if r["rows"][row]["min_ratio_to_fluid_floor"] < 1 - 1e-9
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    args.out.with_name(args.out.stem + "_table.md").write_text(md)
    print(md)
    if bad:
        print(f"FLOOR BROKEN (a schedule or row below it): {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
