"""The router's Prometheus metrics (prometheus-client, one registry per router instance).

Names start with ``saga_router_``; label values are small fixed sets (decision reasons, tenants,
worker URLs). ``promtool check metrics`` is clean on this exposition (tests/router checks it when
promtool is on PATH). The Grafana dashboard in ``router/grafana_dashboard.json`` reads these names.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TASK_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# ``*_created`` series double the exposition and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "saga_router_requests", "Requests answered, by route and HTTP status.", ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "saga_router_request_duration_seconds", "Time from arrival to the last byte, per tenant.",
            ["tenant"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.task_seconds = Histogram(
            "saga_router_task_completion_seconds",
            "Workflow (agent task) completion time, first call to workflow finished, per tenant.",
            ["tenant"], buckets=TASK_BUCKETS, registry=r,
        )
        self.slo = Counter(
            "saga_router_workflows_finished",
            "Finished workflows per tenant and whether they met their SLO deadline.",
            ["tenant", "slo_met"], registry=r,
        )
        self.afs = Gauge(
            "saga_router_afs", "Agent Fair Share urgency of each tenant at the last epoch.", ["tenant"],
            registry=r,
        )
        self.admissions_held = Gauge(
            "saga_router_admissions_held", "Workflows the scheduler is holding back from admission now.",
            registry=r,
        )
        self.placements = Counter(
            "saga_router_placements", "Placement decisions by reason.", ["reason"], registry=r,
        )
        self.steals = Counter("saga_router_steals", "Workflows re-bound by work stealing.", registry=r)
        self.prefills = Counter(
            "saga_router_prefills", "Pre-fill (max_new_tokens 0) requests sent, by outcome.", ["outcome"],
            registry=r,
        )
        self.preemptions = Counter(
            "saga_router_preemptions",
            "Preemptions decided by Agent Fair Share, by outcome (applied: aborted and re-sent; "
            "gone: answered first; refused_*: streamed, no rid, pending, per-call bound).",
            ["outcome"], registry=r,
        )
        self.retries = Counter(
            "saga_router_retries", "Requests retried on another worker before streaming started.",
            registry=r,
        )
        self.worker_healthy = Gauge(
            "saga_router_worker_healthy", "1 if the worker takes traffic, else 0.", ["worker"], registry=r,
        )
        self.prompt_tokens = Counter(
            "saga_router_prompt_tokens", "Prompt tokens of finished calls (meta_info).", registry=r,
        )
        self.cached_tokens = Counter(
            "saga_router_cached_tokens", "Prompt tokens served from a worker's cache (meta_info).",
            registry=r,
        )
        self.cached_ratio = Gauge(
            "saga_router_cached_token_ratio", "Cached prompt tokens / prompt tokens since start.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "saga_router_dispatch_queue_depth", "Calls waiting in the router's dispatch queue.", registry=r,
        )
        self.control_messages = Counter(
            "saga_router_control_messages", "Control messages sent to worker plugins, by type.", ["type"],
            registry=r,
        )
        self.kv_event_gaps = Counter(
            "saga_router_kv_event_gaps", "Sequence gaps in a worker's KV-event stream (resynchronised).",
            ["worker"], registry=r,
        )
        self.prefix_lookups = Gauge(
            "saga_router_prefix_lookups",
            "Prefix lookups of placements over exact (KV-event) indexes since start, all and stale: the "
            "prompts routed since a worker's last publish matched more than its events showed.",
            ["index"], registry=r,
        )
        self.prefix_stale_tokens = Gauge(
            "saga_router_prefix_stale_tokens",
            "Prompt tokens the KV events did not show yet, summed over stale lookups and workers.",
            registry=r,
        )
        self.bad_requests = Counter(
            "saga_router_bad_requests", "Requests refused with a 4xx before reaching a worker.", ["route"],
            registry=r,
        )
        self._prompt = 0.0
        self._cached = 0.0
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: the per-request paths skip prometheus-client's lookup."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def call_tokens(self, prompt: int, cached: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self._prompt += prompt
        self._cached += cached
        if self._prompt > 0:
            self.cached_ratio.set(self._cached / self._prompt)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
