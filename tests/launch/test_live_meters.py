"""The live benchmark's attribution meters: process-group CPU, worker log parsing, router actions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks._live_meters import (
    LogCursor,
    busiest_thread_delta,
    group_cpu_s,
    group_sched_s,
    router_actions,
    worker_activity,
)
from benchmarks.live import own_context_missed, time_breakdown, worker_switches
from saga_sgl.cluster.processes import http_json
from saga_sgl.local_workers import WorkerSpec, free_port, start_worker

# Lines as SGLang 0.5.23 writes them (copied from a live worker log; the JSON line shortened).
WORKER_LOG = """\
[2026-12-05 22:52:58] {"event": "request.received", "rid": "wf-a:0", "obj": {}}
[2026-12-05 22:52:58] Prefill batch, #new-seq: 1, #new-token: 640, #cached-token: 0, token usage: 0.25, \
#running-req: 0, #queue-req: 0, #pending-token: 0, cpu graph: False, input throughput (token/s): 350.12
[2026-12-05 22:52:59] INFO:     127.0.0.1:36226 - "POST /generate HTTP/1.1" 200 OK
[2026-12-05 22:52:59] INFO:     127.0.0.1:36226 - "GET /v1/loads?include=core HTTP/1.1" 200 OK
[2026-12-05 22:52:59] INFO:     127.0.0.1:36226 - "GET /v1/loads?include=core HTTP/1.1" 200 OK
[2026-12-05 22:53:00] {"event": "request.received", "rid": "wf-a:1", "obj": {}}
[2026-12-05 22:53:00] Prefill batch, #new-seq: 1, #new-token: 40, #cached-token: 648, token usage: 0.27, \
#running-req: 0, #queue-req: 0, #pending-token: 0, cpu graph: False, input throughput (token/s): 88.00
[2026-12-05 22:53:00] INFO:     127.0.0.1:44858 - "GET /health HTTP/1.1" 200 OK
"""

# Lines as router/hosts.py and router/service.py log them at info level.
ROUTER_LOG = """\
2026-12-05 20:10:01,000 INFO router.hosts: steal wf-b: http://127.0.0.1:1 -> http://127.0.0.1:2 (idle, \
1234 tokens to rebuild)
2026-12-05 20:10:03,000 INFO router.service: pre-fill of wf-b (1234 tokens) on http://127.0.0.1:2: done \
(throughput there now 350 tokens/s)
2026-12-05 20:10:04,000 INFO router.service: call of wf-b waits for its pre-fill on http://127.0.0.1:2
2026-12-05 20:10:05,000 INFO router.hosts: workflow wf-c moves from http://127.0.0.1:1 to http://127.0.0.1:2 \
(least_loaded)
2026-12-05 20:10:06,000 INFO router.hosts: workflow wf-d held by admission control (call wf-d:0)
2026-12-05 20:10:07,000 INFO router.service: preemption of call wf-e:2 on http://127.0.0.1:1 \
for workflow wf-f: applied; AFS 0.1 < 0.9
"""


def test_worker_activity_counts_requests_prefill_and_rids() -> None:
    a = worker_activity(WORKER_LOG)
    assert a.requests == {"POST /generate": 1, "GET /v1/loads": 2, "GET /health": 1}
    assert (a.prefill_batches, a.prefill_new_tokens, a.prefill_cached_tokens) == (2, 680, 648)
    assert a.rids == ["wf-a:0", "wf-a:1"]


def test_router_actions_reads_steals_prefills_moves_and_holds() -> None:
    r = router_actions(ROUTER_LOG)
    assert r.steals == [
        {
            "workflow": "wf-b",
            "victim": "http://127.0.0.1:1",
            "thief": "http://127.0.0.1:2",
            "trigger": "idle",
            "rebuild_tokens": 1234,
        }
    ]
    assert (r.prefills_done, r.prefill_tokens, r.prefills_failed) == (1, 1234, 0)
    assert r.moves == {"least_loaded": 1}
    assert (r.admission_holds, r.calls_waiting_for_prefill) == (1, 1)
    assert r.preemptions == {"applied": 1}
    assert router_actions("sglang-router logs nothing of this\n").steals == []


def test_worker_switches_follow_each_workflows_calls_across_workers() -> None:
    rids = {"w1": ["a:0", "a:1", "b:0", "a:3", "a:prefill-1.0", "HEALTH_CHECK_x"], "w2": ["a:2", "b:1"]}
    agents = [{"workflow_id": "a"}, {"workflow_id": "b"}, {"workflow_id": "c"}]
    # a: w1 w1 w2 w1 (2 switches); b: w1 w2 (1); c: never seen.
    assert worker_switches(rids, agents) == {
        "calls_seen": 6,
        "switches": 3,
        "workflows_moved": 2,
        "workflows": 3,
    }


def test_log_cursor_reads_only_what_was_appended(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "w.log"
    path.write_text("before\n")
    cursor = LogCursor(path)
    assert cursor.read_new() == ""
    with open(path, "a") as f:
        f.write("after\n")
    assert cursor.read_new() == "after\n"
    assert cursor.read_new() == ""


def test_group_cpu_counts_a_busy_child_in_its_own_session() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\ntime.sleep(30)",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        used = 0.0
        while time.monotonic() < deadline and used < 0.4:
            used = group_cpu_s(child.pid)
            time.sleep(0.1)
        assert used >= 0.4
    finally:
        child.kill()
        child.wait()
    assert group_cpu_s(child.pid) == 0.0  # gone: nothing left in the group


def test_group_sched_splits_on_cpu_from_run_queue_wait() -> None:
    """Two spinning children pinned to one core: each runs about half the time and waits the rest,
    which is what the live benchmark's stretch measures (other load taking the workers' cores)."""
    code = (
        "import os,time\nos.sched_setaffinity(0,{0})\n"
        "t=time.monotonic()\nwhile time.monotonic()-t<1.5: pass"
    )
    first = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        cpu = wait = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            cpu, wait = group_sched_s(first.pid)
            time.sleep(0.05)
        assert cpu > 0.2 and wait > 0.2, (cpu, wait)
    finally:
        for child in (first, other):
            child.kill()
            child.wait()
    assert group_sched_s(first.pid) == (0.0, 0.0)


@pytest.mark.live
@pytest.mark.sglang
def test_an_idle_worker_started_by_us_does_not_spin(tmp_path: Path) -> None:
    """SGLang's scheduler spins when idle unless --sleep-on-idle: a core per idle worker, which on the
    live benchmark's two cores starved the busy workers. Ours sleeps (and still answers at once)."""
    spec = WorkerSpec(port=free_port())
    assert "--sleep-on-idle" in spec.command()
    worker = start_worker(spec, tmp_path)
    try:
        worker.wait_ready(600)
        time.sleep(2)  # let start-up work (warm-up request, first KV publish) settle
        scheduler = next(
            p for p in psutil.Process(worker.process.pid).children(recursive=True) if "scheduler" in p.name()
        )
        # A spinning process is always runnable ('R', also while it waits for a core on a loaded
        # machine); a sleeping one is 'S' between its 1 s poll time-outs. Sampled, so load-proof.
        states = []
        for _ in range(50):
            states.append(scheduler.status())
            time.sleep(0.1)
        runnable = states.count(psutil.STATUS_RUNNING) / len(states)
        assert runnable < 0.3, f"idle scheduler runnable in {runnable:.0%} of samples: it spins"
        body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2, "ignore_eos": True}}
        answer = http_json("POST", worker.url + "/generate", body, timeout_s=120)
        assert len(answer["output_ids"]) == 2
    finally:
        worker.stop()


def test_own_context_missed_counts_only_real_misses_of_the_previous_context() -> None:
    # call 1: 600 prompt + 8 out -> 607 cached by SGLang; call 2 finds 600 (7 missed: boundary, not
    # counted); call 3 finds 100 of call 2's 700 + 8 - 1 = 707 (607 missed: evicted in the gap).
    calls = [[600, 8, 0], [700, 8, 600], [800, 8, 100]]
    assert own_context_missed(calls) == (607, 1)
    assert own_context_missed([[600, 8, 0]]) == (0, 0)


def test_a_tasks_time_and_uncached_tokens_are_split_by_where_they_went() -> None:
    # Two calls: (client, worker e2e, worker queue) = (2.0, 1.8, 0.5) and (1.0, 0.9, 0.0); tool 3 s.
    # Call 2 finds 100 of its 700-token prompt: 92 tokens are new (700 - 608), 508 re-pre-filled.
    task = {"row": "r", "error": None, "tct_s": 6.5, "tool_s": 3.0,
            "call_times": [[2.0, 1.8, 0.5], [1.0, 0.9, 0.0]], "call_tokens": [[600, 8, 0], [700, 8, 100]]}
    b = time_breakdown([task, {**task, "row": "other"}], ["r"])["r"]
    assert b["tool"] == 3.0 and b["queue"] == 0.5 and b["engine"] == pytest.approx(2.2)
    assert b["outside"] == pytest.approx(0.3) and b["rest"] == pytest.approx(0.5)
    assert (b["new_tokens"], b["repre_tokens"]) == (600 + 92, 508)


def test_the_saga_rows_run_with_admission_control_unless_told_otherwise() -> None:
    import json

    from benchmarks.live import OURS, Row, build_parser, saga_router_args

    ours = Row(OURS, "saga", "saga", "saga")

    def config(row: Row, *argv: str) -> dict[str, Any]:
        flags = saga_router_args(row, build_parser().parse_args(list(argv)))
        return json.loads(flags[1]) if flags else {}

    assert config(ours)["admission"] == {"enabled": True, "shared_prefix_once": True}
    off = config(ours, "--saga-scheduler-config", '{"admission": {"enabled": false}}')
    assert off["admission"] == {"enabled": False}
    assert "admission" not in config(Row("saga-router cache_aware + LRU", "saga", "cache_aware", "lru"))
    assert config(Row("sglang-router cache_aware + LRU", "sglang", "cache_aware", "lru")) == {}


def test_the_engine_stretch_comes_from_the_thread_that_ran_most() -> None:
    before = {"1": (10.0, 5.0), "2": (1.0, 1.0)}
    after = {"1": (12.0, 6.0), "2": (1.5, 9.0), "3": (0.5, 4.0)}  # 2 and 3 mostly waited, side by side
    assert busiest_thread_delta(before, after) == (2.0, 1.0)
    assert busiest_thread_delta({}, {}) == (0.0, 0.0)
