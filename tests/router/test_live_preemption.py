"""AFS preemption carried out live: a real SGLang 0.5.23 CPU worker that runs one request at a time
(``--max-running-requests 1``), our router in front.

A long call of a tenant with no predicted work runs; a call of a tenant with urgent predicted work
(a submitted graph) arrives and waits behind it. After AFS's delay the scheduler preempts the long
call: the router aborts it at the worker (``/abort_request`` with the rid it set), lets the urgent
call run, and re-sends the long call to the same worker. Its client gets one normal answer, the
same the worker gives for that request undisturbed (greedy decoding).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saga_sgl.local_workers import TINY_VOCAB_SIZE, WorkerProcess, WorkerSpec, free_port, running_workers
from saga_sgl.protocol import AegSubmission, SubmittedEdge, SubmittedNode, encode_client_event

from .conftest import Reply, http, saga_router_command, start_router

pytestmark = [pytest.mark.live, pytest.mark.sglang]

LONG_CALL_S = 3.0
"""How long the long call should decode undisturbed: its token count is sized to the worker's
measured decode speed, so that it is still running when the preemption delay passes (many times
over) on a fast idle machine as on the loaded shared one."""
PREEMPT_AFTER_S = 0.2
"""AFS's preemption delay for these tests (the paper's 500 ms, shortened so that the long call is
still running when it passes, whatever the machine's speed)."""
CONFIG = json.dumps({"policy_config": {"fairness": {"preempt_after_s": PREEMPT_AFTER_S}}})


@pytest.fixture(scope="module")
def one_slot_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    spec = WorkerSpec(port=free_port(), max_total_tokens=2048, extra_args=("--max-running-requests", "1"))
    with running_workers([spec], tmp_path_factory.mktemp("preempt-worker"), ready_timeout_s=480) as workers:
        yield workers[0]


def _ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, TINY_VOCAB_SIZE) for _ in range(n)]


def _body(ids: list[int], max_new_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"input_ids": ids,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True},
            **extra}


def _long_tokens(worker: str) -> int:
    """Output tokens that take the worker about ``LONG_CALL_S`` (fastest of two timed calls)."""
    per_token = min(
        float(http("POST", worker + "/generate", _body(_ids(90 + i, 16), 32), timeout=400).json()[
            "meta_info"]["e2e_latency"]) / 32
        for i in range(2)
    )
    return max(32, min(1500, round(LONG_CALL_S / per_token)))


def _worker_loads(url: str) -> tuple[int, int]:
    with urllib.request.urlopen(url + "/v1/loads?include=core", timeout=10) as resp:
        load = json.loads(resp.read())["loads"][0]
    return int(load["num_running_reqs"]), int(load["num_waiting_reqs"])


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_a_long_call_is_preempted_for_an_urgent_one_and_its_client_gets_the_full_answer(
    one_slot_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker = one_slot_worker.url
    port = free_port()
    command = saga_router_command(port, [worker], "--scheduler-config", CONFIG)
    router = start_router(command, port, tmp_path, "saga-router", ready_workers=1)
    try:
        long_ids, urgent_ids = _ids(91, 64), _ids(92, 24)
        # The urgent tenant's workflow has predicted work left (a submitted graph); the batch tenant's
        # has none: AFS(urgent) > AFS(batch).
        nodes = [SubmittedNode(node_id=f"n{i}", tool="search", prompt_tokens=2000, output_tokens=400)
                 for i in range(6)]
        graph = AegSubmission(workflow_id="urgent-1", tenant_id="urgent", nodes=nodes,
                              edges=[SubmittedEdge(src=f"n{i}", dst=f"n{i + 1}") for i in range(5)])
        assert http("POST", router.url + "/saga/events", raw=encode_client_event(graph)).status == 202

        replies: dict[str, tuple[Reply, float]] = {}

        def send(name: str, body: dict[str, Any]) -> None:
            reply = http("POST", router.url + "/generate", body, timeout=400)
            replies[name] = (reply, time.monotonic())

        long_tokens = _long_tokens(worker)
        long_body = _body(long_ids, long_tokens, saga={"workflow_id": "batch-1", "tenant_id": "batch"})
        long_thread = threading.Thread(target=send, args=("long", long_body))
        long_thread.start()
        _wait_for(lambda: _worker_loads(worker)[0] == 1, 120, "the long call running at the worker")
        urgent_body = _body(urgent_ids, 4, saga={"workflow_id": "urgent-1", "tenant_id": "urgent", "step": 0})
        urgent_thread = threading.Thread(target=send, args=("urgent", urgent_body))
        urgent_thread.start()
        urgent_thread.join(400)
        long_thread.join(400)

        long_reply, long_done = replies["long"]
        urgent_reply, urgent_done = replies["urgent"]
        assert urgent_reply.status == 200, urgent_reply.body[:300]
        assert long_reply.status == 200, long_reply.body[:300]
        assert urgent_done < long_done, "the urgent call should finish first"
        assert router.metric('saga_router_preemptions_total{outcome="applied"}') == 1, router.log()[-3000:]
        assert "preemption of call batch-1" in router.log()
        assert "re-sent to" in router.log()

        # One normal answer: all its tokens, a normal finish, the answer the worker gives undisturbed.
        answer = long_reply.json()
        assert answer["meta_info"]["finish_reason"]["type"] == "length"
        assert answer["meta_info"]["completion_tokens"] == long_tokens
        reference = http("POST", worker + "/generate", _body(long_ids, long_tokens), timeout=400).json()
        assert answer["output_ids"] == reference["output_ids"]
        # Its prompt was still in the worker's cache when it was re-sent.
        assert answer["meta_info"]["cached_tokens"] >= len(long_ids) - 1
    finally:
        router.stop()


def _stream(url: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """POST a streamed /generate; (status, the JSON events in order)."""
    req = urllib.request.Request(url + "/generate", data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(req, timeout=400) as resp:
        status = resp.status
        for line in resp:
            if line.startswith(b"data: {"):
                events.append(json.loads(line[6:]))
    return status, events


def test_a_streamed_call_is_never_preempted(one_slot_worker: WorkerProcess, tmp_path: Path) -> None:
    worker = one_slot_worker.url
    port = free_port()
    command = saga_router_command(port, [worker], "--scheduler-config", CONFIG)
    router = start_router(command, port, tmp_path, "saga-router", ready_workers=1)
    try:
        nodes = [SubmittedNode(node_id=f"n{i}", tool="search", prompt_tokens=2000, output_tokens=400)
                 for i in range(6)]
        graph = AegSubmission(workflow_id="urgent-2", tenant_id="urgent", nodes=nodes,
                              edges=[SubmittedEdge(src=f"n{i}", dst=f"n{i + 1}") for i in range(5)])
        assert http("POST", router.url + "/saga/events", raw=encode_client_event(graph)).status == 202
        streamed: dict[str, Any] = {}
        long_tokens = _long_tokens(worker)

        def stream_long() -> None:
            body = _body(_ids(93, 64), long_tokens, saga={"workflow_id": "batch-2", "tenant_id": "batch"})
            streamed["status"], streamed["events"] = _stream(router.url, body)

        long_thread = threading.Thread(target=stream_long)
        long_thread.start()
        _wait_for(lambda: _worker_loads(worker)[0] == 1, 120, "the streamed call running at the worker")
        urgent = _body(_ids(94, 24), 4, saga={"workflow_id": "urgent-2", "tenant_id": "urgent", "step": 0})
        urgent_reply = http("POST", router.url + "/generate", urgent, timeout=400)
        long_thread.join(400)
        assert urgent_reply.status == 200
        assert streamed["status"] == 200
        last = streamed["events"][-1]
        assert last["meta_info"]["finish_reason"]["type"] == "length"
        assert last["meta_info"]["completion_tokens"] == long_tokens
        # The urgent call waited behind the stream well past the preemption delay (the worker's own
        # queue time), yet nothing was aborted.
        assert urgent_reply.json()["meta_info"]["queue_time"] > 3 * PREEMPT_AFTER_S
        assert router.metric("saga_router_preemptions_total") == 0
        assert "preemption of call batch-2" not in router.log()
    finally:
        router.stop()
