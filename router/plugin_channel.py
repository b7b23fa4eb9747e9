"""Control messages to each worker's saga plugin: one ZMQ PUSH socket per worker, never blocking.

The address comes from the worker's ``/server_info`` (``radix_eviction_policy_config.control_address``).
A worker without the plugin (plain SGLang) has none and gets no messages. Sends are non-blocking:
when the plugin is gone the high-water mark fills and messages are dropped and counted, because a
hint that arrives late is worth nothing and the router must never stall on a worker.

Workers on other nodes bind their control socket on a reachable address, which the plugin only does
with CurveZMQ (``SAGA_WORKER_CONTROL_CURVE_SECRET`` and an allow-list of client keys). The router then
connects as a CurveZMQ client: its own key pair from ``SAGA_ROUTER_CURVE_SECRET`` and the workers'
public key from ``SAGA_ROUTER_CURVE_SERVER_KEY`` (one cluster key pair for the workers the launcher
started; ``saga_sgl.cluster.curve.ControlKeys`` generates them). Keys travel in the environment,
never in argv, which every user of the machine can read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import zmq

from saga_sgl.cluster.curve import ROUTER_CURVE_SECRET_ENV, ROUTER_CURVE_SERVER_KEY_ENV
from saga_sgl.errors import InvalidSettings
from saga_sgl.protocol import ControlMessage, encode_control

log = logging.getLogger(__name__)

SEND_HWM = 1000
CURVE_SECRET_ENV = ROUTER_CURVE_SECRET_ENV
CURVE_SERVER_KEY_ENV = ROUTER_CURVE_SERVER_KEY_ENV


@dataclass(frozen=True, slots=True)
class CurveClient:
    """The router's CurveZMQ identity on the control channels (Z85 keys, 40 characters)."""

    secret_key: str
    server_public_key: str
    """The workers' public key (the channel is refused if the worker's secret does not match)."""

    def __post_init__(self) -> None:
        for name in ("secret_key", "server_public_key"):
            if len(getattr(self, name)) != 40:
                raise InvalidSettings(f"CurveClient.{name}: expected a 40-character Z85 key")

    @property
    def public_key(self) -> str:
        return zmq.curve_public(self.secret_key.encode()).decode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CurveClient | None:
        """From ``SAGA_ROUTER_CURVE_SECRET`` and ``SAGA_ROUTER_CURVE_SERVER_KEY``; None when neither is
        set; an error naming the missing one when only one is."""
        env = os.environ if environ is None else environ
        secret, server = env.get(CURVE_SECRET_ENV), env.get(CURVE_SERVER_KEY_ENV)
        if not secret and not server:
            return None
        if not secret or not server:
            missing = CURVE_SECRET_ENV if not secret else CURVE_SERVER_KEY_ENV
            raise InvalidSettings(f"CurveZMQ control channel: {missing} is not set (both are needed)")
        return cls(secret_key=secret, server_public_key=server)


class PluginChannels:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveClient | None = None,
        *,
        curve_from_env: bool = True,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self.dropped = 0
        self.curve = curve if curve is not None or not curve_from_env else CurveClient.from_env()
        if self.curve is not None:
            log.info("control channels use CurveZMQ (router public key %s)", self.curve.public_key)

    def open(self, worker: str, address: str) -> None:
        self.close(worker)
        sock = self._context.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            sock.curve_secretkey = self.curve.secret_key.encode()
            sock.curve_publickey = self.curve.public_key.encode()
            sock.curve_serverkey = self.curve.server_public_key.encode()
        sock.connect(address)
        self._sockets[worker] = sock
        log.info("worker %s: saga plugin control channel at %s", worker, address)

    def has(self, worker: str) -> bool:
        return worker in self._sockets

    def send(self, worker: str, message: ControlMessage) -> bool:
        sock = self._sockets.get(worker)
        if sock is None:
            return False
        try:
            sock.send(encode_control(message), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            log.warning("worker %s: control channel full, dropped %s", worker, type(message).__name__)
            return False
        return True

    def close(self, worker: str) -> None:
        sock = self._sockets.pop(worker, None)
        if sock is not None:
            sock.close(linger=0)

    def close_all(self) -> None:
        for worker in list(self._sockets):
            self.close(worker)
