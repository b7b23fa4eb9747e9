"""SGLang DSL programs on SagaEndpoint against a real text-serving SGLang CPU worker (and through the
real sglang-router 0.3.2). One worker per module; dummy weights, so texts are meaningless and the
assertions are about structure, tags, completeness and events, never about content."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from worker_log import received_requests

from saga_sgl.local_workers import WorkerProcess, WorkerSpec, free_port, running_workers
from saga_sgl.protocol import (
    AegSubmission,
    ClientEvent,
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    aeg_from_submission,
    decode_client_event,
)

pytestmark = [pytest.mark.live, pytest.mark.sglang, pytest.mark.timeout(900)]


def _fork_program() -> Any:
    import sglang as sgl

    from saga_sgl import frontend as saga

    @saga.function
    def tree(s: Any, task: str) -> None:
        s += "Task: " + task + "\n"
        s += "Plan:" + sgl.gen("plan", max_tokens=6)
        with saga.tool("search"):
            time.sleep(0.05)
        s += "\nObservation: three options\n"
        branches = s.fork(3)
        branches += lambda i: f"Option {i}:" + sgl.gen("idea", max_tokens=4)
        branches.join()
        s += "Pick: " + sgl.select("pick", choices=["first", "second", "third"])
        s += sgl.gen("answer", max_tokens=4)

    return tree


def _first_rid(request: dict[str, Any]) -> str:
    rid = request["rid"]
    return str(rid[0] if isinstance(rid, list) and rid else rid)


class EventReceiver:
    """Stands in for the saga router's ``POST /saga/events`` (the router lands with issue 9): it
    decodes each body with the same strict decoder and keeps the events."""

    def __init__(self, delay_s: dict[type, float] | None = None) -> None:
        self.events: list[ClientEvent] = []
        self.handled_at_s: list[float] = []
        """When each event's answer went out (monotonic clock), in the order of ``events``."""
        receiver = self
        delays = delay_s or {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = decode_client_event(body)
                time.sleep(delays.get(type(event), 0.0))  # a slow router
                receiver.events.append(event)
                receiver.handled_at_s.append(time.monotonic())
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    r = EventReceiver()
    yield r
    r.close()


def test_forked_program_metadata_reaches_the_worker(
    text_worker: WorkerProcess, default_backend: None
) -> None:
    from saga_sgl import frontend as saga

    backend = saga.SagaEndpoint(text_worker.url, send_events=False)
    with saga.workflow("tot-1", agent_type="tot", tenant_id="acme", slo_class="batch"):
        state = _fork_program().run(task="sort a list", backend=backend)
    assert state.error() is None
    assert state.get_meta_info("plan")["id"] == "tot-1:0"  # the worker echoes our rid

    record = backend.recorded("tot-1")
    assert record is not None and record.finished and record.ok
    nodes = list(record.nodes.values())
    # gen, fork prefill, 3 branch gens, select, gen; branches and join edges as the program ran.
    assert [n.call for n in nodes].count("prefill") == 1 and len(nodes) == 7
    prefill = next(n for n in nodes if n.call == "prefill")
    branches = [n for n in nodes if ".f0." in n.node_id]
    assert sorted(b.node_id for b in branches) == ["r0.f0.0/0", "r0.f0.1/0", "r0.f0.2/0"]
    assert all(b.parents == [(prefill.node_id, "branch")] for b in branches)
    select = next(n for n in nodes if n.call == "select")
    assert sorted(select.parents) == sorted((b.node_id, "join") for b in branches)
    assert prefill.tool_before == "search" and prefill.tool_latency_s is not None
    assert nodes[0].tool_after == "search"
    assert all(n.prompt_tokens > 0 for n in nodes)  # token counts from the responses

    # What the worker received: every call with rid, routing key, header and the saga.aeg tag.
    seen = [r for r in received_requests(text_worker.log_path) if _first_rid(r).startswith("tot-1:")]
    by_rid = {r["rid"]: r for r in seen if isinstance(r["rid"], str)}
    for n in nodes:
        got = by_rid[f"tot-1:{n.step}"]
        assert got["routing_key"] == "tot-1" and got["header"] == "tot-1"
        tag = got["aeg"]
        assert tag["node_id"] == n.node_id and tag["call"] == n.call
        assert list(zip(tag["parents"], tag["edge_kinds"], strict=True)) == n.parents
        assert (tag["agent_type"], tag["tenant_id"], tag["slo_class"]) == ("tot", "acme", "batch")
    choice_batches = [r for r in seen if isinstance(r["rid"], list)]
    assert choice_batches and choice_batches[0]["rid"] == [f"tot-1:{select.step}:c_{i}" for i in range(3)]
    assert choice_batches[0]["aeg"]["node_id"] == select.node_id

    # The recorded graph is a valid AEG under the branch rule.
    aeg = aeg_from_submission(record.to_submission(complete=True))
    assert len(aeg.successors(prefill.node_id)) == 3  # type: ignore[arg-type]


def test_tool_events_and_workflow_end_reach_the_events_endpoint(
    text_worker: WorkerProcess, receiver: EventReceiver, default_backend: None
) -> None:
    from saga_sgl import frontend as saga

    backend = saga.SagaEndpoint(text_worker.url, events_url=receiver.url)
    with saga.workflow("tool-1", agent_type="tot"):
        state = _fork_program().run(task="t", backend=backend)
    assert state.error() is None
    assert backend.events is not None and backend.events.flush(10)
    assert backend.events.stats.sent == len(receiver.events) and backend.events.stats.failed == 0
    kinds = [type(e) for e in receiver.events]
    started = next(e for e in receiver.events if isinstance(e, ClientToolStarted))
    finished = next(e for e in receiver.events if isinstance(e, ClientToolFinished))
    assert (started.workflow_id, started.tool, started.node_id) == ("tool-1", "search", "r0/0")
    assert finished.ok and 0.05 <= finished.latency_s < 5.0
    assert (
        kinds.index(ClientToolStarted) < kinds.index(ClientToolFinished) < kinds.index(ClientWorkflowFinished)
    )
    submissions = [e for e in receiver.events if isinstance(e, AegSubmission)]
    assert [s.complete for s in submissions] == [False, True]  # at the tool start, at the end
    assert submissions[0].revision < submissions[1].revision
    assert [n.tool for n in submissions[0].nodes] == ["search"]
    final = submissions[1]
    assert len(final.nodes) == 7 and sum(n.terminal for n in final.nodes) == 1
    done = next(e for e in receiver.events if isinstance(e, ClientWorkflowFinished))
    assert done.calls == 7 and done.ok


def test_the_call_after_a_tool_waits_for_its_tool_finished_event(
    text_worker: WorkerProcess, default_backend: None
) -> None:
    """Events go out on a background thread; the call after a tool must not overtake the tool's
    ToolFinished (a router seeing the call first ends the gap without telling the worker)."""
    from saga_sgl import frontend as saga

    slow = EventReceiver(delay_s={ClientToolFinished: 0.5})
    try:
        backend = saga.SagaEndpoint(text_worker.url, events_url=slow.url)
        sent_at: list[tuple[float, str]] = []
        request = backend._request

        def spy(method: str, path: str, body: Any, *, routing_key: str | None) -> tuple[int, bytes]:
            sent_at.append((time.monotonic(), str((body or {}).get("rid", ""))))
            return request(method, path, body, routing_key=routing_key)

        backend._request = spy  # type: ignore[method-assign]
        with saga.workflow("order-1", agent_type="tot"):
            state = _fork_program().run(task="t", backend=backend)
        assert state.error() is None
        assert backend.events is not None and backend.events.flush(10)
    finally:
        slow.close()
    handled = zip(slow.events, slow.handled_at_s, strict=True)
    finished_at = next(t for e, t in handled if isinstance(e, ClientToolFinished))
    record = backend.recorded("order-1")
    assert record is not None
    after_tool = next(n for n in record.nodes.values() if n.tool_before == "search")
    rid = f"order-1:{after_tool.step}"
    first_after = min(t for t, r in sent_at if r == rid or r.startswith(rid + ":"))
    assert finished_at <= first_after, "the call after the tool reached the worker before ToolFinished"


def test_events_degrade_quietly_without_an_events_endpoint(
    text_worker: WorkerProcess, default_backend: None, caplog: pytest.LogCaptureFixture
) -> None:
    import sglang as sgl

    from saga_sgl import frontend as saga

    @saga.function
    def step(s: Any) -> None:
        s += "Act:" + sgl.gen("a", max_tokens=2)
        with saga.tool("search"):
            pass
        s += "Obs.\n" + sgl.gen("b", max_tokens=2)

    backend = saga.SagaEndpoint(text_worker.url)  # a plain worker: no /saga/events
    caplog.set_level(logging.INFO, logger="saga_sgl.frontend.events")
    for i in range(2):
        with saga.workflow(f"quiet-{i}"):
            assert step.run(backend=backend).error() is None
    assert backend.events is not None and backend.events.flush(10)
    assert backend.events.supported is False
    assert backend.events.stats.sent == 0 and backend.events.stats.failed == 0
    assert backend.events.stats.skipped == 10  # 2 workflows x (tool x2, aeg x2, end), none retried
    assert len([r for r in caplog.records if "no saga router" in r.getMessage()]) == 1


def test_concate_and_append_join_completes(text_worker: WorkerProcess, default_backend: None) -> None:
    import sglang as sgl

    from saga_sgl import frontend as saga

    @sgl.function
    def encode(s: Any, contexts: list[str]) -> None:
        s += "Memorize:\n"
        forks = s.fork(len(contexts))
        forks += lambda i: f"Statement {i}: " + contexts[i] + "\n"
        forks.join(mode="concate_and_append")
        s += "Answer:" + sgl.gen("answer", max_tokens=4)

    backend = saga.SagaEndpoint(text_worker.url, send_events=False)
    contexts = ["Ethan is the father of Liam.", "Noah is the father of Julian.", "Oliver is a cook."]
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(encode.run(contexts=contexts, backend=backend)))
    t.start()
    t.join(120)
    assert not t.is_alive(), "concate_and_append join hung"
    state = done[0]
    assert state.error() is None
    text = state.text()
    for i, c in enumerate(contexts):  # the branches' text is joined into the parent, in order
        assert f"Statement {i}: {c}" in text
    assert text.index("Statement 0") < text.index("Statement 1") < text.index("Statement 2")


def _stream_program() -> Any:
    import sglang as sgl

    @sgl.function
    def qa(s: Any, question: str) -> None:
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=24, return_logprob=True, ignore_eos=True))

    return qa


def _check_streaming(url: str) -> tuple[str, str]:
    """Full text streamed (text_iter and text_async_iter with logprob deltas) vs not streamed."""
    from saga_sgl import frontend as saga

    backend = saga.SagaEndpoint(url, send_events=False)
    qa = _stream_program()
    question = "Compose a travel blog post about Hawaii."
    reference = qa.run(question=question, temperature=0, backend=backend)
    assert reference.error() is None
    expected = reference["answer"]
    assert reference.get_meta_info("answer")["completion_tokens"] == 24

    streamed = qa.run(question=question, temperature=0, stream=True, backend=backend)
    text = "".join(streamed.text_iter("answer"))

    async def collect() -> list[tuple[str, dict[str, Any]]]:
        ret = qa.run(question=question, temperature=0, stream=True, backend=backend)
        return [c async for c in ret.text_async_iter("answer", return_meta_data=True)]

    chunks = asyncio.run(collect())
    assert "".join(c for c, _ in chunks) == expected
    # Logprobs arrive as deltas; together they cover every generated token exactly once. (SGLang's
    # interpreter keeps only the latest chunk's meta-info, so a chunk the consumer misses loses its
    # logprobs: upstream's own race, so we only bound the total from above.)
    total = sum(len(m["output_token_logprobs"]) for _, m in chunks)
    assert 0 < total <= 24
    assert chunks[-1][1]["completion_tokens"] == 24
    return text, expected


def test_streaming_returns_the_full_text(text_worker: WorkerProcess) -> None:
    text, expected = _check_streaming(text_worker.url)
    assert text == expected and len(expected) > 0


def test_streaming_returns_the_full_text_with_incremental_output(tmp_path: Path) -> None:
    spec = WorkerSpec(port=free_port(), serve_text=True, extra_args=("--incremental-streaming-output",))
    with running_workers([spec], tmp_path, ready_timeout_s=600) as (worker,):
        _check_incremental(worker)


def _check_incremental(worker: WorkerProcess) -> None:
    text, expected = _check_streaming(worker.url)
    assert text == expected and len(expected) > 0

    # The stock RuntimeEndpoint keeps only the first chunk on such a server (what we fix).
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    stock = _stream_program().run(
        question="Compose a travel blog post about Hawaii.",
        temperature=0,
        stream=True,
        backend=RuntimeEndpoint(worker.url),
    )
    assert len("".join(stock.text_iter("answer"))) < len(expected)


@pytest.fixture
def stock_router(text_worker: WorkerProcess, tmp_path: Path) -> Iterator[str]:
    """The real sglang-router 0.3.2 (pip) in front of the module's worker."""
    port = free_port()
    log = open(tmp_path / "sglang-router.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker-urls",
            text_worker.url,
            "--policy",
            "cache_aware",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "sglang-router.log").read_text()[-2000:]
            try:
                # /get_model_info answers 200 only once the router has admitted the worker.
                with urllib.request.urlopen(url + "/get_model_info", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:  # refused while starting, 503 "no_workers" until admitted
                pass
            assert time.monotonic() < deadline, "sglang-router did not admit the worker"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_same_program_runs_unchanged_through_sglang_router(
    text_worker: WorkerProcess, stock_router: str, caplog: pytest.LogCaptureFixture
) -> None:
    import sglang as sgl

    from saga_sgl import frontend as saga

    caplog.set_level(logging.INFO, logger="saga_sgl.frontend")
    backend = saga.SagaEndpoint(stock_router)
    with saga.workflow("via-router"):
        state = _fork_program().run(task="t", backend=backend)
    assert state.error() is None
    assert state["pick"] in ("first", "second", "third")
    assert backend.batched_text_ok is False  # the router refused text: [...]; one request per choice

    @sgl.function
    def methods(s: Any) -> None:
        s += "Pick:" + sgl.select("g", ["alpha", "beta"], choices_method=sgl.greedy_token_selection)
        s += sgl.select("u", ["alpha", "beta"], choices_method=sgl.unconditional_likelihood_normalized)

    assert methods.run(backend=backend).error() is None
    info = backend.get_server_info()
    assert isinstance(info, dict)

    # Only the rid survives the stock router: it still names workflow and step at the worker.
    record = backend.recorded("via-router")
    assert record is not None and record.finished
    seen = {
        r["rid"] for r in received_requests(text_worker.log_path) if str(r["rid"]).startswith("via-router:")
    }
    assert {f"via-router:{n.step}" for n in record.nodes.values()} <= seen
    select = next(n for n in record.nodes.values() if n.call == "select")
    assert {f"via-router:{select.step}:c_{i}" for i in range(3)} <= seen
    assert backend.events is not None and backend.events.flush(10) and backend.events.supported is False


def test_run_batch_with_prefix_precache(text_worker: WorkerProcess) -> None:
    import sglang as sgl

    from saga_sgl import frontend as saga

    @sgl.function
    def few_shot(s: Any, question: str) -> None:
        s += "The following are questions with answers. " * 6 + "\n"
        s += "Q: " + question + "\nA:" + sgl.gen("answer", max_tokens=4)

    backend = saga.SagaEndpoint(text_worker.url, send_events=False, workflow_prefix="batch")
    states = few_shot.run_batch([{"question": q} for q in ("a", "b", "c")], backend=backend, num_threads=3)
    assert all(s.error() is None for s in states)
    ids = {s.get_meta_info("answer")["id"].split(":")[0] for s in states}
    assert len(ids) == 3  # each batch item is its own workflow
    prefixes = [
        r for r in received_requests(text_worker.log_path) if str(r["rid"]).startswith("saga-prefix-")
    ]
    assert prefixes and prefixes[-1]["aeg"]["call"] == "cache_prefix"
    for wid in ids:
        deadline = time.monotonic() + 10
        while not (rec := backend.recorded(wid)) or not rec.finished:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_chat_template_of_the_worker_serves_the_openai_api(text_worker: WorkerProcess) -> None:
    body = json.dumps(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    ).encode()
    req = urllib.request.Request(
        text_worker.url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.load(resp)
    assert answer["usage"]["completion_tokens"] == 4


def test_each_agent_kind_runs_as_a_workflow(text_worker: WorkerProcess) -> None:
    from saga_sgl.agents import AGENT_KINDS, AgentScale, run_agents
    from saga_sgl.frontend import SagaEndpoint

    backend = SagaEndpoint(text_worker.url, send_events=False)
    scale = AgentScale(time_scale=0.01, max_steps=3, max_new_tokens=4)
    results = run_agents(
        text_worker.url,
        3,
        seed=5,
        kinds=list(AGENT_KINDS),
        concurrency=3,
        scale=scale,
        backend=backend,
        progress=False,
    )
    assert [r.error for r in results] == ["", "", ""]
    by_kind: dict[str, Any] = {}
    for r in results:
        record = backend.recorded(r.workflow_id)
        assert record is not None and record.finished and record.agent_type == r.kind
        by_kind.setdefault(r.kind, []).append(record)
        # Context grows call after call, and later calls find their prefix cached.
        gens = [n for n in record.nodes.values() if n.call == "gen" and "." not in n.node_id]
        assert all(b.prompt_tokens > a.prompt_tokens for a, b in itertools.pairwise(gens))
        assert r.cached_tokens > 0
        # The worker's own latency and queue time of every call (what the live benchmark's per-call
        # router delay is computed from), within the client's latency of that call.
        for n in gens:
            assert n.worker_e2e_s is not None and n.worker_queue_s is not None and n.finished_at_s
            assert 0 < n.worker_e2e_s <= n.finished_at_s - n.started_at_s
            assert 0 <= n.worker_queue_s <= n.worker_e2e_s
        tools = [n.tool_after for n in record.nodes.values() if n.tool_after]
        assert tools and all(n.tool_latency_s is not None for n in record.nodes.values() if n.tool_before)
    for record in by_kind.get("tot", []):
        assert any(kind == "branch" for n in record.nodes.values() for _, kind in n.parents)
        assert any(kind == "join" for n in record.nodes.values() for _, kind in n.parents)


# --- through the saga router (issue 12's router items; issue 9's chat pass-through) ---------------

ROUTER_TTL_S = 0.5
"""The router's TTL cap in these tests: short, so the worker can be seen to count its expiry."""


def _metrics(url: str) -> dict[str, float]:
    """Samples of a Prometheus text page, by name with labels as printed."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def saga_router(text_worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our router (``python -m saga_router``, policy saga) in front of the module's worker."""
    from saga_sgl.local_workers import TINY_MODEL_DIR

    port = free_port()
    log_path = tmp_path_factory.mktemp("saga-router") / "saga-router.log"
    config = {"policy_config": {"ttl": {"ttl_max_s": ROUTER_TTL_S}}}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "saga_router", "--host", "127.0.0.1", "--port", str(port),
                "--worker-urls", text_worker.url, "--prometheus-port", "0",
                "--model-path", str(TINY_MODEL_DIR), "--scheduler-config", json.dumps(config),
                "--log-level", "info",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/readiness", timeout=5) as resp:
                    if json.load(resp).get("healthy_workers", 0) >= 1:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the saga router did not admit the worker"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_dsl_program_through_the_saga_router_sets_a_ttl_on_the_worker(
    text_worker: WorkerProcess, saga_router: str, default_backend: None
) -> None:
    """Issue 12 through the saga router: saga.tool's events become control messages that set a TTL
    on the worker's plugin (its own counters say so), and the forked program's workflow metadata
    reaches the worker, joined by the router's saga.reuse hint."""
    import sglang as sgl

    from saga_sgl import frontend as saga

    control = 'saga_worker_hint_updates_total{source="control"}'
    expiries = "saga_worker_ttl_expiries_total"
    before = _metrics(text_worker.url)
    seen: list[str] = []

    def nudge() -> None:
        # The plugin applies control messages at the worker's next scheduler step: give it one.
        body = {"text": "x", "sampling_params": {"max_new_tokens": 1}}
        status, _, _ = _post(text_worker.url + "/generate", body)
        assert status == 200

    def during_the_tool() -> None:
        sent = 'saga_router_control_messages_total{type="ToolStarted"}'
        _wait(lambda: _metrics(saga_router).get(sent, 0) >= 1, 60, "the router to send ToolStarted")
        nudge()
        _wait(lambda: _metrics(text_worker.url).get(control, 0) > before.get(control, 0), 60,
              "the worker to apply the control message")
        seen.append("applied")
        time.sleep(ROUTER_TTL_S + 0.2)  # outlive the TTL the router set...
        nudge()  # ...and let the worker notice at a step that it expired
        _wait(lambda: _metrics(text_worker.url).get(expiries, 0) > before.get(expiries, 0), 60,
              "the worker to count the TTL's expiry")
        seen.append("expired")

    @saga.function
    def program(s: Any) -> None:
        s += "Task: fix the failing test\nPlan:" + sgl.gen("plan", max_tokens=4)
        with saga.tool("run_tests"):
            during_the_tool()
        s += "\nObservation: 2 failed\n"
        branches = s.fork(2)
        branches += lambda i: f"Fix {i}:" + sgl.gen("fix", max_tokens=3)
        branches.join()
        s += "Pick: " + sgl.select("pick", choices=["first", "second"])
        s += sgl.gen("answer", max_tokens=3)

    backend = saga.SagaEndpoint(saga_router)
    with saga.workflow("routed-1", agent_type="coding", tenant_id="acme"):
        state = program.run(backend=backend)
    assert state.error() is None, state.error()
    assert seen == ["applied", "expired"]
    assert backend.events is not None and backend.events.flush(10)
    assert backend.events.supported is not False and backend.events.stats.failed == 0
    after = _metrics(text_worker.url)
    assert after.get("saga_worker_unknown_workflow_messages_total", 0) == before.get(
        "saga_worker_unknown_workflow_messages_total", 0
    )
    # The router answers an event with 202 and sends the control message after: wait for it.
    for kind in ("ToolFinished", "WorkflowFinished"):
        name = f'saga_router_control_messages_total{{type="{kind}"}}'
        _wait(lambda name=name: _metrics(saga_router).get(name, 0) >= 1, 30, f"the router to send {kind}")

    # The forked program's metadata, as the worker received it through the router.
    record = backend.recorded("routed-1")
    assert record is not None and record.finished and record.ok
    nodes = list(record.nodes.values())
    branches = [n for n in nodes if ".f0." in n.node_id]
    assert len(branches) == 2 and all(b.parents[0][1] == "branch" for b in branches)
    received = [r for r in received_requests(text_worker.log_path) if _first_rid(r).startswith("routed-1:")]
    by_rid = {r["rid"]: r for r in received if isinstance(r["rid"], str)}
    for n in nodes:
        got = by_rid[f"routed-1:{n.step}"]
        assert got["routing_key"] == "routed-1"
        assert got["aeg"]["node_id"] == n.node_id and got["aeg"]["tenant_id"] == "acme"
        assert list(zip(got["aeg"]["parents"], got["aeg"]["edge_kinds"], strict=True)) == n.parents
        assert "saga.reuse" in got["actions"], got  # the router's hint joined the program's envelope


def _chat_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 5,
        "temperature": 0,
        "stream": stream,
    }


def test_chat_completions_pass_through_the_saga_router(text_worker: WorkerProcess, saga_router: str) -> None:
    """Issue 9: /v1/chat/completions through our router to a text-serving worker, whole and streamed;
    the same answers as the worker gives directly."""
    direct_status, _, direct = _post(text_worker.url + "/v1/chat/completions", _chat_body(False))
    status, headers, body = _post(saga_router + "/v1/chat/completions", _chat_body(False))
    assert (status, direct_status) == (200, 200), body
    answer, expected = json.loads(body), json.loads(direct)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 5
    assert answer["choices"][0]["message"]["content"] == expected["choices"][0]["message"]["content"]
    assert headers.get("X-Saga-Worker") == text_worker.url

    status, headers, body = _post(saga_router + "/v1/chat/completions", _chat_body(True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [e[len("data: "):] for e in body.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) >= 3
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == expected["choices"][0]["message"]["content"]
    ok = 'saga_router_requests_total{route="/v1/chat/completions",status="200"}'
    assert _metrics(saga_router).get(ok, 0) >= 2
