"""``jobdir.paths``: each name against the literal name on disk today (a table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchers.jobdir.paths import (
    RANK_FIELD,
    DoctorDir,
    JobDir,
    JobRoot,
    ServiceDir,
    log_name,
    log_rank,
)
from launchers.plan.launch import job_paths

LAUNCHERS = Path(__file__).resolve().parents[2] / "python" / "launchers"
PATHS = LAUNCHERS / "jobdir" / "paths.py"

JOB = JobDir("/r/slurm-7")
SERVICE = ServiceDir("/r/services/llama")
ROOT = JobRoot("/r")

NAMES = [
    (JOB.plan, "/r/slurm-7/plan.json"),
    (JOB.leader, "/r/slurm-7/leader.json"),
    (JOB.endpoint, "/r/slurm-7/endpoint.json"),
    (JOB.stop, "/r/slurm-7/stop.json"),
    (JOB.local, "/r/slurm-7/local.json"),
    (JOB.local_output, "/r/slurm-7/local.out"),
    (JOB.api_key, "/r/slurm-7/api_key"),
    (JOB.ray_token, "/r/slurm-7/ray_token"),
    (JOB.bench, "/r/slurm-7/bench"),
    (JOB.node(3), "/r/slurm-7/nodes/3.json"),
    (JOB.failure(2), "/r/slurm-7/failed/2.json"),
    (JOB.log("vllm", 0), "/r/slurm-7/vllm-0.log"),
    (JOB.log("ray-watch", 1), "/r/slurm-7/ray-watch-1.log"),
    (JOB.node_log(0), "/r/slurm-7/node-0.log"),
    (JOB.node_log(RANK_FIELD), "/r/slurm-7/node-{rank}.log"),
    (JobDir.LOGS, "*.log"),
    (JobDir.NODE_RECORDS, "nodes/*.json"),
    (JobDir.FAILURES, "failed/*.json"),
    (SERVICE.spec, "/r/services/llama/service.json"),
    (SERVICE.state, "/r/services/llama/state.json"),
    (SERVICE.front, "/r/services/llama/front.json"),
    (SERVICE.key, "/r/services/llama/key"),
    (SERVICE.front_log("42"), "/r/services/llama/front-42.log"),
    (SERVICE.front_log("%j"), "/r/services/llama/front-%j.log"),
    (SERVICE.front_logs, "/r/services/llama/front-*.log"),
    (SERVICE.router_log, "/r/services/llama/router.log"),
    (ROOT.job("slurm-7").root, "/r/slurm-7"),
    (ROOT.batch_log, "/r/vllm-hpc-%j.out"),
    (ROOT.submitit("%j"), "/r/submitit/%j"),
    (ROOT.submitit_log("42"), "/r/submitit/42/42_0_log.err"),
    (ROOT.secrets, "/r/secrets"),
    (ROOT.secret_env("job-ab12"), "/r/secrets/job-ab12.env.json"),
    (ROOT.ray_token, "/r/.ray_token"),
    (JobRoot("/r/").services, "/r/services"),
    (ROOT.service("llama").root, "/r/services/llama"),
    (DoctorDir.under("/r", "20250101-000000").root, "/r/.doctor-20250101-000000"),
    (DoctorDir("/r/.d").plan, "/r/.d/plan.json"),
    (DoctorDir("/r/.d").leader, "/r/.d/rank0.json"),
]


@pytest.mark.parametrize(("built", "on_disk"), NAMES, ids=[n for _, n in NAMES])
def test_each_name_is_the_one_on_disk(built: str, on_disk: str) -> None:
    assert built == on_disk


@pytest.mark.parametrize(
    ("name", "rank"),
    [("node-3.log", "3"), ("ray-watch-12.log", "12"), ("vllm-0.log", "0"), ("x.log", "")],
)
def test_a_logs_rank_is_read_from_its_name(name: str, rank: str) -> None:
    assert log_rank(name) == rank
    if rank:
        assert log_name(name.removesuffix(f"-{rank}.log"), rank) == name


def test_the_plans_paths_are_job_dirs_names_with_placeholders() -> None:
    paths = job_paths("/r")
    files = JobDir("/r/@JOB_KEY@")
    assert (paths.job_dir, paths.plan, paths.leader, paths.endpoint) == (
        files.root, files.plan, files.leader, files.endpoint,
    )  # fmt: skip
    assert (paths.api_key, paths.ray_token) == (files.api_key, files.ray_token)
    assert paths.node_log == files.node_log(RANK_FIELD) == "/r/@JOB_KEY@/node-{rank}.log"
    assert paths.batch_log == ROOT.batch_log
    mine = paths.for_job("42", "alpha")
    assert mine.dir == JobDir("/r/alpha-42")
    assert mine.node_log_of(1) == JobDir("/r/alpha-42").node_log(1)
