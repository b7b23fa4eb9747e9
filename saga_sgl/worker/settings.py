"""Worker-side settings of the plugin (not of a policy), and the environment variables it reads.

SGLang passes ``--radix-eviction-policy-config`` JSON to the strategy constructor as keyword
arguments. The plugin takes its own keys (the fields of :class:`WorkerSettings`) out of that dict
first; everything else goes, unchanged, to the policy registry's strict loader, so an unknown key is
an error that names it. Explicit config wins over the environment.

Environment variables (all optional):

``SAGA_WORKER_CONTROL_ADDRESS``
    ZMQ endpoint the scheduler process binds a PULL socket on for router control messages
    (``saga_sgl.protocol.ControlMessage``, msgpack), e.g. ``tcp://127.0.0.1:5601``. Unset: no
    control channel; hints then arrive only with requests (``kv_hints``).
``SAGA_WORKER_METRICS_PORT``
    Serve the plugin's counters on this port (``/metrics``) from the scheduler process. Not needed
    with SGLang's ``--enable-metrics``: the counters then appear in SGLang's own ``/metrics``
    (prometheus multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.settings import load_settings

CONTROL_ADDRESS_ENV: Final = "SAGA_WORKER_CONTROL_ADDRESS"
METRICS_PORT_ENV: Final = "SAGA_WORKER_METRICS_PORT"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """Settings of the plugin host itself (the policy's settings are separate)."""

    control_address: str | None = None
    """ZMQ endpoint to bind for control messages; None = no control channel. Env
    ``SAGA_WORKER_CONTROL_ADDRESS``. [I]"""
    metrics_port: int | None = None
    """Port for a plugin-owned ``/metrics`` endpoint; None = export only through SGLang's metrics.
    Env ``SAGA_WORKER_METRICS_PORT``. [I]"""
    max_tracked_workflows: int = 100_000
    """Workflows the hint side table remembers; the least recently updated is forgotten beyond this
    (counted), and its nodes fall back to LRU order. Bounds memory. [I]"""
    control_queue_max: int = 100_000
    """Control messages waiting for the scheduler thread; more are dropped and counted. [I]"""

    def __post_init__(self) -> None:
        if self.control_address is not None and "://" not in self.control_address:
            raise InvalidSettings(
                f"WorkerSettings.control_address: expected a ZMQ endpoint like tcp://host:port, "
                f"got {self.control_address!r}"
            )
        if self.metrics_port is not None and not (0 < self.metrics_port < 65536):
            raise InvalidSettings(f"WorkerSettings.metrics_port: out of range: {self.metrics_port}")
        if self.max_tracked_workflows < 1:
            raise InvalidSettings("WorkerSettings.max_tracked_workflows must be >= 1")
        if self.control_queue_max < 1:
            raise InvalidSettings("WorkerSettings.control_queue_max must be >= 1")


WORKER_KEYS: Final = frozenset(f.name for f in fields(WorkerSettings))


def split_config(
    config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> tuple[WorkerSettings, dict[str, Any]]:
    """Split SGLang's policy config into (worker settings, the policy's own config)."""
    config = dict(config or {})
    env = os.environ if environ is None else environ
    worker_part = {k: config.pop(k) for k in list(config) if k in WORKER_KEYS}
    if "control_address" not in worker_part and env.get(CONTROL_ADDRESS_ENV):
        worker_part["control_address"] = env[CONTROL_ADDRESS_ENV]
    if "metrics_port" not in worker_part and env.get(METRICS_PORT_ENV):
        try:
            worker_part["metrics_port"] = int(env[METRICS_PORT_ENV])
        except ValueError as exc:
            raise InvalidSettings(f"{METRICS_PORT_ENV}: not an integer: {env[METRICS_PORT_ENV]!r}") from exc
    return load_settings(WorkerSettings, worker_part), config
