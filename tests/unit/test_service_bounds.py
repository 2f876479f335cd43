"""A service's bounds and its front's liveness, without a cluster: how many replicas a
service may ask for, which front ports it may listen on (the router sits 1000 above),
`scale` writing nothing when it refuses, and a front that stays alive through a slow
controller tick (its heartbeat has its own thread; a RUNNING front job is alive)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers import waits
from launchers.cli import cli
from launchers.client import Client
from launchers.defaults import (
    FRONT_HEARTBEAT_SECONDS,
    FRONT_STALE_SECONDS,
    SERVICE_MAX_REPLICAS,
)
from launchers.errors import InputError, RuntimeFailure, SubmitError
from launchers.service import front as front_module
from launchers.service import store
from launchers.service.definition import Front, ServiceSpec, service_dir
from launchers.service.manage import Services
from launchers.submit import slurmctl

from .conftest import service_spec

MODEL = "meta-llama/Llama-3.2-3B-Instruct"


def front(*, heartbeat: float, job_id: str | None = "77") -> Front:
    return Front(url="http://h:8100/v1", host="h", port=8100, hostname="n1", pid=1,
                 job_id=job_id, started_at=0.0, heartbeat=heartbeat)  # fmt: skip


@pytest.fixture
def no_front_job(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`service up` as far as submitting the front: the submission is recorded."""
    submitted: list[str] = []

    def submit_front(spec: ServiceSpec, directory: str) -> str:
        submitted.append(directory)
        return "99"

    monkeypatch.setattr("launchers.service.manage.submit_front", submit_front)
    return submitted


def up(root: Path, *options: str) -> BaseException | None:
    """`service up llama -m MODEL OPTIONS --job-root ROOT`: the error it raised, or None."""
    argv = ["service", "up", "llama", "-m", MODEL, *options, "--job-root", str(root)]
    return CliRunner().invoke(cli, argv, standalone_mode=False).exception


def made_service(root: Path, **changes: object) -> str:
    """A service directory as `service up` leaves it, with no front running."""
    directory = service_dir(str(root), "llama")
    store.make_dir(str(root), directory)
    store.write_spec(directory, service_spec(**changes))
    return directory


# --- replicas: a site maximum ----------------------------------------------------------


@pytest.mark.parametrize("replicas", [SERVICE_MAX_REPLICAS + 1, 10000])
def test_up_refuses_more_replicas_than_the_site_maximum_and_writes_nothing(
    tmp_path: Path, no_front_job: list[str], replicas: int
) -> None:
    root = tmp_path / "jobs"
    error = up(root, "--replicas", str(replicas))
    assert isinstance(error, InputError), error
    line = error.one_line()
    assert line.startswith("--replicas: ") and str(SERVICE_MAX_REPLICAS) in line, line
    assert "\n" not in line
    assert not (root / "services").exists()
    assert no_front_job == []


def test_up_refuses_a_negative_replica_count(tmp_path: Path, no_front_job: list[str]) -> None:
    error = up(tmp_path / "jobs", "--replicas", "-1")
    assert error is not None and not isinstance(error, AssertionError)
    assert no_front_job == []


@pytest.mark.parametrize("replicas", [SERVICE_MAX_REPLICAS + 1, 10000])
def test_scale_refuses_more_replicas_than_the_site_maximum_and_writes_nothing(
    tmp_path: Path, replicas: int
) -> None:
    root = tmp_path / "jobs"
    directory = made_service(root)
    before = Path(directory, "service.json").read_bytes()
    result = CliRunner().invoke(
        cli, ["service", "scale", "llama", str(replicas), "--job-root", str(root)],
        standalone_mode=False,
    )  # fmt: skip
    assert isinstance(result.exception, InputError), result.output
    assert str(SERVICE_MAX_REPLICAS) in result.exception.one_line()
    assert "replicas" in result.exception.one_line().lower()
    assert Path(directory, "service.json").read_bytes() == before


def test_scale_without_a_front_refuses_and_leaves_service_json_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    directory = made_service(root)
    before = Path(directory, "service.json").read_bytes()
    with pytest.raises(RuntimeFailure, match="no front is running"):
        Services(Client(job_root=str(root))).get("llama").scale(3)
    assert Path(directory, "service.json").read_bytes() == before


def test_scale_with_a_live_front_writes_the_new_count(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    directory = made_service(root)
    store.write_front(directory, front(heartbeat=1e12, job_id=None))
    updated = Services(Client(job_root=str(root))).get("llama").scale(SERVICE_MAX_REPLICAS)
    assert updated.replicas == SERVICE_MAX_REPLICAS
    assert store.read_spec(directory).replicas == SERVICE_MAX_REPLICAS


# --- the front port: the shared port rule, and room for the router above it ------------


BAD_FRONT_PORTS = [
    (0, "1024-65535"),
    (80, "1024-65535"),
    (1023, "1024-65535"),
    (9001, "Ray's worker port range"),  # the router's metrics port would be 10002
    (9500, "Ray's worker port range"),  # the router on 10500
    (10002, "Ray's worker port range"),
    (15000, "Ray's worker port range"),
    (18900, "Ray's worker port range"),
    (19999, "Ray's worker port range"),
    (64535, "65535"),  # the router's metrics port would be 65536
    (65000, "65535"),
    (65535, "65535"),
    (70000, "1024-65535"),
]


@pytest.mark.parametrize(("port", "reason"), BAD_FRONT_PORTS)
def test_up_refuses_a_front_port_outside_the_port_rule_and_writes_nothing(
    tmp_path: Path, no_front_job: list[str], port: int, reason: str
) -> None:
    root = tmp_path / "jobs"
    error = up(root, "--front-port", str(port))
    assert isinstance(error, InputError), error
    line = error.one_line()
    assert line.startswith(f"--front-port: {port} "), line
    assert reason in line, line
    assert not (root / "services").exists()
    assert no_front_job == []


@pytest.mark.parametrize(("port", "reason"), BAD_FRONT_PORTS)
def test_a_service_definition_refuses_the_same_front_ports(port: int, reason: str) -> None:
    with pytest.raises(ValueError, match="front_port"):
        service_spec(front_port=port)


@pytest.mark.parametrize("port", [1024, 8100, 9000, 20000, 64534])
def test_front_ports_with_room_for_the_router_are_accepted(port: int) -> None:
    assert service_spec(front_port=port).front_port == port


# --- a live front stays alive through a slow controller tick ---------------------------


@pytest.mark.parametrize(
    ("slurm_state", "alive"),
    [("RUNNING", True), ("COMPLETING", False), ("PENDING", False), ("FAILED", False),
     ("CANCELLED by 0", False), ("", False)],
)  # fmt: skip
def test_a_running_front_job_is_alive_whatever_its_heartbeat_says(
    monkeypatch: pytest.MonkeyPatch, slurm_state: str, alive: bool
) -> None:
    monkeypatch.setattr(slurmctl, "job_state", lambda job_id: (slurmctl.parse_state(slurm_state),
                                                            slurm_state))  # fmt: skip
    stale = front(heartbeat=100.0)
    now = 100.0 + FRONT_STALE_SECONDS + 600.0  # a tick ten minutes long
    assert (front_module.live_front(stale, now) is not None) is alive


def test_an_ended_front_job_is_dead_though_its_heartbeat_is_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slurmctl, "job_state", lambda job_id: ("FAILED", "FAILED"))
    assert front_module.live_front(front(heartbeat=100.0), 101.0) is None


def test_without_slurm_here_the_heartbeat_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_squeue(job_id: str) -> tuple[str | None, str]:
        raise SubmitError("squeue: not found here")

    monkeypatch.setattr(slurmctl, "job_state", no_squeue)
    assert front_module.live_front(front(heartbeat=100.0), 101.0) is not None
    assert front_module.live_front(front(heartbeat=100.0), 100.0 + FRONT_STALE_SECONDS) is None


class FakeClock:
    """waits.Clock's pair: sleeping moves the time on; ``stop`` is set at ``stop_at``."""

    def __init__(self, stop: threading.Event, stop_at: float) -> None:
        self.t, self.stop, self.stop_at = 0.0, stop, stop_at

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        if self.t >= self.stop_at:
            self.stop.set()

    def clock(self) -> waits.Clock:
        return waits.Clock(now=self.now, sleep=self.sleep)


def test_the_heartbeat_beats_on_its_own_cadence_until_the_front_stops() -> None:
    stop = threading.Event()
    fake = FakeClock(stop, stop_at=60.0)
    beats: list[float] = []
    front_module.keep_beating(lambda: beats.append(fake.t), stop, clock=fake.clock())
    assert beats[0] == 0.0 and len(beats) >= 60.0 / FRONT_HEARTBEAT_SECONDS
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) <= FRONT_HEARTBEAT_SECONDS < FRONT_STALE_SECONDS / 3
    assert beats[-1] < 60.0  # nothing written once the front stops


def test_a_failed_heartbeat_write_is_logged_and_the_next_one_tries_again() -> None:
    stop = threading.Event()
    fake = FakeClock(stop, stop_at=3 * FRONT_HEARTBEAT_SECONDS)
    beats: list[float] = []
    logged: list[str] = []

    def beat() -> None:
        beats.append(fake.t)
        if len(beats) == 1:
            raise OSError("stale file handle")

    front_module.keep_beating(beat, stop, log=logged.append, clock=fake.clock())
    assert len(beats) >= 3 and any("stale file handle" in line for line in logged)


def test_a_slow_controller_tick_does_not_age_the_heartbeat() -> None:
    """The controller's thread is stuck in one tick (a slow squeue, a hung submit) for
    ten times FRONT_STALE_SECONDS; the heartbeat needs nothing from it and keeps
    front.json fresh all along (before, ``beat()`` ran only after each tick)."""
    stop = threading.Event()
    fake = FakeClock(stop, stop_at=10 * FRONT_STALE_SECONDS)
    tick_done = threading.Event()  # never set: the tick outlasts the whole test
    beats: list[float] = []
    controller = threading.Thread(target=tick_done.wait, args=(5.0,), daemon=True)
    controller.start()
    front_module.keep_beating(lambda: beats.append(fake.t), stop, clock=fake.clock())
    assert controller.is_alive()

    def fresh(t: float) -> bool:
        return any(0 <= t - b < FRONT_STALE_SECONDS for b in beats)

    assert all(fresh(t) for t in range(int(10 * FRONT_STALE_SECONDS)))
    tick_done.set()
