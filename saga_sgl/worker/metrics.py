"""The plugin's own counters, kept as plain numbers and mirrored to Prometheus.

Export: every metric is created in a private ``CollectorRegistry``. When SGLang runs with
``--enable-metrics`` it sets ``PROMETHEUS_MULTIPROC_DIR`` before spawning the scheduler, so
prometheus_client writes our values to the shared files and SGLang's own ``/metrics`` serves them
(names start with ``saga_worker_``). Without it, ``serve(port)`` exposes the private registry on a
port of ours. Label values come from small fixed sets (tier names, hook names, channel names).

Thread safety: the control-channel thread counts malformed messages; everything else is counted
on the scheduler thread. A lock keeps the plain numbers exact.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge

_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hint_updates": ("Workflow hint records updated, by source (kv_hints, control)", ("source",)),
    "malformed_messages": ("Malformed hints or control messages dropped, by channel", ("channel",)),
    "unknown_workflow_messages": ("Control messages naming a workflow this worker never saw", ()),
    "dropped_control_messages": ("Control messages dropped because the queue was full", ()),
    "hook_failures": ("Plugin hook failures (stock behaviour used instead), by hook", ("hook",)),
    "ttl_expiries": ("Tool-aware TTL deadlines that passed", ()),
    "evictions": ("Radix nodes evicted, by protection tier of their key", ("tier",)),
    "evicted_tokens": ("KV tokens evicted, by protection tier of their key", ("tier",)),
    "forgotten_workflows": ("Workflows dropped from the bounded hint table", ()),
    "index_victims": ("Victims popped from the persistent leaf index, by KeyHeap backend", ("backend",)),
}
_GAUGES: dict[str, str] = {
    "protected_tokens": (
        "Tokens TTL protection keeps from eviction at the last eviction round"
        " (a protected leaf counts its whole path: its ancestors cannot go first)"
    ),
    "tracked_workflows": "Workflows in the hint table",
    "victim_index_native": "1 if the leaf index orders victims with the native saga_kernels KeyHeap, else 0",
    "tree_core_native": "1 if the cache runs on SGLang's Rust tree core (saga-rust), 0 on its Python core",
}

PREFIX = "saga_worker_"


class WorkerMetrics:
    """Counters and gauges of one plugin runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        self._gauges: dict[str, float] = {name: 0.0 for name in _GAUGES}
        self.registry = CollectorRegistry()
        self._prom_counters = {
            name: PromCounter(PREFIX + name, doc, labels, registry=self.registry)
            for name, (doc, labels) in _COUNTERS.items()
        }
        # multiprocess_mode only matters under PROMETHEUS_MULTIPROC_DIR (SGLang --enable-metrics).
        self._prom_gauges = {
            name: PromGauge(PREFIX + name, doc, registry=self.registry, multiprocess_mode="livemostrecent")
            for name, doc in _GAUGES.items()
        }
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._server: Any = None

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if amount == 0:
            return
        label_values = tuple(labels[k] for k in _COUNTERS[name][1])
        slot = (name, label_values)
        with self._lock:
            self._counts[slot] += amount
        child = self._children.get(slot)
        if child is None:  # prometheus' label lookup, once per label set (it is on the scheduler's path)
            counter = self._prom_counters[name]
            child = self._children[slot] = counter.labels(*label_values) if label_values else counter
        child.inc(amount)

    def set_gauge(self, name: str, value: float) -> None:
        if self._gauges[name] == value:
            return
        with self._lock:
            self._gauges[name] = value
        self._prom_gauges[name].set(value)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter (summed over labels not given) or gauge."""
        with self._lock:
            if name in self._gauges:
                return self._gauges[name]
            spec = _COUNTERS.get(name)
            if spec is not None and not spec[1]:  # an unlabelled counter: one slot (read every step)
                return self._counts.get((name, ()), 0.0)
            return sum(
                count
                for (n, values), count in self._counts.items()
                if n == name and all(values[_COUNTERS[name][1].index(k)] == v for k, v in labels.items())
            )

    def snapshot(self) -> dict[str, float]:
        """All non-zero counters and all gauges, keyed ``name{label=value,...}``."""
        with self._lock:
            out = {
                name + ("{" + ",".join(values) + "}" if values else ""): float(count)
                for (name, values), count in sorted(self._counts.items())
            }
            out.update(self._gauges)
        return out

    def serve(self, port: int) -> None:
        """Serve this runtime's registry on ``port`` (scheduler process, background thread)."""
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def close(self) -> None:
        """Stop the port of ours, if one is served."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
