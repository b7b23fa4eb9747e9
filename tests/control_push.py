"""Send control messages to a worker plugin's PULL socket, as the router's channel does (plain ZMQ).

Import as ``from control_push import push_control`` (``tests/`` is on sys.path via its conftest)."""

from __future__ import annotations

import time
from typing import Any


def push_control(address: str, *messages: bytes, linger_ms: int = 2000) -> None:
    """Connect a PUSH socket, send ``messages`` in order, and close once they are flushed."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.connect(address)
    for message in messages:
        sock.send(message)
    sock.close()


def wait_applied(runtime: Any, count: int, timeout_s: float = 10.0) -> None:
    """Drain the plugin ``runtime`` until it has applied ``count`` control hint updates (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runtime.drain()
        if runtime.metrics.value("hint_updates", source="control") >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"control messages not applied: {runtime.metrics.snapshot()}")
