"""The service's public door (launchers.service.proxy): the key is checked before
anything reaches the router, only /v1/... and /health are served, the router's admin
routes never, and bodies stream through. A real aiohttp server stands in for the router
on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from launchers.defaults import SERVICE_RETRY_AFTER_SECONDS
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import private_dir
from launchers.service import keys as keys_module
from launchers.service.activity import Activity
from launchers.service.decide import Demand
from launchers.service.frontmetrics import FrontMetrics, summarize
from launchers.service.frontserver import start_site
from launchers.service.keys import KeyRing
from launchers.service.proxy import allowed, make_app, route_of
from launchers.service.usage import UsageBook

from .helpers.aioserve import serve

KEY = "s3cret-key"


@pytest.mark.parametrize(
    ("method", "path", "verdict"),
    [
        ("GET", "/health", "open"),
        ("GET", "/v1/models", "key"),
        ("POST", "/v1/chat/completions", "key"),
        ("POST", "/add_worker", "no"),
        ("POST", "/remove_worker", "no"),
        ("GET", "/list_workers", "no"),
        ("GET", "/metrics", "metrics"),  # the front's own, never the router's
        ("POST", "/metrics", "no"),
        ("HEAD", "/metrics", "no"),
        ("GET", "/metrics/", "no"),
        ("GET", "/v1/metrics", "no"),
        ("POST", "/health", "no"),
        ("GET", "/v1/../add_worker", "no"),
        ("GET", "/v1", "no"),
        ("HEAD", "/health", "open"),
        ("POST", "/v1/completions", "key"),
        ("POST", "/v1/embeddings", "key"),
        ("POST", "/v1/rerank", "key"),
        ("POST", "/v1/responses", "key"),
        ("GET", "/v1/responses/resp_0123abc", "key"),
        ("DELETE", "/v1/responses/resp_0123abc", "key"),
        ("POST", "/v1/responses/resp_0123abc/cancel", "key"),
        ("GET", "/v1/responses/resp_0123abc/input", "key"),
        ("GET", "/v1/chat/completions", "no"),
        ("DELETE", "/v1/models", "no"),
        ("GET", "/v1/models/", "no"),
        ("GET", "/v1/models/some-model", "no"),
        ("GET", "/v1/responses/a.b", "no"),
        ("GET", "/v1/responses/" + "a" * 129, "no"),
        ("GET", "/v1/%2e%2e/list_workers", "no"),
        ("GET", "/v1/%252e%252e/list_workers", "no"),
        ("GET", "/v1/./models", "no"),
        ("GET", "/v1//models", "no"),
        ("GET", "/v1\\models", "no"),
        ("GET", "/v1/models%00", "no"),
        ("GET", "/v1/stream", "no"),
        ("POST", "/generate", "no"),
        ("GET", "/workers", "no"),
    ],
)
def test_which_routes_are_served(method: str, path: str, verdict: str) -> None:
    assert allowed(method, path) == verdict


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        (f"Bearer {KEY}x", False),
        (f"Basic {KEY}", False),
        ("Bearer ", False),
        (None, False),
        (KEY, False),
    ],
)
def test_the_key_is_a_bearer_token(header: str | None, ok: bool) -> None:
    caller = KeyRing.of_key(KEY).caller(header)
    assert (caller is not None and caller.may_use_model) is ok


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/chat/completions", "/v1/chat/completions"),
        ("GET", "/v1/responses/resp_1", "/v1/responses/{id}"),
        ("POST", "/v1/responses/resp_1/cancel", "/v1/responses/{id}/cancel"),
        ("GET", "/metrics", "/metrics"),
        ("GET", "/v1/chat/completions", "other"),
        ("GET", "/list_workers", "other"),
    ],
)
def test_the_metrics_name_a_route_by_its_pattern(method: str, path: str, route: str) -> None:
    assert route_of(method, path) == route


class Upstream:
    """A stand-in router that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        self.framing: list[tuple[str | None, str | None]] = []  # Content-Length, T-E

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.method, request.path_qs,
                              request.headers.get("Authorization")))  # fmt: skip
            if "sse" in request.query:  # a stream of server-sent events, as vLLM sends
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                for i in range(3):
                    await response.write(f"data: {i}\n\n".encode())
                    await asyncio.sleep(0.05)  # chunks apart in time, as vLLM sends them
                await response.write_eof()
                return response
            self.framing.append((request.headers.get("Content-Length"),
                                 request.headers.get("Transfer-Encoding")))  # fmt: skip
            body = await request.read()
            return web.json_response({"path": request.path, "body": body.decode()})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


async def _with_front(
    check: Callable[[aiohttp.ClientSession, str, Upstream], Any], healthy: bool = True
) -> None:
    upstream = Upstream()
    up_runner, up_url = await serve(upstream.app())
    front_runner, front_url = await serve(make_app(up_url, KEY, healthy=lambda: healthy))
    try:
        async with aiohttp.ClientSession() as session:
            await check(session, front_url, upstream)
    finally:
        await front_runner.cleanup()
        await up_runner.cleanup()


def run(check: Callable[..., Any], **kw: Any) -> None:
    asyncio.run(_with_front(check, **kw))


def test_without_the_key_nothing_reaches_the_router() -> None:
    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with s.get(f"{url}/v1/models", headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["error"]["type"] == "invalid_request_error"
        assert up.seen == []

    run(check)


def test_with_the_key_the_request_and_its_header_pass_through() -> None:
    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        auth = {"Authorization": f"Bearer {KEY}"}
        async with s.post(f"{url}/v1/chat/completions?x=1", data=b'{"a": 1}', headers=auth) as r:
            assert r.status == 200
            assert await r.json() == {"path": "/v1/chat/completions", "body": '{"a": 1}'}
        assert up.seen == [("POST", "/v1/chat/completions?x=1", f"Bearer {KEY}")]

    run(check)


def test_a_body_is_passed_on_whole_and_so_is_a_plain_answer() -> None:
    async def chunked_body() -> Any:  # the client streams its body: the router need not
        yield b'{"a": '
        yield b"2}"

    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        auth = {"Authorization": f"Bearer {KEY}"}
        async with s.post(f"{url}/v1/completions", data=chunked_body(), headers=auth) as r:
            assert await r.json() == {"path": "/v1/completions", "body": '{"a": 2}'}
            assert r.headers.get("Transfer-Encoding") is None
            assert r.headers["Content-Length"] == str(len(await r.read()))
        assert up.framing == [("8", None)]

    run(check)


def test_the_routers_admin_routes_are_not_served_even_with_the_key() -> None:
    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        auth = {"Authorization": f"Bearer {KEY}"}
        for method, path in (("POST", "/add_worker?url=http://evil:1"),
                             ("POST", "/remove_worker?url=http://a:1"), ("GET", "/list_workers"),
                             ("GET", "/v1/../list_workers")):  # fmt: skip
            async with s.request(method, url + path, headers=auth) as r:
                assert r.status == 404, path
        assert up.seen == []

    run(check)


def test_a_stream_arrives_chunk_by_chunk() -> None:
    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        auth = {"Authorization": f"Bearer {KEY}"}
        async with s.post(f"{url}/v1/chat/completions?sse=1", headers=auth) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            chunks = [chunk async for chunk in r.content.iter_any()]
        assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert len(chunks) >= 2  # not buffered into one body

    run(check)


@pytest.mark.parametrize(("healthy", "status"), [(True, 200), (False, 503)])
def test_health_needs_no_key_and_says_whether_a_replica_is_routed(
    healthy: bool, status: int
) -> None:
    async def check(s: aiohttp.ClientSession, url: str, up: Upstream) -> None:
        async with s.get(f"{url}/health") as r:
            assert r.status == status
        assert up.seen == []

    run(check, healthy=healthy)


# --- usage per key, from the answers ----------------------------------------------------------


def vllm_like() -> tuple[web.Application, list[dict[str, Any]]]:
    """A stand-in that answers as vLLM does: a chat completion with its usage, or a
    stream of chunks that ends with a usage-only chunk when include_usage is asked."""
    asked: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        asked.append(body)
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        if not body.get("stream"):
            return web.json_response({"id": "c", "choices": [], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("a", "b"):
            chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": word}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {"id": "c", "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("POST", "/v1/chat/completions", handle)
    return app, asked


@pytest.mark.parametrize("client_asked", [False, True])
def test_usage_is_counted_per_key_and_a_stream_is_what_the_client_asked(
    tmp_path: Path, client_asked: bool
) -> None:
    directory = tmp_path / "svc"
    private_dir(directory, "service directory")
    alice = keys_module.add_key(str(directory), KEY, "alice")
    ring = KeyRing(ServiceDir(str(directory)).keys, KEY)
    book, metrics = UsageBook(), FrontMetrics()

    async def check() -> None:
        app, asked = vllm_like()
        up_runner, up_url = await serve(app)
        front_runner, front_url = await serve(make_app(
            up_url, KEY, healthy=lambda: True, keys=ring, usage=book, metrics=metrics))  # fmt: skip
        auth = {"Authorization": f"Bearer {alice}"}
        stream: dict[str, Any] = {"stream": True}
        if client_asked:
            stream["stream_options"] = {"include_usage": True}
        try:
            async with aiohttp.ClientSession() as s:
                url = f"{front_url}/v1/chat/completions"
                async with s.post(url, json={"model": "m"}, headers=auth) as r:
                    assert (await r.json())["usage"]["prompt_tokens"] == 7
                async with s.post(url, json={"model": "m", **stream}, headers=auth) as r:
                    text = (await r.read()).decode()
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()
        assert asked[1]["stream_options"] == {"include_usage": True}  # asked either way
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert ('"usage"' in text) is client_asked  # the client gets what it asked for
        assert len(events) == 3 + client_asked

    asyncio.run(check())
    used = book.snapshot().keys["alice"]
    assert (used.requests, used.errors, used.tokens_in, used.tokens_out) == (2, 0, 14, 4)
    assert "default" not in book.snapshot().keys
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["keys"]["alice"] == {"requests": 2.0, "errors": 0.0, "tokens_in": 14.0,
                                        "tokens_out": 4.0}  # fmt: skip
    assert summary["ttfb_p50_s"] is not None and summary["in_flight"] == 0.0


def test_errors_are_counted_for_the_key_that_made_them() -> None:
    book, metrics = UsageBook(), FrontMetrics()

    async def with_book() -> None:
        upstream = Upstream()
        up_runner, up_url = await serve(upstream.app())
        front_runner, front_url = await serve(
            make_app(up_url, KEY, healthy=lambda: True, usage=book, metrics=metrics,
                     max_body=10))  # fmt: skip
        try:
            async with aiohttp.ClientSession() as session:
                auth = {"Authorization": f"Bearer {KEY}"}
                async with session.post(f"{front_url}/v1/completions", data=b"x" * 100,
                                        headers=auth) as r:  # fmt: skip
                    assert r.status == 413
                async with session.get(f"{front_url}/v1/models",
                                       headers={"Authorization": "Bearer nope"}) as r:  # fmt: skip
                    assert r.status == 401
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(with_book())
    used = book.snapshot().keys
    assert set(used) == {"default"} and (used["default"].requests, used["default"].errors) == (1, 1)
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["keys"]["none"]["errors"] == 1.0  # the 401, under no key
    assert summary["keys"]["default"]["errors"] == 1.0


def _cut_stream(after_done: bool) -> web.Application:
    """A stand-in whose chunked stream ends without its last chunk (the connection is
    closed), after the stream's own end ([DONE]) or in the middle of the answer."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if after_done:
            last = {"id": "c", "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        assert request.transport is not None
        request.transport.close()  # no terminating chunk
        return response

    app = web.Application()
    app.router.add_route("POST", "/v1/chat/completions", handle)
    return app


@pytest.mark.parametrize("after_done", [True, False], ids=["after-done", "mid-answer"])
def test_a_stream_whose_upstream_closes_without_its_last_chunk(after_done: bool) -> None:
    """After [DONE] the answer is whole: 200, its usage counted, the client gets a clean
    end. Mid-answer: a 502 in the counts and the client's connection cut too."""
    book = UsageBook()

    async def check() -> tuple[str | None, str]:
        up_runner, up_url = await serve(_cut_stream(after_done))
        front_runner, front_url = await serve(
            make_app(up_url, KEY, healthy=lambda: True, usage=book))  # fmt: skip
        auth = {"Authorization": f"Bearer {KEY}"}
        try:
            async with aiohttp.ClientSession() as s:
                body = {"model": "m", "stream": True}
                async with s.post(f"{front_url}/v1/chat/completions", json=body,
                                  headers=auth) as r:  # fmt: skip
                    try:
                        return None, (await r.read()).decode()
                    except aiohttp.ClientPayloadError as exc:
                        return type(exc).__name__, ""
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    error, text = asyncio.run(asyncio.wait_for(check(), 30))  # a hang fails, not waits
    used = book.snapshot().keys["default"]
    if after_done:
        assert error is None and text.rstrip().endswith("data: [DONE]")
        assert (used.requests, used.errors, used.tokens_in, used.tokens_out) == (1, 0, 7, 2)
    else:
        assert error == "ClientPayloadError"  # a cut answer is never a clean end
        assert (used.requests, used.errors) == (1, 1)


@pytest.mark.parametrize("at_done", [True, False], ids=["after-done", "mid-answer"])
def test_a_client_that_closes_its_connection_while_the_stream_still_runs(at_done: bool) -> None:
    """openai's client closes its connection as soon as it reads [DONE], before the
    chunked end: that answer is whole (200, its usage counted), as the bed showed (it
    was counted as a 502 without its tokens). A client gone before [DONE] is a 499."""
    book = UsageBook()
    closed = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {"id": "c", "choices": [], "usage": usage}
        rest = f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()
        if at_done:
            await response.write(rest)
        await closed.wait()  # the upstream goes on only once the client has gone
        if not at_done:  # the answer goes on: a write finds the client gone
            for _ in range(50):
                await asyncio.sleep(0.01)
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(rest)
        await response.write_eof()
        return response

    upstream = web.Application()
    upstream.router.add_route("POST", "/v1/chat/completions", handle)
    until = "data: [DONE]" if at_done else '"content"'

    async def check() -> None:
        up_runner, up_url = await serve(upstream)
        front_runner, front_url = await serve(
            make_app(up_url, KEY, healthy=lambda: True, usage=book))  # fmt: skip
        try:
            where = URL(front_url)
            reader, writer = await asyncio.open_connection(where.host, where.port)
            body = json.dumps({"model": "m", "stream": True}).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: front\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            seen = b""
            while until.encode() not in seen:
                seen += await reader.read(4096)
            writer.close()
            await writer.wait_closed()
            closed.set()
            while book.snapshot().keys.get("default") is None:
                await asyncio.sleep(0.01)  # the front records the request when it ends
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(asyncio.wait_for(check(), 30))  # a hang fails, not waits
    used = book.snapshot().keys["default"]
    if at_done:
        assert (used.requests, used.errors, used.tokens_in, used.tokens_out) == (1, 0, 7, 2)
    else:
        assert (used.requests, used.errors) == (1, 1)


# --- a request with no replica routed waits for one (scale to zero) ------------------------


async def _front_without_replica(
    activity: Activity,
    routed: list[bool],
    wait: float,
    metrics: FrontMetrics,
    upstream: web.Application | None = None,
    **more: Any,
) -> tuple[web.AppRunner, web.AppRunner, str]:
    up_runner, up_url = await serve(upstream if upstream is not None else vllm_like()[0])
    front_runner, front_url = await serve(make_app(
        up_url, KEY, healthy=lambda: routed[0], activity=activity, cold_start_wait=wait,
        metrics=metrics, waking=lambda: "replica 12 (slot 0) LOADING since 07:12:03 UTC",
        **more,
    ))  # fmt: skip
    return up_runner, front_runner, front_url


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_with_no_replica_waits_and_is_forwarded_once_one_is_routed(
    stream: bool,
) -> None:
    """The request holds its connection and gets no byte until a replica is routed; the
    controller (its own thread) learns that a request waits, and its word wakes it."""
    activity, routed, metrics = Activity(), [False], FrontMetrics()

    async def check() -> None:
        up_runner, front_runner, url = await _front_without_replica(
            activity, routed, 120.0, metrics)  # fmt: skip
        auth = {"Authorization": f"Bearer {KEY}"}
        try:
            async with aiohttp.ClientSession() as s:
                body = {"model": "m", "stream": stream}
                asked = asyncio.ensure_future(s.post(
                    f"{url}/v1/chat/completions", json=body, headers=auth))  # fmt: skip
                while not activity.demand().waiting:  # the controller's next tick sees it
                    await asyncio.sleep(0.01)
                assert activity.demand().last_request is not None
                await asyncio.sleep(0.2)
                assert not asked.done()  # no answer, not even its head, before a replica
                routed[0] = True  # the controller's tick routed a replica, then says so
                await asyncio.to_thread(activity.routed, True)
                async with await asked as r:
                    assert r.status == 200
                    text = (await r.read()).decode()
            assert ("data: [DONE]" in text) is stream and '"id": "c"' in text
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    # woken by the controller's word, long before the cold-start wait
    asyncio.run(asyncio.wait_for(check(), 30))
    assert not activity.demand().waiting
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["cold_starts"] == 1.0 and summary["keys"]["default"]["errors"] == 0.0


def test_past_the_cold_start_wait_the_client_gets_503_retry_after_and_why() -> None:
    activity, metrics = Activity(), FrontMetrics()

    async def check() -> tuple[int, str | None, dict[str, Any]]:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [False], 0.3, metrics)  # fmt: skip
        try:
            auth = {"Authorization": f"Bearer {KEY}"}
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{url}/v1/chat/completions", json={"model": "m"}, headers=auth) as r,
            ):
                return r.status, r.headers.get("Retry-After"), await r.json()
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    status, retry, body = asyncio.run(asyncio.wait_for(check(), 30))
    assert (status, retry) == (503, str(SERVICE_RETRY_AFTER_SECONDS))
    assert body["error"]["type"] == "service_unavailable" and body["error"]["code"] == 503
    assert body["error"]["message"] == (
        "no replica of the service is ready after waiting 0.3 s: replica 12 (slot 0) "
        f"LOADING since 07:12:03 UTC; try again in {SERVICE_RETRY_AFTER_SECONDS} s"
    )
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["cold_starts"] == 1.0 and summary["keys"]["default"]["errors"] == 1.0
    assert not activity.demand().waiting


def test_health_and_metrics_wake_nothing() -> None:
    activity = Activity()

    async def check() -> None:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [False], 5.0, FrontMetrics())  # fmt: skip
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{url}/health") as r:
                    assert r.status == 503
                async with s.get(f"{url}/metrics",
                                 headers={"Authorization": f"Bearer {KEY}"}) as r:  # fmt: skip
                    assert r.status == 200
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(asyncio.wait_for(check(), 30))
    assert activity.demand() == Demand()


def test_a_stranger_without_a_live_key_wakes_nothing() -> None:
    """An idle service holds no GPU: a request with no key, a wrong one or an encoded
    path must get its refusal at once and never start a replica."""
    activity = Activity()

    async def check() -> None:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [False], 5.0, FrontMetrics())  # fmt: skip
        body = {"model": "m", "messages": []}
        try:
            async with aiohttp.ClientSession() as s:
                for headers in ({}, {"Authorization": "Bearer not-the-key"}):
                    async with s.post(f"{url}/v1/chat/completions", json=body,
                                      headers=headers) as r:  # fmt: skip
                        assert r.status == 401
                async with s.post(f"{url}/v1/chat%2Fcompletions", json=body,
                                  headers={"Authorization": f"Bearer {KEY}"}) as r:  # fmt: skip
                    assert r.status == 404
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(asyncio.wait_for(check(), 10))  # a refusal that waited would time out
    assert activity.demand() == Demand()


def test_a_client_that_goes_away_during_a_cold_start_stops_waiting_at_once() -> None:
    """Served as the front serves it (``start_site``): a client that closes its
    connection while its request waits for a replica no longer counts as waiting (the
    controller's Demand) nor in flight or waiting (the front's gauges), long before the
    cold-start wait ends; nothing is forwarded for it. Its request did come, though: it
    counts as use (a client that gave up may retry)."""
    activity, metrics = Activity(), FrontMetrics()
    upstream, asked = vllm_like()

    def gauges() -> tuple[float, float]:
        summary = summarize(metrics.exposition()[0].decode())
        return summary["in_flight"], summary["waiting"]

    async def check() -> None:
        up_runner, up_url = await serve(upstream)
        app = make_app(up_url, KEY, healthy=lambda: False, activity=activity,
                       cold_start_wait=600.0, metrics=metrics)  # fmt: skip
        runner = await start_site(app, "127.0.0.1", 0)
        try:
            port = int(runner.addresses[0][1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            body = json.dumps({"model": "m", "messages": []}).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: front\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            while not activity.demand().waiting:
                await asyncio.sleep(0.01)
            assert gauges() == (1.0, 1.0)
            writer.close()
            await writer.wait_closed()
            while activity.demand().waiting or gauges() != (0.0, 0.0):
                await asyncio.sleep(0.01)  # a wait that goes on fails at the deadline below
        finally:
            await runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(asyncio.wait_for(check(), 10))  # the cold-start wait is 600 s
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["cold_starts"] == 1.0 and asked == []
    assert activity.demand().last_request is not None


# --- GET /v1/models: what health checkers and UIs poll ---------------------------------------


def models_like() -> tuple[web.Application, list[str]]:
    """A stand-in that lists its model as vLLM does (with vLLM's extra fields)."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        card = {"id": "tiny-llama", "object": "model", "created": 1, "owned_by": "vllm",
                "root": "/models/tiny-llama", "max_model_len": 512}  # fmt: skip
        return web.json_response({"object": "list", "data": [card]})

    app = web.Application()
    app.router.add_route("GET", "/v1/models", handle)
    return app, asked


def test_a_model_listing_with_no_replica_is_the_fronts_own_and_wakes_nothing() -> None:
    """An idle service holds no GPU: a listing (a health checker's poll) is answered at
    once with the name the replicas serve, and neither wakes the service nor reaches
    the router."""
    activity, metrics = Activity(), FrontMetrics()
    upstream, asked = models_like()

    async def check() -> tuple[int, dict[str, Any]]:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [False], 60.0, metrics, upstream, models=("tiny-llama",))  # fmt: skip
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}) as r,
            ):
                return r.status, await r.json()
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    status, listed = asyncio.run(asyncio.wait_for(check(), 10))  # a listing that waited fails
    assert status == 200 and listed["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("tiny-llama", "model", "vllm")
    ]
    assert isinstance(listed["data"][0]["created"], int)
    assert activity.demand() == Demand() and asked == []
    summary = summarize(metrics.exposition()[0].decode())
    assert summary["cold_starts"] == 0.0 and summary["keys"]["default"]["requests"] == 1.0


def test_a_model_listing_with_a_replica_routed_is_vllms_own_and_keeps_nothing_awake() -> None:
    """With a replica routed the listing is vLLM's (its extra fields included); it never
    counts as use, so a health checker's polls do not keep an idle service's GPUs."""
    activity = Activity()
    upstream, asked = models_like()

    async def check() -> dict[str, Any]:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [True], 60.0, FrontMetrics(), upstream, models=("tiny-llama",))  # fmt: skip
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}) as r,
            ):
                assert r.status == 200
                listed: dict[str, Any] = await r.json()
                return listed
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    listed = asyncio.run(asyncio.wait_for(check(), 10))
    assert asked == ["/v1/models"] and listed["data"][0]["max_model_len"] == 512
    assert activity.demand() == Demand()


def test_a_model_listing_without_a_key_is_refused_and_wakes_nothing() -> None:
    activity = Activity()
    upstream, asked = models_like()

    async def check() -> int:
        up_runner, front_runner, url = await _front_without_replica(
            activity, [False], 60.0, FrontMetrics(), upstream, models=("tiny-llama",))  # fmt: skip
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/models") as r:
                return r.status
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    assert asyncio.run(asyncio.wait_for(check(), 10)) == 401
    assert activity.demand() == Demand() and asked == []
