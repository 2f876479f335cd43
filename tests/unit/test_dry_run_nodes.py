"""The dry run shows every node's lines as the node runs them (the container's wrapping
included, the values the plan knows written out per node), and the node runtime builds
the same argv through the same function: what a node records in ``nodes/<rank>.json``
is the dry run's line with the running job's values filled in.

The runtime here is the real one (``run_plan`` for each rank) with the process seam
faked: nothing starts, every argv it would run is recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc, health, installed
from launchers.jobdir import jobfiles
from launchers.plan.launch import LaunchPlan
from launchers.render.nodes import filled, job_values, planned_nodes
from launchers.render.text import render_plan_json, render_plan_text
from launchers.runtime import context as context_module
from launchers.runtime import ray_cluster
from launchers.runtime.run import run_plan

LEADER_IP, WORKER_IP = "10.0.0.1", "10.0.0.2"
HF_SECRET = "hf_never_on_a_command_line"  # noqa: S105 - a test value


class Exited:
    """A child that has exited with ``code`` (the leader sees vLLM gone and ends)."""

    def __init__(self, name: str, argv: list[str], code: int, log_path: str) -> None:
        self.name, self.argv, self.code, self.log_path = name, argv, code, log_path
        self.pid = 4242

    def poll(self) -> int:
        return self.code

    def stop(self, grace: float = 0.0) -> int:
        del grace
        return self.code

    def drain(self, *args: float) -> int:
        return self.code


class Watcher:
    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        self.argv = argv

    def latest(self) -> ray_cluster.Snapshot:
        return ray_cluster.Snapshot(None, "fake", 0.0)

    def stop(self, grace: float = 0.0) -> None:
        del grace


class Fakes:
    """The process seam faked: every argv the runtime starts, by name, as it hands it
    over; the node the runtime plays (its address)."""

    def __init__(self) -> None:
        self.started: dict[str, list[list[str]]] = {}
        self.env: dict[str, dict[str, str]] = {}  # the environment of the last of each name
        self.ip = LEADER_IP


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    fake = Fakes()

    def start(name: str, argv: list[str], **kwargs: Any) -> Exited:
        fake.started.setdefault(name, []).append(list(argv))
        fake.env[name] = dict(kwargs["env"])
        # vLLM on the leader fails at once (the leader ends); everything else is done,
        # the pre-flight's check with a pass
        code = 1 if name == "vllm" and fake.ip == LEADER_IP else 0
        if name == "preflight":
            Path(kwargs["log_path"]).write_text('PREFLIGHT {"ok": true, "line": "faked"}\n')
        return Exited(name, argv, code, str(tmp_path / f"{name}.log"))

    monkeypatch.setattr(_proc, "start", start)
    monkeypatch.setattr(ray_cluster, "start_ray", start)
    monkeypatch.setattr(ray_cluster, "RayWatcher", Watcher)
    monkeypatch.setattr(installed, "installed_version", lambda *dists: None)
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    # the API's port 8000 is taken on the leader: it moves to 8001, a fact of the job
    monkeypatch.setattr(health, "port_free", lambda port: port != 8000)
    monkeypatch.setattr(health, "pick_port", lambda first: first)
    monkeypatch.setattr(
        context_module, "_network", lambda iface, environ: ({"VLLM_HOST_IP": fake.ip}, "test")
    )
    return fake


def run_job(plan: LaunchPlan, fake: Fakes, job_id: str = "5") -> str:
    """Both ranks of ``plan`` through the real runtime; the job directory."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/alice", "SLURM_CLUSTER_NAME": "bed"}
    for rank, ip in ((0, LEADER_IP), (1, WORKER_IP)):
        fake.ip = ip
        run_plan(plan, rank=rank, job_id=job_id, environ=env)
    return plan.paths.for_job(job_id, "bed").job_dir


PLANS: dict[str, dict[str, Any]] = {
    "ray-tp4-pp2": {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4},
    "native": {"model": "llama-3.1-70b-instruct", "runtime": "native"},
    "dp16-ep": {"model": "deepseek-v3", "nodes": 2, "gpus_per_node": 8, "dp": 16, "ep": True},
    "apptainer": {
        "model": "llama-3.1-70b-instruct",
        "container": "apptainer:/shared/images/vllm-hpc.sif",
        "env": {"HF_TOKEN": HF_SECRET},
    },
}


@pytest.mark.parametrize("case", sorted(PLANS))
def test_each_node_runs_the_dry_runs_line_with_the_jobs_values_filled_in(
    case: str,
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    fakes: Fakes,
) -> None:
    launch = make_plan(job_root=str(tmp_path / "jobs"), **PLANS[case])
    (tmp_path / "jobs").mkdir(mode=0o700)
    dry = json.loads(render_plan_json(launch))["nodes"]  # what --dry-run --json prints
    assert [node["rank"] for node in dry] == [0, 1]
    job_dir = run_job(launch, fakes)
    leader = jobfiles.read(f"{job_dir}/leader.json", jobfiles.Leader)
    assert leader is not None and leader.api_port == 8001  # moved: a fact of the job
    for node in planned_nodes(launch):
        record = jobfiles.read(f"{job_dir}/nodes/{node.rank}.json", jobfiles.NodeRecord)
        assert record is not None
        executed = filled(node, job_values(job_dir, record, leader))
        assert record.argv("ray") == executed.ray
        assert record.argv("serve") == executed.serve
        assert (executed.ray, executed.serve) != (None, None)
    # and what the runtime handed the process seam is that argv (the program resolved)
    records = jobfiles.nodes(job_dir)
    recorded = [p for r in records for p in r.processes]
    for process in recorded:
        name = "vllm" if process.name == "serve" else "ray-head"
        runs = fakes.started.get(name, []) + fakes.started.get("ray-worker", [])
        assert [process.executable, *process.argv[1:]] in runs
        if launch.container is None:
            assert (
                process.executable.endswith("/" + process.argv[0])
                or process.executable == (process.argv[0])
            )
        else:
            assert process.argv[:4] == ("apptainer", "exec", "--nv", "--cleanenv")
    # no secret on any command line: the key (and a secret variable) go by environment
    key = Path(job_dir, "api_key").read_text().strip()
    for secret in (key, HF_SECRET):
        assert secret and not any(secret in item for p in recorded for item in p.argv)
        assert secret not in Path(job_dir, "nodes", "0.json").read_text()
    if launch.container is not None:
        assert fakes.env["vllm"]["APPTAINERENV_VLLM_API_KEY"] == key
        assert fakes.env["vllm"]["APPTAINERENV_HF_TOKEN"] == HF_SECRET


def test_the_dp_plan_shows_each_nodes_start_rank_and_headless(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    launch = make_plan(**PLANS["dp16-ep"])
    leader, node1 = planned_nodes(launch)
    assert node1.serve is not None and leader.serve is not None
    assert node1.serve[node1.serve.index("--data-parallel-start-rank") + 1] == "8"
    assert "--headless" in node1.serve and "--headless" not in leader.serve
    assert "--data-parallel-start-rank" not in leader.serve
    text = render_plan_text(launch)
    assert "@DP_START_RANK@" not in text and "@NODE_RANK@" not in text
    assert "--data-parallel-start-rank 8 " in text


def test_the_apptainer_dry_run_shows_the_wrapping_on_every_line(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    launch = make_plan(**PLANS["apptainer"])
    for node in planned_nodes(launch):
        for argv in (node.ray, node.serve):
            if argv is not None:
                image = argv.index("/shared/images/vllm-hpc.sif")
                assert argv[:4] == ("apptainer", "exec", "--nv", "--cleanenv")
                assert argv[image + 1] in ("ray", "vllm")
                assert "--bind" in argv[:image]
    text = render_plan_text(launch)
    assert "  ray    apptainer exec --nv --cleanenv --bind " in text
    assert "into the image as APPTAINERENV_*" in text


def test_the_enroot_dry_run_shows_pyxis_on_the_step_and_bare_processes(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", container="enroot:nvcr.io#nvidia/vllm:25.10")
    data = json.loads(render_plan_json(launch))
    assert data["step"][:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--container-image=nvcr.io#nvidia/vllm:25.10" in data["step"]
    assert data["nodes"][0]["ray"][:2] == ["ray", "start"]  # the step is in the image


def test_a_fixed_port_is_written_out_and_a_movable_one_is_a_placeholder(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    free = planned_nodes(make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4))
    assert free[0].serve is not None and "@API_PORT@" in free[0].serve
    assert free[1].ray is not None and "--address=@LEADER_IP@:@RAY_PORT@" in free[1].ray
    fixed = planned_nodes(
        make_plan(
            model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, port=9000, ray_port=6400
        )
    )
    assert fixed[0].serve is not None and fixed[0].ray is not None and fixed[1].ray is not None
    assert "9000" in fixed[0].serve and "--port=6400" in fixed[0].ray
    assert "--address=@LEADER_IP@:6400" in fixed[1].ray
    assert fixed[0].serve_env == {"RAY_ADDRESS": "@LEADER_IP@:6400"}
