"""A job root on shared storage is trusted only when it is ours: each refusal is one
exact line; a requeue reuses its own directory; two clusters' job 1 never meet; the
rendered sbatch still parses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from launchers import jobdir
from launchers.client import Client
from launchers.errors import InputError
from launchers.jobdir import jobroot, safe
from launchers.plan.launch import LaunchPlan, job_paths
from launchers.render.text import render_sbatch
from launchers.runtime import follower
from launchers.runtime.context import NodeContext
from launchers.runtime.run import run_plan

REPO = Path(__file__).resolve().parents[2]
OTHER_UID = os.geteuid() + 4242
FAKE_SRUN = '#!/bin/bash\necho "srun $*" >> "$STARTED"\n'
EXISTS = "(an earlier job's directory: remove it, or use another job root)"


def one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 2, nothing on stdout, exactly ``expected`` on stderr."""
    assert (done.returncode, done.stdout, done.stderr) == (2, "", expected + "\n")


def raised(call: Callable[[], Any]) -> str:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SLURM_"))}
    return {**clean, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "PYTHONPATH": str(REPO / "python")}  # fmt: skip


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launchers", *args],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "jobs"
    made.mkdir(mode=0o700)
    return made


# --- the job root ------------------------------------------------------------------


def test_a_group_writable_job_root_is_refused(root: Path, env: dict[str, str]) -> None:
    (root / "slurm-4").mkdir()  # not empty: something may have been planted
    root.chmod(0o770)
    done = cli({**env, "SLURM_JOB_ID": "5"}, "job-root", "--new-job-dir", "--job-root", str(root))
    one_line(
        done,
        f"Error: job root: {root} can be written by other users (drwxrwx---) (chmod go-w {root})",
    )
    assert not (root / "slurm-5").exists()


def test_a_job_root_owned_by_another_user_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
    assert raised(lambda: Client(job_root=str(root)).jobs()) == (
        f"job root: {root} is owned by uid {real}, not by you (uid {OTHER_UID}) "
        "(use a directory of your own (mkdir -m 700))"
    )
    assert raised(lambda: safe.new_private_dir(root / "slurm-5", "job directory")) == (
        f"job root: {root} is owned by uid {real}, not by you (uid {OTHER_UID}) "
        "(use a directory of your own (mkdir -m 700))"
    )


def test_a_sites_shared_root_ends_in_the_users_own_directory() -> None:
    env = {"HOME": "/home/alice"}
    assert jobroot.job_root(None, env, "/scratch/vllm-hpc", user="alice") == (
        "/scratch/vllm-hpc/alice"
    )
    assert jobroot.job_root(None, env, "/scratch/{user}/jobs/", user="bob") == (
        "/scratch/bob/jobs/"
    )
    assert jobroot.job_root("/mine", env, "/scratch/vllm-hpc", user="alice") == "/mine"


def test_an_empty_fresh_volume_of_ours_is_closed_not_refused(tmp_path: Path) -> None:
    volume = tmp_path / "job"
    volume.mkdir()
    volume.chmod(0o777)  # what a Kubernetes emptyDir looks like
    safe.private_dir(volume, "job directory")
    assert volume.stat().st_mode & 0o777 == 0o700


# --- job ids and job directories ---------------------------------------------------


def test_a_job_id_that_is_a_path_is_refused_before_anything_is_made(
    root: Path, env: dict[str, str], make_plan: Callable[..., LaunchPlan]
) -> None:
    done = cli({**env, "SLURM_JOB_ID": "../../x"}, "job-root", "--new-job-dir",
               "--job-root", str(root))  # fmt: skip
    one_line(
        done,
        "Error: SLURM_JOB_ID: '../../x' is not a job id (digits (SLURM), local-<pid>, "
        "manual-<date>-<time> or dp-<addr>-<port>) (unset or correct it: a job id never "
        "names a path)",
    )
    launch = make_plan(model="llama-3.2-3b-instruct", job_root=str(root))
    message = raised(lambda: run_plan(launch, rank=0, environ={"SLURM_JOB_ID": "../../x"}))
    assert message.startswith("SLURM_JOB_ID: '../../x' is not a job id")
    assert raised(lambda: launch.paths.for_job("1", "../a")).startswith(
        "SLURM_CLUSTER_NAME: '../a' is not a cluster name"
    )
    assert list(root.iterdir()) == [] and not (root.parent / "x").exists()


def test_a_directory_already_there_for_a_new_job_is_refused(
    root: Path, env: dict[str, str]
) -> None:
    (root / "hpc1-5").mkdir(mode=0o700)
    done = cli({**env, "SLURM_JOB_ID": "5", "SLURM_CLUSTER_NAME": "hpc1"}, "job-root",
               "--new-job-dir", "--job-root", str(root))  # fmt: skip
    one_line(done, f"Error: job directory: {root}/hpc1-5 already exists for a new job {EXISTS}")


def test_a_requeue_reuses_its_own_directory_but_not_a_symlink(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    mine = root / "hpc1-5"
    mine.mkdir(mode=0o700)
    again = {**env, "SLURM_JOB_ID": "5", "SLURM_CLUSTER_NAME": "hpc1", "SLURM_RESTART_COUNT": "1"}
    done = cli(again, "job-root", "--new-job-dir", "--job-root", str(root))
    assert (done.returncode, done.stdout) == (0, f"{mine}\n"), done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "hpc1-6").symlink_to(elsewhere)
    done = cli({**again, "SLURM_JOB_ID": "6"}, "job-root", "--new-job-dir", "--job-root", str(root))
    one_line(
        done,
        f"Error: job directory: {root}/hpc1-6 is a symlink "
        "(use the real path, owned by you (chmod 700))",
    )


def test_two_clusters_job_1_get_different_directories_and_are_found_by_id(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = job_paths(str(root))
    first, second = paths.for_job("1", "alpha"), paths.for_job("1", "beta")
    assert first.job_dir == f"{root}/alpha-1" and second.job_dir == f"{root}/beta-1"
    assert first.api_key != second.api_key
    safe.new_private_dir(first.job_dir, "job directory")
    (root / "alpha-1" / "plan.json").write_text("{}")
    assert Client(job_root=str(root), environ={}).job("1").job_dir == first.job_dir
    safe.new_private_dir(second.job_dir, "job directory")
    (root / "beta-1" / "plan.json").write_text("{}")
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol to ask
    assert raised(lambda: Client(job_root=str(root), environ={"PATH": "/x"}).job("1")) == (
        "JOB: job 1 is in more than one cluster's directory (alpha-1, beta-1) "
        "(name one as CLUSTER-ID)"
    )
    here = Client(job_root=str(root), environ={"SLURM_CLUSTER_NAME": "beta"})
    assert here.job("1").job_dir == second.job_dir
    assert here.job("alpha-1").job_dir == first.job_dir and here.job("alpha-1").job_id == "1"
    assert [(j.job_id, j.job_dir) for j in here.jobs()] == [
        ("1", first.job_dir),
        ("1", second.job_dir),
    ]


def test_a_symlinked_job_directory_is_refused_to_readers_and_followers(
    root: Path, tmp_path: Path
) -> None:
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    (planted / "leader.json").write_text('{"job_id": "7", "attempt": 0, "ip": "10.6.6.6"}')
    (root / "hpc1-7").symlink_to(planted)
    link = f"{root}/hpc1-7"
    assert raised(lambda: Client(job_root=str(root)).job("hpc1-7")) == (
        f"job directory: {link} is a symlink (use the real path, owned by you (chmod 700))"
    )
    ctx = SimpleNamespace(job_dir=link, leader_file=f"{link}/leader.json")
    assert raised(lambda: follower.wait_leader(cast(NodeContext, ctx), 1.0)) == (
        f"job directory: {link} is a symlink (use the real path, owned by you (chmod 700))"
    )


# --- job files and secrets ---------------------------------------------------------


def test_job_files_replace_a_planted_symlink_and_never_write_through_it(
    root: Path, tmp_path: Path
) -> None:
    job = root / "hpc1-8"
    job.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text('{"url": "http://10.6.6.6/v1"}\n')
    (job / "endpoint.json").symlink_to(victim)
    assert jobdir.read_json(job / "endpoint.json") is None  # a symlink is not read
    jobdir.write_json(job / "endpoint.json", {"state": "READY"})
    assert victim.read_text() == '{"url": "http://10.6.6.6/v1"}\n'
    assert jobdir.read_json(job / "endpoint.json") == {"state": "READY"}
    assert not (job / "endpoint.json").is_symlink()


def test_a_requeue_keeps_its_key_and_a_planted_key_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = root / "hpc1-9"
    job.mkdir(mode=0o700)
    key = f"{job}/api_key"
    assert jobdir.ensure_secret(key, "API key")
    first = Path(key).read_text()
    assert not jobdir.ensure_secret(key, "API key") and Path(key).read_text() == first
    Path(key).chmod(0o644)
    assert raised(lambda: jobdir.ensure_secret(key, "API key")) == (
        f"API key: {key} can be read by other users (-rw-r--r--) (chmod 600 {key})"
    )
    Path(key).unlink()
    known = tmp_path / "known-key"
    known.write_text("the attacker knows this\n")
    Path(key).symlink_to(known)
    assert raised(lambda: jobdir.ensure_secret(key, "API key")) == (
        f"API key: cannot use {key}: Too many levels of symbolic links "
        f"(remove {key}; a new one is made at the next start)"
    )
    Path(key).unlink()
    Path(key).write_text("planted\n")
    Path(key).chmod(0o600)
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
    job.chmod(0o700)
    with pytest.raises(InputError, match=f"job directory: {job} is owned by uid {real}"):
        jobdir.ensure_secret(key, "API key")


def test_plan_out_never_writes_through_a_planted_symlink(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = shared / "plan.json"
    out.symlink_to(victim)
    done = cli(env, "plan", "-m", "a/b", "--out", str(out))
    one_line(done, f"Error: --out: {out} is a symlink (remove it, or write to another path)")
    assert victim.read_text() == "precious\n"


# --- the rendered sbatch -------------------------------------------------------------


@pytest.fixture
def sbatch(
    root: Path, tmp_path: Path, make_plan: Callable[..., LaunchPlan]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the rendered sbatch text with bash (srun faked) in a SLURM-like environment."""
    script = render_sbatch(make_plan(model="llama-3.2-3b-instruct", job_root=str(root)))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_SRUN)
    (fake / "srun").chmod(0o755)

    def run(**slurm: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{fake}:/usr/bin:/bin", "STARTED": str(tmp_path / "started"),
               "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "n1", **slurm}  # fmt: skip
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                              check=False, timeout=60)  # fmt: skip

    return run


def test_the_rendered_sbatch_parses(root: Path, make_plan: Callable[..., LaunchPlan]) -> None:
    for model in ("llama-3.2-3b-instruct", "llama-3.1-70b-instruct"):
        script = render_sbatch(make_plan(model=model, job_root=str(root)))
        done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_the_sbatch_makes_a_fresh_private_directory_per_cluster_and_job(
    root: Path, sbatch: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    for cluster in ("alpha", "beta"):
        done = sbatch(SLURM_JOB_ID="1", SLURM_CLUSTER_NAME=cluster)
        assert done.returncode == 0, done.stderr
        assert (root / f"{cluster}-1").stat().st_mode & 0o777 == 0o700
        assert (root / f"{cluster}-1" / "plan.json").is_file()
    done = sbatch(SLURM_JOB_ID="1", SLURM_CLUSTER_NAME="alpha")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"Error: job directory: {root}/alpha-1 already exists for a new job {EXISTS}\n"
    )
    done = sbatch(SLURM_JOB_ID="1", SLURM_CLUSTER_NAME="alpha", SLURM_RESTART_COUNT="1")
    assert done.returncode == 0, done.stderr  # a requeue finds its own directory


def test_the_sbatch_refuses_a_job_id_or_cluster_that_is_a_path(
    root: Path, tmp_path: Path, sbatch: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    done = sbatch(SLURM_JOB_ID="../../x")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "Error: SLURM_JOB_ID: '../../x' is not a SLURM job id (digits)\n"
    done = sbatch(SLURM_JOB_ID="3", SLURM_CLUSTER_NAME="../..")
    assert done.stderr == "Error: SLURM_CLUSTER_NAME: '../..' is not a cluster name\n"
    done = sbatch(SLURM_JOB_ID="3\n")
    assert done.returncode == 2
    assert list(root.iterdir()) == [] and not (tmp_path / "x").exists()
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (root / "slurm-4").symlink_to(other)
    done = sbatch(SLURM_JOB_ID="4", SLURM_RESTART_COUNT="1")
    assert done.stderr == f"Error: job directory: {root}/slurm-4 is not this job's own directory\n"


# --- the login node: which cluster a submitted job's directory is keyed by -------------


def test_a_submitted_job_is_keyed_by_the_cluster_sbatch_or_scontrol_names(
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_plan: Callable[..., LaunchPlan],
) -> None:
    from launchers import _proc
    from launchers.submit import slurm, slurmctl

    tools = tmp_path / "slurm-bin"
    tools.mkdir()
    for tool in ("sbatch", "scontrol"):
        (tools / tool).write_text("#!/bin/sh\nexit 1\n")
        (tools / tool).chmod(0o755)
    answers = {"sbatch": "123;hpc2\n", "scontrol": "ClusterName             = hpc3\n"}
    asked: list[str] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        asked.append(argv[0])
        return subprocess.CompletedProcess(argv, 0, answers[argv[0]], "")

    monkeypatch.setattr(_proc, "run", fake_run)
    launch = make_plan(model="llama-3.2-3b-instruct", job_root=str(root))
    environ = {"PATH": str(tools)}
    handle = slurm.submit(launch, executor="slurm", via="sbatch", environ=environ)
    assert (handle.job_id, handle.job_dir, asked) == ("123", f"{root}/hpc2-123", ["sbatch"])
    answers["sbatch"] = "124\n"
    handle = slurm.submit(launch, executor="slurm", via="sbatch", environ=environ)
    assert handle.job_dir == f"{root}/hpc3-124" and asked[-1] == "scontrol"
    assert slurmctl.cluster_name({"SLURM_CLUSTER_NAME": "hpc4"}) == "hpc4"
    assert slurmctl.cluster_name({"PATH": "/nonexistent"}) == "slurm"  # as the nodes fall back


def test_the_submitit_door_makes_the_directory_in_its_setup_and_writes_the_plan_once(
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_plan: Callable[..., LaunchPlan],
) -> None:
    import launchers.runtime.run
    from launchers.submit import slurm

    given: dict[str, Any] = {}

    class Executor:
        def __init__(self, **_: object) -> None: ...

        def update_parameters(self, **params: Any) -> None:
            given.update(params)

        def submit(self, *_: object) -> SimpleNamespace:
            return SimpleNamespace(job_id="77")

    monkeypatch.setitem(sys.modules, "submitit", SimpleNamespace(AutoExecutor=Executor))
    tools = tmp_path / "slurm-bin"
    tools.mkdir()
    (tools / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    launch = make_plan(model="llama-3.2-3b-instruct", job_root=str(root))
    handle = slurm.submit(launch, executor="slurm", via="submitit", environ={})
    assert handle.job_dir == f"{root}/slurm-77"
    setup = "\n".join(["set -euo pipefail", *given["slurm_setup"]])
    node = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "77", "SLURM_CLUSTER_NAME": "hpc1"}
    done = subprocess.run(["bash", "-c", setup], env=node, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["bash", "-c", setup], env=node, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.stderr == (
        f"Error: job directory: {root}/hpc1-77 already exists for a new job {EXISTS}\n"
    )
    monkeypatch.setattr(launchers.runtime.run, "run_plan", lambda plan: 0)
    for key, value in {**node, "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    assert slurm.submitit_job(launch.model_dump_json()) == 0
    written = root / "hpc1-77" / "plan.json"
    assert written.stat().st_mode & 0o777 == 0o600
    assert LaunchPlan.model_validate_json(written.read_text()) == launch
