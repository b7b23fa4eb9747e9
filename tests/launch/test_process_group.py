"""The one process-group helper pair that workers and routers share: stopping a child also stops
the grandchildren it spawned (what SGLang's scheduler and detokenizer processes are)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from saga_sgl.local_workers import spawn_in_group, stop_group

SCRIPT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is dead.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_stop_group_stops_the_child_and_its_children(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = spawn_in_group([sys.executable, "-c", SCRIPT], log)
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[0])
    assert _alive(grandchild)
    stop_group(proc, timeout_s=10, name="test child")
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_stop_group_on_an_exited_child_is_harmless(tmp_path: Path) -> None:
    proc = spawn_in_group([sys.executable, "-c", "pass"], tmp_path / "c.log")
    proc.wait(timeout=30)
    stop_group(proc, timeout_s=1)
    assert proc.returncode == 0
