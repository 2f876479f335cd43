"""The service's public door: an authenticating reverse proxy in front of vllm-router.

Why a proxy: vllm-router (0.1.17) answers its admin routes (``/add_worker``,
``/remove_worker``, ``/list_workers``) without any credentials, even with its own
``--api-key``; whoever reached it could add a "worker" of their own and receive every
prompt with the service's key. So the router listens on loopback only, and the one
public port is this proxy, which

- serves ``/v1/...`` only to a request carrying the service key (``Authorization:
  Bearer KEY``, compared in constant time), passing it on to the router unchanged
  (the router passes it to the replicas, which check it again);
- answers ``GET /health`` without a key (200 while a replica is routed, else 503), so
  load balancers and ``service status`` can look;
- refuses everything else with 404, the router's admin routes included.

A request body is read whole before it is passed on (OpenAI requests are small; a
streamed body would reach the router chunked, which costs both sides). An answer is
passed on whole unless it is a stream of server-sent events, which passes chunk by
chunk. aiohttp comes with vllm-router; it is imported only where a front runs.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
OPEN_PATHS = ("/health",)
ROUTED_PREFIX = "/v1/"


def allowed(method: str, path: str) -> str:
    """'open', 'key' or 'no' for a request line. Pure."""
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return "open"
    if path.startswith(ROUTED_PREFIX) and ".." not in path:
        return "key"
    return "no"


def key_matches(header: str | None, key: str) -> bool:
    """Is ``header`` (an Authorization value) ``Bearer <key>``? Constant time."""
    if not header or not key:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())


def streamed(content_type: str | None) -> bool:
    """Is an answer of this Content-Type passed on chunk by chunk (server-sent events)?"""
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


def _error(status: int, message: str, kind: str) -> web.Response:
    from aiohttp import web

    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def make_app(
    router_url: str, key: str, healthy: Callable[[], bool], timeout: float = 3600.0
) -> web.Application:
    """The proxy as an aiohttp application, forwarding to ``router_url`` (loopback)."""
    import aiohttp
    from aiohttp import web

    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def start(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10),
            auto_decompress=False,
        )

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        verdict = allowed(request.method, request.path)
        if verdict == "no":
            return _error(404, f"{request.path} is not served here", "not_found")
        if verdict == "open":
            if healthy():
                return web.Response(text="ok\n")
            return web.Response(status=503, text="no replica is ready\n")
        if not key_matches(request.headers.get("Authorization"), key):
            return _error(401, "a valid API key is required", "invalid_request_error")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read() if request.can_read_body else None
        session = request.app[session_key]
        try:
            async with session.request(
                request.method,
                router_url + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
                if not streamed(upstream.headers.get("Content-Type")):
                    whole = await upstream.read()
                    return web.Response(status=upstream.status, headers=passed, body=whole)
                response = web.StreamResponse(status=upstream.status, headers=passed)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            return _error(502, f"the router did not answer: {exc}", "bad_gateway")

    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
