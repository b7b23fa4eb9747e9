"""cached(w*, s) in the live router: the exact prefix index, or the router's bookkeeping while the
worker has published no KV events since (SGLang 0.5.23 publishes only when its scheduler is idle).
No workers: the index is fed KV events the way the subscriber applies them."""

from __future__ import annotations

import time

import msgspec
from saga_router.hosts import SchedulerHost
from saga_router.identity import Identity
from saga_router.kv_events import KvEventSubscriber
from saga_router.router_config import RouterConfig
from saga_router.scheduling import Call
from saga_router.service import RouterService, WorkflowContext

from saga_sgl.policy.views import WorkerId, WorkflowId

W = WorkerId("http://w0")
PROMPT = [5, 6, 7, 8]


def _service() -> tuple[RouterService, KvEventSubscriber]:
    service = RouterService(RouterConfig())
    index = service.prefixes.use_exact(W, block_size=1)
    sub = KvEventSubscriber(worker=str(W), endpoint="tcp://127.0.0.1:1", topic="kv", index=index)
    return service, sub


def _batch(stamp: float, *events: dict[str, object]) -> bytes:
    return msgspec.msgpack.encode([stamp, list(events), 0])


def _holds(service: RouterService, call_id: str) -> bool:
    host = service.host
    assert isinstance(host, SchedulerHost)
    host._matches.pop(call_id, None)
    host._calls[call_id] = Call(
        call_id=call_id,
        identity=Identity(workflow_id="wf", source="saga"),
        prompt_ids=[*PROMPT, 9, 10],
        prompt_tokens=6,
        arrived_s=0.0,
    )
    return host.holds_workflow_kv(call_id, WorkflowId("wf"), W)


def test_bookkeeping_counts_until_the_worker_publishes_then_the_index_decides() -> None:
    service, sub = _service()
    placed = time.time()
    service.contexts["wf"] = WorkflowContext(tokens=list(PROMPT), prompt_tokens=4, placed={str(W): placed})
    # The worker stayed busy: no KV events since the answer. The index is empty, yet it is cached.
    assert _holds(service, "wf:1")
    # Events published before the answer (an older idle moment) do not settle it either.
    sub._apply(_batch(placed - 5.0, {"type": "BlockStored", "block_hashes": [1], "token_ids": [99]}))
    assert _holds(service, "wf:1")
    # Published after the answer and showing the prompt: cached, by the index.
    stored = {"type": "BlockStored", "block_hashes": [11, 12, 13, 14], "token_ids": PROMPT}
    sub._apply(_batch(placed + 1.0, stored))
    assert service.prefixes.published_at(W) == placed + 1.0
    assert _holds(service, "wf:1")
    # Evicted, and the worker said so after the answer: not cached.
    sub._apply(_batch(placed + 2.0, {"type": "BlockRemoved", "block_hashes": [13, 14]}))
    assert not _holds(service, "wf:1")


def test_a_worker_that_never_served_the_workflow_does_not_hold_it() -> None:
    service, _ = _service()
    service.contexts["wf"] = WorkflowContext(
        tokens=list(PROMPT), prompt_tokens=4, placed={"http://elsewhere": time.time()}
    )
    assert not _holds(service, "wf:1")


def test_prefill_throughput_is_measured_per_worker_and_reaches_its_view() -> None:
    from saga_router.workers import WorkerRecord

    record = WorkerRecord(url="http://w0")
    assert record.view().prefill_tokens_per_s is None
    record.observe_prefill(8, 0.001)  # too short to be a sample
    assert record.prefill_tokens_per_s is None
    record.observe_prefill(480, 0.2)
    assert record.view().prefill_tokens_per_s == 2400.0
    record.observe_prefill(960, 0.2)  # EMA, alpha 0.5
    assert record.prefill_tokens_per_s == 3600.0


def test_prefill_throughput_is_learned_from_the_workers_load_counters() -> None:
    """SGLang 0.5.23's /v1/loads counts every pre-fill batch (tokens, busy microseconds): the rate is
    known from the first calls, before the router ran any pre-fill of its own."""
    from saga_router.workers import WorkerLoad, WorkerRecord

    def sample(tokens: int, busy_us: int) -> WorkerLoad:
        loads = {"loads": [{"num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0,
                            "max_total_num_tokens": 2048, "max_running_requests": 8,
                            "total_prefill_uncached_tokens": tokens, "total_prefill_busy_us": busy_us}]}
        return WorkerLoad.from_loads(loads, 0.0)

    record = WorkerRecord(url="http://w0")
    assert not record.observe_load(sample(5_000, 9_000_000))  # the baseline (warm-up included)
    assert not record.observe_load(sample(5_010, 9_010_000))  # 10 tokens: too short, accumulates
    assert record.observe_load(sample(5_300, 9_100_000))  # 300 tokens in 0.1 s since the baseline
    assert record.prefill_tokens_per_s == 3_000.0
    assert record.load is not None and record.load.prefill_tokens_total == 5_300
    # A restarted worker's counters start again: a new baseline, not a negative sample.
    assert not record.observe_load(sample(100, 50_000))
    assert record.observe_load(sample(400, 150_000))  # 300 tokens in 0.1 s
    assert record.prefill_tokens_per_s == 3_000.0


def test_the_saga_policy_requires_a_measured_rate_unless_configured_otherwise() -> None:
    from saga_router.hosts import scheduler_settings

    assert scheduler_settings("saga", {}).policy_config["stealing"]["require_measured_rate"] is True
    assert scheduler_settings("saga", {}).max_preemptions_per_call == 1
    assert scheduler_settings("saga", {"max_preemptions_per_call": 2}).max_preemptions_per_call == 2
    mine = {"policy_config": {"stealing": {"require_measured_rate": False, "load_floor": 0.01}}}
    stealing = scheduler_settings("saga", mine).policy_config["stealing"]
    assert stealing["require_measured_rate"] is False and stealing["load_floor"] == 0.01
