"""Live A/B on real SGLang CPU workers: our plugin (``--radix-eviction-policy saga``) against SGLang's
LRU, same request script, KV squeezed to 160 tokens.

Script (identical on both workers): 4 hinted workflow contexts of 30 tokens, then (saga worker
only: the router says workflow 1 finished, over the ZMQ control channel), then 3 unhinted 40-token
prompts that overflow the pool, then every context re-sent. ``meta_info.cached_tokens`` of the
re-sends shows what survived. Two worker starts for the whole module (~20 s and ~1.9 GB each).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import saga_kernels
from control_push import push_control

from saga_sgl.local_workers import WorkerProcess, WorkerSpec, free_port, running_workers
from saga_sgl.protocol import ReuseHint, WorkflowFinished, encode_control, encode_kv_hints, request_id
from saga_sgl.worker.settings import CONTROL_ADDRESS_ENV

pytestmark = [pytest.mark.live, pytest.mark.sglang]

KV_TOKENS = 160
CONTEXT_TOKENS = 30
FILLER_TOKENS = 40
NUM_CONTEXTS = 4
FINISHED = "wf1"
COMMON_ARGS = ("--chunked-prefill-size", "64")


def _contexts() -> dict[str, list[int]]:
    return {f"wf{i}": list(range(10 + 30 * i, 10 + 30 * i + CONTEXT_TOKENS)) for i in range(NUM_CONTEXTS)}


def _fillers() -> list[list[int]]:
    return [list(range(200 + 45 * i, 200 + 45 * i + FILLER_TOKENS)) for i in range(3)]


def _generate(url: str, input_ids: list[int], rid: str, hint: ReuseHint | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "input_ids": input_ids,
        "sampling_params": {"max_new_tokens": 1, "temperature": 0},
        "rid": rid,
    }
    if hint is not None:
        body["kv_hints"] = encode_kv_hints(hint, message_id=rid)
        body["routing_key"] = hint.workflow_id
    request = urllib.request.Request(
        url + "/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _run_script(worker: WorkerProcess, control_address: str | None, tag: str) -> dict[str, int]:
    """The A/B script; returns cached tokens of each context's re-send."""
    url = worker.url
    for name, tokens in _contexts().items():
        hint = ReuseHint(workflow_id=name, step=0, reuse_prob=0.9, next_use_in_s=5.0)
        _generate(url, tokens, f"{tag}-{request_id(name, 0)}", hint)
    if control_address is not None:
        push_control(control_address, encode_control(WorkflowFinished(workflow_id=FINISHED)))
        time.sleep(0.5)  # the scheduler drains the queue at its next hook point
    for i, tokens in enumerate(_fillers()):
        _generate(url, tokens, f"{tag}-filler-{i}", None)
    cached = {}
    for name, tokens in _contexts().items():
        hint = ReuseHint(workflow_id=name, step=1, reuse_prob=0.9, next_use_in_s=5.0)
        reply = _generate(url, tokens, f"{tag}-{request_id(name, 1)}", hint)
        cached[name] = int(reply["meta_info"]["cached_tokens"])
    return cached


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(saga_worker_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(2))
    return values


@pytest.fixture(scope="module")
def ab_workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WorkerProcess, WorkerProcess, str]]:
    control_address = f"tcp://127.0.0.1:{free_port()}"
    saga = WorkerSpec(
        port=free_port(),
        eviction_policy="saga",
        max_total_tokens=KV_TOKENS,
        extra_args=COMMON_ARGS,
        env={CONTROL_ADDRESS_ENV: control_address},
    )
    lru = WorkerSpec(
        port=free_port(), eviction_policy="lru", max_total_tokens=KV_TOKENS, extra_args=COMMON_ARGS
    )
    with running_workers([saga, lru], tmp_path_factory.mktemp("live-eviction"), ready_timeout_s=600) as (
        saga_worker,
        lru_worker,
    ):
        yield saga_worker, lru_worker, control_address


def test_hinted_contexts_survive_where_lru_loses_them(
    ab_workers: tuple[WorkerProcess, WorkerProcess, str],
) -> None:
    saga_worker, lru_worker, control_address = ab_workers
    saga = _run_script(saga_worker, control_address, "saga")
    lru = _run_script(lru_worker, None, "lru")
    print(f"cached tokens on re-send: saga={saga} lru={lru}")  # the report quotes this line

    # The last prompt token is always recomputed, so a full hit is CONTEXT_TOKENS - 1.
    full_hit = CONTEXT_TOKENS - 1
    assert saga == {"wf0": full_hit, FINISHED: 0, "wf2": full_hit, "wf3": full_hit}
    assert lru == {"wf0": 0, FINISHED: 0, "wf2": 0, "wf3": 0}

    metrics = _metrics(saga_worker.url)
    assert metrics.get('saga_worker_evictions_total{tier="dead"}', 0) >= 1
    assert metrics.get('saga_worker_hint_updates_total{source="control"}', 0) == 1
    assert metrics.get('saga_worker_hint_updates_total{source="kv_hints"}', 0) == 2 * NUM_CONTEXTS
    assert sum(v for k, v in metrics.items() if k.startswith("saga_worker_hook_failures_total")) == 0
    # The fast path ran here: victims came from the leaf index over the native saga_kernels KeyHeap
    # (its pure-Python twin where the native build is absent).
    backend = "python" if saga_kernels.NativeKeyHeap is None else "native"
    assert metrics.get("saga_worker_victim_index_native") == (1.0 if backend == "native" else 0.0)
    assert metrics.get(f'saga_worker_index_victims_total{{backend="{backend}"}}', 0) >= 1


def test_the_saga_worker_runs_the_rust_tree_core_with_saga_victims(
    ab_workers: tuple[WorkerProcess, WorkerProcess, str],
) -> None:
    saga_worker, lru_worker, _ = ab_workers
    saga_log = Path(saga_worker.log_path).read_text(errors="replace")
    lru_log = Path(lru_worker.log_path).read_text(errors="replace")
    # The native fast path: SGLang's Rust tree core (match, insert), victims from our leaf index.
    assert "Tree Core: SagaRustTreeCore" in saga_log
    assert _metrics(saga_worker.url).get("saga_worker_tree_core_native") == 1.0
    assert "saga control channel listening on tcp://127.0.0.1:" in saga_log
    backend = "python" if saga_kernels.NativeKeyHeap is None else "native"
    assert f"persistent leaf index ordered by the {backend} KeyHeap" in saga_log
    assert "Tree Core: RustUnifiedTreeCore" in lru_log
    assert not _metrics(lru_worker.url)  # the plugin is loaded there too, but idle


def _loads(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/loads?include=core", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_the_saga_worker_publishes_its_residence_time_on_v1_loads(
    ab_workers: tuple[WorkerProcess, WorkerProcess, str],
) -> None:
    """After evictions, a running server's ``/v1/loads`` carries the plugin's residence time (the
    scheduler process adds it, the HTTP process decodes it); a stock-policy worker's answer is
    SGLang's own, and the router reads it as unknown."""
    from saga_router.workers import WorkerLoad

    from saga_sgl.protocol import LOADS_RESIDENCE_FIELD

    saga_worker, lru_worker, _ = ab_workers
    for worker in (saga_worker, lru_worker):  # overflow the 160-token pool (evictions on both)
        for i, tokens in enumerate([*_fillers(), *_contexts().values()]):
            _generate(worker.url, tokens, f"residence-{worker.spec.port}-{i}", None)
    saga = _loads(saga_worker.url)
    residence = saga["loads"][0].get(LOADS_RESIDENCE_FIELD)
    assert isinstance(residence, float) and 0.0 < residence < 86_400.0, saga
    assert WorkerLoad.from_loads(saga, now_s=0.0).residence_s == residence
    lru = _loads(lru_worker.url)
    assert LOADS_RESIDENCE_FIELD not in lru["loads"][0]
    assert WorkerLoad.from_loads(lru, now_s=0.0).residence_s == float("inf")
    assert _metrics(saga_worker.url).get('saga_worker_hook_failures_total{hook="get_loads"}', 0) == 0
