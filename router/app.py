"""The HTTP surface: sglang-router 0.3.2's routes and JSON shapes, plus ``/saga/events`` and ``/metrics``.

Handlers parse, call :class:`~saga_router.service.RouterService`, and shape the answer; nothing
here decides where a call goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from saga_sgl.errors import MalformedMessage, UnknownWorkflow
from saga_sgl.protocol import CLIENT_EVENTS_PATH, AegSubmission, decode_client_event

from .router_config import RouterConfig
from .service import RouterService, _error
from .telemetry import CONTENT_TYPE

log = logging.getLogger(__name__)

SERVICE_KEY: web.AppKey[RouterService] = web.AppKey("service", RouterService)

OPEN_PATHS = frozenset({"/health", "/liveness", "/readiness", "/metrics"})
"""Paths answered without the API key (probes and scraping)."""

PROXY_TIMEOUT = aiohttp.ClientTimeout(total=60)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(config: RouterConfig, service: RouterService | None = None) -> web.Application:
    service = service or RouterService(config)
    app = web.Application(
        client_max_size=config.max_payload_size,
        middlewares=[_api_key_middleware(config.api_key)] if config.api_key else [],
    )
    app[SERVICE_KEY] = service

    async def on_startup(_: web.Application) -> None:
        await service.start()

    async def on_cleanup(_: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    r = app.router
    for route in ("/generate", "/v1/completions", "/v1/chat/completions"):
        r.add_post(route, _forwarder(route))
    r.add_get("/health", _ok)
    r.add_get("/liveness", _ok)
    r.add_get("/readiness", readiness)
    r.add_get("/health_generate", _proxy_get("/health_generate"))
    r.add_get("/v1/models", _proxy_get("/v1/models"))
    r.add_get("/get_model_info", _proxy_get("/get_model_info"))
    r.add_get("/model_info", _proxy_get("/model_info"))
    r.add_get("/get_server_info", get_server_info)
    r.add_get("/server_info", get_server_info)
    r.add_get("/get_loads", get_loads)
    r.add_post("/flush_cache", flush_cache)
    r.add_get("/workers", list_workers)
    r.add_post("/workers", add_worker)
    r.add_get("/workers/{worker_id}", get_worker)
    r.add_delete("/workers/{worker_id}", delete_worker)
    r.add_get("/metrics", metrics)
    r.add_post(CLIENT_EVENTS_PATH, client_event)
    return app


def _api_key_middleware(api_key: str) -> Any:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return await handler(request)

    return check


def _forwarder(route: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[SERVICE_KEY].forward(request, route)

    return handle


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def readiness(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    healthy = len(service.registry.routable())
    total = len(service.registry)
    body = {"status": "ready" if healthy else "not ready", "healthy_workers": healthy, "total_workers": total}
    return web.json_response(body, status=200 if healthy else 503)


def _proxy_get(path: str) -> Handler:
    """GET ``path`` from the first healthy worker (sglang-router proxies these the same way)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        service = request.app[SERVICE_KEY]
        workers = service.registry.routable()
        if not workers or service.session is None:
            return _error(503, "no healthy worker")
        try:
            async with service.session.get(workers[0].url + path, timeout=PROXY_TIMEOUT) as resp:
                data = await resp.read()
                return web.Response(body=data, status=resp.status, content_type=resp.content_type)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _error(502, f"worker {workers[0].url} failed: {type(exc).__name__}")

    return handle


async def get_server_info(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(
        {
            "router_manager": True,
            "routers_count": 1,
            "workers_count": len(service.registry),
            "policy": service.host.name,
            "vocab_size": service.vocab_size,
            "exact_prefix_index": {r.url: r.kv_events_exact for r in service.registry},
            "routed_not_published": {r.url: service.prefixes.pending(r.worker_id) for r in service.registry},
            "prefix_lag": dataclasses.asdict(service.prefixes.lag),
        }
    )


async def get_loads(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response({"workers": [{"worker": r.url, "load": r.inflight} for r in service.registry]})


FLUSH_TRIES = 5
FLUSH_RETRY_S = 0.1
"""A worker that refused a flush (requests pending) is asked again this often, this far apart."""


async def flush_cache(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    workers = service.registry.routable()
    assert service.session is not None

    async def flush(url: str) -> bool:
        assert service.session is not None
        # SGLang refuses (400) while any request is pending, the router's own health-check
        # generations and pre-fills included: those end within a forward pass, so try again briefly.
        for attempt in range(FLUSH_TRIES):
            try:
                async with service.session.post(url + "/flush_cache", timeout=PROXY_TIMEOUT) as resp:
                    await resp.read()
                    if resp.status != 400 or attempt == FLUSH_TRIES - 1:
                        return resp.status == 200
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False
            await asyncio.sleep(FLUSH_RETRY_S)
        return False

    results = await asyncio.gather(*(flush(w.url) for w in workers))
    flushed = sum(results)
    failed = [w.url for w, ok in zip(workers, results, strict=True) if not ok]
    body: dict[str, Any] = {
        "status": "success" if not failed else "partial_success",
        "message": f"Successfully flushed cache on {flushed} of {len(workers)} workers",
        "workers_flushed": flushed,
    }
    if failed:
        body["failed_workers"] = failed
    return web.json_response(body, status=200 if not failed else 207)


async def list_workers(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    workers = [r.as_json() for r in service.registry]
    return web.json_response(
        {
            "workers": workers,
            "total": len(workers),
            "stats": {"prefill_count": 0, "decode_count": 0, "regular_count": len(workers)},
        }
    )


async def add_worker(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        body = await request.json(loads=msgspec.json.decode)
    except (msgspec.DecodeError, ValueError):
        return _error(400, "malformed JSON")
    if not isinstance(body, dict):
        return _error(422, "expected a JSON object with 'url'")
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _error(422, "missing or invalid field 'url' (an http(s) URL)")
    if service.registry.by_url(url) is not None:
        return _error(409, f"worker {url} is already registered")
    fields: dict[str, Any] = {}
    for key, kind in (("priority", int), ("cost", float)):
        if key in body:
            if not isinstance(body[key], int | float):
                return _error(422, f"'{key}' must be a number")
            fields[key] = kind(body[key])
    if isinstance(body.get("labels"), dict):
        fields["metadata"] = {str(k): str(v) for k, v in body["labels"].items()}
    if "disable_health_check" in body:
        fields["disable_health_check"] = bool(body["disable_health_check"])
    record = service.add_worker(url, **fields)
    log.info("worker %s registered through the API as %s", record.url, record.id)
    return web.json_response(
        {
            "status": "accepted",
            "worker_id": record.id,
            "url": record.url,
            "location": f"/workers/{record.id}",
            "message": f"Worker {record.url} registration accepted; it takes traffic once healthy",
        },
        status=202,
    )


def _worker_id(request: web.Request) -> str | web.Response:
    raw = request.match_info["worker_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return _error(400, f"invalid worker id {raw!r}: expected a UUID")


async def get_worker(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    worker_id = _worker_id(request)
    if isinstance(worker_id, web.Response):
        return worker_id
    record = service.registry.get(worker_id)
    if record is None:
        return _error(404, f"worker {worker_id} not found")
    body = record.as_json()
    body["job_status"] = {"state": "ready" if record.ready else "pending", "healthy": record.takes_traffic}
    return web.json_response(body)


async def delete_worker(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    worker_id = _worker_id(request)
    if isinstance(worker_id, web.Response):
        return worker_id
    record = await service.remove_worker(worker_id)
    if record is None:
        return _error(404, f"worker {worker_id} not found")
    return web.json_response(
        {"status": "accepted", "worker_id": worker_id, "message": f"Worker {record.url} removal accepted"},
        status=202,
    )


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    lag = service.prefixes.lag
    service.metrics.prefix_lookups.labels("all").set(lag.lookups)
    service.metrics.prefix_lookups.labels("stale").set(lag.stale_lookups)
    service.metrics.prefix_stale_tokens.set(lag.stale_tokens)
    return web.Response(body=service.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


async def client_event(request: web.Request) -> web.Response:
    """One ``saga_sgl.protocol.ClientEvent`` per POST: tool started/finished, workflow finished, AEG."""
    service = request.app[SERVICE_KEY]
    raw = await request.read()
    try:
        event = decode_client_event(raw)
    except MalformedMessage as exc:
        service.metrics.bad_requests.labels(CLIENT_EVENTS_PATH).inc()
        return _error(400, str(exc))
    if not isinstance(event, AegSubmission) and not service.host.knows(event.workflow_id):
        service.metrics.bad_requests.labels(CLIENT_EVENTS_PATH).inc()
        return _error(404, f"unknown workflow {event.workflow_id!r}: no call of it reached this router")
    try:
        service.host.client_event(event, service.clock.now_s())
    except UnknownWorkflow as exc:
        return _error(404, f"unknown workflow: {exc}")
    return web.json_response({"status": "accepted"}, status=202)
