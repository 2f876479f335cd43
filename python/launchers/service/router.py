"""vllm-router as the service's load balancer: its command line and its admin API.

The router listens on loopback only (its admin routes take no credentials: see
``service.proxy``), retries a request that found a replica gone on another one, and
checks the replicas' ``/health`` itself. The controller adds a replica once it is READY
and removes it before it drains. No key is given to the router: it passes the client's
``Authorization`` header through to the replicas, which check it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from launchers import health
from launchers.errors import RuntimeFailure

LOOPBACK = "127.0.0.1"
HEALTH_INTERVAL_SECONDS = 5
RETRIES = 5


def router_argv(python: str, port: int, metrics_port: int, workers: Sequence[str]) -> list[str]:
    """The router's argv: loopback only, round robin, retries on, quick health checks."""
    argv = [
        python, "-m", "vllm_router.launch_router",
        "--host", LOOPBACK, "--port", str(port),
        "--policy", "round_robin",
        "--prometheus-host", LOOPBACK, "--prometheus-port", str(metrics_port),
        "--health-check-interval-secs", str(HEALTH_INTERVAL_SECONDS),
        "--health-failure-threshold", "2",
        "--worker-startup-timeout-secs", "60",
        "--retry-max-retries", str(RETRIES),
        "--log-level", "info",
    ]  # fmt: skip
    if workers:
        argv += ["--worker-urls", *workers]
    return argv


class RouterAdmin:
    """The router's worker list, over its loopback admin API."""

    def __init__(self, port: int, timeout: float = 90.0):
        self.base = f"http://{LOOPBACK}:{port}"
        self.timeout = timeout

    def _call(self, method: str, path: str) -> str:
        request = urllib.request.Request(self.base + path, method=method)  # noqa: S310
        try:
            with health.urlopen(request, timeout=self.timeout) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:200]
            raise RuntimeFailure(f"router: {method} {path}: HTTP {exc.code} {body}") from None
        except OSError as exc:
            raise RuntimeFailure(f"router: {method} {path}: {exc}") from None

    def workers(self) -> set[str]:
        data = json.loads(self._call("GET", "/list_workers"))
        return {str(u).rstrip("/") for u in data.get("urls", [])}

    def add(self, url: str) -> None:
        self._call("POST", "/add_worker?url=" + urllib.parse.quote(url, safe=""))

    def remove(self, url: str) -> None:
        self._call("POST", "/remove_worker?url=" + urllib.parse.quote(url, safe=""))
