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
