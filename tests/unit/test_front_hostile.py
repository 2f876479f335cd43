"""The front against a hostile client (launchers.service.proxy and .frontserver): encoded
and odd paths never reach vllm-router's admin routes, what is forwarded is byte for byte
what was checked, bodies are bounded, slow and surplus connections are closed, the
upstream pool is sized and ignores proxy variables, and bad requests do not flood the
log.

The requests are written on raw sockets, so no client library tidies a path first; a real
aiohttp server on loopback stands in for the router and records what reached it. The
timing tests pass small limits, so the file runs in a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from launchers import defaults
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import private_dir
from launchers.service import frontserver, keys, proxy

KEY = "s3cret-key"
DEADLINE = 5.0  # seconds: the longest any step here may take before the test fails


class Upstream:
    """A stand-in router that records each request as it arrived: method, raw target,
    body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.auths: list[str | None] = []  # the Authorization each request came with

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append((request.method, request.raw_path, body))
            self.auths.append(request.headers.get("Authorization"))
            return web.json_response({"path": request.raw_path, "size": len(body)})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


def _port(runner: web.BaseRunner) -> int:
    return int(runner.addresses[0][1])


async def _plain(app: web.Application) -> web.AppRunner:
    """``app`` served as a plain aiohttp site (no connection guard): what the routing and
    body rules do on their own."""
    # A front that answered early (413, 408) reads what the client still sends for
    # aiohttp's lingering time (10 s) before it closes; the tests' cleanup need not wait.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@contextlib.asynccontextmanager
async def front(
    serve: str = "plain", limits: Any = None, **app_args: Any
) -> AsyncIterator[tuple[int, Upstream, web.Application]]:
    """A front (``serve``: 'plain' or 'guarded' through frontserver.start_site) before a
    stand-in router; yields the front's port, the stand-in and the front's app."""
    upstream = Upstream()
    up_runner = await _plain(upstream.app())
    up_url = f"http://127.0.0.1:{_port(up_runner)}"
    app = proxy.make_app(up_url, KEY, healthy=lambda: True, **app_args)
    if serve == "plain":
        runner = await _plain(app)
    else:
        runner = await frontserver.start_site(
            app, "127.0.0.1", 0, limits or frontserver.FrontLimits()
        )
    try:
        yield _port(runner), upstream, app
    finally:
        await runner.cleanup()
        await up_runner.cleanup()


def request_bytes(
    method: str,
    target: str,
    *,
    body: bytes = b"",
    key: bool = True,
    extra: str = "",
    close: bool = True,
) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: front\r\n"
    if close:
        head += "Connection: close\r\n"
    if key:
        head += f"Authorization: Bearer {KEY}\r\n"
    if "Transfer-Encoding" not in extra and "Content-Length" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode("latin-1") + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers (lower-case names), body by Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(size), DEADLINE)
    return status, headers, body


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Does the peer close (EOF or reset) within ``seconds``? Any bytes before are read."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:  # poll: read until EOF or the deadline
        try:
            chunk = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not chunk:
            return True
    return False


def run(coro: Any) -> None:
    asyncio.run(coro)


# --- 1. paths: decided on the decoded path, forwarded raw, allow-listed ------------------

HOSTILE = [
    # double-encoded dots: once decoded by the front, again by its HTTP client
    ("GET", "/v1/%252e%252e/list_workers"),
    ("POST", "/v1/%252e%252e/add_worker?url=http://evil:1"),
    ("POST", "/v1/%252E%252E/remove_worker?url=http://127.0.0.1:1"),
    # ... with the query smuggled in the path as %3F
    ("POST", "/v1/%252e%252e/add_worker%3Furl=http://evil:1"),
    ("POST", "/v1/models/%252e%252e/%252e%252e/add_worker%3furl=http://evil:1"),
    # encoded dots, slashes, backslashes, any case
    ("GET", "/v1/%2e%2e/list_workers"),
    ("GET", "/v1/%2E%2e/list_workers"),
    ("GET", "/v1/%2e/models"),
    ("GET", "/v1/..%2flist_workers"),
    ("GET", "/v1/..%2Flist_workers"),
    ("GET", "/v1/%2e%2e%2flist_workers"),
    ("GET", "/v1/..%5clist_workers"),
    ("GET", "/v1/..%5Clist_workers"),
    ("GET", "/v1/models%2f..%2f..%2flist_workers"),
    ("GET", "/v1/models%3F"),
    ("GET", "/v1/%6dodels"),  # an encoded letter: the served paths never need an escape
    # raw dots, doubled slashes, backslashes
    ("GET", "/v1/../list_workers"),
    ("GET", "/v1/./models"),
    ("GET", "/v1//models"),
    ("GET", "//v1/models"),
    ("GET", "/v1/models/"),
    ("GET", "/v1/..\\list_workers"),
    ("GET", "/v1\\models"),
    # control characters, encoded or not
    ("GET", "/v1/models%00"),
    ("GET", "/v1/mod%0d%0aels"),
    ("GET", "/v1/models\x7f"),
    # absolute form: the front is no forward proxy
    ("GET", "http://127.0.0.1/list_workers"),
    # the router's own routes, plain, and client routes it does not serve to clients
    ("POST", "/add_worker?url=http://evil:1"),
    ("GET", "/list_workers"),
    ("POST", "/flush_cache"),
    ("GET", "/get_loads"),
    ("GET", "/workers"),
    ("GET", "/get_server_info"),
    ("POST", "/metrics"),  # the front's own /metrics is GET only (and never the router's)
    ("GET", "/metrics/"),
    ("GET", "/metrics%2F"),
    ("GET", "/v1/../metrics"),
    ("POST", "/generate"),
    ("GET", "/v1/stream"),
    ("GET", "/v1/chat/completions"),  # a served path, the wrong method
    ("DELETE", "/v1/models"),
]


@pytest.mark.parametrize(("method", "target"), HOSTILE)
def test_a_hostile_path_never_reaches_the_router(method: str, target: str) -> None:
    async def check() -> None:
        async with front() as (port, upstream, _):
            status, _, _ = await exchange(port, request_bytes(method, target))
            assert upstream.seen == [], f"the router got {upstream.seen}"
            assert status in (400, 404), (target, status)

    run(check())


SERVED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions?x=%2F..%2F&y=1"),  # the query passes as it came
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_0a-9Z"),
    ("DELETE", "/v1/responses/resp_1"),
    ("POST", "/v1/responses/resp_1/cancel"),
    ("GET", "/v1/responses/resp_1/input?limit=2"),
]


@pytest.mark.parametrize(("method", "target"), SERVED)
def test_what_is_forwarded_is_byte_for_byte_what_was_checked(method: str, target: str) -> None:
    async def check() -> None:
        async with front() as (port, upstream, _):
            status, _, _ = await exchange(port, request_bytes(method, target, body=b"{}"))
            assert status == 200
            assert upstream.seen == [(method, target, b"{}")]

    run(check())


def test_a_hostile_path_without_the_key_is_refused_and_not_forwarded() -> None:
    async def check() -> None:
        async with front() as (port, upstream, _):
            for method, target in (("POST", "/v1/%252e%252e/add_worker%3Furl=http://e:1"),
                                   ("POST", "/v1/chat/completions")):  # fmt: skip
                status, _, _ = await exchange(port, request_bytes(method, target, key=False))
                assert status in (401, 404)
            assert upstream.seen == []

    run(check())


# --- 2. bodies: bounded, refused early when the length is known --------------------------


def test_the_body_limit_is_one_default() -> None:
    assert defaults.FRONT_MAX_BODY_BYTES == 8 * 1024 * 1024
    params = inspect.signature(proxy.make_app).parameters
    assert params["max_body"].default == defaults.FRONT_MAX_BODY_BYTES


def test_a_big_content_length_is_refused_before_the_body_is_read() -> None:
    async def check() -> None:
        async with front(max_body=1024) as (port, upstream, _):
            # the header says 1 GB and no byte of the body is sent: the answer comes anyway
            data = request_bytes("POST", "/v1/completions", extra="Content-Length: 1000000000\r\n")
            status, headers, body = await exchange(port, data)
            assert status == 413
            assert headers["content-type"].startswith("application/json")
            error = json.loads(body)["error"]
            assert error["code"] == 413
            assert "1024" in error["message"]
            assert headers.get("connection", "").lower() == "close"
            assert upstream.seen == []

    run(check())


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read() -> None:
    async def check() -> None:
        async with front(max_body=1024) as (port, upstream, _):
            chunks = b"".join(b"200\r\n" + b"x" * 0x200 + b"\r\n" for _ in range(3))
            data = request_bytes(
                "POST", "/v1/completions", extra="Transfer-Encoding: chunked\r\n"
            ) + chunks + b"0\r\n\r\n"  # fmt: skip
            status, _, body = await exchange(port, data)
            assert status == 413
            assert json.loads(body)["error"]["code"] == 413
            assert upstream.seen == []

    run(check())


def test_a_body_at_the_limit_passes_whole() -> None:
    async def check() -> None:
        async with front(max_body=1024) as (port, upstream, _):
            body = b"y" * 1024
            chunked = request_bytes("POST", "/v1/completions",
                                    extra="Transfer-Encoding: chunked\r\n")  # fmt: skip
            chunked += b"400\r\n" + body + b"\r\n0\r\n\r\n"
            for data in (request_bytes("POST", "/v1/completions", body=body), chunked):
                status, _, _ = await exchange(port, data)
                assert status == 200
            assert [seen[2] for seen in upstream.seen] == [body, body]

    run(check())


def test_without_the_key_a_big_body_gets_401_not_413() -> None:
    async def check() -> None:
        async with front(max_body=1024) as (port, upstream, _):
            data = request_bytes(
                "POST", "/v1/completions", key=False, extra="Content-Length: 1000000000\r\n"
            )
            status, _, _ = await exchange(port, data)
            assert status == 401
            assert upstream.seen == []

    run(check())


def test_a_body_that_trickles_past_the_body_timeout_gets_408() -> None:
    async def check() -> None:
        async with front(max_body=1024, body_timeout=0.3) as (port, upstream, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("POST", "/v1/completions", extra="Content-Length: 10\r\n"))
            writer.write(b"12")  # and the other 8 bytes never come
            status, _, body = await read_answer(reader)
            writer.close()
            assert status == 408
            assert json.loads(body)["error"]["code"] == 408
            assert upstream.seen == []

    run(check())


# --- 3. slow and surplus connections ------------------------------------------------------


def small(**kw: Any) -> Any:
    values: dict[str, Any] = {"header_timeout": 0.3, "keepalive_timeout": 5.0,
                              "max_connections": 8}  # fmt: skip
    values.update(kw)
    return frontserver.FrontLimits(**values)


def test_the_connection_limits_are_defaults() -> None:
    limits = frontserver.FrontLimits()
    assert limits.header_timeout == defaults.FRONT_HEADER_TIMEOUT
    assert limits.keepalive_timeout == defaults.FRONT_KEEPALIVE_TIMEOUT
    assert limits.max_connections == defaults.FRONT_MAX_CONNECTIONS


def test_a_header_trickle_is_closed_within_the_header_timeout() -> None:
    async def check() -> None:
        async with front("guarded", small()) as (port, upstream, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: front\r\n")
            closed = False
            while loop.time() - started < DEADLINE:  # poll: one header line every 50 ms
                try:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if await closed_within(reader, 0.05):
                    closed = True
                    break
            held = loop.time() - started
            writer.close()
            assert closed, "the front kept a trickling connection open"
            assert held < 0.3 + 1.0, held
            assert upstream.seen == []

    run(check())


def test_a_header_trickle_after_a_served_request_is_closed_too() -> None:
    async def check() -> None:
        async with front("guarded", small()) as (port, upstream, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("GET", "/v1/models", close=False))
            assert (await read_answer(reader))[0] == 200
            writer.write(b"GET /v1/models HTTP/1.1\r\n")  # the next head, never finished
            # keep-alive (5 s) would close it later: the header timeout (0.3 s) does first
            assert await closed_within(reader, 0.3 + 1.0)
            writer.close()
            assert len(upstream.seen) == 1

    run(check())


def test_a_silent_connection_is_closed_within_the_header_timeout() -> None:
    async def check() -> None:
        async with front("guarded", small()) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await closed_within(reader, 0.3 + 1.0)
            writer.close()

    run(check())


def test_a_keep_alive_connection_serves_requests_one_after_another() -> None:
    async def check() -> None:
        async with front("guarded", small()) as (port, upstream, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            auth = f"Authorization: Bearer {KEY}\r\n"
            for _ in range(3):
                writer.write(f"GET /v1/models HTTP/1.1\r\nHost: f\r\n{auth}\r\n".encode())
                status, _, _ = await read_answer(reader)
                assert status == 200
            writer.close()
            assert len(upstream.seen) == 3

    run(check())


def test_a_connection_beyond_the_limit_gets_a_quick_503() -> None:
    async def check() -> None:
        async with front("guarded", small(header_timeout=5.0, max_connections=2)) as (
            port, _, _,
        ):  # fmt: skip
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            # the two are taken once the front has seen them: one health check each
            for reader, writer in held:
                writer.write(b"GET /health HTTP/1.1\r\nHost: f\r\n\r\n")
                assert (await read_answer(reader))[0] == 200
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: f\r\n\r\n")
            status, headers, body = await read_answer(reader)
            assert status == 503
            assert json.loads(body)["error"]["code"] == 503
            assert headers.get("connection", "").lower() == "close"
            assert await closed_within(reader, DEADLINE)
            writer.close()
            # one of the two goes: a new connection is served again
            held[0][1].close()
            loop = asyncio.get_running_loop()
            end = loop.time() + DEADLINE
            status = 0
            while status != 200 and loop.time() < end:  # poll: the front sees the close
                status = (await exchange(port, b"GET /health HTTP/1.1\r\nHost: f\r\n"
                                               b"Connection: close\r\n\r\n"))[0]  # fmt: skip
            assert status == 200
            held[1][1].close()

    run(check())


def test_start_site_takes_keep_alive_from_the_limits() -> None:
    async def check() -> None:
        async with front("guarded", small(keepalive_timeout=0.4)) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: f\r\n\r\n")
            assert (await read_answer(reader))[0] == 200
            assert await closed_within(reader, 0.4 + 1.0)  # idle after its answer
            writer.close()

    run(check())


# --- 4. the upstream pool -------------------------------------------------------------------


def _session(app: web.Application) -> aiohttp.ClientSession:
    sessions = [v for v in app.values() if isinstance(v, aiohttp.ClientSession)]
    assert len(sessions) == 1
    return sessions[0]


def test_the_upstream_limit_reaches_the_connector_and_proxies_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on 9 (discard)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def check() -> None:
        async with front(upstream_limit=7) as (port, upstream, app):
            session = _session(app)
            assert session.connector is not None
            assert session.connector.limit == 7
            assert session.trust_env is False
            status, _, _ = await exchange(port, request_bytes("GET", "/v1/models"))
            assert status == 200
            assert upstream.seen == [("GET", "/v1/models", b"")]

    run(check())


def test_the_upstream_limit_is_one_default() -> None:
    params = inspect.signature(proxy.make_app).parameters
    assert params["upstream_limit"].default == defaults.FRONT_UPSTREAM_CONNECTIONS


STREAMS = 150  # past aiohttp's default connector limit (100), below the front's 512


def test_every_stream_gets_its_first_byte_before_any_ends() -> None:
    """150 slow streams at once through the front as it serves (start_site, the default
    upstream limit): the stand-in router holds every stream open after its first chunk
    until the client has the first byte of all of them (or DEADLINE), so a stream that
    waited for another's connection would get its first byte only after some stream
    ended."""
    firsts = 0
    all_first = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEADLINE):
                await all_first.wait()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def one(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {KEY}"}
        async with session.post(url, json={"stream": True}, headers=headers) as answer:
            assert answer.status == 200
            await answer.content.readany()
            first = loop.time()
            nonlocal firsts
            firsts += 1
            if firsts == STREAMS:
                all_first.set()
            await answer.read()
            return first, loop.time()

    async def check() -> None:
        router = web.Application()
        router.router.add_post("/v1/chat/completions", slow)
        up_runner = await _plain(router)
        app = proxy.make_app(f"http://127.0.0.1:{_port(up_runner)}", KEY, healthy=lambda: True)
        runner = await frontserver.start_site(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{_port(runner)}/v1/chat/completions"
        try:
            connector = aiohttp.TCPConnector(limit=0)  # the client itself holds none back
            async with aiohttp.ClientSession(connector=connector) as session:
                times = await asyncio.gather(*(one(session, url) for _ in range(STREAMS)))
        finally:
            await runner.cleanup()
            await up_runner.cleanup()
        last_first = max(first for first, _ in times)
        first_end = min(end for _, end in times)
        assert last_first < first_end, (
            f"{sum(first > first_end for first, _ in times)} of {STREAMS} streams waited "
            "for another to end before their first byte"
        )

    run(check())


# --- 5. the log: bounded per client --------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_malformed_requests_do_not_flood_the_log() -> None:
    logger = logging.getLogger("aiohttp.server")
    records = Records()
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)

    async def check() -> None:
        limits = small(log_lines_per_peer=3, log_lines_total=10, log_window=60.0)
        async with front("guarded", limits) as (port, _, _):
            for _ in range(30):
                # a header line without a colon: aiohttp answers 400 and logs an error
                status, _, _ = await exchange(port, b"GET /health HTTP/1.1\r\nHost: f\r\n"
                                                    b"no colon here\r\n\r\n")  # fmt: skip
                assert status == 400

    try:
        run(check())
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert 1 <= len(records.records) <= 3, [r.getMessage() for r in records.records]
    for record in records.records:
        text = logging.Formatter().format(record)
        assert "\n" not in text, text  # one line each: no traceback per bad request
        assert len(text) < 1000
    assert not any(f is not None and isinstance(f, frontserver.LogBudget) for f in logger.filters)


def _record(peer: str, exc: Exception) -> logging.LogRecord:
    try:
        raise exc
    except Exception as caught:
        exc_info = (type(caught), caught, caught.__traceback__)
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                             "Error handling request from %s", (peer,), exc_info)  # fmt: skip


def test_the_log_budget_counts_per_peer_and_in_all_and_says_what_it_dropped() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    now = [0.0]
    budget = frontserver.LogBudget(per_peer=2, total=3, window=10.0, clock=lambda: now[0])
    bad = BadHttpMessage("bad header \x1b[31m" + "x" * 5000)
    passed = [budget.filter(_record(peer, bad)) for peer in ("a", "a", "a", "b", "c", "d")]
    assert passed == [True, True, False, True, False, False]
    now[0] = 11.0  # the next window
    kept = _record("a", bad)
    assert budget.filter(kept)
    text = logging.Formatter().format(kept)
    assert text.startswith("Error handling request from a: BadHttpMessage: 400, message:")
    assert "2 more" in text  # dropped since the last kept line (c, d), said once
    assert "\n" not in text
    assert "\x1b" not in text
    assert len(text) < 1000
    again = _record("b", bad)
    assert budget.filter(again)
    assert "more" not in logging.Formatter().format(again)


def test_the_log_budget_keeps_the_traceback_of_an_error_of_the_fronts_own() -> None:
    budget = frontserver.LogBudget(per_peer=2, total=3, window=10.0, clock=lambda: 0.0)
    record = _record("a", KeyError("session"))
    assert budget.filter(record)
    assert "Traceback" in logging.Formatter().format(record)


# --- the front uses the guarded site -------------------------------------------------------


def test_the_front_serves_through_start_site() -> None:
    from launchers.service import front as front_module

    source = inspect.getsource(front_module.ServiceFront._serve)
    assert "start_site(" in source
    assert "TCPSite" not in source


def test_health_stays_open_through_the_guarded_site() -> None:
    async def check() -> None:
        async with front("guarded", small()) as (port, upstream, _):
            status, _, body = await exchange(
                port, b"GET /health HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n"
            )
            assert (status, body) == (200, b"ok\n")
            assert upstream.seen == []

    run(check())


# --- keys per user: revoked, foreign, odd and huge keys; the front's /metrics -------------


@contextlib.contextmanager
def user_keys(tmp_path: Path) -> Iterator[tuple[keys.KeyRing, dict[str, str]]]:
    """A service directory whose internal key is KEY, with users alice and bob, a
    scrape key prom, and a revoked key of carol's; yields the front's ring and each
    label's key (``other``: a key of another service)."""
    directory = tmp_path / "services" / "llama"
    private_dir(directory, "service directory")
    given = {label: keys.add_key(str(directory), KEY, label) for label in ("alice", "bob", "carol")}
    given["prom"] = keys.add_key(str(directory), KEY, "prom", "scrape")
    keys.revoke_key(str(directory), KEY, "carol")
    other = tmp_path / "services" / "other"
    private_dir(other, "service directory")
    given["other"] = keys.add_key(str(other), "another-internal-key", "alice")
    yield keys.KeyRing(ServiceDir(str(directory)).keys, KEY), given


def with_key(method: str, target: str, token: str, **kw: Any) -> bytes:
    return request_bytes(method, target, key=False, extra=f"Authorization: Bearer {token}\r\n",
                         **kw)  # fmt: skip


def test_a_users_key_is_forwarded_as_the_internal_key_never_as_itself(tmp_path: Path) -> None:
    async def check() -> None:
        with user_keys(tmp_path) as (ring, given):
            async with front(keys=ring) as (port, upstream, _):
                for label in ("alice", "bob"):
                    status, _, _ = await exchange(port, with_key("GET", "/v1/models", given[label]))
                    assert status == 200
                assert upstream.auths == [f"Bearer {KEY}"] * 2

    run(check())


@pytest.mark.parametrize(
    ("who", "status"),
    [("carol", 401), ("other", 401), ("prom", 403), ("alice", 200)],
)
def test_revoked_foreign_and_scrape_keys_do_not_reach_the_router(
    tmp_path: Path, who: str, status: int
) -> None:
    """carol's key is revoked, ``other`` is a key of another service, prom's key reads
    the metrics only."""

    async def check() -> None:
        with user_keys(tmp_path) as (ring, given):
            async with front(keys=ring) as (port, upstream, _):
                answer = await exchange(port, with_key("POST", "/v1/chat/completions",
                                                       given[who], body=b"{}"))  # fmt: skip
                assert answer[0] == status
                assert len(upstream.seen) == (status == 200)

    run(check())


ODD_HEADERS = [
    b"Authorization: Bearer ALICE\xff\r\n",  # a byte that is no ASCII
    b"Authorization: Bearer \xef\xbc\xa1LICE\r\n",  # UTF-8 of a fullwidth letter first
    b"Authorization: Bearer ALICE, Bearer ALICE\r\n",
    b"Authorization: Bearer%20ALICE\r\n",
    b"Authorization: Bearer ALICE\x0b\r\n",  # a vertical tab
    b"Authorization: Bearer ALICE\x00\r\n",
    b"Authorization: Basic ALICE\r\n",
    b"Authorization: Bearer " + b"A" * 8000 + b"\r\n",  # huge, under aiohttp's field limit
    b"Authorization: Bearer " + b"A" * 200_000 + b"\r\n",  # past it: aiohttp refuses it
    b"Authorization: Bearer ALICEx\r\n" * 50,
]


@pytest.mark.parametrize("header", ODD_HEADERS, ids=lambda h: repr(h[:40]))
def test_odd_and_huge_authorization_headers_are_refused(tmp_path: Path, header: bytes) -> None:
    async def check() -> None:
        with user_keys(tmp_path) as (ring, given):
            async with front("guarded", small(), keys=ring) as (port, upstream, _):
                value = header.replace(b"ALICE", given["alice"].encode())
                data = request_bytes("GET", "/v1/models", key=False)
                data = data.replace(b"\r\n\r\n", b"\r\n" + value + b"\r\n", 1)
                status, _, _ = await exchange(port, data)
                assert status in (400, 401, 431), status
                assert upstream.seen == []
                # and the front still serves the next client
                ok = await exchange(port, with_key("GET", "/v1/models", given["alice"]))
                assert ok[0] == 200

    run(check())


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("carol", 401), ("other", 401), ("alice", 403), ("prom", 200), ("internal", 200)],
)
def test_the_fronts_metrics_need_a_scrape_key_and_never_reach_the_router(
    tmp_path: Path, who: str | None, status: int
) -> None:
    async def check() -> None:
        with user_keys(tmp_path) as (ring, given):
            given["internal"] = KEY
            async with front(keys=ring) as (port, upstream, _):
                data = (request_bytes("GET", "/metrics", key=False) if who is None
                        else with_key("GET", "/metrics", given[who]))  # fmt: skip
                answer, _, body = await exchange(port, data)
                assert answer == status
                assert upstream.seen == []
                if status == 200:
                    assert b"vllm_hpc_front_requests_total" in body
                    assert given["alice"].encode() not in body and KEY.encode() not in body

    run(check())


def test_a_revoked_default_key_is_refused_at_the_front_but_still_scrapes(tmp_path: Path) -> None:
    """`default` is the internal key of a service from before per-user keys: revoked, the
    front refuses it on the model routes (the replicas, whose key it is, still take it)."""

    async def check() -> None:
        with user_keys(tmp_path) as (ring, _):
            keys.revoke_key(str(tmp_path / "services" / "llama"), KEY, "default")
            async with front(keys=ring) as (port, upstream, _):
                assert (await exchange(port, request_bytes("GET", "/v1/models")))[0] == 401
                assert (await exchange(port, request_bytes("GET", "/metrics")))[0] == 200
                assert upstream.seen == []

    run(check())
