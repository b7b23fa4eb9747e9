"""The proxy's client to the workers: pooled keep-alive HTTP/1.1 connections, parsed by httptools.

Why not aiohttp's ``ClientSession`` for this one call: the profile of ``benchmarks/router_overhead.py``
put about a third of the router's CPU per proxied request into it (request building, tracing hooks,
cookie jar, timers, stream readers). Forwarding a body to a known worker needs none of that: a
connection from a pool, one write, and httptools (the parser under uvicorn) for the answer. Probes,
health checks and pre-fills still use aiohttp; they are not per request.

:class:`UpstreamResponse` has the small part of ``aiohttp.ClientResponse`` the forwarder uses
(``status``, ``content_type``, ``read()``, ``content.readany()``, ``release()``). Errors are the
built-in ones the forwarder already handles: ``OSError``/``ConnectionError`` when the worker cannot
be reached or drops the connection, ``TimeoutError`` when it does not answer in time. Streamed bodies
are handed on chunk by chunk as they arrive (never buffered to the end); a slow reader pauses the
socket.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

IDLE_KEEP_S = 4.0
"""An idle connection is reused only this long: uvicorn (SGLang's server) closes idle keep-alive
connections after 5 s, and a request written into a connection the server is closing is lost."""
MAX_IDLE_PER_WORKER = 256
PAUSE_ABOVE_BYTES = 1 << 20
"""Unread body bytes above which the socket stops reading (back-pressure from a slow client)."""


class UpstreamDisconnected(ConnectionError):
    """The worker closed the connection before its answer was complete."""

    def __init__(self, message: str, *, after_bytes: bool) -> None:
        super().__init__(message)
        self.after_bytes = after_bytes
        """Whether any byte of the answer had arrived (if not, the request may never have arrived)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self, pool: _HostPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.closed = False
        self._response: UpstreamResponse | None = None
        self._paused = False
        self.reused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        self._response.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamDisconnected("worker answered with a protocol upgrade", after_bytes=True))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamDisconnected(f"malformed HTTP answer: {exc}", after_bytes=True))

    def eof_received(self) -> bool | None:
        self.closed = True  # not reusable from now on, even before connection_lost runs
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and not response.complete:
            # A body without a length ends with the connection (HTTP/1.0 style).
            if response.headers_done and not response.length_known:
                response.finish()
            else:
                message = f"worker closed the connection: {exc or 'EOF'}"
                self._fail(UpstreamDisconnected(message, after_bytes=response.got_bytes))
        self._response = None

    # -- httptools callbacks --------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        name = name.lower()
        if name == b"content-type":
            self._response.raw_content_type = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self._response.length_known = True

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status = self._parser.get_status_code()
        response.headers_done = True
        waiter = response.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response.feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        keep = self._parser.should_keep_alive()
        self._response = None
        response.finish()
        if keep and not self.closed:
            self._parser = httptools.HttpResponseParser(self)
            self.resume()
            self._pool.put_back(self)
        else:
            self.close()

    # -- use -----------------------------------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, response: UpstreamResponse) -> None:
        assert self.transport is not None
        self._response = response
        response.connection = self
        self.transport.write(head + body if len(body) < 16384 else head)
        if len(body) >= 16384:
            self.transport.write(body)

    def pause(self) -> None:
        if self.transport is not None and not self.closed and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        response, self._response = self._response, None
        self.close()
        if response is not None:
            response.fail(exc)


class _Content:
    """``aiohttp.StreamReader``'s ``readany`` over a response body."""

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    async def readany(self) -> bytes:
        return await self._response.next_chunk()


class UpstreamResponse:
    """A worker's answer: status and content type at once, the body as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._loop = loop
        self.status = 0
        self.raw_content_type = ""
        self.headers_done = False
        self.got_bytes = False
        self.length_known = False
        self.complete = False
        self.connection: _Connection | None = None
        self.headers_waiter: asyncio.Future[None] | None = None
        self.content = _Content(self)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        # One timer for the whole exchange (headers and body): cheaper than a timeout per wait.
        self._timer: asyncio.TimerHandle | None = loop.call_at(deadline, self._expire)

    @property
    def content_type(self) -> str:
        """The media type without parameters (what ``aiohttp.ClientResponse.content_type`` says)."""
        return self.raw_content_type.partition(";")[0].strip().lower() or "application/octet-stream"

    # -- fed by the connection -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > PAUSE_ABOVE_BYTES and self.connection is not None:
            self.connection.pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._stop_timer()
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._stop_timer()
        self._error = exc
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._wake()

    def _expire(self) -> None:
        self._timer = None
        if self.complete or self._error is not None:
            return
        self.fail(TimeoutError("the worker did not answer in time"))
        if self.connection is not None:
            self.connection.close()  # a late answer must not land in the next request's response

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the forwarder -------------------------------------------------------------------------

    async def next_chunk(self) -> bytes:
        """The next body bytes as they arrived; ``b""`` at the end of the body."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if len(self._chunks) == 1:
            chunk = self._chunks.popleft()
        else:
            chunk = b"".join(self._chunks)
            self._chunks.clear()
        if self._buffered > PAUSE_ABOVE_BYTES and self.connection is not None:
            self.connection.resume()
        self._buffered = 0
        return chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.next_chunk():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give up the rest of the body: an unfinished answer's connection is closed, not reused."""
        self._stop_timer()
        if not self.complete and self.connection is not None:
            self.connection.close()
            self.connection = None


class _HostPool:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) worker URL: {base!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.netloc = parts.netloc.encode("latin-1")
        self.prefix = parts.path.rstrip("/")
        """A worker URL's own path (``http://host/prefix``) goes before every route."""
        self.idle: collections.deque[_Connection] = collections.deque()

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        while len(self.idle) > MAX_IDLE_PER_WORKER:
            self.idle.popleft().close()

    def take(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # most recently used: the likeliest to be alive
            alive = not conn.closed and conn.transport is not None and not conn.transport.is_closing()
            if alive and now - conn.idle_since < IDLE_KEEP_S:
                return conn
            conn.close()
        return None

    def close(self) -> None:
        while self.idle:
            self.idle.popleft().close()


class UpstreamClient:
    """``post(url, body, headers, timeout_s)`` over pooled connections, one pool per worker."""

    def __init__(self) -> None:
        self._pools: dict[str, _HostPool] = {}
        self._closed = False

    def _pool(self, base: str) -> _HostPool:
        pool = self._pools.get(base)
        if pool is None:
            pool = self._pools[base] = _HostPool(base)
        return pool

    async def post(
        self, base: str, path: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        """POST ``body`` to ``base + path``; returns once the status line and headers are in.

        The body is then read with ``read()`` or ``content.readany()``; the whole exchange, body
        included, must be over within ``timeout_s`` (TimeoutError after).
        """
        return await self.request(b"POST", base, path, body, headers, timeout_s)

    async def get(self, base: str, path: str, timeout_s: float) -> UpstreamResponse:
        """GET ``base + path`` (``path`` may carry a query), like :meth:`post`."""
        return await self.request(b"GET", base, path, b"", {}, timeout_s)

    async def request(
        self, method: bytes, base: str, path: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> UpstreamResponse:
        if self._closed:
            raise ConnectionError("upstream client closed")
        pool = self._pool(base)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        head = self._head(method, pool, path, len(body), headers)
        conn = pool.take()
        if conn is not None:
            try:
                return await self._exchange(loop, conn, head, body, deadline)
            except UpstreamDisconnected as exc:
                if exc.after_bytes:
                    raise
                # A kept-alive connection the worker had just closed: nothing reached it. Once more
                # on a fresh connection (what HTTP clients do for stale pooled connections).
        async with asyncio.timeout_at(deadline):
            _, conn = await loop.create_connection(
                lambda: _Connection(pool), pool.host, pool.port, ssl=pool.ssl
            )
        return await self._exchange(loop, conn, head, body, deadline)

    @staticmethod
    def _head(method: bytes, pool: _HostPool, path: str, length: int, headers: Mapping[str, str]) -> bytes:
        lines = [
            method,
            b" ",
            (pool.prefix + path).encode("latin-1"),
            b" HTTP/1.1\r\nHost: ",
            pool.netloc,
            b"\r\nContent-Length: ",
            str(length).encode(),
            b"\r\n",
        ]
        for name, value in headers.items():
            # A value may come from a client (a routing key): never let it end the header block.
            value_bytes = value.encode("utf-8", "surrogateescape").translate(None, b"\r\n\x00")
            lines += [name.encode("latin-1"), b": ", value_bytes, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    @staticmethod
    async def _exchange(
        loop: asyncio.AbstractEventLoop, conn: _Connection, head: bytes, body: bytes, deadline: float
    ) -> UpstreamResponse:
        response = UpstreamResponse(loop, deadline)
        response.headers_waiter = loop.create_future()
        conn.send(head, body, response)
        try:
            await response.headers_waiter
        except BaseException:
            response.release()
            conn.close()  # a late answer must not land in the next request's response
            raise
        response.headers_waiter = None
        return response

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
