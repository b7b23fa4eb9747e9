"""/flush_cache: SGLang refuses a flush while any request is pending, the router's own health-check
generations included; the router asks again briefly. A loopback aiohttp server stands in for the
worker (named fake; the live drop-in test flushes real workers)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from saga_router.app import FLUSH_TRIES, SERVICE_KEY, flush_cache
from saga_router.router_config import RouterConfig
from saga_router.service import RouterService

from .conftest import start_app


def _flush_through_router(refusals: int) -> tuple[int, dict[str, object], int]:
    async def main() -> tuple[int, dict[str, object], int]:
        calls = 0

        async def worker_flush(_: web.Request) -> web.Response:
            nonlocal calls
            calls += 1
            if calls <= refusals:
                return web.Response(status=400, text="Cache not flushed because there are pending requests.")
            return web.Response(status=200, text="Cache flushed.")

        worker = web.Application()
        worker.router.add_post("/flush_cache", worker_flush)
        runner, url = await start_app(worker)
        service = RouterService(RouterConfig())
        service.session = aiohttp.ClientSession()
        record = service.registry.add(url)
        record.ready = record.healthy = True
        app = web.Application()
        app[SERVICE_KEY] = service
        try:
            resp = await flush_cache(make_mocked_request("POST", "/flush_cache", app=app))
            assert isinstance(resp, web.Response) and resp.body is not None
            return resp.status, json.loads(bytes(resp.body)), calls  # type: ignore[arg-type]
        finally:
            await service.session.close()
            await service.upstream.close()
            await runner.cleanup()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_a_flush_refused_for_a_pending_request_is_asked_again() -> None:
    status, body, calls = _flush_through_router(refusals=2)
    assert (status, body["workers_flushed"], calls) == (200, 1, 3)


def test_a_worker_that_keeps_refusing_is_reported_as_failed() -> None:
    status, body, calls = _flush_through_router(refusals=100)
    assert (status, body["workers_flushed"], calls) == (207, 0, FLUSH_TRIES)
    assert body["status"] == "partial_success"
