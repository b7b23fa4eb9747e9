"""The router's settings: one frozen value built by the CLI (or a test) and read everywhere else.

Names and defaults follow sglang-router 0.3.2 where a flag means the same thing, so a deployment
can swap one router for the other without touching its command line beyond the binary name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAGA_POLICY = "saga"
"""The default policy: the workflow scheduler with SAGA placement, stealing and Agent Fair Share."""

BASELINE_POLICIES: dict[str, str] = {
    "round_robin": "round-robin per call, as sglang-router --policy round_robin",
    "cache_aware": "sglang-router 0.3.2 cache_aware (approximate prefix tree + load balance thresholds)",
    "consistent_hash": "session affinity: hash of the workflow id onto the healthy workers",
}
"""Baselines the same router runs for A/B comparisons (each is a placement policy of the core)."""

UNSUPPORTED_POLICIES: dict[str, str] = {
    "random": "not implemented here: use round_robin as the stateless baseline",
    "power_of_two": "not implemented here: use cache_aware (load-aware) or saga",
    "manual": "not implemented here: consistent_hash gives the same routing-key affinity",
}
"""sglang-router policies we refuse with a clear message rather than silently approximate."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    host: str = "0.0.0.0"
    port: int = 30000
    worker_urls: tuple[str, ...] = ()
    policy: str = SAGA_POLICY
    # sglang-router cache_aware knobs (also used by our cache_aware baseline)
    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    eviction_interval_secs: float = 60.0
    max_tree_size: int = 67108864
    max_payload_size: int = 512 * 1024 * 1024
    log_level: str = "info"
    prometheus_host: str = "0.0.0.0"
    prometheus_port: int = 29000
    """0 serves /metrics only on the main port (and starts no separate exporter)."""
    request_timeout_secs: float = 1800.0
    max_concurrent_requests: int = -1
    queue_size: int = 100
    queue_timeout_secs: float = 60.0
    retry_max_retries: int = 5
    disable_retries: bool = False
    health_failure_threshold: int = 3
    health_success_threshold: int = 2
    health_check_timeout_secs: float = 5.0
    health_check_interval_secs: float = 60.0
    health_check_endpoint: str = "/health"
    disable_health_check: bool = False
    api_key: str | None = None
    # saga-only
    model_path: str | None = None
    """Model directory: config.json gives the vocabulary size, tokenizer.json the text tokenizer."""
    vocab_size: int | None = None
    """Overrides the vocabulary size read from the model's config.json."""
    load_poll_interval_secs: float = 0.05
    """/v1/loads polling period; the idle trigger of stealing (100 ms) needs 50 ms or less."""
    epoch_interval_secs: float = 0.1
    """The scheduler's epoch (AFS, stealing, preemption, admission release); the paper's 100 ms."""
    kv_events: bool = True
    """Subscribe to each worker's KV events (when it publishes them) for the exact prefix index."""
    routed_overlay: bool = True
    """Lay the prompts routed to a worker since its last KV-event publish over its exact index
    (``router/routed_overlay.py``); False: the events alone (their lag is still measured)."""
    scheduler_config: dict[str, object] = field(default_factory=dict)
    """Extra settings passed to the workflow scheduler (JSON from --scheduler-config)."""

    @property
    def retries(self) -> int:
        """How many other workers a failed, not-yet-streaming request may be retried on."""
        if self.disable_retries:
            return 0
        return 1 if self.retry_max_retries > 1 else 0
