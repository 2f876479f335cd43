"""The controller's ticks (launchers.service.controller) against its files and fakes of
SLURM and the router: what a replica is, as its job file and SLURM say together."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from launchers.client import Client, Job
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import private_dir
from launchers.service import store
from launchers.service.controller import SLURM_EVERY, Controller, Slurm
from launchers.service.decide import DRAIN_OVERDUE
from launchers.service.definition import Replica, ServiceSpec, ServiceState
from launchers.submit import slurmctl

NOW = 1_000_000.0


class Router:
    def __init__(self, urls: set[str]) -> None:
        self.urls = set(urls)

    def workers(self) -> set[str]:
        return set(self.urls)

    def add(self, url: str) -> None:
        self.urls.add(url)

    def remove(self, url: str) -> None:
        self.urls.discard(url)


class World:
    """SLURM's word on each job (``squeue`` faked as the service tests fake it), the
    controller's clock, what it asked SLURM to do."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.t = NOW
        self.slurm: dict[str, str] = {}
        self.cancelled: list[str] = []
        self.drained: list[str] = []
        self.submitted: list[tuple[int, int]] = []

    def job_state(self, job_id: str) -> tuple[str | None, str]:
        raw = self.slurm.get(job_id, "")
        return slurmctl.parse_state(raw), raw

    def seam(self) -> Slurm:
        return Slurm(
            state=self.job_state, end_time=lambda job_id: NOW + 3600,
            drain=self.drained.append, cancel=self.cancelled.append,
        )  # fmt: skip

    def submit(self, spec: ServiceSpec, slot: int, generation: int) -> Job:
        self.submitted.append((slot, generation))
        return Job(f"new-{slot}-{generation}", "")


def endpoint(job_dir: Path, state: jobfiles.State, url: str | None = None) -> None:
    private_dir(job_dir, "job directory")
    record = jobfiles.Endpoint(state=state, message=f"{state.lower()} here", url=url)
    jobfiles.write(JobDir(str(job_dir)).endpoint, record)


def service(tmp_path: Path, replicas: list[Replica]) -> str:
    directory = tmp_path / "services" / "llama"
    private_dir(directory, "service directory")
    spec = ServiceSpec(
        name="llama", request={"model": "m"}, replicas=1, handover_seconds=600.0,
        front_port=8100, front_time="1-00:00:00", python="/usr/bin/python3",
        key_file=str(directory / "key"), created_at=0.0,
    )  # fmt: skip
    store.write_spec(str(directory), spec)
    store.write_state(str(directory), ServiceState(name="llama", replicas=tuple(replicas)))
    return str(directory)


def replica(tmp_path: Path, job: str, **changes: Any) -> Replica:
    data: dict[str, Any] = {"job_id": job, "job_dir": str(tmp_path / "jobs" / job), "slot": 0,
                            "submitted_at": NOW - 600, "ends_at": NOW + 3000}  # fmt: skip
    return Replica(**{**data, **changes})


def controller(directory: str, world: World, router: Router) -> Controller:
    return Controller(
        directory, Client(job_root=str(Path(directory).parents[1])), router,
        url="http://10.0.0.9:8100/v1", slurm_seam=world.seam(), submit=world.submit,
        clock=lambda: world.t, log=lambda line: None,
    )  # fmt: skip


@pytest.fixture
def drained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[World, Controller]:
    """Replica 5 was drained for a handover (its successor 6 serves slot 0) and its
    runtime has written STOPPED; SLURM still runs job 5 (its batch step ends, the
    epilog runs)."""
    world = World(monkeypatch)
    old = replica(tmp_path, "5", role="draining", state="READY", ever_ready=True,
                  url="http://10.0.0.5:8000", drain_asked_at=NOW - 20)  # fmt: skip
    new = replica(tmp_path, "6", state="READY", ever_ready=True, url="http://10.0.0.6:8000")
    endpoint(tmp_path / "jobs" / "5", "STOPPED", "http://10.0.0.5:8000/v1")
    endpoint(tmp_path / "jobs" / "6", "READY", "http://10.0.0.6:8000/v1")
    world.slurm.update({"5": "RUNNING", "6": "RUNNING"})
    directory = service(tmp_path, [old, new])
    return world, controller(directory, world, Router({"http://10.0.0.6:8000"}))


def test_a_stopped_replica_slurm_still_runs_is_kept_until_slurm_says_it_ended(
    drained: tuple[World, Controller],
) -> None:
    world, control = drained
    state = control.tick()
    assert [r.job_id for r in state.replicas] == ["5", "6"]
    assert not any("drained and ended" in e for e in state.events), state.events
    assert world.submitted == [] and world.cancelled == []
    world.t += SLURM_EVERY + 1  # SLURM is asked again: the job has left it
    world.slurm["5"] = "COMPLETED"
    state = control.tick()
    assert [r.job_id for r in state.replicas] == ["6"]
    assert sum("replica 5 (slot 0) drained and ended" in e for e in state.events) == 1
    assert state.state == "UP" and world.submitted == []


def test_the_overdue_drain_cancel_fires_for_a_stopped_replica_slurm_still_runs(
    drained: tuple[World, Controller],
) -> None:
    world, control = drained
    control.tick()
    world.t = NOW - 20 + DRAIN_OVERDUE + 1  # drain asked at NOW - 20
    state = control.tick()
    assert world.cancelled == ["5"]
    assert "5" in [r.job_id for r in state.replicas]  # until SLURM says it ended
    world.t += 1
    control.tick()
    assert world.cancelled == ["5"]  # once per DRAIN_OVERDUE


# --- events say their time zone --------------------------------------------------------


def test_every_event_says_its_time_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decisions' events and an action that failed alike: ``HH:MM:SS UTC``."""
    import re

    from launchers.errors import RuntimeFailure

    class Refusing(Router):
        def add(self, url: str) -> None:
            raise RuntimeFailure("router: POST /add_worker: HTTP 500")

    world = World(monkeypatch)
    ready = replica(tmp_path, "5", state="READY", ever_ready=True, url="http://10.0.0.5:8000")
    endpoint(tmp_path / "jobs" / "5", "READY", "http://10.0.0.5:8000/v1")
    world.slurm["5"] = "RUNNING"
    directory = service(tmp_path, [ready])
    store.write_spec(directory, store.read_spec(directory).model_copy(update={"replicas": 2}))
    state = controller(directory, world, Refusing(set())).tick()
    assert state.events == (
        "13:46:40 UTC slot 1: a new replica",
        "13:46:40 UTC add http://10.0.0.5:8000: router: POST /add_worker: HTTP 500",
    )
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d UTC .+", e) for e in state.events)


# --- a drained replica is told why (stop.json), before it is signalled -----------------


@pytest.mark.parametrize(
    ("change", "drained", "reason"),
    [
        ({}, ["5"], "handover"),
        ({"replicas": 1}, ["6"], "scale down"),
        ({"desired": "DOWN"}, ["5", "6"], "service down"),
    ],
)
def test_the_controller_writes_why_before_it_drains_a_replica(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    drained: list[str],
    reason: str,
) -> None:
    """Replica 5 serves slot 0; 6 is READY as its successor (a handover drains 5), or
    serves slot 1 (a scale to 1 drains 6; `down` drains both). Each drained job's
    stop.json says why when SLURM's signal goes (its leader reads it then)."""
    world = World(monkeypatch)
    old = replica(tmp_path, "5", state="READY", ever_ready=True, url="http://10.0.0.5:8000")
    handover = not change
    where: dict[str, Any] = {"role": "successor", "successor_of": "5"} if handover else {"slot": 1}
    new = replica(
        tmp_path, "6", state="READY", ever_ready=True, url="http://10.0.0.6:8000", **where
    )
    endpoint(tmp_path / "jobs" / "5", "READY", "http://10.0.0.5:8000/v1")
    endpoint(tmp_path / "jobs" / "6", "READY", "http://10.0.0.6:8000/v1")
    world.slurm.update({"5": "RUNNING", "6": "RUNNING"})
    directory = service(tmp_path, [old, new])
    spec = store.read_spec(directory).model_copy(update={"replicas": 1 if handover else 2})
    store.write_spec(directory, spec.model_copy(update=change))
    seen: dict[str, jobfiles.StopReason | None] = {}

    def drain(job_id: str) -> None:  # what the job's leader would read on SIGUSR1
        seen[job_id] = jobfiles.read(
            JobDir(str(tmp_path / "jobs" / job_id)).stop, jobfiles.StopReason
        )

    routed = {"http://10.0.0.5:8000", "http://10.0.0.6:8000"}
    control = controller(directory, world, Router(routed))
    control.slurm.drain = drain
    state = control.tick()
    assert sorted(seen) == drained
    assert control.last == state  # what the front's metrics read: the tick's own state
    assert control.handovers == (1 if reason == "handover" else 0)
    assert all(s is not None and (s.reason, s.time) == (reason, NOW) for s in seen.values()), seen
    kept = {"5", "6"} - set(drained)
    assert not any(Path(tmp_path, "jobs", job, "stop.json").exists() for job in kept)


# --- scale to zero: the front's requests reach the controller's rules -------------------


def test_an_idle_service_drains_with_its_reason_and_a_request_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request for the idle time: replica 5 drains, its stop.json says ``idle`` and the
    service is IDLE; the proxy's next request (``Activity``) makes the next tick submit
    slot 0, and its time is kept in state.json for a successor front."""
    world = World(monkeypatch)
    ready = replica(tmp_path, "5", state="READY", ever_ready=True, url="http://10.0.0.5:8000",
                    since=NOW - 700)  # fmt: skip
    endpoint(tmp_path / "jobs" / "5", "READY", "http://10.0.0.5:8000/v1")
    world.slurm["5"] = "RUNNING"
    directory = service(tmp_path, [ready])
    spec = store.read_spec(directory).model_copy(update={"min_replicas": 0, "idle_seconds": 600.0})
    store.write_spec(directory, spec)
    seen: list[str | None] = []

    def drain(job_id: str) -> None:
        said = jobfiles.read(JobDir(str(tmp_path / "jobs" / job_id)).stop, jobfiles.StopReason)
        seen.append(None if said is None else said.reason)

    control = controller(directory, world, Router({"http://10.0.0.5:8000"}))
    control.slurm.drain = drain
    state = control.tick()
    assert seen == ["idle"] and state.state == "IDLE" and control.routed_count == 0
    assert "replica 5 (slot 0) drains: idle for 10m (no request yet)" in state.events[-1]
    world.t += 60
    world.slurm["5"] = "COMPLETED"
    endpoint(tmp_path / "jobs" / "5", "STOPPED")
    state = control.tick()
    assert state.replicas == () and world.submitted == []
    world.t += 3600
    control.activity.requested()  # what the proxy does with a request
    state = control.tick()
    assert world.submitted == [(0, 1)]
    assert state.events[-1].endswith("a request woke the service: slot 0: a new replica")
    read = store.read_state(directory)
    assert read is not None and read.last_request == world.t


# --- autoscaling: the replicas' queue read from their own /metrics ----------------------

WAITING_PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 8.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
"""


class FakeReplica(http.server.BaseHTTPRequestHandler):
    """A replica's vLLM as the controller sees it: /metrics with the service's key only."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        ok = self.path == "/metrics" and auth == "Bearer the-internal-key"
        body = WAITING_PAGE.encode() if ok else b"unauthorized"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def replica_server() -> Iterator[str]:
    """A replica's vLLM on loopback (its base URL): /metrics says 7 requests wait."""
    FakeReplica.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeReplica)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_queue_is_read_from_each_ready_replica_and_one_that_does_not_answer_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replica_server: str
) -> None:
    """Replica 5 (a stand-in vLLM on loopback) says 7 requests wait; replica 6 does not
    answer. The sample is 7 per replica read (not 3.5): after the 10 s window, slot 2."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # never used: the key stays
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    world = World(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    five = replica(tmp_path, "5", state="READY", ever_ready=True, url=replica_server)
    six = replica(tmp_path, "6", slot=1, state="READY", ever_ready=True, url=dead)
    endpoint(tmp_path / "jobs" / "5", "READY", f"{replica_server}/v1")
    endpoint(tmp_path / "jobs" / "6", "READY", f"{dead}/v1")
    world.slurm.update({"5": "RUNNING", "6": "RUNNING"})
    directory = service(tmp_path, [five, six])
    spec = store.read_spec(directory).model_copy(update={
        "replicas": 2, "max_replicas": 3, "scale_up_seconds": 10.0})  # fmt: skip
    store.write_spec(directory, spec)
    Path(spec.key_file).write_text("the-internal-key\n")
    Path(spec.key_file).chmod(0o600)
    logged: list[str] = []
    control = controller(directory, world, Router({replica_server, dead}))
    control.log = logged.append
    seen = []
    for step in range(11):  # a tick a second: the queue is read every 5 s
        state = control.tick()
        seen.append(len(FakeReplica.seen))
        if step < 10:
            assert world.submitted == [], step
        world.t += 1
    assert seen == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert FakeReplica.seen == ["Bearer the-internal-key"] * 3
    assert world.submitted == [(2, 1)]
    assert state.events[-2:] == (
        "13:46:50 UTC load: 7 requests waiting per replica on average over 10 s (above 4): "
        "scaling up to 3 replicas",
        "13:46:50 UTC slot 2: a new replica",
    )
    assert control.scale_decisions == {"up": 1, "down": 0}
    assert state.wanted == 3 and control.last is not None and control.last.wanted == 3
    said = [line for line in logged if "left out of the load" in line]
    assert said == [f"controller: replica 6: {dead}/metrics did not say its waiting requests: "
                    "left out of the load"]  # fmt: skip
    read = store.read_state(directory)
    assert read is not None and read.scaling.replicas == 3 and read.scaling.base == 2


def test_a_replica_that_hangs_holds_the_tick_no_longer_than_the_read_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that accepts and never answers: the read gives up after its timeout
    (the replicas are read at once, so two such replicas cost one timeout)."""
    import time

    from launchers.service.controller import read_waiting

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        began = time.monotonic()
        assert read_waiting(url, "k", timeout=0.3) is None
        assert time.monotonic() - began < 2.0
        world = World(monkeypatch)
        slow = [replica(tmp_path, str(n), slot=n, state="READY", ever_ready=True, url=url)
                for n in (5, 6)]  # fmt: skip
        directory = service(tmp_path, slow)
        spec = store.read_spec(directory).model_copy(update={"replicas": 2, "max_replicas": 3})
        Path(spec.key_file).write_text("k\n")
        Path(spec.key_file).chmod(0o600)
        control = controller(directory, world, Router(set()))
        control.read_waiting = lambda u, k: read_waiting(u, k, timeout=1.0)
        began = time.monotonic()
        assert control.read_queue(spec, slow) == {}
        assert time.monotonic() - began < 1.8  # one timeout, not two
