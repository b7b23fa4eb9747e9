"""Multi-node on Ray, on one machine: Ray's multi-node test cluster (``ray.cluster_utils.Cluster``, a head
and a second raylet, 1 CPU each), two real SGLang CPU workers as Ray actors (one per node: each
placement group reserves 1 CPU), the saga router as a local process on the "head".

One test, in order: a workflow end to end through the router; a node lost while agents run (no
request that had not started streaming is lost: every agent finishes without error); the lost replica
noticed and removed from the router; restarted on a node that joins afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from saga_sgl.agents.common import AgentScale  # noqa: E402
from saga_sgl.agents.workload import run_agents  # noqa: E402
from saga_sgl.cluster.curve import ControlKeys  # noqa: E402
from saga_sgl.cluster.processes import RouterSpec, free_port, http_json, start_router  # noqa: E402
from saga_sgl.cluster.ray_pool import RayWorkerPool  # noqa: E402

pytestmark = [pytest.mark.live, pytest.mark.sglang]

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@pytest.fixture
def ray_cluster() -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _workers(router_url: str) -> list[dict[str, Any]]:
    return list(http_json("GET", router_url + "/workers")["workers"])


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s: {what}")


def _control_applied(worker_urls: list[str]) -> float:
    """Control messages the workers' plugins took off their (CurveZMQ) channels, from their counters."""
    total = 0.0
    counters = (
        'saga_worker_hint_updates_total{source="control"}',
        "saga_worker_unknown_workflow_messages_total",
    )
    for url in worker_urls:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url + "/metrics", timeout=5) as resp,
        ):
            for line in resp.read().decode().splitlines():
                if line.startswith(counters):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def _healthy(router_url: str) -> int:
    try:
        return int(http_json("GET", router_url + "/readiness")["healthy_workers"])
    except urllib.error.HTTPError as exc:  # 503 until a worker takes traffic
        return int(json.loads(exc.read() or b"{}").get("healthy_workers", 0))


def test_two_node_ray_cluster_survives_losing_a_node(ray_cluster: Cluster, tmp_path: Path) -> None:
    node2 = ray_cluster.add_node(**NODE)
    ray_cluster.wait_for_nodes()
    # The control channels run CurveZMQ, as the launcher sets them up for workers on other nodes.
    keys = ControlKeys.generate()
    router = start_router(RouterSpec(port=free_port(), log_level="info", env=keys.router_env()), tmp_path)
    pool = RayWorkerPool(
        router_url=router.url,
        num_workers=2,
        worker_kwargs={"max_total_tokens": 2048, "control_keys": keys},
        log_dir=str(tmp_path),
        cpus_per_worker=1.0,
        ready_timeout_s=540,
    )
    pids: list[int] = []
    try:
        router.wait_ready(0, timeout_s=60)
        pool.start()
        pids += [r.pid for r in pool.replicas]
        nodes = {r.node_id for r in pool.replicas}
        assert len(nodes) == 2, "one replica per node (1 CPU each)"
        _wait(lambda: _healthy(router.url) == 2, 120, "router takes traffic on both workers")

        # A workflow end to end through the router.
        scale = AgentScale(time_scale=0.05, max_steps=3)
        first = run_agents(
            router.url, 2, seed=1, kinds=["coding"], concurrency=2, scale=scale, progress=False
        )
        assert [r.error for r in first] == ["", ""] and all(r.calls >= 1 for r in first)
        # The router's control messages (tool started/finished) reached the plugins over CurveZMQ.
        assert "control channels use CurveZMQ" in router.log_text()
        _wait(lambda: _control_applied([r.url for r in pool.replicas]) >= 1, 60, "control messages applied")

        # Lose node 2 while agents are running (tool gaps keep them in flight across the loss).
        lost_replica = next(r for r in pool.replicas if r.node_id == node2.node_id)
        results: list[Any] = []
        runner = threading.Thread(
            target=lambda: results.extend(
                run_agents(
                    router.url,
                    4,
                    seed=2,
                    concurrency=4,
                    scale=AgentScale(time_scale=0.3, max_steps=4),
                    progress=False,
                )
            )
        )
        runner.start()
        time.sleep(3.0)
        ray_cluster.remove_node(node2, allow_graceful=False)
        runner.join(timeout=420)
        assert not runner.is_alive()
        assert len(results) == 4
        assert [r.error for r in results] == [""] * 4, [r.error for r in results]

        # Noticed (once; Ray may take a few seconds to report the node dead, so supervise until it
        # does): the replica is removed from the router; it cannot restart yet (no free CPU).
        lost = pool.wait_lost(lost_replica.index, timeout_s=120)
        assert lost == [lost_replica.index]
        assert not lost_replica.worker_id and pool.lost == 1
        assert [w["url"] for w in _workers(router.url)] == [r.url for r in pool.replicas if r.worker_id]
        assert len(_workers(router.url)) == 1

        # A node joins: the replica restarts there and registers again.
        ray_cluster.add_node(**NODE)
        pool.supervise_once(wait_s=60)
        assert lost_replica.worker_id and lost_replica.restarts == 1
        pids.append(lost_replica.pid)
        _wait(lambda: _healthy(router.url) == 2, 120, "router takes traffic on the restarted worker")
        again = run_agents(
            router.url, 2, seed=3, kinds=["browser"], concurrency=2, scale=scale, progress=False
        )
        assert [r.error for r in again] == ["", ""]
    finally:
        router.stop()
        pool.shutdown()
        for pid in pids:  # belt and braces: no SGLang process group may outlive the test
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
