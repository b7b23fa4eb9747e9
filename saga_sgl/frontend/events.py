"""Out-of-band client events to the router: ``POST /saga/events``, one JSON event per body.

Sent from one background thread so that a program never waits on them. Fire and forget: an event
that cannot be delivered is dropped and counted, never retried (a retry storm against a struggling
router is worse than a missing hint). A server without the endpoint (a plain SGLang worker, the
stock sglang-router) answers 404/405: the sink logs that once and stops sending. The saga router
answers 404 naming the workflow when it does not know the workflow yet: that event is dropped, the
endpoint stays on.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from saga_sgl.protocol import CLIENT_EVENTS_PATH, ClientEvent, encode_client_event

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024
"""Events waiting to be sent; beyond it new events are dropped (counted)."""
DEFAULT_TIMEOUT_S = 2.0


@dataclass(slots=True)
class SinkStats:
    sent: int = 0
    dropped_full: int = 0
    """Dropped because the queue was full."""
    failed: int = 0
    """Dropped after a transport error or an error status."""
    skipped: int = 0
    """Not sent because the server has no events endpoint."""


class EventSink:
    """Posts client events to ``<base_url>/saga/events`` from a daemon thread."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = base_url.rstrip("/") + CLIENT_EVENTS_PATH
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.stats = SinkStats()
        self.supported: bool | None = None
        """None until the first answer; False once the server said it has no such endpoint."""
        self._queue: queue.Queue[ClientEvent | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._warned_failure = False

    def emit(self, event: ClientEvent) -> None:
        """Queue ``event`` for sending; never blocks, never raises."""
        if self.supported is False:
            self.stats.skipped += 1
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.dropped_full += 1

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was handled (sent or dropped); False on timeout."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True, name="saga-events-flush").start()
        return done.wait(timeout_s)

    def close(self) -> None:
        """Stop the sender thread after the queued events."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(None, timeout=self.timeout_s)
            except queue.Full:
                return
            self._thread.join(self.timeout_s * 2)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="saga-events")
                self._thread.start()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                if self.supported is False:
                    self.stats.skipped += 1
                else:
                    self._send(event)
            finally:
                self._queue.task_done()

    def _send(self, event: ClientEvent) -> None:
        headers = {"Content-Type": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.url, data=encode_client_event(event), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
            self.supported = True
            self.stats.sent += 1
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code in (404, 405) and b"workflow" in body:
                # The saga router's own 404: the endpoint exists, this workflow is unknown to it.
                self.supported = True
                self._failed(f"HTTP {exc.code}: {body[:200]!r}")
                return
            if exc.code in (404, 405) and self.supported is not True:
                self.supported = False
                self.stats.skipped += 1
                log.info("%s answered %d: no saga router here; client events are off", self.url, exc.code)
                return
            self._failed(f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            self._failed(str(exc))

    def _failed(self, why: str) -> None:
        self.stats.failed += 1
        if not self._warned_failure:
            self._warned_failure = True
            log.warning("client event to %s dropped (%s); further failures are only counted", self.url, why)
