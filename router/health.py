"""Worker health: probing at registration, periodic checks with back-off, passive failure reports.

A worker is taken out after ``failure_threshold`` failed checks in a row, or at once when a
forwarded request cannot even connect to it (a dead process refuses connections; waiting three
check intervals would route more calls into the void). While out it is checked again after a
back-off that starts at ``MIN_BACKOFF_S`` and doubles up to the check interval; it is re-admitted
after ``success_threshold`` good checks in a row (sglang-router's thresholds and defaults).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from saga_sgl.clock import Clock

from .workers import WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.25
TICK_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    failure_threshold: int = 3
    success_threshold: int = 2
    timeout_s: float = 5.0
    interval_s: float = 60.0
    endpoint: str = "/health"
    disabled: bool = False


class HealthMonitor:
    def __init__(
        self,
        registry: WorkerRegistry,
        session: aiohttp.ClientSession,
        settings: HealthSettings,
        clock: Clock,
        on_change: Callable[[WorkerRecord, bool], Awaitable[None]],
    ) -> None:
        self._registry = registry
        self._session = session
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._checking: set[str] = set()
        self._last_check_s: dict[str, float] = {}
        """When the previous check of each worker (by id) began."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def probe(self, record: WorkerRecord) -> bool:
        """One GET of the health endpoint; True on a 200 within the timeout."""
        try:
            async with self._session.get(
                record.url + self._settings.endpoint,
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def check(self, record: WorkerRecord) -> None:
        """One health check. A failed probe of a worker that answered a forwarded call since the
        previous check began counts as good: SGLang's ``/health`` waits for the scheduler's next
        output, so a worker busy with a long pre-fill (seconds on a CPU, or a long batch on a GPU)
        times the probe out while serving. Taking it out would re-place its workflows away from
        their KV (measured live: 4 workflows moved, 600-1,500 tokens rebuilt each)."""
        if record.id in self._checking:
            return
        self._checking.add(record.id)
        started = self._clock.now_s()
        since = self._last_check_s.get(record.id, started)
        self._last_check_s[record.id] = started
        try:
            ok = await self.probe(record)
            if not ok and record.last_answer_s is not None and record.last_answer_s >= since:
                log.info("worker %s: health probe failed but a call came back meanwhile: busy, not dead",
                         record.url)
                ok = True
            await self.record_result(record, ok)
        finally:
            self._checking.discard(record.id)

    async def record_result(self, record: WorkerRecord, ok: bool) -> None:
        s = self._settings
        now = self._clock.now_s()
        if ok:
            record.consecutive_failures = 0
            record.consecutive_successes += 1
            record.backoff_s = 0.0
            record.next_check_s = now + s.interval_s
            if not record.healthy and record.consecutive_successes >= s.success_threshold:
                record.healthy = True
                log.info("worker %s healthy again after %d good checks: re-admitted", record.url,
                         record.consecutive_successes)
                await self._on_change(record, True)
            return
        record.consecutive_successes = 0
        record.consecutive_failures += 1
        if record.healthy and record.consecutive_failures >= s.failure_threshold:
            await self.take_out(record, f"{record.consecutive_failures} failed health checks")
        else:
            self._back_off(record, now)

    async def take_out(self, record: WorkerRecord, why: str) -> None:
        """Mark ``record`` unhealthy now (passive detection or failed checks) and schedule re-checks."""
        self._back_off(record, self._clock.now_s())
        record.consecutive_successes = 0
        if record.healthy:
            record.healthy = False
            log.warning("worker %s taken out: %s", record.url, why)
            await self._on_change(record, False)

    def _back_off(self, record: WorkerRecord, now: float) -> None:
        record.backoff_s = min(self._settings.interval_s, max(MIN_BACKOFF_S, record.backoff_s * 2))
        record.next_check_s = now + record.backoff_s

    async def run(self) -> None:
        if self._settings.disabled:
            return
        while True:
            now = self._clock.now_s()
            for record in self._registry:
                if record.ready and not record.disable_health_check and record.next_check_s <= now:
                    task = asyncio.ensure_future(self.check(record))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(TICK_S)
