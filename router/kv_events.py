"""Subscribe to one worker's KV events (SGLang 0.5.23 ZMQ publisher) and keep its exact index.

Frames are ``[topic, seq (8-byte big-endian), msgpack [ts, [events], dp_rank]]`` with ``seq``
0, 1, 2, ... A new subscriber first replays the worker's history. One that loses messages (PUB
high-water mark, slow joiner) sees a gap in ``seq``. Then the index is resynchronised: replayed
from the worker's replay endpoint when it has one (ROUTER socket, request = start seq, answer ends
with seq -1), else cleared, because an index that misses removals over-promises cache hits, while
an empty one only under-promises until the next requests rebuild it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from .kv_index import ExactPrefixIndex

log = logging.getLogger(__name__)

END_SEQ = -1
REPLAY_TIMEOUT_S = 2.0

_decoder = msgspec.msgpack.Decoder()


class KvEventSubscriber:
    def __init__(
        self,
        *,
        worker: str,
        endpoint: str,
        topic: str,
        index: ExactPrefixIndex,
        replay_endpoint: str | None = None,
        on_gap: Callable[[str], None] | None = None,
        on_batch: Callable[[], None] | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.worker = worker
        self.endpoint = endpoint
        self.topic = topic
        self.index = index
        self.replay_endpoint = replay_endpoint
        self._on_gap = on_gap
        self._on_batch = on_batch
        """Called after each applied batch (the catalog reconciles its routed-prompt overlay)."""
        self._context = context or zmq.asyncio.Context.instance()
        self.last_seq: int | None = None
        self.caught_up = asyncio.Event()
        """Set once the worker's history (its replay buffer) is applied: placements before it would
        read a half-replayed index (live: a fresh router placed a run's first agents on a worker
        whose flush it had not replayed yet, seeing a previous run's prompt head cached there)."""
        self.batches = 0
        self.gaps = 0
        self.resyncs_by_replay = 0

    async def run(self) -> None:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        sock.connect(self.endpoint)
        log.info("worker %s: subscribed to KV events at %s", self.worker, self.endpoint)
        try:
            if self.replay_endpoint is not None:
                await self._catch_up()
        finally:
            self.caught_up.set()  # also when the catch-up failed: nobody waits on a dead subscriber
        try:
            while True:
                frames = await sock.recv_multipart()
                if len(frames) != 3:
                    log.warning("worker %s: KV event with %d frames ignored", self.worker, len(frames))
                    continue
                seq = int.from_bytes(frames[1], "big", signed=True)
                await self.receive(seq, frames[2])
        finally:
            sock.close(linger=0)

    async def receive(self, seq: int, payload: bytes) -> None:
        expected = 0 if self.last_seq is None else self.last_seq + 1
        if seq < expected:
            return  # already applied (replayed)
        if seq > expected:
            await self._resync(expected, seq)
        self._apply(payload)
        self.last_seq = seq

    def _apply(self, payload: bytes) -> None:
        batch: Any = _decoder.decode(payload)
        events = batch[1] if isinstance(batch, list) and len(batch) >= 2 else []
        for event in events:
            if isinstance(event, dict):
                self.index.apply(event)
        stamp = batch[0] if isinstance(batch, list) and batch else None
        if isinstance(stamp, (int, float)):
            self.index.published_at_s = max(float(stamp), self.index.published_at_s or 0.0)
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch()

    async def _resync(self, expected: int, got: int) -> None:
        self.gaps += 1
        if self._on_gap is not None:
            self._on_gap(self.worker)
        if self.replay_endpoint is not None and await self._replay(expected, got):
            self.resyncs_by_replay += 1
            log.info("worker %s: KV events %d..%d replayed", self.worker, expected, got - 1)
            return
        log.warning(
            "worker %s: KV events %d..%d missed and not replayable; prefix index cleared "
            "(it under-reports that worker's cache until new requests rebuild it)",
            self.worker, expected, got - 1,
        )
        self.index.clear()

    async def _catch_up(self) -> None:
        """A new subscriber learns the worker's history from its replay buffer at once, instead of
        at the first live event (until then its index would be empty)."""
        if await self._replay(0, None):
            log.info("worker %s: KV event history replayed up to %s", self.worker, self.last_seq)
        else:
            log.warning("worker %s: KV event history not fully replayable; index starts partial", self.worker)

    async def _replay(self, start: int, stop: int | None) -> bool:
        """Apply batches start..stop-1 (stop None: all buffered) from the replay endpoint; False when
        it cannot supply them from ``start`` on (batches it did supply stay applied)."""
        assert self.replay_endpoint is not None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.replay_endpoint)
        next_seq = start
        try:
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            while True:
                frames = await asyncio.wait_for(sock.recv_multipart(), REPLAY_TIMEOUT_S)
                if len(frames) != 4:
                    return False
                seq = int.from_bytes(frames[2], "big", signed=True)
                if seq == END_SEQ:
                    return stop is None or next_seq >= stop
                if seq != next_seq and stop is not None:
                    return False  # the replay buffer no longer reaches back to `start`
                complete = seq == next_seq
                if stop is None or seq < stop:
                    self._apply(frames[3])
                    self.last_seq = seq
                if not complete:
                    log.warning("worker %s: replay buffer starts at %d, not %d", self.worker, seq, start)
                    start = seq  # history before it is gone; what follows is applied
                next_seq = seq + 1
        except TimeoutError:
            return False
        finally:
            sock.close(linger=0)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
