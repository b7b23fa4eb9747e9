"""``python -m saga_sgl.launch`` live: a 2-worker cluster (real SGLang CPU workers with the plugin) and
the saga router, started as a user would (a subprocess), then stopped: after a finished workload, and
by Ctrl-C (SIGINT) while serving. Afterwards no process the launcher started may be left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from saga_sgl.local_workers import free_port

pytestmark = [pytest.mark.live, pytest.mark.sglang]


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _launch(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "saga_sgl.launch",
            "--workers",
            "2",
            "--log-dir",
            str(tmp_path / "logs"),
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _watch_children(proc: subprocess.Popen[str], until: float) -> set[int]:
    """Every process the launcher started, seen while it runs (2 workers + router + SGLang's children)."""
    seen: set[int] = set()
    while proc.poll() is None and time.monotonic() < until:
        seen |= _descendants(proc.pid)
        time.sleep(0.5)
    return seen


def test_workload_runs_through_router_and_every_child_stops(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = _launch(
        tmp_path,
        "--agents",
        "3",
        "--concurrency",
        "3",
        "--max-steps",
        "3",
        "--time-scale",
        "0.05",
        "--json",
        str(out),
    )
    try:
        seen = _watch_children(proc, time.monotonic() + 540)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stdout[-4000:]
    assert len(seen) >= 3, seen  # two workers and the router, at least
    summary = json.loads(out.read_text())["summary"]
    assert summary["agents"] == 3 and summary["failed"] == 0
    assert summary["prompt_tokens"] > 0 and 0.0 <= summary["cached_token_ratio"] <= 1.0
    assert summary["tct_mean_s"] > 0
    assert "task completion time" in stdout and "cached-token ratio" in stdout
    # Every workflow's calls were dispatched by the saga router to one of the two workers.
    rows = [
        line
        for line in stdout.splitlines()
        if line.startswith("| coding-") or line.startswith("| browser-") or line.startswith("| tot-")
    ]
    assert len(rows) == 3 and all("| ?" not in row for row in rows), stdout[-3000:]
    assert not _alive(seen), "processes left behind: " + ", ".join(map(str, _alive(seen)))


def test_ctrl_c_while_serving_stops_router_and_workers(tmp_path: Path) -> None:
    port = free_port()
    proc = _launch(tmp_path, "--serve", "--port", str(port))
    assert proc.stdout is not None
    seen: set[int] = set()
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving;"):
                break
        assert lines and lines[-1].startswith("serving;"), "".join(lines[-40:])
        assert any(f"saga router: http://127.0.0.1:{port}" in line for line in lines)
        seen = _descendants(proc.pid)
        assert len(seen) >= 3
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=10) as resp:
            assert json.loads(resp.read())["healthy_workers"] == 2
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert not _alive(seen), "processes left behind: " + ", ".join(map(str, _alive(seen)))
