"""The leader's readiness poll sends the API key only to the vllm serve it started.

Until vLLM binds its port, another user on the node can bind it first: ``/health`` is
asked without the key, and ``/v1/models`` (with the key) only once the socket listening
on the API port belongs to vllm serve's process tree (psutil's answer is faked here).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import psutil
import pytest

from launchers import health
from launchers.errors import RuntimeFailure
from launchers.health import HttpAnswer
from launchers.runtime.endpoint import EndpointWriter
from launchers.runtime.supervise import LeaderProcs, supervise

from .helpers.runtime import FakeClock, Running, ctx_for, leader_task

VLLM_PID, ENGINE_PID, FOREIGN_PID = 4242, 4243, 999  # Running's pid is 4242
MODELS = '{"data": [{"id": "m"}]}'


class Addr(NamedTuple):  # as psutil's addr
    ip: str
    port: int


def sock(ip: str, port: int, pid: int | None, status: str = psutil.CONN_LISTEN) -> Any:
    return SimpleNamespace(laddr=Addr(ip, port), raddr=(), status=status, pid=pid)


class FakeProcess:
    """psutil.Process: vllm serve (4242) has one engine child (4243)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def children(self, recursive: bool = False) -> list[Any]:
        return [SimpleNamespace(pid=ENGINE_PID)] if self.pid == VLLM_PID else []


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What psutil.net_connections answers (the test sets it)."""
    answer: list[Any] = []
    monkeypatch.setattr(psutil, "Process", FakeProcess)
    monkeypatch.setattr(psutil, "net_connections", lambda kind="inet": list(answer))
    return answer


# --- who listens: the check itself ---------------------------------------------------


def test_vllm_or_one_of_its_children_listening_is_ours(sockets: list[Any]) -> None:
    sockets[:] = [sock("0.0.0.0", 8000, VLLM_PID), sock("0.0.0.0", 22, 1)]
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID) == health.Owner(
        True, "127.0.0.1:8000 is held by pid 4242 or its children"
    )
    sockets[:] = [sock("::", 8000, ENGINE_PID)]  # an API server process of vLLM's
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID).ours is True


def test_a_foreign_listener_is_not_ours(sockets: list[Any]) -> None:
    sockets[:] = [sock("127.0.0.1", 8000, FOREIGN_PID)]
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID) == health.Owner(
        False, "127.0.0.1:8000 is held by pid 999, not by pid 4242 or its children", True
    )
    # vLLM on the wildcard and another process on the probed address: not ours either
    sockets[:] = [sock("0.0.0.0", 8000, VLLM_PID), sock("127.0.0.1", 8000, FOREIGN_PID)]
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID).ours is False


def test_a_socket_whose_owner_cannot_be_seen_is_not_trusted(
    sockets: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sockets[:] = [sock("0.0.0.0", 8000, None)]  # another user's socket shows no pid
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID) == health.Owner(
        None, "cannot tell which process listens on 0.0.0.0:8000 (no permission)", True
    )

    def denied(kind: str = "inet") -> list[Any]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "net_connections", denied)
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID) == health.Owner(
        None, "cannot list this node's sockets (AccessDenied)"
    )


def test_only_sockets_that_reach_the_probed_address_count(sockets: list[Any]) -> None:
    sockets[:] = [
        sock("10.0.0.9", 8000, FOREIGN_PID),  # another address: never reached
        sock("0.0.0.0", 8001, FOREIGN_PID),  # another port
        sock("0.0.0.0", 8000, FOREIGN_PID, status=psutil.CONN_ESTABLISHED),
    ]
    assert health.listener_owner("127.0.0.1", 8000, VLLM_PID) == health.Owner(
        False, "nothing listens on 127.0.0.1:8000"
    )


# --- the readiness poll ----------------------------------------------------------------


class Port:
    """The API port over time: who holds it at each poll, and every request it got."""

    def __init__(self, holders: list[int | None]) -> None:
        self.holders = holders
        self.requests: list[tuple[str, str | None, int | None]] = []

    @property
    def holder(self) -> int | None:
        return self.holders[0]

    door_open = False  # vLLM answers routes other than /health without the key

    def http_get(self, url: str, *, api_key: str | None = None, timeout: float = 2.0) -> HttpAnswer:
        holder = self.holder
        path = url.rsplit(":8000", 1)[-1]
        self.requests.append((path, api_key, holder))
        if url.endswith("/health") and len(self.holders) > 1:
            self.holders.pop(0)  # the next poll sees the next holder
        if path != "/health" and api_key is None and not self.door_open:
            return HttpAnswer(False, 401, "HTTP 401")
        return HttpAnswer(True, 200, MODELS)


def _leader(tmp_path: Path, port: Port, sockets: list[Any], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    key = tmp_path / "api_key"
    key.write_text("sk-job\n")
    key.chmod(0o600)

    def listening(kind: str = "inet") -> list[Any]:
        return [sock("127.0.0.1", 8000, port.holder)]

    monkeypatch.setattr(psutil, "net_connections", listening)
    monkeypatch.setattr(health, "http_get", port.http_get)
    fake = FakeClock()
    ctx = ctx_for(tmp_path, 0, fake)
    task = replace(leader_task(ray=False), api_key_file=str(key))
    # vllm serve "exits" after 1000 polls: a bug that makes READY early cannot hang a test
    serve: Any = Running("vllm serve", str(tmp_path / "vllm-0.log"), exit_after=1000)
    return ctx, task, serve


def test_the_key_waits_until_vllm_holds_the_port(
    tmp_path: Path, sockets: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Another user's server answers first, then one nobody can see into, then vLLM:
    only vLLM ever gets a request with the key, and no request carries it before the
    check passed."""
    port = Port([FOREIGN_PID, FOREIGN_PID, None, VLLM_PID])
    ctx, task, serve = _leader(tmp_path, port, sockets, monkeypatch)
    endpoint = EndpointWriter(ctx, task)

    class Ready(Exception):
        pass

    def stop_when_ready(state: str, message: str, **fields: Any) -> None:
        if state == "READY":
            raise Ready

    monkeypatch.setattr(endpoint, "set", stop_when_ready)
    with pytest.raises(Ready):
        supervise(ctx, task, endpoint, LeaderProcs(serve=serve))
    keyed = [r for r in port.requests if r[1] is not None]
    assert keyed == [("/v1/models", "sk-job", VLLM_PID)]
    assert all(key is None for path, key, _ in port.requests if path == "/health")
    # the last two: the model with the key, then the door checked shut without it
    assert port.requests[-2:] == [
        ("/v1/models", "sk-job", VLLM_PID),
        ("/metrics", None, VLLM_PID),
    ]
    log = capsys.readouterr().err
    assert log.count("not sending the API key yet: 127.0.0.1:8000 is held by pid 999") == 1
    assert "not sending the API key yet: cannot tell which process listens on" in log


def test_a_foreign_listener_never_receives_the_key(
    tmp_path: Path, sockets: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = Port([FOREIGN_PID])
    ctx, task, serve = _leader(tmp_path, port, sockets, monkeypatch)
    # The port stays another process's: the job fails after PORT_TAKEN_SECONDS, naming
    # the holder, rather than wait out its ready timeout (two jobs on one node raced).
    with pytest.raises(RuntimeFailure) as caught:
        supervise(ctx, task, EndpointWriter(ctx, task), LeaderProcs(serve=serve))
    assert caught.value.one_line() == (
        f"port: the API port 8000 on {ctx.hostname} is held by another process "
        "(127.0.0.1:8000 is held by pid 999, not by pid 4242 or its children); this job's "
        "vllm serve cannot serve on it (resubmit (a free port is chosen at start), or pass a "
        "free --port)"
    )
    assert port.requests and all(key is None for _, key, _ in port.requests)
    assert {path for path, _, _ in port.requests} == {"/health"}


def test_a_real_socket_of_this_process_is_ours_and_not_another_trees() -> None:
    """psutil unfaked: this process listens, so the port is ours and not a child's."""
    import os
    import socket
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            assert health.listener_owner("127.0.0.1", port, os.getpid()).ours is True
            assert health.listener_owner("127.0.0.1", port, other.pid).ours in (False, None)
    finally:
        other.kill()
        other.wait()


def test_a_vllm_that_answers_without_the_key_never_says_ready(
    tmp_path: Path, sockets: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: vLLM serves the model with the key, but /metrics answers without it
    (its key middleware did not load): the job fails instead of saying READY."""
    port = Port([VLLM_PID])
    port.door_open = True
    ctx, task, serve = _leader(tmp_path, port, sockets, monkeypatch)
    endpoint = EndpointWriter(ctx, task)
    states: list[str] = []
    monkeypatch.setattr(endpoint, "set", lambda state, message, **f: states.append(state))
    with pytest.raises(RuntimeFailure) as caught:
        supervise(ctx, task, endpoint, LeaderProcs(serve=serve))
    assert "READY" not in states
    assert caught.value.one_line().startswith(
        "vllm serve answers /metrics without the API key (200): the key middleware "
        "(vllm_hpc_auth.KeyMiddleware) is not in place, so the job does not serve"
    )
