"""``vllm-hpc clean`` over a job root in a temporary directory, SLURM faked at the state
seam (``observe.job._slurm_state``): what is removed, what is kept, what is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from launchers import jobdir
from launchers.client import Client
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir, JobRoot
from launchers.observe import cleanup
from launchers.observe import job as observed

from .helpers.cli import run

DAY = 86400.0


def _job(root: Path, job_id: str, state: str, *, age: float = 30 * DAY) -> Path:
    """A job directory with an endpoint.json in ``state``, a key and a Ray token, last
    changed ``age`` seconds ago."""
    path = root / f"c1-{job_id}"
    jobdir.ensure_dir(path)
    files = JobDir(str(path))
    jobfiles.write(files.endpoint, jobfiles.Endpoint(state=state, message="", job_id=job_id))
    for secret in (files.api_key, files.ray_token):
        Path(secret).write_text("s3cret")
        os.chmod(secret, 0o600)
    then = time.time() - age
    for p in (files.endpoint, str(path)):
        os.utime(p, (then, then))
    return path


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private job root whose SLURM holds job 1 RUNNING, job 4 PENDING and has let go
    of every other (its state: the one its endpoint.json says)."""
    held = {"1": ("RUNNING", "RUNNING"), "4": ("PENDING", "PENDING")}
    monkeypatch.setattr(observed, "_slurm_state", lambda job_id: held.get(job_id, (None, "")))
    monkeypatch.setattr(observed, "_slurm_pending", lambda job_id: None)
    job_root = tmp_path / "jobs"
    job_root.mkdir(mode=0o700)
    return job_root


def _clean(root: Path, *args: str) -> tuple[int, str]:
    code, out, err = run(["clean", "--job-root", str(root), *args])
    return code, out + err


def test_a_running_job_is_kept_and_an_old_ended_one_removed(root: Path) -> None:
    running = _job(root, "1", "READY")
    pending = _job(root, "4", "STARTING")
    ended = _job(root, "2", "STOPPED")
    code, out = _clean(root)
    assert code == 0, out
    assert running.is_dir() and Path(JobDir(str(running)).api_key).exists()
    assert pending.is_dir()
    assert not ended.exists()
    assert "2: removed" in out and "1: kept (READY: not ended)" in out
    assert out.splitlines()[-1].startswith("removed 1 job directory and 0 secret files; kept 2")


def test_an_ended_job_newer_than_older_than_is_kept(root: Path) -> None:
    recent = _job(root, "2", "FAILED", age=3600)
    code, out = _clean(root, "--older-than", "12h")
    assert code == 0 and recent.is_dir(), out
    assert "2: kept (FAILED, ended 1h ago (newer than 12h))" in out
    code, out = _clean(root, "--older-than", "30m")
    assert code == 0 and not recent.exists(), out


def test_secrets_only_keeps_the_directory_and_removes_the_secrets(root: Path) -> None:
    ended = _job(root, "2", "STOPPED", age=60)
    running = _job(root, "1", "READY")
    sealed = Path(JobRoot(str(root)).secret_env("c1-2-abc"))
    jobdir.ensure_dir(sealed.parent)
    sealed.write_text("{}")
    code, out = _clean(root, "--secrets-only", "--dry-run")
    assert code == 0 and Path(JobDir(str(ended)).api_key).exists(), out
    # The sealed file is the one the job's plan names, when it is in the root's secrets/.
    decisions = cleanup.decide(
        [cleanup.Seen("2", str(ended), "STOPPED", True, 60.0, "", str(sealed))],
        older_than=DAY,
        secrets_only=True,
    )
    assert cleanup.secret_files(decisions[0].seen, str(root))[-1] == str(sealed)
    code, out = _clean(root, "--secrets-only")
    assert code == 0, out
    assert ended.is_dir() and Path(JobDir(str(ended)).endpoint).exists()
    assert not Path(JobDir(str(ended)).api_key).exists()
    assert not Path(JobDir(str(ended)).ray_token).exists()
    assert Path(JobDir(str(running)).api_key).exists()
    assert "2: removed secrets api_key, ray_token" in out


def test_dry_run_removes_nothing(root: Path) -> None:
    ended = _job(root, "2", "STOPPED")
    code, out = _clean(root, "--dry-run")
    assert code == 0 and ended.is_dir() and Path(JobDir(str(ended)).api_key).exists(), out
    assert "2: would remove" in out and out.splitlines()[-1].startswith("would remove 1 job")


def test_a_symlinked_or_open_directory_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = _job(tmp_path, "3", "STOPPED")
    (root / "c1-3").symlink_to(elsewhere)
    shared = _job(root, "5", "STOPPED")
    shared.chmod(0o777)
    code, out = _clean(root)
    assert code == 0, out
    assert elsewhere.is_dir() and Path(JobDir(str(elsewhere)).api_key).exists()
    assert shared.is_dir() and Path(JobDir(str(shared)).api_key).exists()
    assert "3: refused: job directory:" in out and "is a symlink" in out
    assert "5: refused: job directory:" in out and "can be written by other users" in out
    assert "kept 0, refused 2" in out


def test_a_foreign_owned_directory_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = _job(root, "6", "STOPPED")
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # the directory is now another's
    decisions = cleanup.decide(
        cleanup.look(str(root), time.time()), older_than=0, secrets_only=False
    )
    assert [(d.action, "owned by uid" in d.why) for d in decisions] == [("refuse", True)]
    assert theirs.is_dir()


def test_an_unsafe_job_root_is_refused(root: Path) -> None:
    root.chmod(0o777)
    code, out = _clean(root)
    assert code == 2 and "job root" in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize(
    ("seen", "secrets_only", "action"),
    [
        (cleanup.Seen("1", "/j/1", "READY", False, 99 * DAY), False, "keep"),
        (cleanup.Seen("1", "/j/1", "READY", False, 99 * DAY), True, "keep"),
        (cleanup.Seen("1", "/j/1", "FAILED", False, 99 * DAY), False, "keep"),  # SLURM holds it
        (cleanup.Seen("1", "/j/1", "FAILED", True, 8 * DAY), False, "remove"),
        (cleanup.Seen("1", "/j/1", "FAILED", True, 6 * DAY), False, "keep"),
        (cleanup.Seen("1", "/j/1", "STOPPED", True, 60), True, "secrets"),
        (cleanup.Seen("1", "/j/1", refused="a symlink"), True, "refuse"),
    ],
)
def test_decide(seen: cleanup.Seen, secrets_only: bool, action: str) -> None:
    [decision] = cleanup.decide([seen], older_than=7 * DAY, secrets_only=secrets_only)
    assert decision.action == action


def test_the_client_cleans_as_the_command_does(root: Path) -> None:
    _job(root, "2", "STOPPED")
    [decision] = Client(job_root=str(root)).clean(older_than=DAY, dry_run=True)
    assert decision.action == "remove" and (root / "c1-2").is_dir()
