"""NAMED REFERENCE PROXIES for ``router_overhead.py``: not routers, only the cost floor of a stack.

Each forwards ``POST /generate`` round-robin to the backends and returns the answer, with no
parsing of the body, no scheduling, no metrics. What a row of these costs is what any router built
on that stack pays before doing any work of its own:

* ``aiohttp``: aiohttp's web server and its ``ClientSession`` (the stack of the saga router before
  this benchmark's work);
* ``aiohttp-server+upstream``: aiohttp's web server and ``saga_router.upstream`` (the stack now);
* ``raw``: an ``asyncio.Protocol`` server with httptools' request parser and ``saga_router.upstream``
  under uvloop: about the least Python can do per proxied HTTP/1.1 request.

    python benchmarks/_proxy_floor.py --stack raw --port P --backends http://127.0.0.1:B ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any, cast

import httptools
import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from saga_router.upstream import UpstreamClient

from saga_sgl.local_workers import TINY_MODEL_DIR

_JSON = {"Content-Type": "application/json"}


def _aiohttp_app(backends: list[str], own_client: bool) -> web.Application:
    turn = itertools.cycle(backends)
    state: dict[str, Any] = {}

    async def start(_: web.Application) -> None:
        state["session"] = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
        state["upstream"] = UpstreamClient()

    async def generate(request: web.Request) -> web.Response:
        body = await request.read()
        base = next(turn)
        if own_client:
            up = await state["upstream"].post(base, "/generate", body, _JSON, 60.0)
            data = await up.read()
            return web.Response(body=data, status=up.status, content_type=up.content_type)
        async with state["session"].post(
            base + "/generate", data=body, headers=_JSON, timeout=ClientTimeout(total=60)
        ) as resp:
            data = await resp.read()
            return web.Response(body=data, status=resp.status, content_type=resp.content_type)

    async def readiness(_: web.Request) -> web.Response:
        return web.json_response({"healthy_workers": len(backends)})

    app = web.Application()
    app.on_startup.append(start)
    app.router.add_post("/generate", generate)
    app.router.add_get("/readiness", readiness)
    return app


class _RawServer(asyncio.Protocol):
    """HTTP/1.1 keep-alive server: httptools parses, the handler forwards, nothing else."""

    def __init__(self, upstream: UpstreamClient, turn: itertools.cycle[str], ready: bytes) -> None:
        self._upstream = upstream
        self._turn = turn
        self._ready = ready
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url = url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        task = asyncio.ensure_future(self._answer(self._url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, url: bytes, body: bytes) -> None:
        assert self._transport is not None
        if url.startswith(b"/readiness"):
            status, data, kind = 200, self._ready, "application/json"
        else:
            up = await self._upstream.post(next(self._turn), "/generate", body, _JSON, 60.0)
            status, data, kind = up.status, await up.read(), up.content_type
        self._transport.write(
            b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, kind.encode(), len(data), data)
        )


async def _serve_raw(port: int, backends: list[str]) -> None:
    upstream = UpstreamClient()
    turn = itertools.cycle(backends)
    ready = b'{"healthy_workers": %d}' % len(backends)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RawServer(upstream, turn, ready), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--stack",
        choices=("aiohttp", "aiohttp-server+upstream", "raw"),
        required=True,
        help="which reference proxy to run",
    )
    p.add_argument("--port", type=int, required=True, help="port to bind on 127.0.0.1")
    p.add_argument("--backends", nargs="+", required=True, help="backend base URLs, used round-robin")
    args = p.parse_args()
    assert TINY_MODEL_DIR  # same import cost as the router, so start-up is alike
    uvloop.install()
    try:
        if args.stack == "raw":
            asyncio.run(_serve_raw(args.port, args.backends))
        else:
            app = _aiohttp_app(args.backends, own_client=args.stack != "aiohttp")
            web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
