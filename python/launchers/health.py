"""Readiness and health probes over HTTP, each wait with a deadline.

A deployment is ready when ``/health`` answers 200 and ``/v1/models`` lists the served
model (with the API key when one is set). Failures quote the log to read.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from launchers import waits
from launchers.defaults import RAY_WORKER_PORTS
from launchers.errors import RuntimeFailure

# Variables that make an HTTP client send its requests (and so our API key, and for the
# router every prompt) to a proxy instead of the address we checked. Python's urllib,
# httpx (so the openai client), aiohttp with trust_env and Rust's reqwest (vllm-router)
# all read some of them, in either case.
PROXY_VARIABLES = frozenset(
    {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "ws_proxy", "wss_proxy",
     "grpc_proxy", "no_proxy", "socks_proxy", "socks5_proxy"}
)  # fmt: skip
# The one urllib opener vllm-hpc talks to jobs, replicas, the router and fronts with:
# an empty ProxyHandler ignores every proxy variable.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def without_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without any proxy variable (in any case): for a process vllm-hpc starts
    that sends a key or a prompt over HTTP (vllm-router, ``vllm bench serve``)."""
    return {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}


def urlopen(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """``urllib.request.urlopen`` that never goes through a proxy, whatever the
    environment says: every HTTP call of vllm-hpc that may carry a key goes through it."""
    response: http.client.HTTPResponse = _DIRECT.open(request, timeout=timeout)
    return response


@dataclass(frozen=True)
class HttpAnswer:
    ok: bool
    status: int | None
    detail: str


def http_get(url: str, *, api_key: str | None = None, timeout: float = 2.0) -> HttpAnswer:
    request = urllib.request.Request(url)  # noqa: S310 - http(s) URLs we built
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urlopen(request, timeout=timeout) as response:
            body = response.read(1 << 20).decode("utf-8", "replace")
            return HttpAnswer(response.status == 200, response.status, body)
    except urllib.error.HTTPError as exc:
        return HttpAnswer(False, exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return HttpAnswer(False, None, str(reason))


def models_served(body: str) -> list[str]:
    try:
        data = json.loads(body)
        return [str(item["id"]) for item in data.get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """True when nothing on this node listens on ``port`` (any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of an earlier server in TIME_WAIT must not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - a bind test, closed at once
        except OSError:
            return False
    return True


def pick_port(start: int, *, avoid: tuple[int, int] = RAY_WORKER_PORTS, tries: int = 100) -> int:
    """The first free port from ``start`` on, outside Ray's worker port range."""
    port = start
    for _ in range(tries):
        if not avoid[0] <= port <= avoid[1] and port_free(port):
            return port
        port += 1
    raise RuntimeFailure(
        f"port: no free port in {start}-{port - 1} on {socket.gethostname()}",
        fix="pass --port / --ray-port with a port you know is free",
    )


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float,
    what: str,
    log: str,
    alive: Callable[[], bool] | None = None,
    clock: waits.Clock = waits.REAL,
) -> float:
    """Poll until ``host:port`` accepts connections; returns seconds waited. ``alive``
    says whether what should open it still runs (a False ends the wait at once)."""

    def opened() -> bool | None:
        if port_open(host, port):
            return True
        if alive is not None and not alive():
            raise RuntimeFailure(f"{what} exited before {host}:{port} opened", fix=f"read {log}")
        return None

    found = waits.wait_for(
        opened,
        what=f"{what} at {host}:{port}",
        detail=lambda: ", it never opened",
        timeout=timeout,
        log=log,
        clock=clock,
    )
    return found.seconds


@dataclass(frozen=True)
class Owner:
    """Whether the sockets listening on a port belong to one process tree: True (all of
    them do), False (another process holds one, or none listens), None (cannot tell)."""

    ours: bool | None
    why: str
    taken: bool = False  # another process (or one we cannot see) listens there


def _reaches(listen_ip: str, host: str) -> bool:
    """Whether a socket bound to ``listen_ip`` receives connections made to ``host``."""
    return listen_ip in ("", "0.0.0.0", "::", host, f"::ffff:{host}")  # noqa: S104


def listener_owner(host: str, port: int, root_pid: int) -> Owner:
    """Who listens on ``host:port``: the process ``root_pid`` or one of its descendants
    (ours), another process, or nobody knows (a socket of another user shows no pid).
    The leader sends its API key only to a port that is ours."""
    import psutil

    try:
        tree = {root_pid, *(p.pid for p in psutil.Process(root_pid).children(recursive=True))}
    except psutil.Error:
        tree = {root_pid}
    try:
        sockets = psutil.net_connections(kind="tcp")
    except psutil.Error as exc:
        return Owner(None, f"cannot list this node's sockets ({type(exc).__name__})")
    listening = [
        (str(s.laddr[0]), s.pid)
        for s in sockets
        if s.status == psutil.CONN_LISTEN
        and isinstance(s.laddr, tuple)
        and len(s.laddr) == 2
        and s.laddr[1] == port
        and _reaches(s.laddr[0], host)
    ]
    if not listening:
        return Owner(False, f"nothing listens on {host}:{port}")
    for ip, pid in listening:
        where = f"{ip}:{port}"
        if pid is None:
            return Owner(
                None, f"cannot tell which process listens on {where} (no permission)", True
            )
        if pid not in tree:
            return Owner(
                False, f"{where} is held by pid {pid}, not by pid {root_pid} or its children", True
            )
    return Owner(True, f"{host}:{port} is held by pid {root_pid} or its children")
