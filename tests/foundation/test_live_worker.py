"""A real SGLang 0.5.23 server on CPU, with our plugin active through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from saga_sgl.local_workers import TINY_VOCAB_SIZE, WorkerProcess, WorkerSpec, free_port

pytestmark = pytest.mark.live


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


def test_generate_on_cpu_worker_with_saga_policy(sglang_workers: Callable[..., list[WorkerProcess]]) -> None:
    # --radix-eviction-policy saga is only a valid choice because our plugin registered it, and the
    # cache is built in the spawned scheduler process: serving at all proves the plugin ran there.
    (worker,) = sglang_workers(1, eviction_policy="saga")
    prompt = [1, 17, 42, 99, 123, 7, 300, TINY_VOCAB_SIZE - 1]
    body = {"input_ids": prompt, "sampling_params": {"max_new_tokens": 4, "temperature": 0}, "rid": "wf:0"}
    first = _post(worker.url + "/generate", body)
    meta = first["meta_info"]
    assert meta["id"] == "wf:0"
    assert meta["prompt_tokens"] == len(prompt)
    assert meta["completion_tokens"] == 4
    assert meta["cached_tokens"] == 0
    assert len(first["output_ids"]) == 4

    again = _post(worker.url + "/generate", dict(body, rid="wf:1"))["meta_info"]
    # The radix cache serves the prompt; SGLang always recomputes the last prompt token.
    assert again["cached_tokens"] == len(prompt) - 1

    info = _get_json(worker.url + "/server_info")
    assert info["radix_eviction_policy"] == "saga"
    log = worker.log_path.read_text(errors="replace")
    # Saga policies run on SGLang's Rust tree core with the plugin choosing victims (saga-rust).
    assert "Tree Core: SagaRustTreeCore" in log, "the plugin must select its saga-rust tree core"

    children = psutil.Process(worker.process.pid).children(recursive=True)
    assert len(children) >= 2  # scheduler and detokenizer
    worker.stop()
    assert worker.process.poll() is not None
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_saga_policy_is_rejected_without_our_plugin(tmp_path: Path) -> None:
    # Same command with plugin loading restricted away: SGLang itself does not know "saga".
    spec = WorkerSpec(port=free_port(), eviction_policy="saga")
    from saga_sgl import _cpu_shims

    env = _cpu_shims.worker_env()
    env["SGLANG_PLUGINS"] = "not-saga"
    proc = subprocess.run(
        spec.command(), env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "invalid choice: 'saga'" in proc.stderr


def test_no_sglang_in_plain_import() -> None:
    # Importing our package must not import sglang, nor put the CPU stubs on the path.
    code = (
        "import saga_sgl, saga_sgl.protocol, saga_sgl.local_workers, sys; "
        "print(sorted(m for m in ('sglang', 'torch', 'torchvision', 'vllm') if m in sys.modules), "
        "any('_cpu_shims' in p for p in sys.path))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[] False"
