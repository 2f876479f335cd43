"""Service operations that need no cluster: names, the front's batch script, what `up`
refuses before writing anything, `tunnel`'s ssh line, the replicas' requests, and when
`down` returns (once SLURM has let go of every job of the service)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers import waits
from launchers.cli import cli
from launchers.errors import InputError, WaitTimeout
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir, ServiceDir
from launchers.jobdir.safe import private_dir
from launchers.observe import tunnel
from launchers.service import store
from launchers.service.controller import replica_request
from launchers.service.definition import (
    Front,
    Replica,
    Role,
    ServiceState,
    check_name,
)
from launchers.service.front import front_alive
from launchers.service.frontjob import front_script
from launchers.service.keys import digest
from launchers.service.manage import Service
from launchers.submit import slurm, slurmctl

from .conftest import service_spec
from .helpers.docs import block_after


@pytest.fixture(autouse=True)
def no_sbatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here reaches this machine's sbatch (one that means to fakes it again)."""

    def refuse(script: str, environ: object) -> str:
        raise AssertionError("a unit test reached sbatch")

    monkeypatch.setattr(slurm, "sbatch_text", refuse)


@pytest.mark.parametrize("name", ["llama", "a", "llama-70b-2", "x" * 31])
def test_good_service_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Llama", "7b", "-x", "a_b", "a/b", "x" * 32, "a\nb", ".."])
def test_bad_service_names_are_one_line_errors(name: str) -> None:
    with pytest.raises(InputError, match="NAME: .* is not a service name"):
        check_name(name)


def test_the_front_script_is_rendered_from_the_spec() -> None:
    """What the spec says reaches the script (render.front's golden file has the rest)."""
    lines = front_script(service_spec(), "/jobs/services/llama").splitlines()
    assert "#SBATCH --job-name=llama-front" in lines and "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --time=1-00:00:00" in lines
    assert "#SBATCH --output=/jobs/services/llama/front-%j.log" in lines
    assert lines[-1] == (
        "exec /opt/env/bin/python -m launchers service front --service-dir /jobs/services/llama"
    )


def test_each_replica_has_its_own_movable_port_and_the_services_key() -> None:
    s = service_spec()
    ports = {(slot, gen): replica_request(s, slot, gen).port for slot in (0, 1) for gen in (1, 2)}
    assert len(set(ports.values())) == 4  # a successor never starts where its slot's job is
    r = replica_request(s, 1, 3)
    assert r.port_fixed is False and r.api_key_file == "/k/key"
    assert r.job_name == "llama-1" and r.no_api_key is False
    assert r.model_copy(update={"port": None, "port_fixed": None, "api_key_file": None,
                                "job_name": None}) == s.request  # fmt: skip


def test_a_front_is_alive_only_while_its_heartbeat_is_fresh() -> None:
    from launchers.service.definition import Front

    front = Front(url="http://h:8100/v1", host="h", port=8100, hostname="n1", pid=1,
                  started_at=0.0, heartbeat=100.0)  # fmt: skip
    assert front_alive(front, 110.0)
    assert not front_alive(front, 1000.0)
    assert not front_alive(None, 0.0)


def refused_up(root: Path, *options: str) -> InputError:
    """`service up llama -m MODEL OPTIONS --job-root ROOT`, which must fail as bad input."""
    argv = ["service", "up", "llama", "-m", "meta-llama/Llama-3.2-3B-Instruct", *options]
    result = CliRunner().invoke(cli, [*argv, "--job-root", str(root)], standalone_mode=False)
    assert isinstance(result.exception, InputError), result.output
    return result.exception


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--no-api-key"], "--no-api-key: a service sets it for its replicas"),
        (["--job-name", "x"], "--job-name: a service sets it for its replicas"),
    ],
)
def test_up_refuses_what_the_service_owns_and_writes_nothing(
    tmp_path: Path, flag: list[str], message: str
) -> None:
    root = tmp_path / "jobs"
    error = refused_up(root, *flag)
    assert message in error.one_line()
    assert not (root / "services").exists()


def test_tunnel_forwards_a_laptop_port_through_the_login_node() -> None:
    argv = tunnel.ssh_argv("http://10.77.0.11:8100/v1", "login.example.org", None, "ada")
    assert argv == ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L",
                    "8100:10.77.0.11:8100", "--", "ada@login.example.org"]  # fmt: skip
    assert tunnel.local_url("http://10.77.0.11:8100/v1", 9000) == "http://localhost:9000/v1"
    assert tunnel.login_host({"VLLM_HPC_LOGIN_HOST": "hpc-login"}, None) == "hpc-login"
    with pytest.raises(InputError, match="has no host and port"):
        tunnel.target("http://10.77.0.11/v1")


@pytest.mark.parametrize(
    ("slurm_state", "alive"), [("RUNNING", True), ("FAILED", False), ("CANCELLED", False)]
)
def test_a_front_whose_job_ended_is_dead_though_its_heartbeat_is_fresh(
    monkeypatch: pytest.MonkeyPatch, slurm_state: str, alive: bool
) -> None:
    from launchers.service.definition import Front
    from launchers.service.front import live_front

    monkeypatch.setattr(
        slurmctl, "job_state", lambda job_id: (slurmctl.parse_state(slurm_state), "")
    )
    front = Front(url="http://h:8100/v1", host="h", port=8100, hostname="n1", pid=1,
                  job_id="77", started_at=0.0, heartbeat=100.0)  # fmt: skip
    assert (live_front(front, 101.0) is not None) is alive


@pytest.mark.parametrize("front_time", ["1:00\n#SBATCH --uid=0", "forever", "0", "400-00:00:00"])
def test_a_bad_front_time_is_refused_before_anything_is_written(
    tmp_path: Path, front_time: str
) -> None:
    root = tmp_path / "jobs"
    error = refused_up(root, "--front-time", front_time)
    assert error.one_line().startswith("--front-time: ")
    assert not (root / "services").exists()
    with pytest.raises(ValueError, match="--front-time"):
        service_spec(front_time=front_time)


# --- `service down` returns when SLURM has let go of every job of the service -----------


class FakeSlurm:
    """``slurmctl.job_state`` faked: each job RUNNING for its number of looks, then
    COMPLETED (-1: for ever); ``scancel`` recorded; ``first[job]`` runs at the first look."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, looks: dict[str, int]) -> None:
        self.looks = dict(looks)
        self.cancelled: list[str] = []
        self.first: dict[str, Callable[[], None]] = {}
        monkeypatch.setattr(slurmctl, "job_state", self.job_state)
        monkeypatch.setattr(slurmctl, "scancel", self.cancelled.append)

    def job_state(self, job_id: str) -> tuple[str | None, str]:
        hook = self.first.pop(job_id, None)
        if hook is not None:
            hook()
        left = self.looks.get(job_id, 0)
        if left == 0:
            return "ENDED", "COMPLETED"
        self.looks[job_id] = left - 1
        return "RUNNING", "RUNNING"

    def listed(self) -> list[str]:
        return sorted(job for job, left in self.looks.items() if left != 0)


def fake_clock() -> waits.Clock:
    t = [0.0]

    def sleep(seconds: float) -> None:
        t[0] += seconds

    return waits.Clock(now=lambda: t[0], sleep=sleep)


def a_service(tmp_path: Path, replicas: list[Replica], front_job: str | None) -> Service:
    """Service llama, UP with ``replicas`` in state.json, and a front (job ``front_job``)
    whose heartbeat is fresh; waits on a fake clock."""
    directory = tmp_path / "services" / "llama"
    private_dir(directory, "service directory")
    store.write_spec(str(directory), service_spec(key_file=str(directory / "key")))
    store.write_state(
        str(directory), ServiceState(name="llama", state="UP", replicas=tuple(replicas))
    )
    if front_job is not None:
        store.write_front(str(directory), Front(
            url="http://h:8100/v1", host="h", port=8100, hostname="n1", pid=1,
            job_id=front_job, started_at=0.0, heartbeat=time.time()))  # fmt: skip
    svc = Service("llama", str(directory))
    svc.clock = fake_clock()
    return svc


def replica(tmp_path: Path, job: str, state: jobfiles.State, role: Role = "serving") -> Replica:
    """Replica ``job``, its job file (and state.json) saying ``state``."""
    job_dir = tmp_path / "jobs" / job
    private_dir(job_dir, "job directory")
    jobfiles.write(JobDir(str(job_dir)).endpoint, jobfiles.Endpoint(state=state))
    return Replica(job_id=job, job_dir=str(job_dir), slot=0, role=role, state=state,
                   submitted_at=0.0)  # fmt: skip


def test_down_waits_while_slurm_still_lists_a_replica_whose_file_says_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No front: down stops what the files name, and returns once SLURM has let go of
    job 5 (its file said STOPPED at once; its batch step and epilog took 3 more looks)."""
    fake = FakeSlurm(monkeypatch, {"5": 3})
    svc = a_service(tmp_path, [replica(tmp_path, "5", "STOPPED", "draining")], None)
    state = svc.down(timeout=60)
    assert fake.listed() == [], f"down returned while SLURM still lists {fake.listed()}"
    assert state.state == "DOWN" and state.replicas == ()


def test_down_with_a_front_waits_for_the_replicas_and_the_front_job_to_leave_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front says DOWN (here: as soon as it is asked) while SLURM still runs replica
    job 5 and the front's own job 77: down returns once both have left SLURM."""
    fake = FakeSlurm(monkeypatch, {"5": 4, "77": 6})
    svc = a_service(tmp_path, [replica(tmp_path, "5", "READY")], "77")
    fake.first["77"] = lambda: store.write_state(
        svc.directory, ServiceState(name="llama", state="DOWN", message="down")
    )
    state = svc.down(timeout=60)
    assert fake.listed() == [], f"down returned while SLURM still lists {fake.listed()}"
    assert state.state == "DOWN"
    assert store.read_spec(svc.directory).desired == "DOWN"
    assert fake.cancelled == []  # the front drains; down only waits


def test_down_that_times_out_says_which_jobs_slurm_still_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(monkeypatch, {"5": -1, "6": 2})
    replicas = [replica(tmp_path, "5", "STOPPED", "draining"), replica(tmp_path, "6", "READY")]
    svc = a_service(tmp_path, replicas, None)
    with pytest.raises(WaitTimeout) as caught:
        svc.down(timeout=30)
    assert "still in SLURM: replica job 5" in caught.value.one_line(), caught.value.one_line()
    assert sorted(fake.cancelled) == ["5", "6"]  # every job SLURM still listed


def test_down_of_a_service_backing_off_waits_for_the_front_to_say_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state.json says BACKING_OFF until the front's next tick sees `down`: that is no
    reason to give up (a wait for UP stops there; a wait for DOWN does not)."""
    fake = FakeSlurm(monkeypatch, {"77": 2})
    svc = a_service(tmp_path, [], "77")
    backing_off = ServiceState(name="llama", state="BACKING_OFF", message="3 failed in a row")
    store.write_state(svc.directory, backing_off)
    t = [0.0]

    def tick(seconds: float) -> None:  # the front's next tick
        t[0] += seconds
        store.write_state(svc.directory, ServiceState(name="llama", state="DOWN"))

    svc.clock = waits.Clock(now=lambda: t[0], sleep=tick)
    assert svc.down(timeout=60).state == "DOWN"
    assert fake.listed() == []


# --- `service up` refuses a front whose Python cannot run vllm-router -----------------


def test_up_refuses_a_front_python_without_vllm_router_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front's Python is this one (no VLLM_HPC_PYTHON): asked directly, it says no."""
    import sys

    from launchers.service import manage

    asked: list[tuple[str, str]] = []

    def can_import(python: str, module: str) -> bool:
        asked.append((python, module))
        return False

    monkeypatch.setattr(manage, "can_import", can_import)
    root = tmp_path / "jobs"
    error = refused_up(root)
    assert asked == [(sys.executable, "vllm_router")]
    assert error.exit_code == 2
    assert error.one_line() == (
        f"service up: the front's Python ({sys.executable}) cannot import vllm_router: "
        "install vllm-hpc[service] there (pip install 'vllm-hpc[service]')"
    )
    assert not (root / "services").exists()


def test_another_front_python_is_asked_in_a_child_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VLLM_HPC_PYTHON names the nodes' Python: ``input.probe.has_module`` asks it (the
    seam that runs it through ``_proc``); this interpreter's own modules do not count."""
    from launchers.input import probe

    asked: list[tuple[str, str]] = []

    def has_module(python: str, module: str) -> bool:
        asked.append((python, module))
        return module != "vllm_router"

    monkeypatch.setattr(probe, "has_module", has_module)
    monkeypatch.setenv("VLLM_HPC_PYTHON", "/opt/nodes/bin/python")
    root = tmp_path / "jobs"
    error = refused_up(root)
    assert ("/opt/nodes/bin/python", "vllm_router") in asked
    assert "the front's Python (/opt/nodes/bin/python) cannot import vllm_router" in str(error)
    assert not (root / "services").exists()


def test_a_front_python_that_cannot_be_asked_here_is_let_through() -> None:
    from launchers.service import manage

    manage.check_front_python("/nonexistent/bin/python")  # has_module faked: True
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("launchers.input.probe.has_module", lambda python, module: None)
        manage.check_front_python("/nonexistent/bin/python")


# --- a front job that ends before its first heartbeat is reported at once --------------


def a_failed_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_says: str) -> Service:
    """Service llama whose front job 77 was submitted (state.json says so) and never
    wrote front.json; SLURM says ``slurm_says`` of it; its log ends with the cause."""
    svc = a_service(tmp_path, [], None)
    state = ServiceState.model_validate({"name": "llama", "state": "STARTING",
                                         "front_job": "77"})  # fmt: skip
    store.write_state(svc.directory, state)
    log = [f"[00:00:0{i}] starting line {i}" for i in range(5)]
    log += ["Traceback (most recent call last):", *[f'  File "x.py", line {i}' for i in range(4)],
            "ModuleNotFoundError: No module named 'vllm_router'", ""]  # fmt: skip
    (Path(svc.directory) / "front-77.log").write_text("\n".join(log))
    monkeypatch.setattr(
        slurmctl, "job_state", lambda job_id: (slurmctl.parse_state(slurm_says), slurm_says)
    )
    return svc


def test_up_wait_stops_at_once_when_the_front_job_failed_before_its_first_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchers.errors import RuntimeFailure

    svc = a_failed_front(tmp_path, monkeypatch, "FAILED")
    with pytest.raises(RuntimeFailure) as caught:
        svc.wait(("UP",), 3600, "to have every replica READY")
    assert svc.clock.now() < 5, f"waited {svc.clock.now()} s for a front that had ended"
    error = caught.value
    assert error.one_line() == (
        "service llama: the front job 77 ended (FAILED) before its first heartbeat; "
        f"last lines of {svc.directory}/front-77.log:"
    )
    lines: tuple[str, ...] = getattr(error, "lines", ())
    assert len(lines) == 10
    assert lines[-1] == "ModuleNotFoundError: No module named 'vllm_router'"


def test_up_wait_goes_on_while_the_front_job_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = a_failed_front(tmp_path, monkeypatch, "PENDING")
    with pytest.raises(WaitTimeout):
        svc.wait(("UP",), 30, "to have every replica READY")


def test_a_front_job_that_beat_and_then_ended_is_reported_without_the_heartbeat_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = a_failed_front(tmp_path, monkeypatch, "CANCELLED by 1000")
    store.note_front_beat(svc.directory, "76")  # another job's beat changes nothing
    assert svc.state() is not None and not svc.state().front_job_beat  # type: ignore[union-attr]
    store.note_front_beat(svc.directory, "77")
    ended = svc.front_ended()
    assert ended is not None
    assert ended.one_line().startswith("service llama: the front job 77 ended (CANCELLED); ")


def test_status_says_why_the_front_is_not_running_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_failed_front(tmp_path, monkeypatch, "FAILED")
    result = CliRunner().invoke(cli, ["service", "status", "llama", "--job-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "service llama: STARTING"
    assert lines[1] == (
        "  front: not running: the front job 77 ended (FAILED) before its first heartbeat; "
        f"last lines of {tmp_path}/services/llama/front-77.log:"
    )
    assert "    | ModuleNotFoundError: No module named 'vllm_router'" in lines


def test_up_wait_prints_the_front_logs_last_lines_after_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's error map prints an error's ``lines`` under its one line (exit 1)."""
    from launchers.cli import run
    from launchers.service.manage import Services

    svc = a_failed_front(tmp_path, monkeypatch, "FAILED")
    monkeypatch.setattr(Services, "up", lambda self, *args, **kwargs: svc)
    with pytest.raises(SystemExit) as code:
        run(cli, ["service", "up", "llama", "--wait", "--job-root", str(tmp_path)], "vllm-hpc")
    assert code.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Error: service llama: the front job 77 ended (FAILED) before its")
    assert err[1:] == [f"  | {line}" for line in svc.front_ended().lines]  # type: ignore[union-attr]
    assert err[-1] == "  | ModuleNotFoundError: No module named 'vllm_router'"


def test_submitting_the_front_records_its_job_and_a_stamped_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from launchers.service.frontjob import submit_front

    svc = a_service(tmp_path, [], None)
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "77")
    assert submit_front(svc.spec(), svc.directory) == "77"
    state = svc.state()
    assert state is not None and state.front_job == "77" and not state.front_job_beat
    assert re.fullmatch(r"\d\d:\d\d:\d\d UTC front submitted as job 77", state.events[-1])


# --- a failed `service up` leaves nothing that blocks the corrected retry ---------------

MODEL = "meta-llama/Llama-3.2-3B-Instruct"


def up(root: Path, *options: str) -> object:
    """`service up llama -m MODEL OPTIONS --job-root ROOT`: its result."""
    argv = ["service", "up", "llama", "-m", MODEL, *options, "--job-root", str(root)]
    return CliRunner().invoke(cli, argv, standalone_mode=False)


def test_a_failed_up_leaves_nothing_and_the_corrected_retry_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchers.errors import SubmitError

    def refuse(script: str, environ: object) -> str:
        raise SubmitError("sbatch refused the job: invalid partition specified: nogpu")

    monkeypatch.setattr(slurm, "sbatch_text", refuse)
    root = tmp_path / "jobs"
    failed = up(root, "-p", "nogpu")
    assert isinstance(failed.exception, SubmitError)  # type: ignore[attr-defined]
    assert not (root / "services" / "llama").exists()  # no service.json, state or key
    listed = CliRunner().invoke(cli, ["service", "list", "--job-root", str(root)])
    assert listed.exit_code == 0 and "llama" not in listed.output  # no STARTING for ever
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "77")
    retried = up(root, "-p", "gpu")
    assert retried.exception is None, retried.output  # type: ignore[attr-defined]
    spec = store.read_spec(str(root / "services" / "llama"))
    assert spec.request.partition == "gpu"
    # the users' keys: the service's key is the first, `default`, as a hash only (0600)
    keys_file = Path(ServiceDir(str(root / "services" / "llama")).keys)
    assert keys_file.stat().st_mode & 0o777 == 0o600
    internal = Path(spec.key_file).read_text().strip()
    (default,) = json.loads(keys_file.read_text())["keys"]
    assert default["label"] == "default" and default["sha256"] == digest(internal)
    assert internal not in keys_file.read_text()


def test_up_with_new_settings_replaces_a_service_that_never_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its front job 77 ended before its first heartbeat and no replica was submitted:
    `up` with other settings replaces it and says so; one that has replicas is kept."""
    svc = a_failed_front(tmp_path, monkeypatch, "FAILED")
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "78")
    done = up(tmp_path, "-p", "gpu2")
    assert done.exception is None, done.output  # type: ignore[attr-defined]
    assert svc.spec().request.partition == "gpu2"
    state = svc.state()
    assert state is not None and state.front_job == "78"
    assert any("replaced the settings of a service that never started" in e for e in state.events)
    assert "replaced the settings" in done.output  # type: ignore[attr-defined]
    store.write_state(svc.directory, state.model_copy(
        update={"replicas": (replica(tmp_path, "5", "PENDING"),)}))  # fmt: skip
    kept = up(tmp_path, "-p", "gpu3")
    assert isinstance(kept.exception, InputError)  # type: ignore[attr-defined]
    assert "exists with other settings" in str(kept.exception)  # type: ignore[attr-defined]
    assert svc.spec().request.partition == "gpu2"


# --- `--handover` must leave room in the replicas' time limit --------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-t", "00:20:00", "--handover", "30m"],
         "--handover: 30m does not leave room in the replicas' time limit 00:20:00 "
         "(--time) less its 120 s time-limit warning (give --handover below 18m, "
         "e.g. --handover 9m, or a longer --time)"),
        (["-t", "30", "--handover", "28m"],
         "--handover: 28m does not leave room in the replicas' time limit 30 (--time) less "
         "its 120 s time-limit warning (give --handover below 28m, e.g. --handover 14m, "
         "or a longer --time)"),
        (["-t", "1:00:00", "--handover", "1h"],
         "--handover: 60m does not leave room in the replicas' time limit 1:00:00 (--time) "
         "less its 120 s time-limit warning (give --handover below 58m, e.g. --handover "
         "29m, or a longer --time)"),
    ],
)  # fmt: skip
def test_a_handover_that_leaves_no_room_is_refused_before_anything_is_written(
    tmp_path: Path, options: list[str], message: str
) -> None:
    root = tmp_path / "jobs"
    error = refused_up(root, *options)
    assert error.one_line() == message and error.exit_code == 2
    assert not (root / "services").exists()


def test_a_handover_with_room_or_no_known_time_limit_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "77")
    for root, options in ((tmp_path / "a", ["-t", "1:00:00", "--handover", "20m"]),
                          (tmp_path / "b", ["--handover", "20h"])):  # fmt: skip
        done = up(root, *options)
        assert done.exception is None, done.output  # type: ignore[attr-defined]


def test_the_handover_check_reads_the_planned_slurm_options_not_the_rendered_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time limit and the warning come from the replica's typed SLURM options: a
    rendered header without its --time and --signal lines changes nothing."""
    from launchers.plan import launch

    rendered = launch.sbatch_directives

    def headless(*args: object) -> tuple[tuple[str, str], ...]:
        return tuple(d for d in rendered(*args) if d[0] not in ("time", "signal"))  # type: ignore[arg-type]

    monkeypatch.setattr(launch, "sbatch_directives", headless)
    error = refused_up(tmp_path / "jobs", "-t", "00:20:00", "--handover", "30m")
    assert error.one_line() == (
        "--handover: 30m does not leave room in the replicas' time limit 00:20:00 "
        "(--time) less its 120 s time-limit warning (give --handover below 18m, "
        "e.g. --handover 9m, or a longer --time)"
    )


# --- `service up --dry-run` writes and submits nothing ----------------------------------


def test_up_dry_run_shows_the_front_script_a_replica_and_what_would_be_written(
    tmp_path: Path,
) -> None:
    root = tmp_path / "jobs"
    done = up(root, "-p", "gpu", "-t", "2:00:00", "--dry-run")
    output: str = done.output  # type: ignore[attr-defined]
    assert done.exception is None, output  # type: ignore[attr-defined]
    directory = root / "services" / "llama"
    assert output.startswith(
        "vllm-hpc service up llama (dry run: nothing written, nothing submitted)\n"
    )
    for line in (
        "  action    create service llama",
        f"  writes    {directory}/ (0700)",
        f"            {directory}/key (0600: the service's key)",
        f"            {directory}/service.json",
        f"            {directory}/state.json",
        "#SBATCH --job-name=llama-front",
        f"-m launchers service front --service-dir {directory}",
        f"  api key   read from {directory}/key (never on a command line)",
        "#SBATCH --job-name=llama-0",
        "#SBATCH --time=2:00:00",
        "Drop --dry-run to start service llama.",
    ):
        assert line in output.splitlines() or output.count(line) == 1, line
    assert not root.exists()  # no service directory, no key, nothing submitted (no sbatch)
    as_json = up(root, "-p", "gpu", "--dry-run", "--json")
    data = json.loads(as_json.output)  # type: ignore[attr-defined]
    assert data["action"] == "create" and data["service"]["replicas"] == 2
    assert data["front_script"].startswith("#!/bin/bash")
    assert data["replica"]["plan"]["api_key_file"] == f"{directory}/key"
    assert not root.exists()


def test_python_users_give_up_its_settings_as_one_typed_record(tmp_path: Path) -> None:
    """``Services.plan_up`` and ``.up`` take the service's own settings as one
    ``UpSettings``; they reach the spec as given, and the record cannot be changed."""
    import dataclasses

    from launchers.client import Client
    from launchers.service.manage import Services, UpSettings
    from launchers.spec.request import SubmitRequest

    root = tmp_path / "jobs"
    settings = UpSettings(replicas=3, handover_seconds=900.0, front="job", front_port=8200,
                          front_time="12:00:00")  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.replicas = 4  # type: ignore[misc]
    request = SubmitRequest(model=MODEL, partition="gpu", time="2:00:00")
    planned = Services(Client(job_root=str(root))).plan_up("llama", request, settings)
    assert planned.action == "create"
    spec = planned.spec
    assert (spec.replicas, spec.handover_seconds, spec.front, spec.front_port,
            spec.front_time) == (3, 900.0, "job", 8200, "12:00:00")  # fmt: skip
    assert planned.front_script is not None and "#SBATCH --time=12:00:00" in planned.front_script
    assert not root.exists()


# --- scale to zero: --min-replicas, --idle, --cold-start-wait ------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "2", "--min-replicas", "3"],
         "--min-replicas: 3 is more than --replicas 2 (give --min-replicas 0 to 2)"),
        (["--idle", "30m"],
         "--idle: the service never idles without --min-replicas below --replicas (add "
         "--min-replicas 0 (scale to zero when idle), or leave --idle out)"),
        (["--replicas", "2", "--min-replicas", "2", "--idle", "30m"],
         "--idle: the service never idles without --min-replicas below --replicas (add "
         "--min-replicas 0 (scale to zero when idle), or leave --idle out)"),
        (["--min-replicas", "0", "--idle", "-5m"],
         "--idle: '-5m' is out of range (above 0, at most 604800 s)"),
        (["--min-replicas", "0", "--idle", "soon"],
         "--idle: 'soon' is not a duration (e.g. 30m, 2h, 90s)"),
        (["--cold-start-wait", "0"], "--cold-start-wait: '0' is out of range (above 0, at "
         "most 604800 s)"),
    ],
)  # fmt: skip
def test_scale_to_zero_settings_that_make_no_sense_are_refused_in_one_line(
    tmp_path: Path, options: list[str], message: str
) -> None:
    root = tmp_path / "jobs"
    error = refused_up(root, *options)
    assert error.one_line() == message and error.exit_code == 2
    assert not (root / "services").exists()


def test_a_negative_minimum_is_bad_input(tmp_path: Path) -> None:
    argv = ["service", "up", "llama", "-m", MODEL, "--min-replicas", "-1",
            "--job-root", str(tmp_path / "jobs")]  # fmt: skip
    done = CliRunner().invoke(cli, argv)
    assert done.exit_code == 2 and "--min-replicas" in done.output
    assert not (tmp_path / "jobs").exists()


def test_up_keeps_the_scale_to_zero_settings_and_the_dry_run_says_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "jobs"
    options = ["-p", "gpu", "--min-replicas", "0", "--idle", "1m", "--cold-start-wait", "90s"]
    planned = up(root, *options, "--dry-run")
    assert planned.exception is None, planned.output  # type: ignore[attr-defined]
    assert ("  idle      0 replica(s) after 1m without a request; the next one waits up to "
            "90s for a replica") in planned.output.splitlines()  # type: ignore[attr-defined]  # fmt: skip
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "77")
    done = up(root, *options)
    assert done.exception is None, done.output  # type: ignore[attr-defined]
    spec = store.read_spec(str(root / "services" / "llama"))
    assert (spec.replicas, spec.min_replicas, spec.idle_seconds,
            spec.cold_start_wait_seconds) == (2, 0, 60.0, 90.0)  # fmt: skip
    assert spec.idles and spec.least == 0


def test_status_says_an_idle_service_wakes_on_the_next_request(tmp_path: Path) -> None:
    from launchers.service.decide import idle_message

    svc = a_service(tmp_path, [], None)
    store.write_spec(svc.directory, svc.spec().model_copy(update={"min_replicas": 0}))
    idle = ServiceState(name="llama", state="IDLE", message=idle_message(0, 2),
                        last_request=1_000.0)  # fmt: skip
    store.write_state(svc.directory, idle)
    shown = CliRunner().invoke(cli, ["service", "status", "llama", "--job-root",
                                     str(tmp_path)])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == (
        "service llama: IDLE (idle: 0 replicas, wakes on the next request)"
    )
    row = svc.summary()
    assert (row["min_replicas"], row["last_request"]) == (0, 1_000.0)


# --- autoscaling: --max-replicas, --scale-up-waiting, --scale-up-after, --scale-down-after ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "2", "--max-replicas", "1"],
         "--max-replicas: 1 is less than --replicas 2 (give --max-replicas 2 to 16)"),
        (["--max-replicas", "17"],
         "--max-replicas: 17 is out of range: a service keeps 0 to 16 replicas (each one a "
         "whole job) (give at most 16)"),
        (["--replicas", "0", "--max-replicas", "2"],
         "--max-replicas: a service of --replicas 0 has no replica to read its load from "
         "(give --replicas 1 or more (the count it starts with))"),
        (["--scale-up-waiting", "3"],
         "--scale-up-waiting: the service does not autoscale without --max-replicas above "
         "--replicas (add --max-replicas N (at most 16), or leave --scale-up-waiting out)"),
        (["--replicas", "2", "--max-replicas", "2", "--scale-down-after", "10m"],
         "--scale-down-after: the service does not autoscale without --max-replicas above "
         "--replicas (add --max-replicas N (at most 16), or leave --scale-down-after out)"),
        (["--max-replicas", "4", "--scale-up-after", "soon"],
         "--scale-up-after: 'soon' is not a duration (e.g. 30m, 2h, 90s)"),
    ],
)  # fmt: skip
def test_autoscaling_settings_that_make_no_sense_are_refused_in_one_line(
    tmp_path: Path, options: list[str], message: str
) -> None:
    root = tmp_path / "jobs"
    error = refused_up(root, *options)
    assert error.one_line() == message and error.exit_code == 2
    assert not (root / "services").exists()


def test_a_threshold_of_no_request_is_bad_input(tmp_path: Path) -> None:
    argv = ["service", "up", "llama", "-m", MODEL, "--max-replicas", "3",
            "--scale-up-waiting", "0", "--job-root", str(tmp_path / "jobs")]  # fmt: skip
    done = CliRunner().invoke(cli, argv)
    assert done.exit_code == 2 and "--scale-up-waiting" in done.output
    assert not (tmp_path / "jobs").exists()


def test_up_keeps_the_autoscaling_settings_and_the_dry_run_says_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "jobs"
    options = ["-p", "gpu", "--replicas", "1", "--max-replicas", "3", "--scale-up-waiting",
               "2", "--scale-up-after", "30s", "--scale-down-after", "2m"]  # fmt: skip
    planned = up(root, *options, "--dry-run")
    assert planned.exception is None, planned.output  # type: ignore[attr-defined]
    assert ("  autoscale 1 to 3 replicas: one more after 30s above 2 waiting requests per "
            "READY replica, one fewer after 2m at 1 or below"
            ) in planned.output.splitlines()  # type: ignore[attr-defined]  # fmt: skip
    monkeypatch.setattr(slurm, "sbatch_text", lambda script, environ: "77")
    done = up(root, *options)
    assert done.exception is None, done.output  # type: ignore[attr-defined]
    spec = store.read_spec(str(root / "services" / "llama"))
    assert (spec.replicas, spec.max_replicas, spec.scale_up_waiting, spec.scale_up_seconds,
            spec.scale_down_seconds) == (1, 3, 2.0, 30.0, 120.0)  # fmt: skip
    assert spec.autoscales and (spec.fewest, spec.most) == (1, 3)
    # --max-replicas at --replicas is today's service: no autoscaling, nothing said
    same = up(tmp_path / "other", "-p", "gpu", "--max-replicas", "2", "--dry-run")
    assert "autoscale" not in same.output  # type: ignore[attr-defined]
    assert up(tmp_path / "other", "-p", "gpu", "--max-replicas", "2").exception is None  # type: ignore[attr-defined]
    spec = store.read_spec(str(tmp_path / "other" / "services" / "llama"))
    assert spec.max_replicas is None and not spec.autoscales


def test_status_says_the_range_and_the_last_decision(tmp_path: Path) -> None:
    from launchers.service.definition import Scaling

    svc = a_service(tmp_path, [], None)
    store.write_spec(svc.directory, svc.spec().model_copy(
        update={"min_replicas": 1, "max_replicas": 4}))  # fmt: skip
    last = ("12:00:00 UTC load: 6 requests waiting per replica on average over 60 s (above 4): "
            "scaling up to 3 replicas")  # fmt: skip
    store.write_state(svc.directory, ServiceState(
        name="llama", state="STARTING", message="2/3 replicas READY", wanted=3,
        scaling=Scaling(replicas=3, base=2, last=last)))  # fmt: skip
    shown = CliRunner().invoke(cli, ["service", "status", "llama", "--job-root", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert ("  replicas 3 (1-4, autoscaling on waiting requests: above 4 per replica for 1m "
            "adds one, at most 2 for 5m drains one)") in lines  # fmt: skip
    assert f"  last scaling: {last}" in lines
    row = svc.summary()
    assert row["replicas_now"] == 3 and row["autoscaling"]["last_decision"] == last
    listed = CliRunner().invoke(cli, ["service", "list", "--job-root", str(tmp_path)])
    assert listed.output.splitlines()[1].split()[:3] == ["llama", "STARTING", "0/3"]
    # a service that does not autoscale says nothing of it
    store.write_spec(svc.directory, svc.spec().model_copy(update={"max_replicas": None}))
    shown = CliRunner().invoke(cli, ["service", "status", "llama", "--job-root", str(tmp_path)])
    assert "autoscaling" not in shown.output and "last scaling" not in shown.output


@pytest.mark.parametrize(
    ("count", "message"),
    [
        (5, "REPLICAS: 5 is outside the range of service llama, which autoscales up to "
         "--max-replicas 4 (its load is read from READY replicas: one at least) (give 1 to 4: "
         "the load moves it from there)"),
        (0, "REPLICAS: 0 is outside the range of service llama, which autoscales up to "
         "--max-replicas 4 (its load is read from READY replicas: one at least) (give 1 to 4: "
         "the load moves it from there)"),
    ],
)  # fmt: skip
def test_a_service_that_autoscales_is_scaled_within_its_range(
    tmp_path: Path, count: int, message: str
) -> None:
    svc = a_service(tmp_path, [], None)
    store.write_front(svc.directory, Front(
        url="http://h:8100/v1", host="h", port=8100, hostname="n1", pid=1, started_at=0.0,
        heartbeat=time.time()))  # a front of no SLURM job: SLURM is not asked  # fmt: skip
    store.write_spec(svc.directory, svc.spec().model_copy(update={"max_replicas": 4}))
    with pytest.raises(InputError) as refused:
        svc.scale(count)
    assert refused.value.one_line() == message
    assert svc.spec().replicas == 2
    assert svc.scale(3).replicas == 3 and svc.spec().max_replicas == 4


def test_the_idle_status_in_the_docs_is_what_status_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/services.md shows `service status` of an idle service: the real rules (decide)
    take its two replicas through their day (READY, the last request, idle, drained and
    ended), and the command prints that state as the page shows it."""
    import calendar

    from launchers.service.decide import Demand, decide

    def at(hms: str) -> float:
        return float(calendar.timegm(time.strptime(f"2026-12-08 {hms}", "%Y-%m-%d %H:%M:%S")))

    directory = tmp_path / "services" / "chat"
    private_dir(directory, "service directory")
    spec = service_spec(name="chat", min_replicas=0, idle_seconds=1800.0,
                        key_file=str(directory / "key"))  # fmt: skip
    store.write_spec(str(directory), spec)
    state = ServiceState(name="chat", events=("08:58:07 UTC front submitted as job 4101",))

    def tick(replicas: list[Replica], now: str, routed: set[str], demand: Demand) -> None:
        nonlocal state
        step = decide(spec, state, replicas, routed, at(now), demand)
        assert step.state is not None
        state = step.state

    quiet, urls = Demand(), ["http://10.0.3.21:8000", "http://10.0.3.22:8002"]
    tick([], "08:58:12", set(), quiet)
    assert [r.job_id for r in state.replicas] == []  # submitted: the controller adds them
    up = [Replica(job_id=job, slot=slot, state="READY", url=url, ever_ready=True,
                  since=at(ready), slurm_state="RUNNING", submitted_at=at("08:58:12"))
          for slot, (job, url, ready) in enumerate(
              [("4102", urls[0], "09:01:40"), ("4103", urls[1], "09:02:05")])]  # fmt: skip
    tick(up, "09:02:06", set(), quiet)
    tick(list(state.replicas), "10:12:32", set(urls), Demand(last_request=at("10:12:31")))
    tick(list(state.replicas), "10:42:32", set(urls), quiet)  # idle for 30 minutes
    assert state.state == "IDLE"
    ended = {"state": "STOPPED", "slurm_state": "COMPLETED"}
    first = [r.model_copy(update=ended if r.job_id == "4102" else {}) for r in state.replicas]
    tick(first, "10:42:44", set(), quiet)
    tick([r.model_copy(update=ended) for r in state.replicas], "10:42:49", set(), quiet)
    assert state.replicas == ()
    store.write_state(str(directory), state)
    store.write_front(str(directory), Front(
        url="http://10.0.3.5:8100/v1", host="10.0.3.5", port=8100, hostname="cpu-017",
        pid=1, job_id="4101", started_at=at("08:58:30"), heartbeat=time.time()))  # fmt: skip
    monkeypatch.setattr(slurmctl, "job_state", lambda job: (None, "RUNNING"))
    shown = CliRunner().invoke(cli, ["service", "status", "chat", "--job-root", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output == block_after("services.md", "of the service above once idle")
