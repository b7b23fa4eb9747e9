"""Live fixtures of the frontend tests: one text-serving SGLang CPU worker per test module that
logs what it receives (``worker_log.received_requests`` reads it)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from saga_sgl.local_workers import WorkerProcess, WorkerSpec, free_port, running_workers

REQUEST_LOG_ARGS = ("--log-requests", "--log-requests-level", "1", "--log-requests-format", "json")
"""The worker logs every received request (rid, routing_key, kv_hints, x-smg-routing-key header)."""


@pytest.fixture(scope="module")
def text_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real SGLang CPU worker serving text with the committed tokenizer; shared by the module."""
    # The saga plugin with its control channel and KV events, so that the saga router in front of
    # it (test_dsl_live.py) can reach the plugin; the DSL tests against the bare worker ignore both.
    kv_endpoint = f"tcp://127.0.0.1:{free_port()}"
    kv_events = {"publisher": "zmq", "endpoint": kv_endpoint, "topic": "kv", "bind": True}
    spec = WorkerSpec(
        port=free_port(),
        serve_text=True,
        max_total_tokens=8192,
        eviction_policy="saga",
        extra_args=(
            *REQUEST_LOG_ARGS,
            "--kv-events-config", json.dumps(kv_events),
            "--radix-eviction-policy-config", json.dumps({"control_address": f"tcp://127.0.0.1:{free_port()}"}),
        ),
    )
    # Generous readiness wait: on the shared 2-core machine a start can take minutes under load.
    with running_workers([spec], tmp_path_factory.mktemp("frontend-worker"), ready_timeout_s=600) as (
        worker,
    ):
        yield worker


@pytest.fixture
def default_backend() -> Iterator[None]:
    """Restore SGLang's process-wide default backend after a test that sets it."""
    from sglang.lang.global_config import global_config

    before = global_config.default_backend
    yield
    global_config.default_backend = before
