"""Worker-side settings of the plugin (not of a policy), and the environment variables it reads.

SGLang passes ``--radix-eviction-policy-config`` JSON to the strategy constructor as keyword
arguments. The plugin takes its own keys (the fields of :class:`WorkerSettings`) out of that dict
first; everything else goes, unchanged, to the policy registry's strict loader, so an unknown key is
an error that names it. Explicit config wins over the environment.

Environment variables (all optional):

``SAGA_WORKER_CONTROL_ADDRESS``
    ZMQ endpoint the scheduler process binds a PULL socket on for router control messages
    (``saga_sgl.protocol.ControlMessage``, msgpack), e.g. ``tcp://127.0.0.1:5601``. Unset: no
    control channel; hints then arrive only with requests (``kv_hints``). With data parallelism
    each replica binds its own address: the port plus the DP rank (``ipc://`` paths get
    ``-dp<rank>``). Only loopback, ``ipc://`` and ``inproc://`` are bound without CurveZMQ keys.
``SAGA_WORKER_CONTROL_CURVE_SECRET``
    The worker's CurveZMQ secret key (Z85, 40 characters; ``python -c "import zmq;
    print(zmq.curve_keypair())"``). Required to bind a non-loopback control address; clients must
    then connect with the worker's public key, and only the client public keys listed in
    ``control_client_keys`` are accepted.
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
from saga_sgl.policy.pressure import MAX_PROTECTED_FRAC
from saga_sgl.policy.settings import load_settings

CONTROL_ADDRESS_ENV: Final = "SAGA_WORKER_CONTROL_ADDRESS"
CONTROL_CURVE_SECRET_ENV: Final = "SAGA_WORKER_CONTROL_CURVE_SECRET"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
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
    control_queue_max: int = 1024
    """Decoded control messages waiting for the scheduler thread. When full, the receiver stops
    reading the socket (ZMQ's high-water mark then pushes back on senders) instead of decoding
    and dropping. [I]"""
    control_drain_max: int = 256
    """Control messages applied per scheduler step at most: bounds the work a flood can put into
    one step. [I]"""
    control_max_rate: float = 20_000.0
    """Control messages per second the receiver thread reads at most (valid or not); bounds the
    CPU (and GIL) share a flooding client can take from the scheduler. [I]"""
    control_curve_secret_key: str | None = None
    """CurveZMQ secret key (Z85) of the control socket; required for a non-loopback address. Env
    ``SAGA_WORKER_CONTROL_CURVE_SECRET``. [I]"""
    control_client_keys: tuple[str, ...] = ()
    """CurveZMQ public keys (Z85) of the clients (routers) allowed to connect; with a secret key,
    an empty list refuses every client. [I]"""
    max_ttl_s: float = 300.0
    """TTLs from hints and control messages are cut to this (the paper's cap, 300 s). [P]"""
    finished_grace_s: float = 60.0
    """A finished workflow's record leaves the hint table this long after it finished. [I]"""
    queue_ageing_s: float = 5.0
    """Waiting-queue order (``saga_sgl.policy.queue_order``): the most urgent class gets at most
    this head start over the least urgent, so no class waits unboundedly. [I]"""
    max_protected_frac: float = MAX_PROTECTED_FRAC
    """Share of the pool live TTLs may protect (``saga_sgl.policy.pressure``: the protected term of
    the pressure level is 1 there, and TTLs stop protecting at 90% of it). The default budget, 5%, is
    128 tokens of a 2,560-token pool, less than one context in a tool gap (600-1,850 tokens live,
    issue 13): a larger budget lets small pools protect a context through its gap. [I]"""

    def __post_init__(self) -> None:
        if self.control_address is not None:
            scheme, sep, rest = self.control_address.partition("://")
            if not sep or not rest:
                raise InvalidSettings(
                    f"WorkerSettings.control_address: expected a ZMQ endpoint like tcp://host:port, "
                    f"got {self.control_address!r}"
                )
            host = rest.rsplit(":", 1)[0] if scheme == "tcp" else None
            if host is not None and host not in LOOPBACK_HOSTS and not self.control_curve_secret_key:
                raise InvalidSettings(
                    f"WorkerSettings.control_address: {self.control_address!r} is not a loopback address; "
                    "binding it needs control_curve_secret_key (CurveZMQ, env "
                    f"{CONTROL_CURVE_SECRET_ENV}) and control_client_keys: anyone who can reach an "
                    "unauthenticated control socket can steer this worker's eviction"
                )
        if self.control_curve_secret_key is not None and len(self.control_curve_secret_key) != 40:
            raise InvalidSettings("WorkerSettings.control_curve_secret_key: expected a 40-character Z85 key")
        for key in self.control_client_keys:
            if len(key) != 40:
                raise InvalidSettings(
                    f"WorkerSettings.control_client_keys: not a 40-character Z85 key: {key!r}"
                )
        if self.control_drain_max < 1:
            raise InvalidSettings("WorkerSettings.control_drain_max must be >= 1")
        if not (self.control_max_rate > 0):
            raise InvalidSettings("WorkerSettings.control_max_rate must be > 0")
        if not (0 < self.max_ttl_s <= 86_400):
            raise InvalidSettings("WorkerSettings.max_ttl_s must be in (0, 86400]")
        if not (0 < self.max_protected_frac <= 1):
            raise InvalidSettings("WorkerSettings.max_protected_frac must be in (0, 1]")
        if not (0 <= self.finished_grace_s <= 86_400):
            raise InvalidSettings("WorkerSettings.finished_grace_s must be in [0, 86400]")
        if not (0 < self.queue_ageing_s <= 3600):
            raise InvalidSettings("WorkerSettings.queue_ageing_s must be in (0, 3600]")
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
    if "control_curve_secret_key" not in worker_part and env.get(CONTROL_CURVE_SECRET_ENV):
        worker_part["control_curve_secret_key"] = env[CONTROL_CURVE_SECRET_ENV]
    if isinstance(worker_part.get("control_client_keys"), list):
        worker_part["control_client_keys"] = tuple(worker_part["control_client_keys"])
    if "metrics_port" not in worker_part and env.get(METRICS_PORT_ENV):
        try:
            worker_part["metrics_port"] = int(env[METRICS_PORT_ENV])
        except ValueError as exc:
            raise InvalidSettings(f"{METRICS_PORT_ENV}: not an integer: {env[METRICS_PORT_ENV]!r}") from exc
    return load_settings(WorkerSettings, worker_part), config


def replica_address(address: str, dp_rank: int | None) -> str:
    """The control address of data-parallel replica ``dp_rank``: one per replica.

    ``tcp://host:PORT`` -> ``tcp://host:PORT+rank``; ``ipc://path`` -> ``ipc://path-dp<rank>``;
    rank 0 or no data parallelism keeps the address as given.
    """
    if not dp_rank:
        return address
    scheme, _, rest = address.partition("://")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not port.isdigit() or int(port) == 0:
            return address  # an ephemeral port (0) is unique per bind anyway
        return f"tcp://{host}:{int(port) + dp_rank}"
    return f"{address}-dp{dp_rank}"
