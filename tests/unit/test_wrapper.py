"""The wrapper door (``bin/multi-node-serving.sh leader|worker|slurm``): the bash script
hands its arguments over as they came, ``launchers.input.wrapper`` checks them and makes a
plan, and the node runtime runs that plan like any other (``run_plan``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launchers import cli
from launchers.errors import InputError
from launchers.input import wrapper
from launchers.plan.launch import LaunchPlan, Preflight
from launchers.runtime import preflight, run

WRAPPER = Path(__file__).resolve().parents[2] / "bin" / "multi-node-serving.sh"
STUB = """#!/bin/bash
python3 -c 'import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "prog": os.environ.get("VLLM_HPC_PROG")}))' "$@"
"""
ENV = {"VLLM_HPC_JOB_ROOT": "/jobs"}
TOKEN = "/shared/ray_token"  # noqa: S105 - a path; the plans only name the token file


def test_the_script_hands_its_arguments_over_as_they_came(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(STUB)
    python.chmod(0o755)
    args = ["leader", "--ray_port", "6380", "--", "--override-generation-config", '{"a": 1}']
    done = subprocess.run(
        [str(WRAPPER), *args],
        env={**os.environ, "VLLM_HPC_PYTHON": str(python)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["argv"] == ["-m", "launchers", "node", "wrapper", *args]
    assert out["prog"] == "multi-node-serving.sh"


def test_documented_leader_interface() -> None:
    args = wrapper.parse(
        ["leader", "--ray_port=6379", "--ray_cluster_size=2", "--node-ip-address=172.17.1.1",
         "--num-gpus=4", "--temp-dir=/tmp/ray", "--include-dashboard=False",
         "--ray-args", "--object-store-memory=1000000"]
    )  # fmt: skip
    assert args == wrapper.WrapperArgs(
        mode="leader",
        ray_port=6379,
        cluster_size=2,
        node_ip="172.17.1.1",
        num_gpus=4,
        temp_dir="/tmp/ray",
        ray_args=("--object-store-memory=1000000",),
    )


def test_space_separated_values_and_vllm_arguments() -> None:
    args = wrapper.parse(
        ["leader", "--ray_cluster_size", "2", "--model", "m", "--port", "8001", "--",
         "--enable-prefix-caching", "--", "x"]
    )  # fmt: skip
    assert (args.cluster_size, args.model, args.port) == (2, "m", 8001)
    assert args.vllm_args == ("--enable-prefix-caching", "--", "x")


def test_ray_only_leader_plan() -> None:
    args = wrapper.parse(
        ["leader", "--ray_port=6390", "--ray_cluster_size=3", "--num-gpus=2",
         "--include-dashboard=True", "--job-dir=/scratch/j", "--ray-args",
         "--object-store-memory=1000000"]
    )  # fmt: skip
    plan = wrapper.wrapper_plan(
        args, job_id="manual-20261202-040000", environ=ENV, python="/py", ray_token=TOKEN
    )
    assert (plan.runtime, plan.layout.nodes, plan.ready.expected_nodes) == ("ray", 3, 3)
    assert plan.served_model_name == "" and plan.leader.serve is None
    assert plan.paths.job_dir == "/scratch/j" and plan.paths.leader == "/scratch/j/leader.json"
    assert plan.ray_token_file == TOKEN
    head = plan.leader.ray
    assert head is not None and head.head and head.port_fixed
    assert head.argv()[:5] == ["ray", "start", "--head", "--node-ip-address=@NODE_IP@",
                               "--port=6390"]  # fmt: skip
    assert "--num-gpus=2" in head.argv() and "--include-dashboard=true" in head.argv()
    assert "--object-store-memory=1000000" in head.argv()
    worker = plan.role_for_rank(2).ray
    assert worker is not None and "--address=@LEADER_IP@:6390" in worker.argv()


def test_worker_plan_joins_the_address_given() -> None:
    args = wrapper.parse(["worker", "--ray_address=10.0.0.1:6391", "--temp-dir=/tmp/r"])
    assert args.leader() == ("10.0.0.1", 6391)
    plan = wrapper.wrapper_plan(
        args,
        job_id="manual-20261202-040001",
        environ={**ENV, "SLURM_NODEID": "3"},
        python="p",
        ray_token=TOKEN,
    )
    assert plan.layout.nodes == 4  # at least up to the worker's own rank
    ray = plan.role_for_rank(3).ray
    assert ray is not None and not ray.head
    assert ray.argv()[2] == "--address=@LEADER_IP@:6391"
    assert "--temp-dir=/tmp/r" in ray.argv()
    assert plan.paths.job_dir == "/jobs/manual-20261202-040001"


def test_serving_leader_is_planned_as_submit_plans_it() -> None:
    args = wrapper.parse(
        ["leader", "--ray_cluster_size=2", "--num-gpus=4", "--model=llama-3.1-70b-instruct",
         "--port=8001", "--", "--enable-prefix-caching"]
    )  # fmt: skip
    plan = wrapper.wrapper_plan(args, job_id="7", environ=ENV, python="/py", ray_token=TOKEN)
    assert plan.runtime == "ray" and plan.layout.tp * plan.layout.pp == 8
    serve = plan.leader.serve
    assert serve is not None and serve.port == 8001 and serve.port_fixed
    assert "--enable-prefix-caching" in serve.argv()
    assert "--distributed-executor-backend" in serve.argv()
    assert plan.leader.env["RAY_ADDRESS"] == "@LEADER_IP@:6379"
    assert plan.api_key_file == "/jobs/slurm-7/api_key" and plan.generate_api_key
    assert plan.ray_token_file == TOKEN  # one token file for every node, not the job's
    # the pre-flight at a fixed port: the worker, planning on its own, plans the same one
    assert plan.preflight == Preflight(port=29510, port_fixed=True)
    assert LaunchPlan.model_validate_json(plan.model_dump_json()) == plan


def test_every_wrapper_mode_runs_a_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The wrapper does not start anything itself: it hands a plan to ``run_plan``."""
    calls: list[dict[str, Any]] = []

    def fake_run_plan(plan: LaunchPlan, **kwargs: Any) -> int:
        calls.append({"plan": plan, **kwargs})
        return 0

    monkeypatch.setattr(run, "run_plan", fake_run_plan)
    monkeypatch.setenv("VLLM_HPC_JOB_ROOT", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_NODEID", "1")
    for argv in (
        ["leader", "--ray_cluster_size=2", "--node-ip-address=10.0.0.9"],
        ["worker", "--ray_address=10.0.0.9", "--iface=ib0"],
    ):
        with pytest.raises(SystemExit) as done:
            cli.main(["node", "wrapper", *argv])
        assert done.value.code == 0
    leader, worker = calls
    assert leader["rank"] == 0 and leader["leader_ip"] is None
    assert leader["environ"]["VLLM_HOST_IP"] == "10.0.0.9"
    assert leader["plan"].leader.ray.head
    assert worker["rank"] == 1 and worker["leader_ip"] == "10.0.0.9"
    assert worker["iface"] == "ib0"
    assert worker["job_id"].startswith("manual-")
    token = tmp_path / ".ray_token"  # made by the leader, read by the worker
    assert leader["plan"].ray_token_file == worker["plan"].ray_token_file == str(token)
    assert token.stat().st_mode & 0o777 == 0o600
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(leader["plan"].model_dump_json())
    with pytest.raises(SystemExit):
        cli.main(["node", "wrapper", "slurm", f"--plan={plan_file}"])
    assert calls[-1]["plan"] == leader["plan"]


@pytest.mark.parametrize(
    ("more", "check"),
    [
        ((), Preflight(port=29510, port_fixed=True)),
        (("--preflight-port=29600",), Preflight(port=29600, port_fixed=True)),
        (("--preflight_port", "29600"), Preflight(port=29600, port_fixed=True)),
        (("--no-preflight",), None),
    ],
)
def test_every_node_plans_the_same_fixed_preflight_or_none(
    more: tuple[str, ...], check: Preflight | None
) -> None:
    """The leader (serving or Ray only) and a worker plan on their own: each plans the
    pre-flight at the same fixed port (or none with --no-preflight)."""
    leaders = (["leader", "--ray_cluster_size=2", "--num-gpus=4", "--model=llama-3.1-70b-instruct"],
               ["leader", "--ray_cluster_size=3"])  # fmt: skip
    for argv in (*leaders, ["worker", "--ray_address=10.0.0.9"]):
        args = wrapper.parse([*argv, *more])
        plan = wrapper.wrapper_plan(args, job_id="7", environ=ENV, python="/p", ray_token=TOKEN)
        assert plan.preflight == check, argv
    one = wrapper.parse(["leader", "--model=llama-3.2-3b-instruct", *more])  # one node: none
    plan = wrapper.wrapper_plan(one, job_id="7", environ=ENV, python="/p", ray_token=TOKEN)
    assert plan.preflight is None


def test_the_worker_meets_the_preflight_at_its_leaders_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(run, "run_plan", lambda plan, **kw: calls.append({"plan": plan, **kw}))
    monkeypatch.setenv("VLLM_HPC_JOB_ROOT", str(tmp_path))
    for argv in (["leader", "--ray_cluster_size=2", "--preflight-port=29600"],
                 ["worker", "--ray_address=10.0.0.9:6390", "--preflight-port=29600"]):  # fmt: skip
        with pytest.raises(SystemExit):
            cli.main(["node", "wrapper", *argv])
    leader, worker = calls
    check = worker["plan"].preflight
    assert leader["plan"].preflight == check == Preflight(port=29600, port_fixed=True)
    assert preflight.meeting_address(check, worker["leader_ip"]) == "10.0.0.9:29600"


def test_help() -> None:
    with pytest.raises(wrapper.Help):
        wrapper.parse(["worker", "-h"])
    env = {**os.environ, "VLLM_HPC_PYTHON": sys.executable}
    done = subprocess.run(
        [str(WRAPPER), "-h"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("Usage:") and "worker" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "missing mode (start with leader, worker or slurm; see multi-node-serving.sh -h)"),
        (["boss"], "unknown mode 'boss' (use leader, worker or slurm)"),
        (
            ["worker"],
            "worker needs --ray_address=LEADER_IP (the leader node's IP address; see "
            "multi-node-serving.sh -h)",
        ),
        (["leader", "--ray_port=abc"],
         "--ray_port must be a port number 1024-65535, e.g. 6379 (got 'abc')"),
        (["leader", "--ray_port=70000"],
         "--ray_port must be a port number 1024-65535, e.g. 6379 (got '70000')"),
        (["leader", "--ray_port=80"],
         "--ray_port 80 is a privileged port (choose 1024-65535, e.g. 6379)"),
        (["leader", "--port=12000", "--model=m"],
         "--port 12000 is inside Ray's worker port range 10002-19999 (choose a port outside "
         "it, e.g. 8000)"),
        (["worker", "--ray_address=1.2.3.4:x"],
         "--ray_address must be a port number 1024-65535, e.g. 6379 (got 'x')"),
        (["leader", "--ray_cluster_size=0"],
         "--ray_cluster_size must be a positive number of nodes, e.g. --ray_cluster_size=2 "
         "(got '0')"),
        (["leader", "--num-gpus=four"],
         "--num-gpus must be a number (got 'four'; give this node's GPU count, e.g. "
         "--num-gpus=4)"),
        (["leader", "--nodes-timeout=5m"],
         "--nodes-timeout must be seconds, e.g. --nodes-timeout=300 (got '5m')"),
        (["leader", "--model="],
         "--model needs a value (write --model=VALUE; see multi-node-serving.sh -h)"),
        (["leader", "stray"],
         "unexpected argument 'stray' (write options as --name=value and vLLM arguments "
         "after --; see multi-node-serving.sh -h)"),
        (["leader", "--ray_address=1.2.3.4"],
         "--ray_address belongs on workers (drop it: the leader starts the Ray head)"),
        (["worker", "--ray_address=1.2.3.4", "--model=x"],
         "--model belongs on the leader (drop it here; give it to multi-node-serving.sh "
         "leader)"),
        (["leader", "--", "--enforce-eager"],
         "vLLM arguments after -- need --model=NAME on the leader"),
        (["slurm"],
         "slurm mode needs --plan=FILE (write one with: vllm-hpc plan --out FILE; see "
         "multi-node-serving.sh -h)"),
        (["leader", "--preflight-port=80"],
         "--preflight-port 80 is a privileged port (choose 1024-65535, e.g. 29510)"),
        (["worker", "--ray_address=10.0.0.9:6390", "--preflight-port=6390"],
         "--preflight-port 6390 is also the --ray_port (give one of them another port; the "
         "pre-flight's is the same on every node)"),
        (["leader", "--model=m", "--port=29510"],
         "--preflight-port 29510 is also the --port (give one of them another port; the "
         "pre-flight's is the same on every node)"),
        (["leader", "--no-preflight=yes"],
         "--no-preflight takes no value (write --no-preflight alone; see multi-node-serving.sh "
         "-h)"),
    ],
)  # fmt: skip
def test_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(InputError) as bad:
        wrapper.parse(argv)
    assert bad.value.one_line() == message


def _no_start(plan: LaunchPlan, **kwargs: Any) -> int:
    raise AssertionError("a dry run started the plan")


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["leader", "--ray_cluster_size=2", "--num-gpus=4", "--dry-run"],
         ["Node 0 (leader)", "ray start --head", "Node 1 (worker)",
          "ray start --address=@LEADER_IP@:6379"]),
        (["leader", "--ray_cluster_size=2", "--num-gpus=4", "--model=llama-3.1-70b-instruct",
          "--dry-run", "--", "--enable-prefix-caching"],
         ["Node 0 (leader)", "serve  vllm serve", "--enable-prefix-caching", "api key"]),
        (["worker", "--ray_address=10.0.0.9", "--dry-run"],
         ["this node rank 1 (worker)", "ray start --address=@LEADER_IP@:6379",
          "meeting at <leader address>:29510 (fixed)"]),
    ],
)  # fmt: skip
def test_dry_run_prints_each_node_and_starts_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    shown: list[str],
) -> None:
    monkeypatch.setattr(run, "run_plan", _no_start)
    monkeypatch.setenv("VLLM_HPC_JOB_ROOT", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_NODEID", raising=False)
    monkeypatch.delenv("VLLM_HPC_RAY_TOKEN_FILE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.main(["node", "wrapper", *argv])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "dry run: nothing started" in out
    started = [line for line in out.splitlines() if line.lstrip().startswith(("ray ", "serve "))]
    assert started and not any("--dry-run" in line for line in started)  # not ray start's
    for text in shown:
        assert text in out
    assert "sbatch" not in out  # the wrapper's node starts itself: no batch script
    assert list(tmp_path.iterdir()) == []  # no job directory, no API key, no Ray token


def test_unknown_options_are_refused_and_ray_start_options_follow_ray_args() -> None:
    with pytest.raises(InputError) as bad:
        wrapper.parse(["leader", "--object-store-memory=1000000"])
    assert bad.value.one_line() == (
        "unknown option '--object-store-memory' (options for 'ray start' go after "
        "--ray-args, e.g. --ray-args --object-store-memory=1000000; see "
        "multi-node-serving.sh -h)"
    )
    args = wrapper.parse(
        ["leader", "--model=m", "--ray-args", "--object-store-memory=1000000", "--num-cpus",
         "8", "--", "--enforce-eager"]
    )  # fmt: skip
    assert args.ray_args == ("--object-store-memory=1000000", "--num-cpus", "8")
    assert args.vllm_args == ("--enforce-eager",) and not args.dry_run
    assert wrapper.parse(["worker", "--ray_address=h", "--ray-args", "--dry-run"]).ray_args == (
        "--dry-run",
    )  # after the separator, ray start's own
    assert "--ray-args" in wrapper.USAGE and "--dry-run" in wrapper.USAGE
