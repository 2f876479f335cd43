"""A rank's part of a plan: the typed starts it runs and the placeholder values only
this node knows. A moved port is a new typed start (``ray.moved(port)``); every argv is
built from the starts (``plan.argv.process_argv``, the dry run's builder), never
edited, with ``known_values()``: the node's values and the starts' ports."""

from __future__ import annotations

from dataclasses import dataclass, field

from launchers.defaults import DEFAULT_API_PORT, DEFAULT_RAY_PORT, HEALTH_PATH
from launchers.plan.commands import LEADER_IP, WILDCARD_HOSTS, RayStart, ServeStart
from launchers.plan.launch import Preflight, fill_placeholders


def _with_ports(values: dict[str, str], *starts: RayStart | ServeStart | None) -> dict[str, str]:
    out = dict(values)
    for start in starts:
        if start is not None:
            out.update(start.port_values())
    return out


def fill_env(env: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    return {k: fill_placeholders([v], values)[0] for k, v in env.items()}


@dataclass(frozen=True)
class LeaderTask:
    """Rank 0: the Ray head and/or the API's ``vllm serve``, and when it is READY."""

    ray: RayStart | None
    serve: ServeStart | None
    serve_env: dict[str, str]  # the role's (placeholders filled when vllm serve starts)
    values: dict[str, str]
    served_model_name: str | None
    expected_nodes: int
    nodes_timeout: float
    ready_timeout: float
    overlap: bool = True
    api_key_file: str | None = None
    health_path: str = HEALTH_PATH
    models_path: str = "/v1/models"
    secret_env: dict[str, str] = field(default_factory=dict)  # the API key, as it is
    preflight: Preflight | None = None

    def known_values(self) -> dict[str, str]:
        """Every placeholder's value on the leader: the node's and the ports it chose."""
        return _with_ports(self.values, self.ray, self.serve)

    def serve_environment(self) -> dict[str, str]:
        """What ``vllm serve`` gets on top of the node's environment."""
        return {**fill_env(self.serve_env, self.known_values()), **self.secret_env}

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
        host = host if host is not None else "0.0.0.0"  # noqa: S104
        return fill_placeholders([host], self.known_values())[0]

    def self_address(self) -> str:
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
    preflight: Preflight | None = None

    def known_values(self) -> dict[str, str]:
        """Every placeholder's value on this node, once the leader is known."""
        values = _with_ports(self.values, self.ray, self.serve)
        if self.leader_ip is not None:
            values[LEADER_IP] = self.leader_ip
        return values
