"""The worker registry: every SGLang worker the router knows, its health, load and discovered extras.

A worker is registered from ``--worker-urls`` or ``POST /workers`` and probed before it takes
traffic (``/health``, then ``/server_info`` for its KV-event publisher and the saga plugin's control
address, ``/model_info`` for its model). ``/workers`` answers with sglang-router 0.3.2's JSON shapes.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.policy.views import WorkerId, WorkerView
from saga_sgl.protocol import decode_loads_residence

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_TOKENS = 1
PREFILL_SAMPLE_MIN_TOKENS = 32
"""Pre-fills shorter than this are dominated by fixed overheads: not a throughput sample."""
PREFILL_RATE_ALPHA = 0.5
"""EMA weight of the newest pre-fill throughput sample (few samples: follow them quickly)."""
"""Stand-in KV capacity before the first /v1/loads answer (a WorkerView needs a positive one)."""


@dataclass(slots=True)
class WorkerLoad:
    """One ``/v1/loads`` sample (dp rank 0), on the router's monotonic clock."""

    num_running_reqs: int
    num_waiting_reqs: int
    num_used_tokens: int
    max_total_num_tokens: int
    max_running_requests: int
    at_s: float
    prefill_tokens_total: int = 0
    """``total_prefill_uncached_tokens``: tokens the worker has pre-filled since it started."""
    prefill_busy_us_total: int = 0
    """``total_prefill_busy_us``: time its pre-fill steps took, in microseconds (SGLang measures both
    on every pre-fill batch: every call's, not only the router's own pre-fills)."""
    residence_s: float = math.inf
    """The saga plugin's cache residence time (``protocol.LOADS_RESIDENCE_FIELD``); inf: not
    published (stock SGLang, an older plugin, no eviction yet) or malformed."""

    @classmethod
    def from_loads(cls, payload: dict[str, Any], now_s: float) -> WorkerLoad:
        """Sum the per-DP-rank entries of a ``/v1/loads`` answer."""
        ranks = payload.get("loads") or []
        if not ranks:
            raise ValueError("/v1/loads answered no loads")

        def total(key: str) -> int:
            return sum(int(r.get(key) or 0) for r in ranks)

        try:
            residence = decode_loads_residence(ranks)
        except MalformedMessage as exc:  # the rest of the sample is still good
            log.warning("ignoring a /v1/loads field: %s", exc)
            residence = math.inf

        return cls(
            num_running_reqs=total("num_running_reqs"),
            num_waiting_reqs=total("num_waiting_reqs"),
            num_used_tokens=total("num_used_tokens"),
            max_total_num_tokens=max(1, total("max_total_num_tokens")),
            max_running_requests=max(1, total("max_running_requests")),
            at_s=now_s,
            prefill_tokens_total=total("total_prefill_uncached_tokens"),
            prefill_busy_us_total=total("total_prefill_busy_us"),
            residence_s=residence,
        )


@dataclass(slots=True, kw_only=True)
class WorkerRecord:
    url: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    model_id: str = "unknown"
    priority: int = 50
    cost: float = 1.0
    metadata: dict[str, str] = field(default_factory=dict)
    disable_health_check: bool = False
    # live state
    ready: bool = False
    """Probed successfully at least once (a worker takes traffic only after that)."""
    healthy: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    next_check_s: float = 0.0
    backoff_s: float = 0.0
    inflight: int = 0
    """Requests forwarded and not finished (sglang-router's ``load``)."""
    last_answer_s: float | None = None
    """When a forwarded call last came back with an answer: the worker serves (health checks)."""
    load: WorkerLoad | None = None
    idle_since_s: float | None = None
    server_info: dict[str, Any] = field(default_factory=dict)
    control_address: str | None = None
    kv_events_exact: bool = False
    prefill_tokens_per_s: float | None = None
    """Pre-fill throughput here (EMA; see ``observe_prefill``): from the worker's own /v1/loads counters
    (every call's pre-fill) and the router's pre-fills; None until a sample of 32+ tokens."""
    _prefill_base: tuple[int, int] | None = None
    """The pre-fill counters (tokens, busy us) where the next throughput sample starts."""
    prefilling: int = 0
    """The router's own pre-fills running here. A thief busy re-building a stolen context is not
    idle: counting it keeps the next epoch from stealing onto it again before that one is done."""

    @property
    def worker_id(self) -> WorkerId:
        """The id policies see: the URL (stable across re-registration and readable in logs)."""
        return WorkerId(self.url)

    @property
    def takes_traffic(self) -> bool:
        return self.ready and self.healthy

    def view(self) -> WorkerView:
        load = self.load
        if load is None:
            return WorkerView(
                worker_id=self.worker_id,
                num_running_reqs=0,
                num_waiting_reqs=0,
                kv_used_tokens=0,
                kv_capacity_tokens=DEFAULT_CAPACITY_TOKENS,
                num_inflight_reqs=self.inflight,
                idle_since_s=self.idle_since_s,
                is_healthy=self.takes_traffic,
                prefill_tokens_per_s=self.prefill_tokens_per_s,
            )
        return WorkerView(
            worker_id=self.worker_id,
            num_running_reqs=load.num_running_reqs,
            num_waiting_reqs=load.num_waiting_reqs,
            kv_used_tokens=load.num_used_tokens,
            kv_capacity_tokens=load.max_total_num_tokens,
            max_running_reqs=load.max_running_requests,
            num_inflight_reqs=self.inflight,
            idle_since_s=self.idle_since_s,
            is_healthy=self.takes_traffic,
            prefill_tokens_per_s=self.prefill_tokens_per_s,
            residence_s=load.residence_s,
        )

    def observe_prefill(self, tokens: int, seconds: float) -> bool:
        """A pre-fill of ``tokens`` uncached tokens took ``seconds``; False: too short a sample."""
        if tokens < PREFILL_SAMPLE_MIN_TOKENS or seconds <= 0:
            return False  # too short to say anything about throughput
        rate = tokens / seconds
        old = self.prefill_tokens_per_s
        self.prefill_tokens_per_s = rate if old is None else old + PREFILL_RATE_ALPHA * (rate - old)
        return True

    def observe_load(self, load: WorkerLoad) -> bool:
        """A new ``/v1/loads`` sample: its pre-fill counters since the last sample are a throughput
        sample (the calls of every client, counted by the worker itself). True: a rate was learned.

        Samples accumulate until they hold ``PREFILL_SAMPLE_MIN_TOKENS``; counters that go backwards
        (a restarted worker) start a new baseline.
        """
        old, self.load = self.load, load
        base = self._prefill_base
        if base is None or old is None or load.prefill_tokens_total < base[0] \
                or load.prefill_busy_us_total < base[1]:
            self._prefill_base = (load.prefill_tokens_total, load.prefill_busy_us_total)
            return False
        tokens = load.prefill_tokens_total - base[0]
        busy_s = (load.prefill_busy_us_total - base[1]) / 1e6
        if tokens < PREFILL_SAMPLE_MIN_TOKENS or busy_s <= 0:
            return False
        self._prefill_base = (load.prefill_tokens_total, load.prefill_busy_us_total)
        return self.observe_prefill(tokens, busy_s)

    def as_json(self) -> dict[str, Any]:
        """sglang-router 0.3.2's ``/workers`` entry."""
        return {
            "id": self.id,
            "url": self.url,
            "model_id": self.model_id,
            "priority": self.priority,
            "cost": self.cost,
            "worker_type": "regular",
            "is_healthy": self.takes_traffic,
            "load": self.inflight,
            "connection_mode": "HTTP",
            "metadata": dict(self.metadata),
            "disable_health_check": self.disable_health_check,
        }

    def adopt_server_info(self, info: dict[str, Any]) -> None:
        """Take what a live router needs from the worker's ``/server_info``."""
        self.server_info = info
        self.control_address = control_address_of(info)


def control_address_of(info: dict[str, Any]) -> str | None:
    """The saga plugin's control address, echoed by SGLang in ``radix_eviction_policy_config``."""
    raw = info.get("radix_eviction_policy_config")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if isinstance(raw, dict):
        address = raw.get("control_address")
        if isinstance(address, str) and address:
            return address
    return None


def kv_event_endpoint_of(info: dict[str, Any], worker_url: str) -> tuple[str, str, int, str | None] | None:
    """(SUB endpoint of dp rank 0, topic, block size, replay endpoint) from ``/server_info``."""
    desc = info.get("kv_events")
    if not isinstance(desc, dict) or desc.get("publisher") != "zmq":
        return None
    port = desc.get("endpoint_port_base")
    if not isinstance(port, int):
        return None
    host = str(desc.get("endpoint_host") or "")
    if host in ("", "*", "0.0.0.0", "::"):
        # A wildcard bind: dial the worker's own host, as the descriptor says subscribers must.
        from urllib.parse import urlsplit

        host = urlsplit(worker_url).hostname or "127.0.0.1"
    replay_port = desc.get("replay_endpoint_port_base")
    replay = f"tcp://{host}:{replay_port}" if isinstance(replay_port, int) else None
    return f"tcp://{host}:{port}", str(desc.get("topic") or ""), int(desc.get("block_size") or 1), replay


class WorkerRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, WorkerRecord] = {}
        self._by_url: dict[str, WorkerRecord] = {}

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, url: str, **fields: Any) -> WorkerRecord:
        url = url.rstrip("/")
        if self.by_url(url) is not None:
            raise ValueError(f"worker {url} is already registered")
        record = WorkerRecord(url=url, **fields)
        self._by_id[record.id] = record
        self._by_url[url] = record
        return record

    def remove(self, worker_id: str) -> WorkerRecord | None:
        record = self._by_id.pop(worker_id, None)
        if record is not None:
            self._by_url.pop(record.url, None)
        return record

    def get(self, worker_id: str) -> WorkerRecord | None:
        return self._by_id.get(worker_id)

    def by_url(self, url: str) -> WorkerRecord | None:
        return self._by_url.get(url.rstrip("/"))

    def routable(self) -> list[WorkerRecord]:
        return [r for r in self._by_id.values() if r.takes_traffic]

    def views(self) -> list[WorkerView]:
        return [r.view() for r in self._by_id.values() if r.ready]
