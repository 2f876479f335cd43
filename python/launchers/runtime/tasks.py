"""A rank's part of a plan: the typed starts it runs and the placeholder values only
this node knows. A moved port is a new typed start (``ray.moved(port)``); every argv is
built from the starts, never edited."""

from __future__ import annotations

from dataclasses import dataclass

from launchers.defaults import DEFAULT_API_PORT, DEFAULT_RAY_PORT
from launchers.plan.commands import WILDCARD_HOSTS, RayStart, ServeStart
from launchers.plan.launch import fill_placeholders


@dataclass(frozen=True)
class LeaderTask:
    """Rank 0: the Ray head and/or the API's ``vllm serve``, and when it is READY."""

    ray: RayStart | None
    serve: ServeStart | None
    serve_env: dict[str, str]
    values: dict[str, str]
    served_model_name: str | None
    expected_nodes: int
    nodes_timeout: float
    ready_timeout: float
    overlap: bool = True
    api_key_file: str | None = None
    health_path: str = "/health"
    models_path: str = "/v1/models"

    def ray_argv(self) -> list[str] | None:
        return None if self.ray is None else fill_placeholders(self.ray.argv(), self.values)

    def serve_argv(self) -> list[str] | None:
        return None if self.serve is None else fill_placeholders(self.serve.argv(), self.values)

    @property
    def api_port(self) -> int:
        port = self.serve.port if self.serve is not None else None
        return DEFAULT_API_PORT if port is None else port

    @property
    def ray_port(self) -> int:
        return DEFAULT_RAY_PORT if self.ray is None else self.ray.port

    def api_host(self) -> str:
        """The address the API binds (placeholders filled)."""
        host = self.serve.host if self.serve is not None else None
        return fill_placeholders([host if host is not None else "0.0.0.0"], self.values)[0]  # noqa: S104

    def probe_host(self) -> str:
        """Where the leader asks its own API: the bound address, loopback for a wildcard."""
        host = self.api_host()
        return "127.0.0.1" if host in WILDCARD_HOSTS else host


@dataclass(frozen=True)
class FollowerTask:
    """A rank > 0: a Ray worker (``ray.port`` is the head's port, taken from leader.json
    when the leader has to be looked up) or a headless ``vllm serve``."""

    ray: RayStart | None
    serve: ServeStart | None
    serve_env: dict[str, str]
    values: dict[str, str]
    leader_ip: str | None  # None: read leader.json
    nodes_timeout: float
