"""Router overhead: our router (full SAGA scheduling, and a baseline policy) against sglang-router 0.3.2,
in one run, over the same fast fake backend on loopback.

The backend is a NAMED FAKE (``saga_router.fake_backend``): a tiny aiohttp server that answers
``/generate`` at once with an SGLang-shaped one-token answer, so that what is measured is the
router, not a model. Every router runs as its own process in front of two fake backends; the load
generator is a separate process too. Rows:

* ``direct``: the load generator straight to one backend (no router: the latency floor);
* ``sglang-router 0.3.2 <policy>``: the stock Rust router (``python -m sglang_router.launch_router``);
* ``saga-router <policy>``: ours (``python -m saga_router``), ``saga`` = the full workflow scheduler
  (placement, AFS epochs, stealing plans, kv_hints, prefix index, metrics), plus a baseline policy;
  ``saga-router saga @ <commit>`` (``--baseline-commit``): ours as of an earlier commit, same run;
* ``reference: <stack> pass-through proxy`` (``benchmarks/_proxy_floor.py``, NAMED REFERENCES, not
  routers): forward-only proxies that show what a stack costs before any routing work: aiohttp's
  server and client; aiohttp's server and ``saga_router.upstream``; an httptools server and
  ``saga_router.upstream`` (about the least Python can do per proxied request).

Figures per row:

* **router CPU per request**: on-CPU time of the router process (all threads, from
  ``/proc/<pid>/task/*/schedstat``) over a fixed-rate phase, divided by the requests, split into
  user and kernel time as ``/proc/<pid>/stat`` splits it; also net of the router's idle CPU rate
  over the same time (ours polls ``/v1/loads`` every 50 ms and runs a 100 ms epoch even when idle).
  This is the figure that survives a noisy shared machine.
* **latency p50/p99** at a fixed moderate rate (open loop, ``--rate`` req/s), and the *added* latency:
  the row's percentile minus the ``direct`` row's.
* **max req/s**: closed loop, ``--concurrency`` requests in flight, for ``--seconds``.
* with ``--profile``, **CPU per request by component** of ``saga-router saga``: py-spy samples of a
  second fixed-rate phase, grouped by ``benchmarks/_cpu_breakdown.py`` (HTTP server, upstream
  client, JSON, request checks, identity, scheduler, telemetry, logging, router glue, kernel socket
  I/O, event loop, garbage collector, background), scaled to the row's measured CPU per request.

Requests: ``/generate`` with 200 token ids, ``rid = "<workflow>:<step>"`` and ``X-SMG-Routing-Key``,
64 workflows in turn (what an agent client sends; every router gets the identical sequence).

    python benchmarks/router_overhead.py             # about 5 minutes (more on a loaded machine)
    python benchmarks/router_overhead.py --quick --no-floors     # about 1.5 minutes
    python benchmarks/router_overhead.py --profile --baseline-commit 899c086   # what results/ holds

Output: JSON, a markdown table and a PNG in ``--out`` (default benchmarks/results/), the table on
stdout. Numbers are for the machine named in the output; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu_breakdown import BACKGROUND, py_spy, record, sample_counts
from _machine import cpu_model

from saga_sgl.local_workers import TINY_MODEL_DIR, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT_TOKENS = 200
WARM_REQUESTS = 20
"""Requests each load process sends before it measures (connections, first-call paths)."""
SPY_RATE_HZ = 500
WORKFLOWS = 64


@dataclass
class Row:
    name: str
    requests: int
    errors: int
    cpu_us_per_request: float
    user_us_per_request: float
    sys_us_per_request: float
    idle_cpu_us_per_s: float
    net_cpu_us_per_request: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    max_rps: float


# --- processes -------------------------------------------------------------------------------------


def _spawn(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _wait_http(url: str, timeout_s: float = 60.0, want: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read().decode()
            if resp.status == 200 and (want is None or want in body):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def _cpu_seconds(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, utime ticks, stime ticks) of the process, all threads.

    The seconds are the scheduler's nanosecond count (``/proc/<pid>/task/*/schedstat``); utime and
    stime (``/proc/<pid>/stat``) count 10 ms ticks, too coarse alone for a 2 s idle window, and
    serve to split a window's CPU between user space and the kernel.
    """
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total_ns += int((task / "schedstat").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total_ns / 1e9, int(fields[11]), int(fields[12])


# --- load generation (runs in a child process: python router_overhead.py --load ...) ------------


def _bodies(n: int) -> list[tuple[bytes, str]]:
    out = []
    for i in range(n):
        wf, step = f"wf{i % WORKFLOWS}", i // WORKFLOWS
        ids = [(7 * (i % WORKFLOWS) + k) % 500 + 1 for k in range(PROMPT_TOKENS)]
        body = {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0},
            "rid": f"{wf}:{step}",
        }
        out.append((json.dumps(body).encode(), wf))
    return out


async def _load(
    url: str, mode: str, rate: float, count: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    import aiohttp

    bodies = _bodies(max(count, 1000))
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal errors
            data, wf = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            try:
                async with session.post(
                    url + "/generate",
                    data=data,
                    headers={"Content-Type": "application/json", "X-SMG-Routing-Key": wf},
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append(time.perf_counter() - t0)

        for i in range(WARM_REQUESTS):  # warm the connections and the router's first-call paths
            await one(i)
        latencies.clear()
        started = time.perf_counter()
        if mode == "rate":
            tasks = []
            for i in range(count):
                target = started + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)
        else:
            done = 0
            stop_at = started + seconds

            async def worker(k: int) -> None:
                nonlocal done
                i = k
                while time.perf_counter() < stop_at:
                    await one(i)
                    done += 1
                    i += concurrency

            await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def _run_load(
    url: str, mode: str, *, rate: float = 0, count: int = 0, concurrency: int = 0, seconds: float = 0
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--load",
        url,
        mode,
        str(rate),
        str(count),
        str(concurrency),
        str(seconds),
    ]
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        subprocess.run([*cmd, result.name], check=True, timeout=600, stdout=subprocess.DEVNULL)
        return json.loads(Path(result.name).read_text())  # type: ignore[no-any-return]


# --- one row -----------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _measure(name: str, url: str, pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    idle_rate = 0.0
    if pid is not None:
        c0, t0 = _cpu_seconds(pid)[0], time.monotonic()
        time.sleep(args.idle_seconds)
        idle_rate = (_cpu_seconds(pid)[0] - c0) / (time.monotonic() - t0)
    c0, u0, s0 = _cpu_seconds(pid) if pid is not None else (0.0, 0, 0)
    t0 = time.monotonic()
    fixed = _run_load(url, "rate", rate=args.rate, count=args.requests)
    wall = time.monotonic() - t0
    c1, u1, s1 = _cpu_seconds(pid) if pid is not None else (0.0, 0, 0)
    cpu = c1 - c0
    user = cpu * (u1 - u0) / max(1, (u1 - u0) + (s1 - s0))
    kernel = cpu - user
    # The idle rate is subtracted only over the load phase itself (the child's start-up is not load).
    load_s = fixed["elapsed"]
    n = len(fixed["latencies"]) + fixed["errors"]
    peak = _run_load(url, "closed", concurrency=args.concurrency, seconds=args.seconds)
    lat = fixed["latencies"]
    return {
        "name": name,
        "requests": n,
        "errors": fixed["errors"] + peak["errors"],
        "cpu_us_per_request": 1e6 * cpu / n if pid is not None else 0.0,
        "user_us_per_request": 1e6 * user / n if pid is not None else 0.0,
        "sys_us_per_request": 1e6 * kernel / n if pid is not None else 0.0,
        "idle_cpu_us_per_s": 1e6 * idle_rate,
        "net_cpu_us_per_request": 1e6 * (cpu - idle_rate * min(wall, load_s + 1.0)) / n
        if pid is not None
        else 0.0,
        "p50_ms": 1e3 * _percentile(lat, 0.5),
        "p99_ms": 1e3 * _percentile(lat, 0.99),
        "max_rps": len(peak["latencies"]) / peak["elapsed"],
    }


def _ours(
    policy: str, backends: list[str], log_dir: Path, source: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Our router; ``source``: run the ``saga_router``/``saga_sgl`` found there instead (a baseline)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "saga_router", "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *backends, "--policy", policy, "--prometheus-port", "0",
        "--model-path", str(TINY_MODEL_DIR), "--log-level", "warn",
    ]  # fmt: skip
    env = None
    if source is not None:  # run there (the working directory comes first on sys.path), not here
        env = {**os.environ, "PYTHONPATH": str(source)}
    proc = _spawn(cmd, log_dir / f"saga-router-{policy}{'-baseline' if source else ''}.log", env, source)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/readiness", want='"healthy_workers": 2')
    return proc, url


def _export(commit: str, into: Path) -> Path:
    """The router and policy sources of ``commit`` in ``into``, importable as saga_router/saga_sgl."""
    root = Path(__file__).resolve().parents[1]
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit, "router", "saga_sgl"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "saga_router").symlink_to("router")
    return into


def _floor(stack: str, backends: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    script = str(Path(__file__).resolve().parent / "_proxy_floor.py")
    cmd = [sys.executable, script, "--stack", stack, "--port", str(port), "--backends", *backends]
    proc = _spawn(cmd, log_dir / f"floor-{stack}.log")
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/readiness", want='"healthy_workers": 2')
    return proc, url


def _profile(backends: list[str], log_dir: Path, args: argparse.Namespace) -> tuple[Counter[str], int]:
    """py-spy samples of ``saga-router saga`` over a fixed-rate phase: (busy per component, idle)."""
    proc, url = _ours("saga", backends, log_dir)
    out = log_dir / "saga-router.pyspy.txt"
    seconds = round(args.requests / args.rate) + 3
    try:
        _run_load(url, "rate", rate=args.rate, count=200)  # warm: first-call paths, connections
        spy = record(proc.pid, seconds, out, rate=SPY_RATE_HZ)
        _run_load(url, "rate", rate=args.rate, count=args.requests)
        _, err = spy.communicate(timeout=120)
    finally:
        _stop(proc)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no samples: {err.decode(errors='replace')[-500:]}")
    return sample_counts(out, Path(__file__).resolve().parents[1])


def _theirs(policy: str, backends: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sglang_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--worker-urls",
        *backends,
        "--policy",
        policy,
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--log-level",
        "warn",
    ]
    proc = _spawn(cmd, log_dir / f"sglang-router-{policy}.log")
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/readiness", want='"healthy_workers":2')
    return proc, url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rate", type=float, default=200.0, help="fixed request rate of the latency/CPU phase (req/s)"
    )
    p.add_argument("--requests", type=int, default=3000, help="requests in the fixed-rate phase")
    p.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight in the max-throughput phase"
    )
    p.add_argument("--seconds", type=float, default=8.0, help="duration of the max-throughput phase")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle CPU measurement before each row")
    p.add_argument("--quick", action="store_true", help="1000 requests, 4 s throughput phase")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also sample our saga row with py-spy and break its CPU per request down by component",
    )
    p.add_argument(
        "--no-floors",
        action="store_true",
        help="skip the reference rows (pass-through proxies on our HTTP stacks, no routing)",
    )
    p.add_argument(
        "--baseline-commit",
        default=None,
        help="also measure `saga-router saga` as of this git commit (e.g. 899c086, before this work), "
        "in the same run",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--load", nargs=7, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        url, mode, rate, count, concurrency, seconds, result_path = args.load
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(_load(url, mode, float(rate), int(count), int(concurrency), float(seconds)))
        Path(result_path).write_text(json.dumps(result))
        return
    if args.quick:
        args.requests, args.seconds, args.idle_seconds = 1000, 4.0, 2.0
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="router_overhead_"))  # process logs, the profile
    print(f"logs in {log_dir}")
    backend_ports = [free_port(), free_port()]
    backends_procs = [
        _spawn(
            [sys.executable, "-m", "saga_router.fake_backend", "--port", str(port)],
            log_dir / f"fake-{port}.log",
        )
        for port in backend_ports
    ]
    backends = [f"http://127.0.0.1:{port}" for port in backend_ports]
    rows: list[dict[str, Any]] = []
    plan: list[tuple[str, Any]] = [
        ("direct (no router)", None),
        ("sglang-router 0.3.2 cache_aware", lambda: _theirs("cache_aware", backends, log_dir)),
        ("sglang-router 0.3.2 round_robin", lambda: _theirs("round_robin", backends, log_dir)),
        ("saga-router saga", lambda: _ours("saga", backends, log_dir)),
        ("saga-router round_robin", lambda: _ours("round_robin", backends, log_dir)),
    ]
    if args.baseline_commit:
        source = _export(args.baseline_commit, log_dir / "baseline-src")
        plan.insert(
            3,
            (f"saga-router saga @ {args.baseline_commit}", lambda: _ours("saga", backends, log_dir, source)),
        )
    if not args.no_floors:
        plan += [
            (f"reference: {stack} pass-through proxy", lambda stack=stack: _floor(stack, backends, log_dir))
            for stack in ("aiohttp", "aiohttp-server+upstream", "raw")
        ]
    if args.profile and py_spy() is None:
        raise SystemExit("--profile needs py-spy (pinned in requirements/test.txt; run scripts/setup.sh)")
    try:
        for url in backends:
            _wait_http(url + "/health")
        for name, start in tqdm(plan, desc="routers", unit="row"):
            if start is None:
                rows.append(_measure(name, backends[0], None, args))
                continue
            proc, url = start()
            try:
                rows.append(_measure(name, url, proc.pid, args))
            finally:
                _stop(proc)
        counts, idle_samples = _profile(backends, log_dir, args) if args.profile else (Counter(), 0)
    finally:
        for proc in backends_procs:
            _stop(proc)
    direct = rows[0]
    out_rows = [
        Row(
            **{
                **r,
                "added_p50_ms": r["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": r["p99_ms"] - direct["p99_ms"],
            }
        )
        for r in rows
    ]
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }
    settings = {k: getattr(args, k) for k in ("rate", "requests", "concurrency", "seconds", "idle_seconds")}
    (args.out / "router_overhead.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": settings,
                "rows": [asdict(r) for r in out_rows],
                "breakdown": _breakdown_rows(out_rows, counts),
                "breakdown_samples": {"busy": sum(counts.values()), "idle": idle_samples},
            },
            indent=2,
        )
    )
    table = _table(out_rows, machine, settings)
    if counts:
        table += _breakdown_table(_breakdown_rows(out_rows, counts), sum(counts.values()))
    (args.out / "router_overhead.md").write_text(table)
    _plot(out_rows, _breakdown_rows(out_rows, counts), args.out / "router_overhead.png")
    print(table)


def _breakdown_rows(rows: list[Row], counts: Counter[str]) -> list[dict[str, Any]]:
    """CPU us/req per component of ``saga-router saga``; the rows sum to its measured CPU us/req.

    The per-request components share the row's CPU net of idle in proportion to their samples;
    background work (load polling, health checks, epochs) is what the router spends when idle too,
    so its row is the measured idle rate's part (CPU us/req minus the net figure), not its samples:
    the sampling window also covers the load process's start-up, when nothing else runs.
    """
    per_request = Counter({c: n for c, n in counts.items() if c != BACKGROUND})
    busy = sum(per_request.values())
    if not busy:
        return []
    saga = next(r for r in rows if r.name == "saga-router saga")
    out = [
        {
            "component": c,
            "share": saga.net_cpu_us_per_request * n / busy / saga.cpu_us_per_request,
            "us_per_request": saga.net_cpu_us_per_request * n / busy,
            "samples": n,
        }
        for c, n in per_request.most_common()
    ]
    background = saga.cpu_us_per_request - saga.net_cpu_us_per_request
    out.append(
        {
            "component": BACKGROUND,
            "share": background / saga.cpu_us_per_request,
            "us_per_request": background,
            "samples": counts[BACKGROUND],
        }
    )
    return sorted(out, key=lambda r: -float(r["us_per_request"]))


def _breakdown_table(rows: list[dict[str, Any]], samples: int) -> str:
    lines = [
        "",
        f"Where `saga-router saga` spends its CPU per request: {samples} busy py-spy samples ({SPY_RATE_HZ} "
        "Hz, Python and native stacks) over a second fixed-rate phase like the table's, each component's "
        "share applied to the row's measured CPU us/req. C code counts for the Python code that calls it; "
        "socket system calls, the garbage collector and uvloop's own loop work are their own rows; "
        "background is the idle CPU's part (benchmarks/_cpu_breakdown.py).",
        "",
        "| component | us/req | share | samples |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['component']} | {r['us_per_request']:.0f} | {100 * r['share']:.1f}% | {r['samples']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def _table(rows: list[Row], machine: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = [
        f"Router overhead over a fake instant backend, loopback; {machine['cpu']}, {machine['cores']} cores "
        f"(shared), Python {machine['python']}; "
        f"fixed rate {settings['rate']:.0f} req/s x {settings['requests']}, "
        f"closed loop {settings['concurrency']} in flight x {settings['seconds']:.0f} s.",
        "",
        "| row | router CPU us/req | user | kernel | net of idle | idle CPU us/s | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms | max req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.cpu_us_per_request:.0f} | {r.user_us_per_request:.0f} "
            f"| {r.sys_us_per_request:.0f} | {r.net_cpu_us_per_request:.0f} "
            f"| {r.idle_cpu_us_per_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.added_p50_ms:.2f} "
            f"| {r.added_p99_ms:.2f} | {r.max_rps:.0f} | {r.errors} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[Row], breakdown: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routed = [r for r in rows if r.cpu_us_per_request > 0]
    names = [r.name for r in routed]
    panels = 4 if breakdown else 3
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), sharey=False)
    y = list(range(len(routed)))
    axes[0].barh(y, [r.net_cpu_us_per_request for r in routed], color="tab:blue", label="net of idle")
    axes[0].barh(
        y,
        [r.cpu_us_per_request - r.net_cpu_us_per_request for r in routed],
        left=[r.net_cpu_us_per_request for r in routed],
        color="lightsteelblue",
        label="idle work",
    )
    axes[0].axvline(100, color="red", linestyle="--", label="target 100 us")
    axes[0].set_xlabel("router CPU per request (us)")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8)
    axes[1].barh(y, [r.added_p50_ms for r in routed], color="tab:green")
    axes[1].set_xlabel("added latency p50 (ms)")
    axes[2].barh(y, [r.max_rps for r in routed], color="tab:purple")
    axes[2].set_xlabel("max requests/s")
    for ax in axes[1:3]:
        ax.set_yticks(y, [""] * len(y))
        ax.invert_yaxis()
    if breakdown:
        comp = [str(b["component"]) for b in breakdown]
        axes[3].barh(range(len(comp)), [float(b["us_per_request"]) for b in breakdown], color="tab:gray")
        axes[3].set_yticks(range(len(comp)), comp, fontsize=7)
        axes[3].invert_yaxis()
        axes[3].set_xlabel("us per request")
        axes[3].set_title("saga-router saga by component (py-spy)", fontsize=9)
    fig.suptitle("Router overhead over a fake instant backend (one run, same machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
