"""Attribution meters of the live benchmark: what a row's router made the workers and the machine do.

Everything is read from outside the processes, the same way for sglang-router and the saga router:

* CPU seconds of a process group (``/proc/<pid>/stat`` utime + stime of every process whose group is
  the child's: an SGLang worker is an HTTP/tokenizer process, a scheduler and a detokenizer), and the
  seconds its threads were runnable but waited for a core (``/proc/<pid>/task/*/schedstat``): what the
  machine's other load cost the row, whatever the row did;
* the HTTP requests a worker served, per method and path, from its uvicorn access log lines, and the
  prefill work its scheduler did (``Prefill batch`` lines: batches and new, i.e. computed, tokens);
* what the saga router logged about steals, their pre-fills, re-bound workflows and admission holds.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_ACCESS = re.compile(r'"(GET|POST|PUT|DELETE) ([^ ?"]+)[^"]*" (\d{3})')
_PREFILL = re.compile(r"Prefill batch.*?#new-token: (\d+), #cached-token: (\d+)")
_STEAL = re.compile(r"steal (\S+): (\S+) -> (\S+) \((\w+), (\d+) tokens to rebuild\)")
_PREFILL_DONE = re.compile(r"pre-fill of (\S+) \((\d+) tokens\) on (\S+): (done|failed)")
_MOVE = re.compile(r"workflow (\S+) moves from (\S+) to (\S+) \(([^)]*)\)")
_HOLD = re.compile(r"workflow (\S+) held by admission control")
_WAIT_PREFILL = re.compile(r"call of (\S+) waits for its pre-fill")
_PREEMPT = re.compile(r"preemption of call (\S+) on (\S+) for workflow (\S+): (\w+);")
_RECEIVED = re.compile(r'"event": "request.received", "rid": "([^"]+)"')


def _group_stats(pgid: int) -> list[tuple[str, list[str]]]:
    """(pid, ``/proc/<pid>/stat`` fields after the command name) of every live process in group
    ``pgid``. The command name is in parentheses and may hold spaces: split after its closing one."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            out.append((entry.name, fields))
    return out


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (0 if none)."""
    # fields 14, 15 of stat: utime, stime
    return sum(int(fields[11]) + int(fields[12]) for _, fields in _group_stats(pgid)) / _TICKS


def thread_sched_s(pgid: int) -> dict[str, tuple[float, float]]:
    """Per live thread of process group ``pgid``: (on-CPU, runnable-but-waiting) seconds."""
    out = {}
    for pid, _ in _group_stats(pgid):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            except OSError:
                continue
            out[tid] = (int(fields[0]) / 1e9, int(fields[1]) / 1e9)
    return out


def busiest_thread_delta(before: dict[str, tuple[float, float]],
                         after: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """(on-CPU, wait) seconds gained by the thread that ran most between two ``thread_sched_s``
    snapshots: an SGLang worker's scheduler thread, whose forward passes are the engine's critical
    path. Its stretch (cpu + wait) / cpu is the engine's slowdown; the group's summed stretch
    over-counts threads that wait side by side."""
    best = (0.0, 0.0)
    for tid, (cpu, wait) in after.items():
        c0, w0 = before.get(tid, (0.0, 0.0))
        if cpu - c0 > best[0]:
            best = (cpu - c0, wait - w0)
    return best


def group_sched_s(pgid: int) -> tuple[float, float]:
    """(on-CPU, runnable-but-waiting) seconds of every live thread in process group ``pgid``, from the
    scheduler's statistics (``schedstat``: ns on a CPU, ns waiting on a run queue). The ratio
    (cpu + wait) / cpu of a row's workers is how much the other processes on the machine stretched
    their work; the simulator uses it as the machine's speed during that row."""
    threads = thread_sched_s(pgid).values()
    return sum(cpu for cpu, _ in threads), sum(wait for _, wait in threads)


@dataclass(slots=True)
class LogCursor:
    """Reads what a log file gained since the last read (the offset survives rows)."""

    path: Path
    offset: int = 0

    def __post_init__(self) -> None:
        self.offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read_new(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return ""
        self.offset += len(data)
        return data.decode(errors="replace")


@dataclass(slots=True)
class WorkerActivity:
    """What one worker's log says it did during a row."""

    requests: Counter[str] = field(default_factory=Counter)
    """``"GET /v1/loads"`` -> count (query strings dropped)."""
    prefill_batches: int = 0
    prefill_new_tokens: int = 0
    """Tokens the worker computed in prefill (its radix cache missed them): calls, steal pre-fills
    and health-check generations alike."""
    prefill_cached_tokens: int = 0
    rids: list[str] = field(default_factory=list)
    """Request ids the worker received, in order (``--log-requests --log-requests-format json``)."""

    def add(self, other: WorkerActivity) -> None:
        self.requests.update(other.requests)
        self.prefill_batches += other.prefill_batches
        self.prefill_new_tokens += other.prefill_new_tokens
        self.prefill_cached_tokens += other.prefill_cached_tokens
        self.rids += other.rids


def worker_activity(log_text: str) -> WorkerActivity:
    out = WorkerActivity()
    for line in log_text.splitlines():
        r = _RECEIVED.search(line)
        if r is not None:
            out.rids.append(r.group(1))
            continue
        m = _ACCESS.search(line)
        if m is not None and "INFO:" in line:
            out.requests[f"{m.group(1)} {m.group(2)}"] += 1
            continue
        p = _PREFILL.search(line)
        if p is not None:
            out.prefill_batches += 1
            out.prefill_new_tokens += int(p.group(1))
            out.prefill_cached_tokens += int(p.group(2))
    return out


@dataclass(slots=True)
class RouterActions:
    """The saga router's own account of a row (empty for sglang-router, which logs none of it)."""

    steals: list[dict[str, Any]] = field(default_factory=list)
    prefills_done: int = 0
    prefills_failed: int = 0
    prefill_tokens: int = 0
    moves: dict[str, int] = field(default_factory=dict)
    """Re-placements of a workflow on another worker than its last one, by the router's reason."""
    admission_holds: int = 0
    calls_waiting_for_prefill: int = 0
    preemptions: dict[str, int] = field(default_factory=dict)
    """Scheduler preemptions by outcome (``applied``: the call was aborted at its worker and re-sent,
    its work so far lost)."""


def router_actions(log_text: str) -> RouterActions:
    out = RouterActions()
    for line in log_text.splitlines():
        if (m := _STEAL.search(line)) is not None:
            out.steals.append(
                {
                    "workflow": m.group(1),
                    "victim": m.group(2),
                    "thief": m.group(3),
                    "trigger": m.group(4),
                    "rebuild_tokens": int(m.group(5)),
                }
            )
        elif (m := _PREFILL_DONE.search(line)) is not None:
            if m.group(4) == "done":
                out.prefills_done += 1
                out.prefill_tokens += int(m.group(2))
            else:
                out.prefills_failed += 1
        elif (m := _MOVE.search(line)) is not None:
            out.moves[m.group(4)] = out.moves.get(m.group(4), 0) + 1
        elif (m := _PREEMPT.search(line)) is not None:
            out.preemptions[m.group(4)] = out.preemptions.get(m.group(4), 0) + 1
        elif _HOLD.search(line) is not None:
            out.admission_holds += 1
        elif _WAIT_PREFILL.search(line) is not None:
            out.calls_waiting_for_prefill += 1
    return out
