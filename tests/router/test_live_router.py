"""The saga router live: real SGLang 0.5.23 CPU workers (saga plugin, KV events, control channel) on
loopback, the router as its own process (``python -m saga_router``), plain HTTP clients.

One module-scoped cluster of two workers serves every test (each worker ~2 GB, 20-60 s to start);
each test starts its own router (a second, cheap) with the flags it needs, and uses its own token
sequences so that the workers' caches do not leak between tests. The worker-killing test runs last:
it restarts the worker it killed (re-admission of a new process), and stops it again itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saga_sgl.local_workers import TINY_VOCAB_SIZE, WorkerProcess, free_port, start_worker
from saga_sgl.protocol import (
    AegSubmission,
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    SubmittedEdge,
    SubmittedNode,
    encode_client_event,
)

from .conftest import Reply, RouterProcess, http, start_router

pytestmark = [pytest.mark.live, pytest.mark.sglang]

RouterFactory = Callable[..., RouterProcess]


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(n)]


def generate(
    router: RouterProcess, input_ids: list[int], max_new_tokens: int = 4, timeout: float = 300.0, **extra: Any
) -> Reply:
    body = {
        "input_ids": input_ids,
        "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True},
        **extra,
    }
    return http("POST", router.url + "/generate", body, timeout=timeout)


def event(router: RouterProcess, ev: Any) -> Reply:
    return http("POST", router.url + "/saga/events", raw=encode_client_event(ev))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def running_reqs(worker: WorkerProcess) -> int:
    loads = http("GET", worker.url + "/v1/loads?include=core").json()["loads"]
    return sum(int(r["num_running_reqs"]) + int(r["num_waiting_reqs"]) for r in loads)


def waiting_reqs(worker: WorkerProcess) -> int:
    loads = http("GET", worker.url + "/v1/loads?include=core").json()["loads"]
    return sum(int(r["num_waiting_reqs"]) for r in loads)


def test_workflow_stays_on_one_worker_and_later_steps_hit_its_cache(
    cluster: list[WorkerProcess], router_factory: RouterFactory
) -> None:
    router = router_factory([w.url for w in cluster])
    info = http("GET", router.url + "/get_server_info").json()
    assert all(info["exact_prefix_index"].values()), info  # KV events subscribed on both workers
    served_by: dict[str, set[str]] = {}
    for wf in range(4):
        name = f"stay-{wf}"
        context = tokens(1000 + wf, 40)
        previous = 0
        for step in range(4):
            reply = generate(router, context, 6, saga={"workflow_id": name, "step": step, "tenant_id": "t1"})
            assert reply.status == 200, reply.body
            answer = reply.json()
            assert answer["meta_info"]["id"] == f"{name}:{step}"  # rid set by the router
            assert reply.worker is not None
            served_by.setdefault(name, set()).add(reply.worker)
            if step > 0:
                # SGLang caches prompt + output[:-1]; the whole previous context is a hit.
                assert answer["meta_info"]["cached_tokens"] >= previous, (name, step, answer["meta_info"])
            previous = len(context) + len(answer["output_ids"]) - 1
            context = context + answer["output_ids"] + tokens(2000 + 10 * wf + step, 12)
    assert all(len(workers) == 1 for workers in served_by.values()), served_by
    # Placement spread the workflows over both workers (load-aware admission), then kept each.
    assert len({next(iter(w)) for w in served_by.values()}) == 2, served_by
    assert router.metric("saga_router_placements_total") == 16
    assert router.metric("saga_router_cached_token_ratio") > 0.5
    # The kv_hints the router attached reached the worker plugin (its own counter).
    hinted = sum(
        float(line.rsplit(" ", 1)[1])
        for w in cluster
        for line in http("GET", w.url + "/metrics").body.decode().splitlines()
        if line.startswith("saga_worker_hint_updates_total") and 'source="kv_hints"' in line
    )
    assert hinted >= 16


BUSY_TOKENS = 600


def test_steal_moves_a_workflow_in_its_tool_gap_and_prefills_it_on_the_thief(
    cluster: list[WorkerProcess], router_factory: RouterFactory
) -> None:
    victim, thief = cluster
    # Only the victim at first; its idle peer joins later through POST /workers. The load floor is
    # lowered because two tiny CPU requests load a 2048-token pool only lightly.
    config = {"policy_config": {"stealing": {"load_floor": 0.005}}}
    router = router_factory([victim.url], "--scheduler-config", json.dumps(config))
    contexts: dict[str, list[int]] = {}
    for i in range(3):
        name = f"steal-{i}"
        reply = generate(router, tokens(3000 + i, 60), 4, saga={"workflow_id": name, "step": 0})
        assert reply.status == 200 and reply.worker == victim.url
        contexts[name] = tokens(3000 + i, 60) + reply.json()["output_ids"]
        assert event(router, ClientToolStarted(workflow_id=name, tool="run_test")).status == 202
    # Overload the victim: three calls of other workflows whose prompts alone (3 x 700 tokens) exceed
    # its 2048-token pool, so one waits in its queue. That queue is what a stolen workflow escapes (the
    # steal guards refuse a steal from a victim whose waiting queue is empty: nothing to gain). Each
    # decodes BUSY_TOKENS, so on a quiet machine the queue lasts seconds, not one.
    busy: list[Reply] = []
    threads: list[threading.Thread] = []

    def start_busy(direct: bool = False) -> None:
        i = len(threads)
        prompt, saga = tokens(3100 + i, 700), {"workflow_id": f"busy-{i}", "step": 0}
        if direct:  # straight to the victim: the router would place a new workflow on the idle thief
            params = {"max_new_tokens": BUSY_TOKENS, "ignore_eos": True}
            body = {"input_ids": prompt, "sampling_params": params}
            url = victim.url + "/generate"
            thread = threading.Thread(target=lambda: busy.append(http("POST", url, body, timeout=300)))
        else:
            call = lambda: busy.append(generate(router, prompt, BUSY_TOKENS, saga=saga))  # noqa: E731
            thread = threading.Thread(target=call)
        threads.append(thread)
        thread.start()

    for _ in range(3):
        start_busy()
    wait_for(lambda: waiting_reqs(victim) >= 1, 120, "calls waiting in the victim's queue")
    added = http("POST", router.url + "/workers", {"url": thief.url})
    assert added.status == 202 and added.json()["status"] == "accepted"

    def stolen() -> bool:
        # The victim's queue is what a steal escapes: on a fast (quiet) machine it can drain before
        # the thief is probed and idle, so keep one call waiting there until the steal happens.
        if router.metric("saga_router_steals_total") >= 1:
            return True
        if waiting_reqs(victim) == 0 and len(threads) < 8 and time.monotonic() - topped[-1] > 1.0:
            start_busy(direct=True)
            topped.append(time.monotonic())
        return False

    topped = [time.monotonic()]

    wait_for(stolen, 60, "a steal")
    wait_for(lambda: router.metric("saga_router_prefills_total") >= 1, 30, "a pre-fill")
    assert "steal steal-" in router.log()
    moved = []
    for step, (name, context) in enumerate(contexts.items()):
        finished = ClientToolFinished(workflow_id=name, tool="run_test", latency_s=1.0)
        assert event(router, finished).status == 202
        prompt = context + tokens(3200 + step, 10)
        reply = generate(router, prompt, 4, saga={"workflow_id": name, "step": 1})
        assert reply.status == 200
        if reply.worker == thief.url:
            moved.append(name)
            # The thief never saw this workflow's calls: its cache holds the context only because
            # the router pre-filled it there during the tool gap.
            assert reply.json()["meta_info"]["cached_tokens"] >= len(context) - 1, reply.json()["meta_info"]
    assert moved, "no stolen workflow's next call went to the thief"
    for t in threads:
        t.join(timeout=300)
    assert [r.status for r in busy] == [200] * len(threads)


def test_admission_holds_a_new_workflow_while_the_workers_are_full(
    cluster: list[WorkerProcess], router_factory: RouterFactory
) -> None:
    # Predicted footprint 700 tokens per workflow, 80 % of a 2048-token pool: two per worker.
    config = {"admission": {"enabled": True, "kv_threshold_frac": 0.8, "default_footprint_tokens": 700}}
    router = router_factory([w.url for w in cluster], "--scheduler-config", json.dumps(config))
    for i in range(4):
        reply = generate(router, tokens(4000 + i, 30), 2, saga={"workflow_id": f"adm-{i}", "step": 0})
        assert reply.status == 200
    late: list[Reply] = []
    thread = threading.Thread(
        target=lambda: late.append(generate(router, tokens(4100, 30), 2, saga={"workflow_id": "adm-late"}))
    )
    started = time.monotonic()
    thread.start()
    time.sleep(2.0)
    assert thread.is_alive() and not late, "the fifth workflow was admitted although both workers are full"
    assert router.metric("saga_router_admissions_held") == 1
    assert event(router, ClientWorkflowFinished(workflow_id="adm-0")).status == 202
    thread.join(timeout=30)
    assert late and late[0].status == 200
    assert time.monotonic() - started >= 2.0
    wait_for(lambda: router.metric("saga_router_admissions_held") == 0, 5, "the held gauge to drop")
    assert "release adm-late" in router.log()


def test_bad_input_gets_4xx_before_any_worker_and_the_workers_stay_up(
    cluster: list[WorkerProcess], router_factory: RouterFactory
) -> None:
    router = router_factory([w.url for w in cluster], "--max-payload-size", "100000")
    gen = router.url + "/generate"
    cases = {
        "malformed JSON": http("POST", gen, raw=b'{"input_ids": [1, 2'),
        "not an object": http("POST", gen, raw=b"[1, 2, 3]"),
        "missing prompt": http("POST", gen, {"sampling_params": {"max_new_tokens": 1}}),
        "token id outside the vocabulary": http("POST", gen, {"input_ids": [1, 2, TINY_VOCAB_SIZE]}),
        "negative token id": http("POST", gen, {"input_ids": [1, -2]}),
        "non-integer token id": http("POST", gen, {"input_ids": [1, "a"]}),
        "bad saga field": http("POST", gen, {"input_ids": [1], "saga": {"workflow_id": ""}}),
        "chat without messages": http("POST", router.url + "/v1/chat/completions", {"model": "m"}),
        "completion without prompt": http("POST", router.url + "/v1/completions", {"model": "m"}),
        "malformed client event": http("POST", router.url + "/saga/events", raw=b'{"type": "nope"}'),
    }
    for what, reply in cases.items():
        assert reply.status == 400, (what, reply.status, reply.body)
        assert reply.json()["error"]["message"], what
    oversized = http("POST", gen, {"input_ids": [1] * 60_000})
    assert oversized.status == 413
    unknown = event(router, ClientToolFinished(workflow_id="never-seen", tool="x"))
    assert unknown.status == 404 and "unknown workflow" in unknown.json()["error"]["message"]
    # A submitted graph registers its workflow; its events are then known.
    graph = AegSubmission(
        workflow_id="graph-1",
        tenant_id="t2",
        nodes=[SubmittedNode(node_id="a", tool="search"), SubmittedNode(node_id="b")],
        edges=[SubmittedEdge(src="a", dst="b")],
    )
    assert event(router, graph).status == 202
    assert event(router, ClientToolStarted(workflow_id="graph-1", tool="search")).status == 202
    assert http("POST", router.url + "/workers", {"priority": 1}).status == 422
    assert http("GET", router.url + "/workers/not-a-uuid").status == 400
    # Nothing reached a worker: both are alive and the router still serves.
    for worker in cluster:
        assert worker.process.poll() is None
        assert http("GET", worker.url + "/health").status == 200
    assert router.metric("saga_router_bad_requests_total") >= len(cases) + 1
    ok = generate(router, tokens(5000, 20), 2)
    assert ok.status == 200


def _client_session(base: str) -> dict[str, Any]:
    """The same client code against either router: what it observes (status codes and shapes)."""
    seen: dict[str, Any] = {}
    for path in (
        "/health",
        "/liveness",
        "/readiness",
        "/v1/models",
        "/get_model_info",
        "/get_server_info",
        "/get_loads",
        "/workers",
    ):
        reply = http("GET", base + path)
        seen[path] = reply.status
    ready = http("GET", base + "/readiness").json()
    seen["readiness"] = (ready["status"], ready["healthy_workers"], ready["total_workers"])
    workers = http("GET", base + "/workers").json()
    seen["workers"] = (
        workers["total"],
        sorted(w["is_healthy"] for w in workers["workers"]),
        sorted(w["worker_type"] for w in workers["workers"]),
    )
    loads = http("GET", base + "/get_loads").json()
    seen["get_loads"] = sorted(loads["workers"][0])
    body = {
        "input_ids": tokens(6000, 24),
        "sampling_params": {"max_new_tokens": 3, "temperature": 0},
        "rid": "client-wf:0",
    }
    reply = http("POST", base + "/generate", body, headers={"X-SMG-Routing-Key": "client-wf"})
    answer = reply.json()
    seen["generate"] = (reply.status, answer["meta_info"]["id"], len(answer["output_ids"]))
    stream = http("POST", base + "/generate", dict(body, rid="client-wf:1", stream=True))
    chunks = [c for c in stream.body.decode().split("\n\n") if c.strip()]
    seen["stream"] = (stream.status, chunks[-1], len(chunks) >= 2)
    seen["bad json"] = http("POST", base + "/generate", raw=b"{").status
    seen["flush"] = (lambda r: (r.status, r.json()["workers_flushed"]))(http("POST", base + "/flush_cache"))
    return seen


def test_the_same_client_code_runs_against_sglang_router_and_ours(
    cluster: list[WorkerProcess], router_factory: RouterFactory, tmp_path: Any
) -> None:
    urls = [w.url for w in cluster]
    ours = router_factory(urls)
    port = free_port()
    theirs = start_router(
        [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker-urls",
            *urls,
            "--policy",
            "cache_aware",
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(free_port()),
            "--log-level",
            "warn",
        ],
        port,
        tmp_path,
        "sglang-router",
        ready_workers=2,
    )
    try:
        seen_theirs = _client_session(theirs.url)
    finally:
        theirs.stop()
    seen_ours = _client_session(ours.url)
    assert seen_theirs["generate"] == (200, "client-wf:0", 3)
    assert seen_theirs["stream"][0] == 200 and seen_theirs["stream"][1] == "data: [DONE]"
    assert seen_ours == seen_theirs, (seen_ours, seen_theirs)
    # The saga client's out-of-band events: ours accepts them, the stock router has no such route
    # (the frontend then stops sending, quietly).
    assert event(ours, ClientToolStarted(workflow_id="client-wf", tool="search")).status == 202


def test_a_hung_worker_is_taken_out_and_re_admitted_when_it_answers_again(
    cluster: list[WorkerProcess], router_factory: RouterFactory
) -> None:
    router = router_factory(
        [w.url for w in cluster],
        "--health-check-interval-secs",
        "0.5",
        "--health-check-timeout-secs",
        "5",
        "--health-failure-threshold",
        "2",
        "--health-success-threshold",
        "2",
    )
    hung, other = cluster
    os.killpg(hung.process.pid, signal.SIGSTOP)  # the whole worker freezes: no answers, no errors
    try:
        wait_for(lambda: not healthy(router)[hung.url], 30, "the hung worker to be taken out")
        for i in range(3):  # new workflows all go to the worker that answers
            reply = generate(router, tokens(8000 + i, 20), 2, saga={"workflow_id": f"hang-{i}", "step": 0})
            assert reply.status == 200 and reply.worker == other.url
    finally:
        os.killpg(hung.process.pid, signal.SIGCONT)
    wait_for(lambda: healthy(router)[hung.url], 60, "the worker to be re-admitted")
    assert "re-admitted" in router.log() and "taken out" in router.log()
    assert generate(router, tokens(8100, 20), 2).status == 200


def healthy(router: RouterProcess) -> dict[str, bool]:
    return {w["url"]: w["is_healthy"] for w in http("GET", router.url + "/workers").json()["workers"]}


def test_killing_a_worker_mid_workflow_loses_no_request_that_had_not_started_streaming(
    cluster: list[WorkerProcess], router_factory: RouterFactory, tmp_path: Path
) -> None:
    router = router_factory([w.url for w in cluster], "--health-check-interval-secs", "0.5")
    # Step 0 of six workflows, one after another: each is bound to the worker that served it. The
    # victim is a worker holding at least two of them (six workflows, two workers), so the calls on
    # it do not depend on how placement spreads simultaneous arrivals.
    contexts: dict[str, list[int]] = {}
    bound: dict[str, str] = {}
    for i in range(6):
        name = f"kill-{i}"
        prompt = tokens(7100 + i, 40)
        reply = generate(router, prompt, 2, saga={"workflow_id": name, "step": 0})
        assert reply.status == 200 and reply.worker is not None
        contexts[name] = prompt + reply.json()["output_ids"]
        bound[name] = reply.worker
    victim_url = max((w.url for w in cluster), key=lambda u: (list(bound.values()).count(u), u))
    victim = next(w for w in cluster if w.url == victim_url)
    survivor = next(w for w in cluster if w.url != victim_url)
    on_victim = [n for n, u in bound.items() if u == victim_url]
    assert len(on_victim) >= 2, bound
    # Step 1 of one of the victim's workflows streams (it stays with its cache: affinity).
    streamer = on_victim[0]
    body = {
        "input_ids": contexts[streamer] + tokens(7200, 8),
        "stream": True,
        "sampling_params": {"max_new_tokens": 400, "temperature": 0, "ignore_eos": True},
        "saga": {"workflow_id": streamer, "step": 1},
    }
    req = urllib.request.Request(
        router.url + "/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    stream = urllib.request.urlopen(req, timeout=120)
    assert stream.headers["X-Saga-Worker"] == victim_url
    first = stream.readline()
    assert first.startswith(b"data: ")
    # Step 1 of the other workflows, not streamed, on both workers, still running at the kill.
    replies: dict[str, Reply] = {}
    others = [n for n in contexts if n != streamer]

    def step_1(name: str, k: int) -> None:
        prompt = contexts[name] + tokens(7300 + k, 8)
        replies[name] = generate(router, prompt, 150, saga={"workflow_id": name, "step": 1})

    threads = [threading.Thread(target=step_1, args=(n, k)) for k, n in enumerate(others)]
    for t in threads:
        t.start()
    wait_for(lambda: running_reqs(victim) >= 2, 120, "calls running on the victim")
    victim.stop(timeout_s=1)
    for t in threads:
        t.join(timeout=300)
    # Every non-streaming call completed (those on the victim were retried on the survivor).
    assert sorted(replies) == sorted(others)
    statuses = {k: (r.status, r.body[:200]) for k, r in replies.items()}
    assert all(r.status == 200 for r in replies.values()), statuses
    assert all(r.worker == survivor.url for r in replies.values())
    assert router.metric("saga_router_retries_total") >= 1
    # The stream had started: the client gets a clear in-band error, not a hang.
    rest = stream.read().decode()
    assert '"error"' in rest and "mid-stream" in rest
    workers = http("GET", router.url + "/workers").json()["workers"]
    assert {w["url"]: w["is_healthy"] for w in workers}[victim_url] is False
    # A later call of the workflow whose worker died is placed on the survivor.
    again = generate(router, tokens(7000, 30), 2, saga={"workflow_id": streamer, "step": 2})
    assert again.status == 200 and again.worker == survivor.url
    # The worker comes back (same address and ports, a new process with an empty cache): the router
    # re-admits it, subscribes to its KV events again, and new workflows are placed there again.
    back = start_worker(victim.spec, tmp_path)
    try:
        back.wait_ready(480)
        wait_for(lambda: healthy(router)[victim_url], 60, "the restarted worker to be re-admitted")
        assert "re-admitted" in router.log()
        # Re-admission and the KV-event re-subscription are logged by different tasks: wait for both.
        wait_for(
            lambda: router.log().count(f"worker {victim_url}: subscribed to KV events") >= 2,
            30,
            "the router to subscribe to the restarted worker's KV events",
        )
        # With the survivor busy (a long call of a workflow bound to it), new workflows go to the
        # worker that came back.
        busy = threading.Thread(
            target=generate, args=(router, tokens(7000, 30), 300), kwargs={"saga": {"workflow_id": streamer}}
        )
        busy.start()
        wait_for(lambda: running_reqs(survivor) >= 1, 60, "the survivor to run the long call")
        served = {
            generate(router, tokens(7400 + i, 30), 2, saga={"workflow_id": f"back-{i}", "step": 0}).worker
            for i in range(4)
        }
        busy.join(timeout=300)
        assert victim_url in served, served
    finally:
        back.stop()
