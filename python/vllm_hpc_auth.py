"""Every route of vLLM's API needs the key, but ``GET /health``: a pure ASGI middleware
that vLLM loads in-process with ``--middleware vllm_hpc_auth.KeyMiddleware``.

vLLM's own ``--api-key`` (``VLLM_API_KEY``) guards only paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere``: ``/invocations`` (a completion), ``/tokenize``,
``/detokenize``, ``/metrics``, ``/version``, ``/load`` and others answer anyone who
reaches the port, and on a shared cluster that is every other user. This middleware is
the outermost layer of vLLM's app and refuses every HTTP request and WebSocket without
``Authorization: Bearer KEY`` (compared in constant time), whatever its path, method or
encoding, except ``GET``/``HEAD`` of exactly ``/health`` (readiness checks and load
balancers). vLLM's own check stays in place behind it.

The key is vLLM's ``VLLM_API_KEY`` (the node runtime passes it from the job's 0600 key
file in the environment, never in argv). Without it the module refuses to be imported,
so vLLM fails at start instead of serving open.

A top-level module with no dependency beyond the standard library, so that it can be
bound as one file into a container whose Python has no vllm-hpc.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

KEY_VARIABLE = "VLLM_API_KEY"
OPEN_PATHS = frozenset({"/health"})
OPEN_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REFUSAL = json.dumps(
    {
        "error": {
            "message": "a valid API key is required (Authorization: Bearer KEY)",
            "type": "invalid_request_error",
            "code": 401,
        }
    }
).encode()


def key_digest(environ: Mapping[str, str]) -> bytes:
    """The SHA-256 of the key in ``environ``; refuses (RuntimeError) when there is none."""
    key = environ.get(KEY_VARIABLE, "").strip()
    if not key:
        raise RuntimeError(
            f"vllm_hpc_auth: {KEY_VARIABLE} is empty or not set: refusing to serve "
            "without an API key (vllm-hpc passes it from the job's key file)"
        )
    return hashlib.sha256(key.encode()).digest()


def is_open(method: str, path: str) -> bool:
    """Whether a request may pass without the key: ``GET``/``HEAD`` of ``/health``."""
    return method in OPEN_METHODS and path in OPEN_PATHS


def bearer_matches(headers: list[tuple[bytes, bytes]], digest: bytes) -> bool:
    """Is there exactly one ``Authorization`` header and is it ``Bearer <key>``?"""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return False
    scheme, _, given = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(hashlib.sha256(given.strip()).digest(), digest)


class KeyMiddleware:
    """The ASGI middleware (vLLM adds it with ``app.add_middleware(KeyMiddleware)``)."""

    def __init__(self, app: ASGIApp, digest: bytes | None = None) -> None:
        self.app = app
        self.digest = digest if digest is not None else key_digest(os.environ)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan: vLLM's own start and stop
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")) if kind == "http" else "WEBSOCKET"
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        if is_open(method, path) or bearer_matches(list(scope.get("headers", [])), self.digest):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_REFUSAL)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})


# Fail closed at import: vLLM imports this module while it builds its app, before it
# listens, so a missing key stops vLLM instead of leaving every route open.
key_digest(os.environ)
