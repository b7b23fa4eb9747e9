"""The router polls /v1/loads only for policies that read it.

The baselines place on the router's own in-flight counts (as sglang-router does); polling every
50 ms cost each live CPU worker ~1.6 ms of CPU per poll (3% of a core) for nothing. The worker here
is the router's NAMED FAKE backend (``saga_router.fake_backend``), counting the polls it answers.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from saga_router.fake_backend import build_app
from saga_router.router_config import RouterConfig
from saga_router.service import RouterService

from .conftest import start_app


async def _polls(policy: str) -> int:
    app = build_app()
    count = 0

    @web.middleware
    async def counting(request: web.Request, handler):  # type: ignore[no-untyped-def]
        nonlocal count
        if request.path == "/v1/loads":
            count += 1
        return await handler(request)

    app.middlewares.append(counting)
    runner, url = await start_app(app)
    service = RouterService(RouterConfig(policy=policy, worker_urls=(url,), kv_events=False))
    try:
        await service.start()
        for _ in range(200):  # until the worker is admitted (bounded)
            if service.registry.routable():
                break
            await asyncio.sleep(0.05)
        assert service.registry.routable()
        await asyncio.sleep(0.5)
    finally:
        await service.stop()
        await runner.cleanup()
    return count


@pytest.mark.parametrize("policy", ["cache_aware", "round_robin", "consistent_hash"])
def test_baselines_do_not_poll_worker_loads(policy: str) -> None:
    assert asyncio.run(_polls(policy)) == 0


def test_saga_polls_worker_loads() -> None:
    assert asyncio.run(_polls("saga")) >= 3  # 50 ms period over 0.5 s
