"""Live-router harness: real SGLang CPU workers (saga plugin, KV events, control channel) on
loopback, and router processes (ours, or sglang-router 0.3.2) in front of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from saga_sgl.local_workers import TINY_MODEL_DIR, WorkerProcess, WorkerSpec, free_port, running_workers


async def start_app(app: web.Application, **runner_kwargs: Any) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on loopback (the server binds port 0 itself: no free-port race); the caller
    cleans the runner up. Returns (runner, base URL)."""
    runner = web.AppRunner(app, access_log=None, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


KV_TOKENS = 2048
"""Each worker's KV pool: small, so that a few long requests load it measurably."""


def worker_spec(port: int | None = None) -> WorkerSpec:
    """A saga worker that publishes KV events (with replay) and has the plugin's control channel."""
    kv_port = free_port()
    kv_events = {
        "publisher": "zmq",
        "endpoint": f"tcp://127.0.0.1:{kv_port}",
        "replay_endpoint": f"tcp://127.0.0.1:{free_port()}",
        "topic": "kv",
        "bind": True,
    }
    control = {"control_address": f"tcp://127.0.0.1:{free_port()}"}
    return WorkerSpec(
        port=port or free_port(),
        eviction_policy="saga",
        max_total_tokens=KV_TOKENS,
        extra_args=(
            "--kv-events-config", json.dumps(kv_events),
            "--radix-eviction-policy-config", json.dumps(control),
        ),
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def worker(self) -> str | None:
        return self.headers.get("X-Saga-Worker")


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 120.0,
) -> Reply:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


@dataclass
class RouterProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def metric(self, name: str) -> float:
        """Sum of all samples of ``name`` (any labels) in the router's /metrics."""
        text = http("GET", self.url + "/metrics").body.decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_router(
    command: Sequence[str], port: int, log_dir: Path, name: str, *, ready_workers: int, timeout_s: float = 300
) -> RouterProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            list(command), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    router = RouterProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{router.log()[-3000:]}")
        with contextlib.suppress(OSError):
            reply = http("GET", router.url + "/readiness", timeout=2)
            if reply.status == 200 and reply.json().get("healthy_workers", 0) >= ready_workers:
                return router
        time.sleep(0.3)
    router.stop()
    raise RuntimeError(f"{name} not ready after {timeout_s} s:\n{router.log()[-3000:]}")


def saga_router_command(port: int, worker_urls: Sequence[str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "saga_router", "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *worker_urls, "--prometheus-port", "0", "--model-path", str(TINY_MODEL_DIR),
        "--health-check-interval-secs", "1", "--health-failure-threshold", "2", "--log-level", "info", *extra,
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    """Two real SGLang CPU workers shared by a test module (about 2 GB and 20-60 s each)."""
    specs = [worker_spec(), worker_spec()]
    # Generous: on the shared 2-core machine a worker has taken over 3 minutes to start.
    with running_workers(specs, tmp_path_factory.mktemp("router-workers"), ready_timeout_s=480) as workers:
        yield workers


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Any]:
    """``router_factory(worker_urls, *flags, ready_workers=n)`` -> a running saga router process."""
    started: list[RouterProcess] = []

    def start(worker_urls: Sequence[str], *flags: str, ready_workers: int | None = None) -> RouterProcess:
        port = free_port()
        router = start_router(
            saga_router_command(port, worker_urls, *flags), port, tmp_path / "routers", "saga-router",
            ready_workers=len(worker_urls) if ready_workers is None else ready_workers,
        )
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()
