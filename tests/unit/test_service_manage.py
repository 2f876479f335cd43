"""Service operations that need no cluster: names, the front's batch script, what `up`
refuses before writing anything, `tunnel`'s ssh line, the replicas' requests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers.cli import cli
from launchers.errors import InputError
from launchers.observe import tunnel
from launchers.service.controller import replica_request
from launchers.service.definition import ServiceSpec, check_name
from launchers.service.front import front_alive
from launchers.service.frontjob import front_script


def spec(**changes: object) -> ServiceSpec:
    base: dict[str, object] = {
        "name": "llama", "request": {"model": "m", "partition": "gpu", "port": None},
        "replicas": 2, "handover_seconds": 600.0, "front_port": 8100,
        "front_time": "1-00:00:00", "python": "/opt/env/bin/python", "key_file": "/k/key",
        "created_at": 0.0,
    }  # fmt: skip
    return ServiceSpec.model_validate({**base, **changes})


@pytest.mark.parametrize("name", ["llama", "a", "llama-70b-2", "x" * 31])
def test_good_service_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Llama", "7b", "-x", "a_b", "a/b", "x" * 32, "a\nb", ".."])
def test_bad_service_names_are_one_line_errors(name: str) -> None:
    with pytest.raises(InputError, match="NAME: .* is not a service name"):
        check_name(name)


def test_the_front_script_is_one_cpu_task_that_runs_the_front(tmp_path: Path) -> None:
    text = front_script(spec(), "/jobs/services/llama", {"partition": "gpu", "account": None})
    lines = text.splitlines()
    assert "#SBATCH --job-name=llama-front" in lines
    assert "#SBATCH --cpus-per-task=1" in lines and "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --signal=B:USR1@60" in lines
    assert not any("account" in line or "gres" in line for line in lines)
    assert lines[-1] == (
        "exec /opt/env/bin/python -m launchers service front --service-dir /jobs/services/llama"
    )
    script = tmp_path / "front.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_each_replica_has_its_own_movable_port_and_the_services_key() -> None:
    s = spec()
    ports = {
        (slot, gen): replica_request(s, slot, gen)["port"] for slot in (0, 1) for gen in (1, 2)
    }
    assert len(set(ports.values())) == 4  # a successor never starts where its slot's job is
    r = replica_request(s, 1, 3)
    assert r["port_fixed"] is False and r["api_key_file"] == "/k/key"
    assert r["job_name"] == "llama-1" and r["no_api_key"] is False


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
    from launchers.submit import slurm

    monkeypatch.setattr(slurm, "job_state", lambda job_id: (slurm.parse_state(slurm_state), ""))
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
        spec(front_time=front_time)
