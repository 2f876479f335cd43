"""One rule for the job root, asked by every door and reader; a local job whose process
dies is noticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launchers.client import Client
from launchers.jobdir.jobroot import job_root, user_name

REPO = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launchers", *args],
        env=env, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def site_env(tmp_path: Path) -> dict[str, str]:
    """A site file that puts job directories on shared storage; no VLLM_HPC_JOB_ROOT."""
    site = tmp_path / "site.yaml"
    site.write_text(f"site:\n  job_root: {tmp_path / 'shared' / 'jobs'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SLURM_"))}
    env.update({"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "VLLM_HPC_SITE_CONFIG": str(site), "PYTHONPATH": str(REPO / "python")})  # fmt: skip
    return env


def test_the_rule_flag_then_environment_then_site_then_home() -> None:
    env = {"HOME": "/home/alice"}
    assert job_root("/x", {**env, "VLLM_HPC_JOB_ROOT": "/y"}, "/z") == "/x"
    assert job_root(None, {**env, "VLLM_HPC_JOB_ROOT": "/y"}, "/z") == "/y"
    assert job_root(None, env, "/z", user="alice") == "/z/alice"  # a site root: per user
    assert job_root(None, env, "/z/{user}/jobs", user="alice") == "/z/alice/jobs"
    assert job_root(None, env, None) == "/home/alice/.vllm-hpc/jobs"
    assert job_root("~/jobs", env) == "/home/alice/jobs"

    def site() -> str:
        raise AssertionError("the site file is read only when nothing else names a root")

    assert job_root("/x", env, site) == "/x"


def test_readers_find_jobs_under_the_sites_job_root(
    tmp_path: Path, site_env: dict[str, str]
) -> None:
    shared = tmp_path / "shared" / "jobs" / user_name({})  # a site root is per user
    (shared / "hpc1-41").mkdir(parents=True)
    endpoint = {"job_id": "41", "state": "READY", "message": "serving", "model": "m",
                "url": "http://10.0.0.1:8000/v1", "attempt": 0}  # fmt: skip
    (shared / "hpc1-41" / "endpoint.json").write_text(json.dumps(endpoint))
    assert Client(environ=site_env).job_root == str(shared)
    done = cli(site_env, "job-root")
    assert (done.returncode, done.stdout) == (0, f"{shared}\n"), done.stderr
    done = cli(site_env, "jobs", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["job_id"] for row in json.loads(done.stdout)] == ["41"]
    done = cli(site_env, "logs", "41")  # found (no logs yet), not "no job directory"
    assert "no job directory" not in done.stderr and "no logs yet" in done.stderr


def test_submit_writes_under_the_sites_job_root(tmp_path: Path, site_env: dict[str, str]) -> None:
    done = cli(site_env, "submit", "-m", "a/b", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)["plan"]["paths"]
    assert paths["root"] == str(tmp_path / "shared" / "jobs" / user_name({}))


def test_a_local_job_whose_process_dies_fails_the_wait_at_once(
    tmp_path: Path, site_env: dict[str, str]
) -> None:
    dead = tmp_path / "python-that-dies"
    dead.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    dead.chmod(0o755)
    env = {**site_env, "VLLM_HPC_PYTHON": str(dead)}
    # Were the dead process not noticed, the wait would run into subprocess's deadline.
    done = cli(env, "submit", "-m", "a/b", "--executor", "local", "--wait",
               "--wait-timeout", "3000", timeout=90)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "FAILED" in done.stderr or "FAILED" in done.stdout
    assert "exited" in done.stderr, done.stderr


def test_a_plans_paths_for_one_job_and_for_a_named_directory() -> None:
    from launchers.plan.launch import JobPaths, job_paths

    mine = job_paths("/shared/jobs").for_job("42", "alpha")
    assert mine.job_dir == "/shared/jobs/alpha-42"
    assert mine.leader == "/shared/jobs/alpha-42/leader.json"
    assert mine.endpoint == "/shared/jobs/alpha-42/endpoint.json"
    assert "@JOB_ID@" not in mine.model_dump_json() and "@JOB_KEY@" not in mine.model_dump_json()
    named = JobPaths.at("/scratch/run1/")
    assert (named.root, named.job_dir) == ("/scratch", "/scratch/run1")
    assert named.plan == "/scratch/run1/plan.json"
