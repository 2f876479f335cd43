"""The service's public door: an authenticating reverse proxy in front of vllm-router.

Why a proxy: vllm-router (0.1.17) answers its admin routes (``/add_worker``,
``/remove_worker``, ``/list_workers``, ``/workers``, ``/flush_cache``) without any
credentials, even with its own ``--api-key``; whoever reached it could add a "worker" of
their own and receive every prompt with the service's key. So the router listens on
loopback only, and the one public port is this proxy, which

- serves the router's client routes (``CLIENT_ROUTES``, an explicit list) only to a
  request carrying the service key (``Authorization: Bearer KEY``, compared in constant
  time), passing it on to the router unchanged (the router passes it to the replicas,
  which check it again);
- answers ``GET /health`` without a key (200 while a replica is routed, else 503), so
  load balancers and ``service status`` can look;
- refuses everything else with 404, the router's admin routes included.

The path is judged as it came, still encoded (``request.raw_path``), and only a path in
its canonical form is served: segments of letters, digits, ``_`` and ``-``, so no ``%``
escape, dot segment, doubled or trailing slash, backslash or control character. Such a
path is its own fully decoded and normalised form, so whatever decodes or normalises it
again (the HTTP client, the router) reads the path that was checked, and it is forwarded
byte for byte, with the query as it came (``yarl.URL(..., encoded=True)``).

A request body is read whole before it is passed on (OpenAI requests are small; a
streamed body would reach the router chunked, which costs both sides), up to
``max_body`` bytes (413: refused from its Content-Length before it is read when it says
so) within ``body_timeout`` seconds (408). An answer is passed on whole unless it is a
stream of server-sent events, which passes chunk by chunk.

How the public port accepts, times and counts connections is ``frontserver``'s (its
``start_site`` serves this app). aiohttp comes with vllm-router; it is imported only
where a front runs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from launchers.defaults import (
    FRONT_BODY_TIMEOUT,
    FRONT_MAX_BODY_BYTES,
    FRONT_UPSTREAM_CONNECTIONS,
    HEALTH_PATH,
)

if TYPE_CHECKING:
    from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1), those aiohttp sets itself, and Expect (the body
# has been read already: the router need not ask for it).
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
    "expect",
}
OPEN_PATHS = (HEALTH_PATH,)

# The routes vllm-router 0.1.17 serves to clients (its server.rs route table; its binary
# names the same paths), each with its method, and nothing else: its admin routes
# (/add_worker, /remove_worker, /list_workers, /workers..., /flush_cache, /get_loads) take
# no credentials; /get_model_info, /get_server_info and /health_generate show the
# replicas' internals; /generate and /rerank are not OpenAI routes and vLLM does not serve
# /generate. /v1/models/<id> is no route of the router's (it answers 404 itself). A
# response id is one segment of letters, digits, _ and - (vLLM's are "resp_<hex>").
_ID = "[A-Za-z0-9_-]{1,128}"
CLIENT_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
    ("POST", "/v1/responses"),
    ("GET", f"/v1/responses/{_ID}"),
    ("DELETE", f"/v1/responses/{_ID}"),
    ("POST", f"/v1/responses/{_ID}/cancel"),
    ("GET", f"/v1/responses/{_ID}/input"),
    ("GET", "/v1/models"),
)
_ROUTES = tuple((method, re.compile(path)) for method, path in CLIENT_ROUTES)
# A query passes as it came, but only printable ASCII without '#' (no space, no control).
_QUERY = re.compile(r"[!\"$-~]*")


def allowed(method: str, path: str) -> str:
    """'open', 'key' or 'no' for a request's method and raw path (as it came, still
    encoded, without the query). Only a canonical path can match: the patterns hold no
    '%', '.', '\\' or empty segment. Pure."""
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return "open"
    if any(method == m and pattern.fullmatch(path) for m, pattern in _ROUTES):
        return "key"
    return "no"


def judge(method: str, target: str) -> tuple[str, str, str]:
    """The verdict for a raw request target (path and query as they came), with its path
    and query. Pure."""
    path, _, query = target.partition("?")
    if not _QUERY.fullmatch(query):
        return "no", path, query
    return allowed(method, path), path, query


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


def error_body(status: int, message: str, kind: str) -> str:
    """The JSON of an OpenAI-style error: every refusal of the front's own says it so."""
    return json.dumps({"error": {"message": message, "type": kind, "code": status}})


def _error(status: int, message: str, kind: str, *, close: bool = False) -> web.Response:
    from aiohttp import web

    response = web.Response(
        status=status, text=error_body(status, message, kind), content_type="application/json"
    )
    if close:  # the rest of the request is not read: the connection cannot be reused
        response.force_close()
    return response


class _TooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body (None without one); ``_TooLarge`` once it passes ``limit`` bytes."""
    if not request.body_exists:
        return None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def make_app(
    router_url: str,
    key: str,
    healthy: Callable[[], bool],
    timeout: float = 3600.0,
    *,
    max_body: int = FRONT_MAX_BODY_BYTES,
    body_timeout: float = FRONT_BODY_TIMEOUT,
    upstream_limit: int = FRONT_UPSTREAM_CONNECTIONS,
) -> web.Application:
    """The proxy as an aiohttp application, forwarding to ``router_url`` (loopback) over
    at most ``upstream_limit`` connections at once (0: no limit of its own; the front
    sizes it, ``front.upstream_limit``)."""
    import aiohttp
    from aiohttp import web
    from yarl import URL

    session_key = web.AppKey("session", aiohttp.ClientSession)
    base = URL(router_url)

    async def start(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=upstream_limit),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10),
            auto_decompress=False,
            trust_env=False,  # proxy variables never redirect the router's traffic
        )

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        verdict, path, query = judge(request.method, request.raw_path)
        if verdict == "no":
            return _error(404, f"{request.method} {path[:200]} is not served here", "not_found")
        if verdict == "open":
            if healthy():
                return web.Response(text="ok\n")
            return web.Response(status=503, text="no replica is ready\n")
        if not key_matches(request.headers.get("Authorization"), key):
            return _error(401, "a valid API key is required", "invalid_request_error")
        too_large = f"the request body is over the front's limit of {max_body} bytes"
        if request.content_length is not None and request.content_length > max_body:
            return _error(413, too_large, "request_too_large", close=True)
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(request, max_body)
        except _TooLarge:
            return _error(413, too_large, "request_too_large", close=True)
        except TimeoutError:
            return _error(408, f"the request body did not arrive within {body_timeout:g} s",
                          "request_timeout", close=True)  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        target = URL.build(scheme=base.scheme, host=base.raw_host or "", port=base.port,
                           path=path, query_string=query, encoded=True)  # fmt: skip
        session = request.app[session_key]
        try:
            async with session.request(
                request.method, target, headers=headers, data=body, allow_redirects=False
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

    app = web.Application(client_max_size=max_body)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
