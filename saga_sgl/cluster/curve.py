"""CurveZMQ keys for the router -> plugin control channels of one cluster.

A worker on another node must bind its control socket on a reachable address, and the plugin only
does that with CurveZMQ: anyone who reaches an open control socket could steer its eviction. The
launcher generates one key pair for the cluster's workers (they are one trust domain, started by one
launcher) and one for the router; each worker gets its secret in ``SAGA_WORKER_CONTROL_CURVE_SECRET``
and the router's public key as its only allowed client; the router gets its secret and the workers'
public key in ``SAGA_ROUTER_CURVE_SECRET`` / ``SAGA_ROUTER_CURVE_SERVER_KEY``. Secrets travel in the
environment, never on a command line (``ps`` shows argv to every user).
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from saga_sgl.worker.settings import CONTROL_CURVE_SECRET_ENV

ROUTER_CURVE_SECRET_ENV = "SAGA_ROUTER_CURVE_SECRET"
ROUTER_CURVE_SERVER_KEY_ENV = "SAGA_ROUTER_CURVE_SERVER_KEY"


@dataclass(frozen=True, slots=True, repr=False)
class ControlKeys:
    """Z85 key pairs (40 characters each) of the workers and of the router."""

    worker_public: str
    worker_secret: str
    router_public: str
    router_secret: str

    @classmethod
    def generate(cls) -> ControlKeys:
        wp, ws = zmq.curve_keypair()
        rp, rs = zmq.curve_keypair()
        return cls(
            worker_public=wp.decode(),
            worker_secret=ws.decode(),
            router_public=rp.decode(),
            router_secret=rs.decode(),
        )

    def worker_env(self) -> dict[str, str]:
        return {CONTROL_CURVE_SECRET_ENV: self.worker_secret}

    def router_env(self) -> dict[str, str]:
        return {ROUTER_CURVE_SECRET_ENV: self.router_secret, ROUTER_CURVE_SERVER_KEY_ENV: self.worker_public}

    def __repr__(self) -> str:  # never print a secret into a log
        return f"ControlKeys(worker_public={self.worker_public!r}, router_public={self.router_public!r})"
