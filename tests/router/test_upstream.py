"""saga_router.upstream, the proxy's pooled HTTP/1.1 client, against real aiohttp servers on loopback.

The servers here are aiohttp web apps in the test's own event loop (a real HTTP server, not a mock of
one); what they answer is chosen per test: a JSON answer, a slow SSE stream, a connection that dies.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from saga_router.upstream import UpstreamClient, UpstreamDisconnected

from .conftest import start_app

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def serve(handler: Handler, **server_kwargs: float) -> AsyncIterator[tuple[str, list[int]]]:
    """An aiohttp server on a free loopback port; yields (base URL, client ports seen per request)."""
    peers: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner, url = await start_app(app, **server_kwargs)
    try:
        yield url, peers
    finally:
        await runner.cleanup()


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    key = request.headers.get("X-SMG-Routing-Key", "")
    return web.json_response({"path": request.path, "len": len(body), "key": key, "body": body.decode()})


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def test_answers_come_back_whole_and_connections_are_reused() -> None:
    async def main() -> None:
        async with serve(echo) as (base, peers):
            client = UpstreamClient()
            for i in range(5):
                body = b'{"n": %d}' % i + b" " * (40000 * (i % 2))  # one write and a split write
                resp = await client.post(base, "/generate", body, JSON, 10.0)
                assert resp.status == 200
                assert resp.content_type == "application/json"
                answer = await resp.read()
                assert b'"path": "/generate"' in answer
                assert f'"len": {len(body)}'.encode() in answer
                resp.release()
            assert len(set(peers)) == 1, "a kept-alive connection serves every call"
            got = await client.get(base, "/v1/loads?include=core", 10.0)
            assert b'"path": "/v1/loads"' in await got.read() and got.status == 200
            prefixed = await client.post(base + "/w1/", "/generate", b"{}", JSON, 10.0)
            assert b'"path": "/w1/generate"' in await prefixed.read(), "a worker URL's path is kept"
            await client.close()

    run(main())


def test_concurrent_calls_use_separate_connections() -> None:
    async def main() -> None:
        async def slow(request: web.Request) -> web.Response:
            await request.read()
            await asyncio.sleep(0.05)
            return web.json_response({"ok": True})

        async with serve(slow) as (base, peers):
            client = UpstreamClient()
            resps = await asyncio.gather(*(client.post(base, "/x", b"{}", JSON, 10.0) for _ in range(4)))
            bodies = await asyncio.gather(*(r.read() for r in resps))
            assert all(b == b'{"ok": true}' for b in bodies)
            assert len(set(peers)) == 4
            await client.close()

    run(main())


def test_header_values_cannot_inject_headers() -> None:
    async def main() -> None:
        async with serve(echo) as (base, _):
            client = UpstreamClient()
            headers = {**JSON, "X-SMG-Routing-Key": "wf\r\nX-Evil: 1"}
            resp = await client.post(base, "/generate", b"{}", headers, 10.0)
            answer = await resp.read()
            assert resp.status == 200
            assert b'"key": "wfX-Evil: 1"' in answer
            await client.close()

    run(main())


def test_sse_chunks_are_handed_on_as_they_arrive() -> None:
    """Unbuffered: the first event is read while the server still holds back the second."""

    async def main() -> None:
        second = asyncio.Event()

        async def stream(request: web.Request) -> web.StreamResponse:
            await request.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: one\n\n")
            await second.wait()
            await response.write(b"data: two\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response

        async with serve(stream) as (base, peers):
            client = UpstreamClient()
            resp = await client.post(base, "/generate", b'{"stream": true}', JSON, 10.0)
            assert resp.content_type == "text/event-stream"
            first = await asyncio.wait_for(resp.content.readany(), 10)
            assert first == b"data: one\n\n"
            second.set()
            rest = b""
            while chunk := await resp.content.readany():
                rest += chunk
            assert rest == b"data: two\n\ndata: [DONE]\n\n"
            # The chunked answer ended cleanly: its connection serves the next call.
            resp2 = await client.post(base, "/generate", b"{}", JSON, 10.0)
            await resp2.read()
            assert len(set(peers)) == 1
            await client.close()

    run(main())


def test_error_statuses_pass_through() -> None:
    async def main() -> None:
        async def bad(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"error": "nope"}, status=503)

        async with serve(bad) as (base, _):
            client = UpstreamClient()
            resp = await client.post(base, "/generate", b"{}", JSON, 10.0)
            assert resp.status == 503
            assert await resp.read() == b'{"error": "nope"}'
            await client.close()

    run(main())


def test_unreachable_worker_is_an_oserror() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: connection refused
            client = UpstreamClient()
            with pytest.raises(OSError):
                await client.post(f"http://127.0.0.1:{port}", "/generate", b"{}", JSON, 10.0)
            await client.close()

    run(main())


def test_a_worker_dying_mid_answer_is_a_connection_error() -> None:
    async def main() -> None:
        async def dies(request: web.Request) -> web.StreamResponse:
            await request.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: one\n\n")
            assert request.transport is not None
            request.transport.abort()
            return response

        async with serve(dies) as (base, _):
            client = UpstreamClient()
            resp = await client.post(base, "/generate", b"{}", JSON, 10.0)
            assert await resp.content.readany() == b"data: one\n\n"
            with pytest.raises(ConnectionError) as caught:
                await resp.read()
            assert isinstance(caught.value, UpstreamDisconnected) and caught.value.after_bytes
            await client.close()

    run(main())


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def hangs(request: web.Request) -> web.Response:
            await request.read()
            if request.path == "/hang":
                await release.wait()
            return web.json_response({"path": request.path})

        async with serve(hangs) as (base, peers):
            client = UpstreamClient()
            with pytest.raises(TimeoutError):
                await client.post(base, "/hang", b"{}", JSON, 0.2)
            release.set()
            resp = await client.post(base, "/after", b"{}", JSON, 10.0)
            assert await resp.read() == b'{"path": "/after"}', "the late answer went nowhere"
            assert len(set(peers)) == 2
            await client.close()

    run(main())


def test_a_kept_alive_connection_the_worker_closed_is_replaced() -> None:
    async def main() -> None:
        async with serve(echo, keepalive_timeout=0.05) as (base, peers):
            client = UpstreamClient()
            await (await client.post(base, "/a", b"{}", JSON, 10.0)).read()
            # Wait until the server has closed the idle connection (bounded, on the condition).
            for _ in range(200):
                pool = next(iter(client._pools.values()))
                if not pool.idle or pool.idle[0].closed:
                    break
                await asyncio.sleep(0.01)
            resp = await client.post(base, "/b", b"{}", JSON, 10.0)
            assert resp.status == 200 and b'"/b"' in await resp.read()
            assert len(set(peers)) == 2
            await client.close()

    run(main())


def test_a_stream_that_stalls_past_the_deadline_is_a_timeout() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def stalls(request: web.Request) -> web.StreamResponse:
            await request.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: one\n\n")
            await release.wait()
            return response

        async with serve(stalls) as (base, _):
            client = UpstreamClient()
            resp = await client.post(base, "/generate", b"{}", JSON, 0.5)
            assert await resp.content.readany() == b"data: one\n\n"
            with pytest.raises(TimeoutError):
                await resp.content.readany()
            release.set()
            await client.close()

    run(main())
