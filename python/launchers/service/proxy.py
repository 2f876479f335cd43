"""The service's public door: an authenticating reverse proxy in front of vllm-router.

Why a proxy: vllm-router (0.1.17) answers its admin routes (``/add_worker``,
``/remove_worker``, ``/list_workers``, ``/workers``, ``/flush_cache``) without any
credentials, even with its own ``--api-key``; whoever reached it could add a "worker" of
their own and receive every prompt with the service's key. So the router listens on
loopback only, and the one public port is this proxy, which

- serves the router's client routes (``CLIENT_ROUTES``, an explicit list) only to a
  request carrying a live user key of the service (``Authorization: Bearer KEY``, checked
  in constant time against every live key: ``service.keys.KeyRing``), and passes it on
  with the service's internal key in its place (the router passes that to the replicas,
  which check it again; no user key ever reaches them);
- answers ``GET /health`` without a key (200 while a replica is routed, else 503), so
  load balancers and ``service status`` can look (neither it nor ``/metrics`` counts as
  a request: they never keep an idle service awake);
- holds a request that finds no replica routed (an idle service, or one starting) until
  the controller routes one, at most ``cold_start_wait`` seconds, telling the controller
  it waits (``service.activity``: an idle service wakes on its next tick); past that
  wait: 503 with ``Retry-After`` and what the service is doing (a replica pending in
  SLURM's queue and why, or loading since when); a request whose client goes away
  meanwhile stops waiting at once (``client_gone``, set by the front's server), so it
  no longer counts as waiting or in flight;
- answers ``GET /v1/models`` itself while no replica is routed, with the model name the
  service serves (``models``), so a model listing (what health checkers and UIs poll)
  never wakes an idle service; nor does it count as a request that keeps one awake
  (with a replica routed it is forwarded: vLLM's own answer);
- answers ``GET /metrics`` itself (the front's own metrics: ``service.frontmetrics``) to
  a scrape key or the internal key; never the router's;
- refuses everything else with 404, the router's admin routes included.

Each answer is counted by key label and route (``FrontMetrics``), and the tokens of each
key from the answers' usage (``service.usage``: a stream is asked for its usage chunk,
which the client gets only if it asked).

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
stream of server-sent events, which passes chunk by chunk (after its first piece, from
socket to socket in the upstream's read callback: ``service.relay``).

How the public port accepts, times and counts connections is ``frontserver``'s (its
``start_site`` serves this app). aiohttp comes with vllm-router; it is imported only
where a front runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from launchers.defaults import (
    FRONT_BODY_TIMEOUT,
    FRONT_MAX_BODY_BYTES,
    FRONT_UPSTREAM_CONNECTIONS,
    HEALTH_PATH,
    SERVICE_RETRY_AFTER_SECONDS,
)
from launchers.service.activity import Activity
from launchers.service.frontmetrics import NO_KEY, FrontMetrics
from launchers.service.keys import Caller, KeyRing
from launchers.service.relay import SLOW, can_relay, relay_rest
from launchers.service.usage import StreamScanner, UsageBook, ask_for_usage, tokens_in_body

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web
    from yarl import URL

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
METRICS_PATH = "/metrics"  # the front's own metrics (never the router's)

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
OTHER_ROUTE = "other"  # the metrics' route of anything not served
MODELS_PATH = "/v1/models"  # the model listing: the front answers it while none is routed
# A query passes as it came, but only printable ASCII without '#' (no space, no control).
_QUERY = re.compile(r"[!\"$-~]*")


# Done once the client's connection of the request being handled is lost. The server that
# serves the app sets it for each request (``frontserver.start_site``: aiohttp does not
# tell a handler that its client has gone unless it cancels every handler then); None
# where no such server runs the app (the request is then looked at after its wait only).
client_gone: ContextVar[asyncio.Future[None] | None] = ContextVar(
    "vllm_hpc_client_gone", default=None
)


def allowed(method: str, path: str) -> str:
    """'open', 'key', 'metrics' or 'no' for a request's method and raw path (as it came,
    still encoded, without the query). Only a canonical path can match: the patterns hold
    no '%', '.', '\\' or empty segment. Pure."""
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return "open"
    if path == METRICS_PATH and method == "GET":
        return "metrics"
    if any(method == m and pattern.fullmatch(path) for m, pattern in _ROUTES):
        return "key"
    return "no"


def route_of(method: str, path: str) -> str:
    """The route a served path is (its pattern, a response id as ``{id}``), for the
    metrics' labels; ``other`` for anything else. Pure."""
    if path == METRICS_PATH:
        return METRICS_PATH
    for (m, pattern), (_, spelled) in zip(_ROUTES, CLIENT_ROUTES, strict=True):
        if method == m and pattern.fullmatch(path):
            return spelled.replace(_ID, "{id}")
    return OTHER_ROUTE


def judge(method: str, target: str) -> tuple[str, str, str]:
    """The verdict for a raw request target (path and query as they came), with its path
    and query. Pure."""
    path, _, query = target.partition("?")
    if not _QUERY.fullmatch(query):
        return "no", path, query
    return allowed(method, path), path, query


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


@dataclass
class _Outcome:
    """What became of one forwarded request, for the metrics and the usage."""

    status: int = 499
    first_byte: float | None = None  # seconds from the request to its answer's first byte
    tokens: tuple[int, int] | None = None


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


class _ClientGone(Exception):
    """The client's connection closed while the front wrote an answer to it."""


async def _to_client(write: Awaitable[None]) -> None:
    """A write to the client; its closed connection is ``_ClientGone`` (aiohttp raises a
    ``ClientConnectionResetError``, a ``ClientError``, which must not read as the
    upstream's failure)."""
    try:
        await write
    except ConnectionResetError as exc:
        raise _ClientGone from exc


def make_app(
    router_url: str,
    key: str,
    healthy: Callable[[], bool],
    timeout: float = 3600.0,
    *,
    max_body: int = FRONT_MAX_BODY_BYTES,
    body_timeout: float = FRONT_BODY_TIMEOUT,
    upstream_limit: int = FRONT_UPSTREAM_CONNECTIONS,
    keys: KeyRing | None = None,  # the users' keys (None: ``key`` alone, as `default`)
    usage: UsageBook | None = None,  # where answers are counted (None: new ones)
    metrics: FrontMetrics | None = None,
    activity: Activity | None = None,  # shared with the controller (None: a new one)
    cold_start_wait: float = 0.0,  # 0: no wait (a service that never idles)
    waking: Callable[[], str] = lambda: "no replica is routed",
    models: Sequence[str] = (),  # the served model name(s) (none: a listing is forwarded)
) -> web.Application:
    """The proxy as an aiohttp application, forwarding to ``router_url`` (loopback) over
    at most ``upstream_limit`` connections at once (0: no limit of its own; the front
    sizes it, ``front.upstream_limit``). A request that finds no replica routed
    (``healthy()`` false) waits up to ``cold_start_wait`` seconds for one (0: not at all;
    woken through ``activity``); past it, its 503 says ``waking()``. A model listing
    that finds none routed is answered with ``models``, and waits for nothing."""
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

    door = _Door(
        ring=keys if keys is not None else KeyRing.of_key(key), internal=f"Bearer {key}",
        healthy=healthy, book=usage if usage is not None else UsageBook(),
        counted=metrics if metrics is not None else FrontMetrics(), base=base,
        session=lambda request: request.app[session_key], max_body=max_body,
        body_timeout=body_timeout, activity=activity if activity is not None else Activity(),
        cold_start_wait=cold_start_wait, waking=waking, models=tuple(models),
    )  # fmt: skip
    app = web.Application(client_max_size=max_body)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", door.handle)
    return app


@dataclass(frozen=True)
class _Door:
    """``make_app``'s handler, for one request: judge its target and its key, answer what
    is the front's own (/health, /metrics, refusals), forward the rest with the service's
    internal key in place of the client's (``internal``: its Authorization value), and
    count each answer."""

    ring: KeyRing
    internal: str
    healthy: Callable[[], bool]
    book: UsageBook
    counted: FrontMetrics
    base: URL
    session: Callable[[web.Request], aiohttp.ClientSession]
    max_body: int
    body_timeout: float
    activity: Activity
    cold_start_wait: float
    waking: Callable[[], str]
    models: tuple[str, ...]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        counted = self.counted
        verdict, path, query = judge(request.method, request.raw_path)
        if verdict == "no":
            counted.answered(NO_KEY, OTHER_ROUTE, 404)
            return _error(404, f"{request.method} {path[:200]} is not served here", "not_found")
        if verdict == "open":
            if self.healthy():
                return web.Response(text="ok\n")
            return web.Response(status=503, text="no replica is ready\n")
        caller = self.ring.caller(request.headers.get("Authorization"))
        route = route_of(request.method, path)
        if verdict == "metrics":
            return self.scrape(caller)
        if caller is None or caller.kind is None:  # none, revoked, or the internal key alone
            counted.answered(NO_KEY, route, 401)
            return _error(401, "a valid API key is required", "invalid_request_error")
        if not caller.may_use_model:
            counted.answered(caller.label, route, 403)
            return _error(403, "this key reads the front's /metrics only", "permission_denied")
        outcome = _Outcome()
        began = time.monotonic()
        counted.in_flight.inc()
        try:
            return await self.forward(request, path, query, outcome, began)
        except BaseException:
            outcome.status = 499  # the client went away (or the front stops) mid-answer
            raise
        finally:
            counted.in_flight.dec()
            counted.answered(caller.label, route, outcome.status)
            counted.timed(caller.label, route, outcome.first_byte, time.monotonic() - began)
            counted.used(caller.label, outcome.tokens)
            self.book.record(caller.label, outcome.status, outcome.tokens)

    def scrape(self, caller: Caller | None) -> web.StreamResponse:
        """``GET /metrics``: the front's own, to a scrape key or the internal key."""
        from aiohttp import web

        counted = self.counted
        if caller is None or not (caller.may_scrape or caller.may_use_model):
            counted.answered(NO_KEY, METRICS_PATH, 401)
            return _error(401, "a scrape key or the service key is required",
                          "invalid_request_error")  # fmt: skip
        if not caller.may_scrape:
            counted.answered(caller.label, METRICS_PATH, 403)
            return _error(403, "a user key does not read the metrics: use a scrape key "
                          "(vllm-hpc service key add NAME LABEL --scrape)",
                          "permission_denied")  # fmt: skip
        counted.answered(caller.label, METRICS_PATH, 200)
        text, content_type = counted.exposition()
        return web.Response(body=text, headers={"Content-Type": content_type})

    async def forward(
        self, request: web.Request, path: str, query: str, outcome: _Outcome, began: float
    ) -> web.StreamResponse:
        """Read the body (bounded), ask a stream for its usage, pass the request on with
        the internal key, and its answer back (a stream chunk by chunk)."""
        import aiohttp
        from aiohttp import web
        from yarl import URL

        def refuse(status: int, message: str, kind: str) -> web.Response:
            outcome.status = status
            return _error(status, message, kind, close=True)

        limit = self.max_body
        too_large = f"the request body is over the front's limit of {limit} bytes"
        if request.content_length is not None and request.content_length > limit:
            return refuse(413, too_large, "request_too_large")
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await _read_body(request, limit)
        except _TooLarge:
            return refuse(413, too_large, "request_too_large")
        except TimeoutError:
            return refuse(408, f"the request body did not arrive within {self.body_timeout:g} s",
                          "request_timeout")  # fmt: skip
        if path == MODELS_PATH:  # a listing neither wakes the service nor keeps it awake
            if self.models and not self.healthy():
                return self.model_list(outcome, began)
        else:
            self.activity.requested()
            if self.cold_start_wait > 0 and not self.healthy():
                cold = await self.cold_start(request, outcome)
                if cold is not None:
                    return cold
        body, strip = ask_for_usage(path, body)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP and k.lower() != "authorization"}  # fmt: skip
        headers["Authorization"] = self.internal  # the replicas know this key, never a user's
        base = self.base
        target = URL.build(scheme=base.scheme, host=base.raw_host or "", port=base.port,
                           path=path, query_string=query, encoded=True)  # fmt: skip
        try:
            async with self.session(request).request(
                request.method, target, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                outcome.status = upstream.status
                passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
                if not streamed(upstream.headers.get("Content-Type")):
                    whole = await upstream.read()
                    outcome.first_byte = time.monotonic() - began
                    if upstream.status == 200:
                        outcome.tokens = tokens_in_body(whole)
                    return web.Response(status=upstream.status, headers=passed, body=whole)
                return await self.pass_stream(request, upstream, passed, strip, outcome, began)
        except aiohttp.ClientError as exc:
            outcome.status = 502
            return _error(502, f"the router did not answer: {exc}", "bad_gateway")

    def model_list(self, outcome: _Outcome, began: float) -> web.Response:
        """``GET /v1/models`` with no replica routed: the names the service serves, as
        vLLM lists them (its extra fields, e.g. ``max_model_len``, come with its own
        answer once a replica is routed)."""
        from aiohttp import web

        created = int(time.time())
        cards = [{"id": name, "object": "model", "created": created, "owned_by": "vllm"}
                 for name in self.models]  # fmt: skip
        outcome.status = 200
        outcome.first_byte = time.monotonic() - began
        return web.json_response({"object": "list", "data": cards})

    async def cold_start(self, request: web.Request, outcome: _Outcome) -> web.Response | None:
        """No replica is routed: wait until the controller routes one (an idle service
        is woken by this wait), at most ``cold_start_wait`` seconds, or until the client
        goes away. None once one is routed; else the 503 that says what the service is
        doing (or, for a client that has gone meanwhile, a 499 nobody reads: nothing is
        forwarded for it)."""
        from aiohttp import web

        began = time.monotonic()
        gone = client_gone.get()
        self.counted.waiting.inc()
        try:
            came = await self.activity.until_routed(self.healthy, self.cold_start_wait, gone)
        finally:
            self.counted.waiting.dec()
        self.counted.cold_started(time.monotonic() - began)
        lost = gone is not None and gone.done()
        if lost or request.transport is None or request.transport.is_closing():
            outcome.status = 499
            return web.Response(status=499)
        if came:
            return None
        outcome.status = 503
        response = _error(
            503,
            f"no replica of the service is ready after waiting {self.cold_start_wait:g} s: "
            f"{self.waking()}; try again in {SERVICE_RETRY_AFTER_SECONDS} s",
            "service_unavailable",
        )
        response.headers["Retry-After"] = str(SERVICE_RETRY_AFTER_SECONDS)
        return response

    async def pass_stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        passed: dict[str, str],
        strip: bool,
        outcome: _Outcome,
        began: float,
    ) -> web.StreamResponse:
        """An upstream stream passed on event by event, its usage read on the way (and its
        usage-only chunk taken out when ``strip``): the first piece the usual way, then
        the rest relayed in the upstream's read callback (``relay``) for as long as it
        passes plainly; whatever the relay steps aside for, this loop carries on."""
        import aiohttp
        from aiohttp import web

        response = web.StreamResponse(status=upstream.status, headers=passed)
        await response.prepare(request)
        scanner = StreamScanner(strip)
        try:
            try:
                async for chunk in upstream.content.iter_any():
                    out = scanner.feed(chunk)
                    if out:
                        await _to_client(response.write(out))
                        if outcome.first_byte is None:
                            outcome.first_byte = time.monotonic() - began
                        ends = can_relay(request, response, upstream)
                        if ends is not None:  # the rest from socket to socket (relay.py)
                            why = await relay_rest(*ends, upstream, scanner.feed)
                            if why == SLOW:  # the relay's bytes are not in the writer's count
                                await _to_client(request.writer.drain())
            except aiohttp.ClientError:
                # The upstream's chunked answer ended without its last chunk. After the
                # stream's own end ([DONE]) the answer is whole: end it as usual. Before
                # it the client holds a cut answer: count a 502 and cut its connection
                # too (no clean end it could take for a whole answer).
                if not scanner.ended:
                    outcome.status = 502
                    outcome.tokens = scanner.tokens
                    if request.transport is not None:
                        request.transport.close()
                    return response
            rest = scanner.finish()
            if rest:
                await _to_client(response.write(rest))
            await _to_client(response.write_eof())
        except _ClientGone:
            # The client closed its connection. After [DONE] it had the whole answer
            # (openai's client closes as soon as it reads [DONE], before the chunked
            # end): the answer stands. Before it the client left mid-answer (499).
            if not scanner.ended:
                outcome.status = 499
        outcome.tokens = scanner.tokens
        return response
