"""The router -> worker control channel: a ZMQ PULL socket in the scheduler process.

The router PUSHes ``saga_sgl.protocol.ControlMessage`` values (msgpack: tool started / finished,
workflow finished, TTL changed) to the address in ``SAGA_WORKER_CONTROL_ADDRESS`` (or the
``control_address`` key of ``--radix-eviction-policy-config``). This module never touches radix
nodes or the hint table: a daemon thread receives and decodes into a bounded queue, and the
scheduler thread drains the queue at a hook point (``drain``). So the scheduler loop never blocks
on the network, and all tree state stays single-threaded.

A malformed message is counted, logged once per reason and dropped; it never reaches the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import ControlMessage, decode_control

log = logging.getLogger(__name__)

POLL_INTERVAL_MS = 100
"""How often the receiver thread checks for shutdown while idle."""


class ControlChannel:
    """Bind ``address``, decode in a background thread, hand messages over through ``drain``."""

    def __init__(
        self,
        address: str,
        *,
        max_queued: int,
        on_malformed: Callable[[str], None],
        on_dropped: Callable[[], None],
    ) -> None:
        import zmq

        self.address = address
        self._queue: queue.Queue[ControlMessage] = queue.Queue(maxsize=max_queued)
        self._on_malformed = on_malformed
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._context: Any = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        # The bound endpoint (resolves tcp://host:0 to the real port).
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._logged_reasons: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="saga-control", daemon=True)
        self._thread.start()
        log.info("saga control channel listening on %s", self.endpoint)

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if not dict(poller.poll(POLL_INTERVAL_MS)):
                    continue
                data = self._socket.recv(zmq.NOBLOCK)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                log.exception("saga control channel receive failed")
                continue
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        try:
            message = decode_control(data)
        except MalformedMessage as exc:
            reason = str(exc).split(":", 1)[0]
            if reason not in self._logged_reasons:
                self._logged_reasons.add(reason)
                log.warning("saga control channel dropped a malformed message (%s); logged once", exc)
            self._on_malformed(reason)
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._on_dropped()

    def drain(self) -> list[ControlMessage]:
        """All messages received so far, in arrival order (scheduler thread)."""
        messages: list[ControlMessage] = []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                return messages

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close(linger=0)
