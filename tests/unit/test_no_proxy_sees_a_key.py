"""No HTTP proxy ever sees a key: every HTTP client of vllm-hpc that talks to a job, a
replica, the router or the front ignores proxy variables, and the processes it starts
that send keys or prompts (vllm-router, vllm bench serve) get an environment without
them. Many clusters set http_proxy/HTTPS_PROXY on every node; a client that honoured
them would send the Authorization header (and, for the router, every prompt) to the
site's proxy. A real target server and a real "proxy" that records every connection,
both on loopback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from launchers import health
from launchers.observe.job import direct_openai
from launchers.service.router import RouterAdmin

KEY = "sk-never-to-a-proxy"
VARIABLES = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers what vLLM, the router and the front answer; records every request."""

    seen: list[tuple[str, str | None]]

    def _answer(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.endswith("/list_workers"):
            body: Any = {"urls": ["http://10.0.0.1:8000"]}
        else:
            body = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                                                "owned_by": "vllm"}]}  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer
    do_CONNECT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _serve() -> tuple[http.server.ThreadingHTTPServer, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, seen


@pytest.fixture
def servers(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[int, list[tuple[str, str | None]], list[tuple[str, str | None]]]]:
    """(target port, what the target saw, what the proxy saw), with the proxy variable
    of the test's parameter (or all of them) pointing at the recording proxy."""
    target, at_target = _serve()
    proxy, at_proxy = _serve()
    for name in [*VARIABLES, "no_proxy", "NO_PROXY"]:
        monkeypatch.delenv(name, raising=False)
    names = [str(request.param)] if hasattr(request, "param") else VARIABLES
    for name in names:
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        yield target.server_address[1], at_target, at_proxy
    finally:
        target.shutdown()
        proxy.shutdown()


@pytest.mark.parametrize("servers", VARIABLES, indirect=True)
def test_the_readiness_probe_and_metrics_ignore_every_proxy_variable(
    servers: tuple[int, list[Any], list[Any]],
) -> None:
    port, at_target, at_proxy = servers
    probe = health.http_get(f"http://127.0.0.1:{port}/v1/models", api_key=KEY)
    assert probe.ok, probe.detail
    assert at_proxy == [] and at_target == [("/v1/models", f"Bearer {KEY}")]


@pytest.mark.parametrize("servers", VARIABLES, indirect=True)
def test_the_router_admin_ignores_every_proxy_variable(
    servers: tuple[int, list[Any], list[Any]],
) -> None:
    port, at_target, at_proxy = servers
    assert RouterAdmin(port, timeout=5).workers() == {"http://10.0.0.1:8000"}
    assert at_proxy == [] and [path for path, _ in at_target] == ["/list_workers"]


@pytest.mark.parametrize("servers", VARIABLES, indirect=True)
def test_the_openai_clients_ignore_every_proxy_variable(
    servers: tuple[int, list[Any], list[Any]],
) -> None:
    pytest.importorskip("openai")
    port, at_target, at_proxy = servers
    client = direct_openai(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["m"]
    assert at_proxy == [] and at_target == [("/v1/models", f"Bearer {KEY}")]


def test_the_async_openai_client_ignores_proxy_variables(
    servers: tuple[int, list[Any], list[Any]],
) -> None:
    pytest.importorskip("openai")
    import asyncio

    port, at_target, at_proxy = servers

    async def models() -> list[str]:
        client = direct_openai(
            asynchronous=True, base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0
        )
        async with client:
            return [m.id async for m in client.models.list()]

    assert asyncio.run(models()) == ["m"]
    assert at_proxy == [] and at_target == [("/v1/models", f"Bearer {KEY}")]


def test_processes_that_carry_keys_start_without_proxy_variables() -> None:
    env = {"PATH": "/usr/bin", "HOME": "/h", "NO_PROXY": "x", "Http_Proxy": "http://p:1",
           **{name: "http://p:1" for name in VARIABLES}, "grpc_proxy": "p:1"}  # fmt: skip
    assert health.without_proxies(env) == {"PATH": "/usr/bin", "HOME": "/h"}


def test_the_front_starts_the_router_without_proxy_variables() -> None:
    """The front's router (Rust's reqwest reads HTTP_PROXY) gets the cleaned
    environment: checked on the source, since starting the router needs a service."""
    import inspect

    from launchers.service import front

    source = inspect.getsource(front.start_front)
    assert "env=health.without_proxies(os.environ)" in source
    assert "dict(os.environ)" not in source
