"""vLLM's routes all need the key but GET /health (python/vllm_hpc_auth.py, loaded by
vLLM with --middleware). vLLM's own key guards /v1, /v2, /inference and /cohere only;
every route below answered a stranger on vLLM 0.32 without this middleware. The
middleware is driven here as vLLM's ASGI server drives it (scope, receive, send)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from launchers.defaults import AUTH_MIDDLEWARE
from launchers.plan.commands import serve_start
from launchers.spec.config import ServeConfig

KEY = "sk-job-key"
with mock.patch.dict(os.environ, {"VLLM_API_KEY": KEY}):  # it refuses to import without
    import vllm_hpc_auth
DIGEST = hashlib.sha256(KEY.encode()).digest()

# Every route vLLM 0.32 serves outside /v1 (and some that exist only in some modes or
# versions), as a stranger would try them; an encoded or odd spelling of /health too.
REFUSED = [
    ("POST", "/invocations"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/metrics"),
    ("GET", "/version"),
    ("GET", "/load"),
    ("GET", "/ping"),
    ("POST", "/ping"),
    ("GET", "/server_info"),
    ("POST", "/pooling"),
    ("POST", "/score"),
    ("POST", "/rerank"),
    ("POST", "/classify"),
    ("POST", "/sleep"),
    ("POST", "/wake_up"),
    ("POST", "/collective_rpc"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/scale_elastic_ep"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("OPTIONS", "/v1/chat/completions"),
    ("POST", "/health"),
    ("GET", "/health/"),
    ("GET", "/Health"),
    ("GET", "//health"),
    ("GET", "/health/../metrics"),
    ("GET", "/"),
    ("GET", ""),
]


class Inner:
    """vLLM's app: records what got through."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(str(scope["path"]) if "path" in scope else str(scope["type"]))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def call(
    method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, kind: str = "http"
) -> tuple[list[dict[str, Any]], Inner]:
    inner = Inner()
    middleware = vllm_hpc_auth.KeyMiddleware(inner, DIGEST)
    scope = {"type": kind, "method": method, "path": path, "headers": headers or []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(middleware(scope, receive, send))
    return sent, inner


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_every_route_but_health_needs_the_key(method: str, path: str) -> None:
    sent, inner = call(method, path)
    assert inner.seen == [], f"{method} {path} reached vLLM without the key"
    assert sent[0]["status"] == 401
    assert b"API key is required" in sent[1]["body"]
    sent, inner = call(method, path, bearer(KEY))
    assert inner.seen == [path] and sent[0]["status"] == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_is_open(method: str) -> None:
    sent, inner = call(method, "/health")
    assert inner.seen == ["/health"] and sent[0]["status"] == 200


@pytest.mark.parametrize(
    "headers",
    [
        bearer(KEY + "x"),
        bearer(""),
        [(b"authorization", f"Basic {KEY}".encode())],
        [(b"authorization", KEY.encode())],
        [(b"x-api-key", KEY.encode())],
        [*bearer(KEY), *bearer("other")],  # two Authorization headers: ambiguous
        [(b"authorization", f"Bearer {KEY}\x00".encode())],
    ],
)
def test_only_the_bearer_key_opens(headers: list[tuple[bytes, bytes]]) -> None:
    sent, inner = call("POST", "/invocations", headers)
    assert inner.seen == [] and sent[0]["status"] == 401


def test_the_scheme_is_case_insensitive_as_in_vllm() -> None:
    _, inner = call("POST", "/tokenize", [(b"Authorization", f"bearer {KEY}".encode())])
    assert inner.seen == ["/tokenize"]


def test_a_websocket_without_the_key_is_closed() -> None:
    sent, inner = call("GET", "/v1/realtime", kind="websocket")
    assert inner.seen == [] and sent == [{"type": "websocket.close", "code": 1008}]
    _, inner = call("GET", "/v1/realtime", bearer(KEY), kind="websocket")
    assert inner.seen == ["/v1/realtime"]


def test_lifespan_passes() -> None:
    inner = Inner()
    middleware = vllm_hpc_auth.KeyMiddleware(inner, DIGEST)

    async def nothing() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def ignore(message: Any) -> None:
        return None

    asyncio.run(middleware({"type": "lifespan"}, nothing, ignore))
    assert inner.seen == ["lifespan"]


def test_the_key_comes_from_vllms_variable_and_is_required() -> None:
    assert vllm_hpc_auth.key_digest({"VLLM_API_KEY": KEY + "\n"}) == DIGEST
    for environ in ({}, {"VLLM_API_KEY": ""}, {"VLLM_API_KEY": "  \n"}):
        with pytest.raises(RuntimeError, match="refusing to serve without an API key"):
            vllm_hpc_auth.key_digest(environ)


def test_vllm_cannot_import_it_without_a_key() -> None:
    """Fail closed where vLLM loads it: importing the module without VLLM_API_KEY fails
    (vLLM then stops before it listens); with the key it imports."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    code = "import vllm_hpc_auth"
    refused = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0
    assert "VLLM_API_KEY is empty or not set" in refused.stderr
    env["VLLM_API_KEY"] = KEY
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


def test_the_import_path_is_the_class() -> None:
    module, name = AUTH_MIDDLEWARE.rsplit(".", 1)
    assert module == vllm_hpc_auth.__name__
    assert getattr(vllm_hpc_auth, name) is vllm_hpc_auth.KeyMiddleware


def _middleware_args(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--middleware"]


MODEL = "llama-3.2-3b-instruct"


def test_the_leader_loads_it_whenever_the_job_has_a_key(
    make_config: Callable[..., ServeConfig], tmp_path: Any
) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o600)
    for config in (make_config(model=MODEL), make_config(model=MODEL, api_key_file=str(key))):
        assert config.api_key != "none"
        assert _middleware_args(serve_start(config).argv()) == [AUTH_MIDDLEWARE]
    open_job = make_config(model=MODEL, no_api_key=True)
    assert _middleware_args(serve_start(open_job).argv()) == []


def test_a_headless_rank_serves_no_api_and_needs_no_middleware(
    make_config: Callable[..., ServeConfig],
) -> None:
    argv = serve_start(make_config(model=MODEL), headless=True).argv()
    assert "--headless" in argv and _middleware_args(argv) == []
