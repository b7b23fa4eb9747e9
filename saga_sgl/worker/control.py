"""The router -> worker control channel: a ZMQ PULL socket in the scheduler process.

The router PUSHes ``saga_sgl.protocol.ControlMessage`` values (msgpack: tool started / finished,
workflow finished, TTL changed) to the address in ``SAGA_WORKER_CONTROL_ADDRESS`` (or the
``control_address`` key of ``--radix-eviction-policy-config``). This module never touches radix
nodes or the hint table: a daemon thread receives and decodes into a bounded queue, and the
scheduler thread drains the queue at a hook point (``drain``). So the scheduler loop never blocks
on the network, and all tree state stays single-threaded.

A malformed message is counted, logged once per reason and dropped; it never reaches the queue.

Bounded work under a flood: the receiver reads at most ``max_rate`` messages per second (a token
bucket; valid or not), and stops reading while the queue is full, so ZMQ's receive high-water mark
pushes back on senders instead of this thread decoding and dropping at full speed. The scheduler
takes at most ``control_drain_max`` messages per step (``WorkerRuntime``).

Authentication: with a CurveZMQ secret key the socket is a Curve server and a ZAP handler admits
only the listed client public keys (``WorkerSettings`` refuses a non-loopback address without one).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import ControlMessage, decode_control

log = logging.getLogger(__name__)

POLL_INTERVAL_MS = 100
"""How often the receiver thread checks for shutdown while idle."""
RCVHWM = 1000
"""Messages ZMQ buffers for this socket before it pushes back on senders."""
FULL_QUEUE_WAIT_S = 0.01
"""How long the receiver sleeps when the scheduler has not caught up with the queue."""


class ControlChannel:
    """Bind ``address``, decode in a background thread, hand messages over through ``drain``."""

    def __init__(
        self,
        address: str,
        *,
        max_queued: int,
        on_malformed: Callable[[str], None],
        on_dropped: Callable[[], None],
        max_rate: float = 20_000.0,
        curve_secret_key: str | None = None,
        client_keys: Sequence[str] = (),
    ) -> None:
        import zmq

        self.address = address
        self._queue: queue.Queue[ControlMessage] = queue.Queue(maxsize=max_queued)
        self._on_malformed = on_malformed
        self._on_dropped = on_dropped
        self._max_rate = max_rate
        self._stop = threading.Event()
        self._context: Any = zmq.Context.instance()
        self._auth: Any = None
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, RCVHWM)
        self._socket.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # ZMQ drops the peer of a larger frame
        if curve_secret_key is not None:
            self._start_curve(curve_secret_key, client_keys)
        self._socket.bind(address)
        # The bound endpoint (resolves tcp://host:0 to the real port).
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._logged_reasons: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="saga-control", daemon=True)
        self._thread.start()
        log.info("saga control channel listening on %s", self.endpoint)

    def _start_curve(self, secret_key: str, client_keys: Sequence[str]) -> None:
        import zmq
        from zmq.auth.thread import ThreadAuthenticator

        allowed = {key.encode() for key in client_keys}

        class _AllowList:
            def callback(self, domain: str, key: bytes) -> bool:
                return zmq.utils.z85.encode(key) in allowed if len(key) == 32 else key in allowed

        self._auth = ThreadAuthenticator(self._context)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=_AllowList())
        public_key = zmq.curve_public(secret_key.encode())
        self._socket.curve_secretkey = secret_key.encode()
        self._socket.curve_publickey = public_key
        self._socket.curve_server = True
        self.public_key: str = public_key.decode()

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        tokens, refilled_at = self._max_rate, time.monotonic()
        while not self._stop.is_set():
            if self._queue.full():
                time.sleep(FULL_QUEUE_WAIT_S)  # back-pressure: leave it to ZMQ's high-water mark
                continue
            if tokens < 1.0:
                now = time.monotonic()
                tokens = min(self._max_rate, tokens + (now - refilled_at) * self._max_rate)
                refilled_at = now
                if tokens < 1.0:
                    time.sleep((1.0 - tokens) / self._max_rate)
                    continue
            try:
                if not dict(poller.poll(POLL_INTERVAL_MS)):
                    continue
                data = self._socket.recv(zmq.NOBLOCK)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                log.exception("saga control channel receive failed")
                continue
            tokens -= 1.0
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

    def drain(self, limit: int) -> list[ControlMessage]:
        """Up to ``limit`` messages received so far, in arrival order (scheduler thread)."""
        messages: list[ControlMessage] = []
        while len(messages) < limit:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return messages

    def pending(self) -> int:
        """Decoded messages waiting for the scheduler."""
        return self._queue.qsize()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
