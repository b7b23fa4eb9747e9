"""The router's /metrics after real traffic passes ``promtool check metrics`` (Prometheus' own linter)
and prometheus-client's parser. The worker is the NAMED FAKE backend (``saga_router.fake_backend``):
this checks the router's exposition, not a model. promtool comes from Debian's ``prometheus``
package; where it is not installed that part is skipped, saying so."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from saga_sgl.local_workers import free_port
from saga_sgl.protocol import (
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    encode_client_event,
)

from .conftest import RouterProcess, http, saga_router_command, start_router


@pytest.fixture
def router_on_fake(tmp_path: Path) -> Iterator[RouterProcess]:
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "saga_router.fake_backend", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _up(port):
            assert time.monotonic() < deadline and fake.poll() is None, "fake backend did not start"
            time.sleep(0.2)
        router_port = free_port()
        command = saga_router_command(router_port, [f"http://127.0.0.1:{port}"])
        router = start_router(command, router_port, tmp_path, "saga-router", ready_workers=1)
        try:
            yield router
        finally:
            router.stop()
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def _up(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health", timeout=2).status == 200
    except OSError:
        return False


def test_metrics_pass_promtool_after_traffic(router_on_fake: RouterProcess, tmp_path: Path) -> None:
    router = router_on_fake
    for step in range(3):
        saga = {"workflow_id": "m-1", "step": step, "tenant_id": "t1"}
        body = {"input_ids": [1, 2, 3, step + 4], "saga": saga}
        assert http("POST", router.url + "/generate", body).status == 200
        for event in (ClientToolStarted(workflow_id="m-1", tool="search"),
                      ClientToolFinished(workflow_id="m-1", tool="search", latency_s=0.1)):
            assert http("POST", router.url + "/saga/events", raw=encode_client_event(event)).status == 202
    assert http("POST", router.url + "/saga/events",
                raw=encode_client_event(ClientWorkflowFinished(workflow_id="m-1"))).status == 202
    assert http("POST", router.url + "/generate", raw=b"{").status == 400
    text = http("GET", router.url + "/metrics").body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = (
        "saga_router_requests", "saga_router_task_completion_seconds", "saga_router_steals",
        "saga_router_cached_token_ratio", "saga_router_placements", "saga_router_workflows_finished",
    )
    for name in expected:
        assert name in families, sorted(families)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`); prometheus-client's parser passed")
    page = tmp_path / "metrics.txt"
    page.write_text(text)
    with open(page, "rb") as stdin:
        done = subprocess.run([promtool, "check", "metrics"], stdin=stdin, capture_output=True, timeout=60)
    # promtool prints each lint problem (naming, HELP, counters without _total, ...) and exits 1.
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert not done.stdout.strip() and not done.stderr.strip(), (done.stdout, done.stderr)
