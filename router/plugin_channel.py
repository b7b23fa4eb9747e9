"""Control messages to each worker's saga plugin: one ZMQ PUSH socket per worker, never blocking.

The address comes from the worker's ``/server_info`` (``radix_eviction_policy_config.control_address``).
A worker without the plugin (plain SGLang) has none and gets no messages. Sends are non-blocking:
when the plugin is gone the high-water mark fills and messages are dropped and counted, because a
hint that arrives late is worth nothing and the router must never stall on a worker.
"""

from __future__ import annotations

import logging

import zmq

from saga_sgl.protocol import ControlMessage, encode_control

log = logging.getLogger(__name__)

SEND_HWM = 1000


class PluginChannels:
    def __init__(self, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self._context = context or zmq.Context.instance()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self.dropped = 0

    def open(self, worker: str, address: str) -> None:
        self.close(worker)
        sock = self._context.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.LINGER, 0)
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
