"""A worker busy serving is not taken out for health probes that time out.

SGLang's ``/health`` waits for the scheduler's next output, so a CPU worker in a long pre-fill times
the probe out while it serves calls (live benchmark: a worker taken out for 11 s, 4 workflows moved
away from their KV). The worker here is a stand-in HTTP server whose ``/health`` never answers in
time (what SGLang does while busy); the calls it "serves" are the router's record of answers.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from saga_router.health import HealthMonitor, HealthSettings
from saga_router.workers import WorkerRecord, WorkerRegistry

from saga_sgl.clock import SystemClock

from .conftest import start_app


async def _slow_health(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def _run(answer_while_probing: bool) -> tuple[bool, list[bool]]:
    app = web.Application()
    app.router.add_get("/health", _slow_health)
    runner, url = await start_app(app)
    clock = SystemClock()
    registry = WorkerRegistry()
    record: WorkerRecord = registry.add(url, ready=True, healthy=True)
    changes: list[bool] = []

    async def on_change(_: WorkerRecord, healthy: bool) -> None:
        changes.append(healthy)

    try:
        async with aiohttp.ClientSession() as session:
            settings = HealthSettings(failure_threshold=2, timeout_s=0.2, interval_s=60.0)
            monitor = HealthMonitor(registry, session, settings, clock, on_change)
            for _ in range(3):
                check = asyncio.ensure_future(monitor.check(record))
                if answer_while_probing:
                    await asyncio.sleep(0.05)
                    record.last_answer_s = clock.now_s()  # a forwarded call came back meanwhile
                await check
    finally:
        await runner.cleanup()
    return record.healthy, changes


def test_timed_out_probes_of_a_worker_that_answers_calls_do_not_take_it_out() -> None:
    healthy, changes = asyncio.run(_run(answer_while_probing=True))
    assert healthy and changes == []


def test_timed_out_probes_of_a_worker_that_answers_nothing_take_it_out() -> None:
    healthy, changes = asyncio.run(_run(answer_while_probing=False))
    assert not healthy and changes == [False]
