"""Multi-node: SGLang workers as Ray actors, registered with the saga router through its ``/workers`` API.

Each replica gets its own placement group (one bundle: ``cpus_per_worker`` CPUs and ``tp`` GPUs,
STRICT_PACK: a TP group never spans nodes). Its actor starts ``sglang.launch_server`` as a child process
on that node, bound to the node's IP, with KV events (and the plugin's control channel on loopback
when it shares the router's node; see ``SGLangWorkerActor``), waits until it
is healthy and returns its URL; the pool then registers the URL with the router (which runs on the
head, beside this process). The SGLang process gets PR_SET_PDEATHSIG, so it dies with its actor.

``supervise_once`` notices a lost replica (actor dead, node gone, SGLang process exited, or no answer
within the probe timeout), removes it from the router (``DELETE /workers/{id}``: the router's
scheduler re-places its workflows; calls that had not started streaming are retried on another
worker) and starts a replacement with a new placement group as soon as the cluster has the resources.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from saga_sgl.cluster.processes import (
    ClusterDied,
    RouterProcess,
    RouterSpec,
    http_json,
    plugin_worker_spec,
    start_router,
)
from saga_sgl.local_workers import WorkerProcess, start_worker

log = logging.getLogger(__name__)


class SGLangWorkerActor:
    """One SGLang worker on the node Ray placed this actor on (wrapped by ``ray.remote`` below)."""

    def __init__(self, worker_kwargs: dict[str, Any], log_dir: str, router_ip: str) -> None:
        host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        # With the cluster's CurveZMQ keys the control socket binds the node's address (the router
        # connects with its key pair). Without them it stays on loopback (the plugin refuses an
        # unauthenticated reachable one), so only a worker on the router's node gets one.
        if worker_kwargs.get("control_keys") is not None:
            control_host: str | None = host
        else:
            control_host = "127.0.0.1" if host == router_ip else None
        if control_host is None:
            logging.getLogger(__name__).warning(
                "worker on %s: router on %s cannot reach a loopback control channel; plugin runs "
                "without one (hints come with the requests)",
                host,
                router_ip,
            )
        spec = plugin_worker_spec(host=host, control_host=control_host, **worker_kwargs)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.worker: WorkerProcess = start_worker(spec, Path(log_dir))

    def wait_ready(self, timeout_s: float) -> str:
        self.worker.wait_ready(timeout_s)
        return self.worker.url

    def alive(self) -> bool:
        return self.worker.process.poll() is None

    def where(self) -> tuple[str, int]:
        """(node id, pid of the SGLang process group)."""
        return self.node_id, self.worker.process.pid

    def stop(self) -> None:
        self.worker.stop()


RemoteWorker = ray.remote(max_restarts=0)(SGLangWorkerActor)


@dataclass(slots=True)
class Replica:
    index: int
    pg: PlacementGroup | None = None
    actor: Any = None
    url: str = ""
    worker_id: str = ""
    node_id: str = ""
    pid: int = 0
    restarts: int = 0


@dataclass(slots=True)
class RayWorkerPool:
    """``num_workers`` SGLang replicas on a Ray cluster, kept registered with the router at ``router_url``."""

    router_url: str
    num_workers: int
    worker_kwargs: dict[str, Any]
    log_dir: str
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0
    ready_timeout_s: float = 600.0
    probe_timeout_s: float = 10.0
    router_ip: str = field(default_factory=lambda: ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    """IP of the router's node (the head; the driver's node by default)."""
    replicas: list[Replica] = field(default_factory=list)
    lost: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Serialises ``supervise_once`` (a supervisor thread and a caller): each loss is handled once."""

    def start(self) -> None:
        """Start every replica (in parallel) and register each with the router once it is healthy."""
        self.replicas = [Replica(i) for i in range(self.num_workers)]
        for r in self.replicas:
            self._place(r)
        for r in self.replicas:
            if not self._register(r, wait_s=self.ready_timeout_s):
                raise RuntimeError(
                    f"replica {r.index}: no resources for {self._bundle()} after "
                    f"{self.ready_timeout_s:.0f} s (ray status shows the cluster's resources)"
                )

    def _bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            bundle["GPU"] = float(self.gpus_per_worker)
        return bundle

    def _place(self, r: Replica) -> None:
        r.pg = placement_group(
            [self._bundle()], strategy="STRICT_PACK", name=f"saga-worker-{r.index}-{r.restarts}"
        )
        r.actor = RemoteWorker.options(
            num_cpus=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=r.pg),
        ).remote(self.worker_kwargs, self.log_dir, self.router_ip)

    def _register(self, r: Replica, *, wait_s: float) -> bool:
        """Wait for the placement group and the worker, then ``POST /workers``; False if the cluster
        has no room yet (the replica stays pending)."""
        assert r.pg is not None
        try:
            ray.get(r.pg.ready(), timeout=wait_s)
        except GetTimeoutError:
            return False
        r.url = ray.get(r.actor.wait_ready.remote(self.ready_timeout_s), timeout=self.ready_timeout_s + 30)
        r.node_id, r.pid = ray.get(r.actor.where.remote(), timeout=self.probe_timeout_s)
        reply = http_json("POST", self.router_url + "/workers", {"url": r.url})
        r.worker_id = str(reply["worker_id"])
        log.info(
            "replica %d: %s on node %s registered with the router as %s",
            r.index,
            r.url,
            r.node_id[:8],
            r.worker_id,
        )
        return True

    def _healthy(self, r: Replica, dead_nodes: set[str]) -> bool:
        if r.actor is None or r.node_id in dead_nodes:
            return False
        try:
            return bool(ray.get(r.actor.alive.remote(), timeout=self.probe_timeout_s))
        except (RayActorError, GetTimeoutError, RayError):
            return False

    def supervise_once(self, *, wait_s: float = 0.0) -> list[int]:
        """Check every replica; replace the lost ones. Returns the indexes found lost this round.

        A node killed without warning is seen lost only once Ray notices: its actor's worker process
        can answer for a few seconds more, and the GCS marks the node dead after its health checks
        fail. Callers that need the loss noticed poll (see ``wait_lost``)."""
        with self._lock:
            return self._supervise_once(wait_s)

    def wait_lost(self, index: int, timeout_s: float, interval_s: float = 1.0) -> list[int]:
        """Supervise until replica ``index`` is found lost (by this call or an earlier round, for
        example a supervisor thread), at most ``timeout_s``; returns every index found lost meanwhile."""
        deadline = time.monotonic() + timeout_s
        lost: list[int] = []
        while True:
            lost += self.supervise_once()
            if index in lost or not self.replicas[index].worker_id:
                return lost
            if time.monotonic() >= deadline:
                raise TimeoutError(f"replica {index} not noticed lost after {timeout_s:.0f} s")
            time.sleep(interval_s)

    def _supervise_once(self, wait_s: float) -> list[int]:
        lost = []
        dead_nodes = _dead_nodes()
        for r in self.replicas:
            if r.worker_id and self._healthy(r, dead_nodes):
                continue
            if r.worker_id:  # was serving: take it out of the router, free its resources
                lost.append(r.index)
                self.lost += 1
                log.warning(
                    "replica %d (%s on node %s) lost; removing it from the router and restarting it",
                    r.index,
                    r.url,
                    r.node_id[:8],
                )
                with contextlib.suppress(OSError, urllib.error.URLError):
                    http_json("DELETE", f"{self.router_url}/workers/{r.worker_id}")
                self._release(r)
                r.restarts += 1
                r.worker_id = ""
            if r.pg is None:
                self._place(r)
            try:
                if self._register(r, wait_s=wait_s):
                    log.info("replica %d restarted (%d restart(s))", r.index, r.restarts)
            except (RayActorError, RayError, OSError, urllib.error.URLError) as exc:
                log.warning("replica %d: restart failed (%s); retrying", r.index, exc)
                self._release(r)
        return lost

    def _release(self, r: Replica) -> None:
        if r.actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(r.actor)
        if r.pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(r.pg)
        r.actor, r.pg = None, None

    def supervise(self, stop: Any, interval_s: float = 2.0) -> None:
        """Until ``stop`` (a threading.Event) is set."""
        while not stop.wait(interval_s):
            self.supervise_once()

    def shutdown(self) -> None:
        for r in self.replicas:
            if r.actor is not None:
                with contextlib.suppress(Exception):
                    ray.get(r.actor.stop.remote(), timeout=30)
            self._release(r)

    def urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.worker_id]


def _dead_nodes() -> set[str]:
    """Ids of the nodes the GCS has marked dead (empty if it cannot be asked)."""
    try:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        return {str(n["NodeID"]) for n in nodes if not n.get("Alive", True)}
    except Exception:  # a failed query must not stop supervision
        return set()


@dataclass(slots=True)
class RayCluster:
    """The router on this (head) node and the worker pool on the Ray cluster, supervised."""

    router: RouterProcess | None
    pool: RayWorkerPool
    log_dir: Path

    def worker_urls(self) -> list[str]:
        return self.pool.urls()

    def check(self) -> None:
        if self.router is not None and self.router.process.poll() is not None:
            raise ClusterDied(
                f"router exited with {self.router.process.returncode}; log {self.router.log_path}"
            )


@contextlib.contextmanager
def ray_cluster(
    address: str,
    router_spec: RouterSpec,
    *,
    num_workers: int,
    worker_kwargs: dict[str, Any],
    log_dir: Path,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: int = 0,
    ready_timeout_s: float = 600.0,
    supervise_interval_s: float = 2.0,
) -> Iterator[RayCluster]:
    """Connect to the Ray cluster at ``address``, start the router here (no workers), start the pool,
    wait until the router takes traffic on every replica, supervise in a thread; always stop all."""
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    router = start_router(router_spec, log_dir)
    pool = RayWorkerPool(
        router_url=router.url,
        num_workers=num_workers,
        worker_kwargs=worker_kwargs,
        log_dir=str(log_dir),
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        ready_timeout_s=ready_timeout_s,
    )
    stop = threading.Event()
    supervisor = threading.Thread(target=pool.supervise, args=(stop, supervise_interval_s), daemon=True)
    try:
        router.wait_ready(0, timeout_s=90)
        pool.start()
        router.wait_ready(num_workers, timeout_s=ready_timeout_s)
        supervisor.start()
        yield RayCluster(router=router, pool=pool, log_dir=log_dir)
    finally:
        stop.set()
        if supervisor.is_alive():
            supervisor.join(timeout=60)
        router.stop()
        pool.shutdown()
        ray.shutdown()
