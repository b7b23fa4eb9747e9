"""Local supervision of a saga cluster: N SGLang workers with the plugin, and ``python -m saga_router``.

Every child runs in its own session (process group) and gets ``PR_SET_PDEATHSIG`` (Linux), so that
stopping the cluster, a crash of the launcher or Ctrl-C leaves no process behind: ``LocalCluster``
stops everything it started on exit, whatever the reason, and ``check()`` reports a child that died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_sgl.cluster.curve import ControlKeys
from saga_sgl.local_workers import (
    TINY_MODEL_DIR,
    WorkerProcess,
    WorkerSpec,
    WorkerStartError,
    free_port,
    spawn_in_group,
    start_worker,
    stop_group,
)

__all__ = [
    "ClusterDied",
    "LocalCluster",
    "RouterProcess",
    "RouterSpec",
    "free_port",
    "http_json",
    "local_cluster",
    "plugin_worker_spec",
    "start_router",
]

log = logging.getLogger(__name__)


def plugin_worker_spec(
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    model_path: str = str(TINY_MODEL_DIR),
    device: str = "cpu",
    max_total_tokens: int | None = 4096,
    eviction_policy: str = "saga",
    tp: int = 1,
    gpu_ids: Sequence[int] = (),
    kv_events: bool = True,
    control_host: str | None = "127.0.0.1",
    extra_args: Sequence[str] = (),
    control_keys: ControlKeys | None = None,
    policy_config: Mapping[str, Any] | None = None,
) -> WorkerSpec:
    """A text-serving worker whose plugin listens on a control channel and that publishes KV events
    (with a replay endpoint), which is what the saga router subscribes to. ``eviction_policy`` other
    than saga/reuse_time/wa_lru (e.g. ``lru``) gives a stock SGLang worker (no control channel).

    The control channel binds ``control_host`` (loopback by default: the plugin refuses a reachable
    control socket without CurveZMQ keys, and the router has no CurveZMQ client yet); None starts the
    plugin without one (its hints then come only with the requests). ``control_keys`` (CurveZMQ)
    lets the plugin bind a reachable ``control_host``: the worker gets the cluster's secret in its
    environment and accepts only the router's public key. ``policy_config``: settings of the plugin's
    eviction policy (its registry's keys, e.g. ``decay_s``), sent in the same JSON."""
    args: list[str] = []
    if kv_events:
        kv = {
            "publisher": "zmq",
            "endpoint": f"tcp://{host}:{free_port(host)}",
            "replay_endpoint": f"tcp://{host}:{free_port(host)}",
            "topic": "kv",
            "bind": True,
        }
        args += ["--kv-events-config", json.dumps(kv)]
    plugin = eviction_policy in ("saga", "reuse_time", "wa_lru")
    control: dict[str, Any] = dict(policy_config or {}) if plugin else {}
    if plugin and control_host is not None:
        control["control_address"] = f"tcp://{control_host}:{free_port(control_host)}"
        if control_keys is not None:
            control["control_client_keys"] = [control_keys.router_public]
    if control:
        args += ["--radix-eviction-policy-config", json.dumps(control)]
    if tp > 1:
        args += ["--tp-size", str(tp)]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpu_ids)} if gpu_ids else {}
    if control_keys is not None:
        env.update(control_keys.worker_env())
    return WorkerSpec(
        port=port or free_port(host),
        host=host,
        model_path=model_path,
        device=device,
        max_total_tokens=max_total_tokens,
        eviction_policy=eviction_policy,
        serve_text=True,
        extra_args=tuple(args) + tuple(extra_args),
        env=env,
    )


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSpec:
    """How to start ``python -m saga_router`` (or sglang-router 0.3.2 with ``sglang_router=True``)."""

    port: int
    host: str = "127.0.0.1"
    policy: str = "saga"
    worker_urls: tuple[str, ...] = ()
    model_path: str = str(TINY_MODEL_DIR)
    log_level: str = "debug"
    """debug: the router logs every dispatch (call -> worker, reason), which the summary reads."""
    sglang_router: bool = False
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """Added to the router's environment (e.g. its CurveZMQ keys, ``ControlKeys.router_env``)."""

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        if self.sglang_router:
            return [
                sys.executable,
                "-m",
                "sglang_router.launch_router",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--policy",
                self.policy,
                "--worker-urls",
                *self.worker_urls,
                "--prometheus-port",
                str(free_port()),
                "--log-level",
                "warn",
                *self.extra_args,
            ]
        cmd = [
            sys.executable,
            "-m",
            "saga_router",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--policy",
            self.policy,
            "--prometheus-port",
            "0",
            "--model-path",
            self.model_path,
            "--log-level",
            self.log_level,
            # Health checks at the router's (and sglang-router's) default interval, 60 s: SGLang's
            # /health runs a generation, so checking every second cost each worker a forward pass
            # per second (47-69 per live-benchmark row). A dead worker is still taken out at once by
            # the first call that cannot reach it (the call is retried on another worker).
        ]
        if self.worker_urls:
            cmd += ["--worker-urls", *self.worker_urls]
        return cmd + list(self.extra_args)


@dataclass(slots=True)
class RouterProcess:
    spec: RouterSpec
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return self.spec.url

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready_workers(self) -> int:
        """Healthy workers behind the router (-1 while it does not answer)."""
        try:
            if self.spec.sglang_router:
                # sglang-router answers /health before its workers are admitted: ask for the
                # workers it routes to, and for a proxied call that needs one.
                listed = http_json("GET", self.url + "/workers", timeout_s=2)
                http_json("GET", self.url + "/get_server_info", timeout_s=5)
                workers = listed.get("workers", []) if isinstance(listed, dict) else []
                return len(workers)
            info = http_json("GET", self.url + "/readiness", timeout_s=2)
            return int(info.get("healthy_workers", 0))
        except (OSError, ValueError, urllib.error.URLError):
            return -1

    def _alive(self) -> bool:
        """The router answers (``/health``: up, with or without workers)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, num_workers: int, timeout_s: float) -> None:
        """Until the router answers and takes traffic on at least ``num_workers`` workers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerStartError(
                    f"router exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                )
            if num_workers == 0 and self._alive():
                return
            if num_workers > 0 and self.ready_workers() >= num_workers:
                return
            time.sleep(0.3)
        raise WorkerStartError(
            f"router not ready with {num_workers} worker(s) after {timeout_s:.0f} s:\n"
            + self.log_text()[-3000:]
        )

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value of the router's Prometheus text (empty if unreachable)."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (OSError, urllib.error.URLError):
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_group(self.process, timeout_s, name=f"router {self.url}")


def start_router(spec: RouterSpec, log_dir: Path) -> RouterProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    name = "sglang-router" if spec.sglang_router else "saga-router"
    log_path = log_dir / f"{name}-{spec.port}.log"
    log.info("starting router: %s", " ".join(spec.command()))
    process = spawn_in_group(spec.command(), log_path, {**os.environ, **spec.env} if spec.env else None)
    return RouterProcess(spec=spec, process=process, log_path=log_path)


class ClusterDied(RuntimeError):
    """A worker or the router exited while the cluster was running."""


@dataclass(slots=True)
class LocalCluster:
    """Workers and router of one running cluster (see ``local_cluster``)."""

    workers: list[WorkerProcess] = field(default_factory=list)
    router: RouterProcess | None = None
    log_dir: Path = Path(".")

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    def worker_urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def check(self) -> None:
        """Raise ``ClusterDied`` naming the first child that is no longer running."""
        for w in self.workers:
            if w.process.poll() is not None:
                raise ClusterDied(
                    f"worker {w.url} exited with {w.process.returncode}; log {w.log_path}:\n" + w.log_tail(20)
                )
        if self.router is not None and self.router.process.poll() is not None:
            raise ClusterDied(
                f"router exited with {self.router.process.returncode}; log "
                f"{self.router.log_path}:\n{self.router.log_text()[-2000:]}"
            )

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for w in self.workers:
            w.stop()


@contextlib.contextmanager
def local_cluster(
    worker_specs: Sequence[WorkerSpec],
    router_spec: RouterSpec,
    log_dir: Path,
    *,
    ready_timeout_s: float = 300.0,
) -> Iterator[LocalCluster]:
    """Start the workers (in parallel), then the router with their URLs; wait until the router sees
    every worker healthy; yield; always stop the router, then the workers (also on exceptions and
    KeyboardInterrupt)."""
    cluster = LocalCluster(log_dir=log_dir)
    try:
        for spec in worker_specs:
            cluster.workers.append(start_worker(spec, log_dir))
        for w in cluster.workers:
            w.wait_ready(ready_timeout_s)
        urls = tuple(w.url for w in cluster.workers)
        cluster.router = start_router(dataclasses.replace(router_spec, worker_urls=urls), log_dir)
        cluster.router.wait_ready(len(urls), timeout_s=90.0)
        yield cluster
    finally:
        cluster.stop()
