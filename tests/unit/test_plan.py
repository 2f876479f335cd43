from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers.errors import InputError, LayoutError
from launchers.plan.launch import LaunchPlan, Preflight, fill_placeholders, job_dir_for, plan
from launchers.render.text import (
    quote_with_job_id,
    render_plan_json,
    render_plan_text,
    render_sbatch,
)
from launchers.spec.config import ClusterSpec, ServeConfig

CASES: dict[str, dict[str, Any]] = {
    "llama-3.2-3b-single": {"model": "llama-3.2-3b-instruct"},
    "llama-3.1-70b-2x4-ray": {
        "model": "llama-3.1-70b-instruct",
        "nodes": 2,
        "gpus_per_node": 4,
        "partition": "gpu",
        "account": "proj42",
        "time": "04:00:00",
    },
    "llama-3.1-70b-2x4-native": {"model": "llama-3.1-70b-instruct", "runtime": "native"},
    "deepseek-v3-dp16-ep": {"model": "deepseek-v3", "requeue": True},
    "llama-3.1-70b-2x4-apptainer": {
        "model": "llama-3.1-70b-instruct",
        "container": "apptainer:/shared/images/vllm-hpc.sif",
    },
    "llama-3.1-70b-2x4-enroot": {
        "model": "llama-3.1-70b-instruct",
        "container": "enroot:nvcr.io#nvidia/vllm:25.10",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_sbatch_and_plan(
    case: str, make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    launch = make_plan(**CASES[case])
    golden(f"{case}.sbatch", render_sbatch(launch))
    golden(f"{case}.dry-run.json", render_plan_json(launch))
    golden(f"{case}.dry-run.txt", render_plan_text(launch))


def test_roles_and_ranks(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)
    assert [r.role for r in launch.roles] == ["leader", "worker"]
    assert launch.role_for_rank(0).role == "leader"
    assert launch.role_for_rank(1).role == "worker"
    with pytest.raises(LayoutError):
        launch.role_for_rank(2)
    assert launch.ready.expected_nodes == 2 and launch.ready.expected_gpus == 8
    # the head's port may move (it is not fixed): the leader fills it in
    assert launch.roles[0].env == {"RAY_ADDRESS": "@LEADER_IP@:@RAY_PORT@"}
    fixed = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, ray_port=6400)
    assert fixed.roles[0].env == {"RAY_ADDRESS": "@LEADER_IP@:6400"}
    assert "--address=@LEADER_IP@:6400" in (fixed.roles[1].ray_argv or ())


def test_a_preflight_port_given_is_fixed_and_the_default_moves(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    """The doors whose nodes plan on their own (launch_vllm_node1/2.sh) give the port:
    fixed, every node plans the same one; submit's default moves when taken."""
    two = {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4}
    assert make_plan(**two).preflight == Preflight(port=29510, port_fixed=False)
    given = make_plan(**two, preflight_port=29510).preflight
    assert given == Preflight(port=29510, port_fixed=True)
    assert make_plan(**two, preflight_port=29600, no_preflight=True).preflight is None
    with pytest.raises(InputError, match="--preflight-port: port 6379 is also used for --ray-port"):
        make_plan(**two, preflight_port=6379)


def test_big_dp_plan_has_two_roles(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="llama-3.2-3b-instruct", dp=64, nodes=8)
    assert [(r.role, r.ranks) for r in launch.roles] == [("leader", "0"), ("headless", "1-7")]
    assert launch.role_for_rank(7).role == "headless"


def test_plan_refuses_a_smaller_cluster(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(model="llama-3.1-70b-instruct")
    with pytest.raises(LayoutError, match="does not fit the allocation of 1 node"):
        plan(config, ClusterSpec(nodes=1, gpus_per_node=4))


def test_fill_placeholders() -> None:
    argv = ["--node-ip-address=@NODE_IP@", "--address=@LEADER_IP@:6379", '{"a": 1}']
    assert fill_placeholders(argv, {"@NODE_IP@": "10.0.0.2", "@LEADER_IP@": "10.0.0.1"}) == [
        "--node-ip-address=10.0.0.2",
        "--address=10.0.0.1:6379",
        '{"a": 1}',
    ]
    with pytest.raises(KeyError, match="@JOB_ID@"):
        fill_placeholders(["/tmp/ray-@JOB_ID@"], {})


def test_job_dir_and_quoting(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="llama-3.2-3b-instruct", job_root="/shared/lab+x/jobs")
    assert job_dir_for(launch, "42", "alpha") == "/shared/lab+x/jobs/alpha-42"
    assert quote_with_job_id(launch.paths.plan) == '/shared/lab+x/jobs/"${job_key}"/plan.json'


def test_plan_round_trips_through_json(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="deepseek-v3")
    again = LaunchPlan.model_validate_json(launch.model_dump_json())
    assert again == launch


def test_secrets_never_in_plan(make_plan: Callable[..., LaunchPlan], tmp_path: object) -> None:
    from pathlib import Path

    key = Path(str(tmp_path)) / "key"
    key.write_text("sk-very-secret-value")
    key.chmod(0o600)  # a key file others can read is refused
    launch = make_plan(model="llama-3.2-3b-instruct", api_key_file=str(key))
    for text in (render_sbatch(launch), render_plan_json(launch), render_plan_text(launch)):
        assert "sk-very-secret-value" not in text
        assert str(key) in text


def test_planning_path_imports_no_heavy_modules(tmp_path: Path) -> None:
    # The nodes' Python (asked in a child process whether it has Ray) says yes.
    nodes_python = tmp_path / "python"
    nodes_python.write_text("#!/bin/sh\nexit 0\n")
    nodes_python.chmod(0o755)
    code = (
        "import sys\n"
        "from launchers.cli import main\n"
        "try:\n"
        "    main(['submit', '-m', 'llama-3.1-70b-instruct', '--dry-run', '--json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = ('ray', 'vllm', 'torch', 'submitit', 'psutil')\n"
        "bad = sorted(m for m in heavy if m in sys.modules)\n"
        "print(bad, file=sys.stderr)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "VLLM_HPC_PYTHON": str(nodes_python)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plan"]["runtime"] == "ray"


# What `python -m launchers.submit ... --dry-run` must not import: the libraries of other
# commands (the front's, the metrics', the doctor's, staging's, submitting's) and the
# CLI's other commands, loaded only when their command runs (cli.COMMANDS); reading jobs
# (the client imports observe.job when a job is asked for); what only some plans need
# (the vLLM options table: arguments after `--`; a staged copy's models); and starting a
# process, when the nodes run this interpreter (input.probe asks it directly).
NOT_FOR_A_DRY_RUN = (
    "aiohttp", "yarl", "prometheus_client", "psutil", "rich", "huggingface_hub",
    "submitit", "openai", "ray", "vllm", "torch",
    "launchers.cli.render", "launchers.cli.service", "launchers.cli.doctor",
    "launchers.cli.stage", "launchers.cli.clean", "launchers.cli.models",
    "launchers.cli.node", "launchers.cli.internal", "launchers.cli.plan",
    "launchers.observe.progress", "launchers.service", "launchers.runtime", "launchers.stage",
    "launchers.submit.slurm",
    "launchers.observe.job", "launchers.observe.status", "launchers.jobdir.jobfiles",
    "launchers.input.vllm_options", "launchers.spec.staged", "launchers.plan.staging",
)  # fmt: skip
NO_CHILD = ("subprocess", "launchers._proc", "launchers.waits")


@pytest.mark.parametrize("nodes_python", ["this", "another"])
def test_the_dry_run_imports_only_what_planning_needs(tmp_path: Path, nodes_python: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_HPC_")}
    unwanted: tuple[str, ...] = NOT_FOR_A_DRY_RUN
    if nodes_python == "another":  # asked in a child process: it says it has Ray
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        env["VLLM_HPC_PYTHON"] = str(fake)
    else:
        unwanted += NO_CHILD
    code = (
        "import runpy, sys\n"
        "sys.argv = ['launchers.submit', '-m', 'llama-3.1-70b-instruct', '--nodes', '2',\n"
        "            '--gpus-per-node', '4', '-p', 'gpu', '-t', '01:00:00', '--dry-run']\n"
        "try:\n"
        "    runpy.run_module('launchers.submit', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"print(sorted(m for m in {unwanted!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "dry run: nothing submitted" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
