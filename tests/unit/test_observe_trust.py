"""``status`` and ``metrics`` send a job's API key only to the job's own recorded
endpoint, and only after the job directory is found to be ours and private: an
``endpoint.json`` that another user could have written is refused in one line (exit 2)
and nothing is asked of the URL it names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launchers import health
from launchers.client import Client
from launchers.health import HttpAnswer
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir

from .conftest import assert_one_clear_line
from .helpers.cli import run

JOB = "local-7"
METRICS = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Every HTTP request observe makes: (url, api key)."""
    requests: list[tuple[str, str | None]] = []

    def http_get(url: str, *, api_key: str | None = None, timeout: float = 2.0) -> HttpAnswer:
        requests.append((url, api_key))
        return HttpAnswer(True, 200, METRICS)

    monkeypatch.setattr(health, "http_get", http_get)
    return requests


def job_dir(tmp_path: Path, url: str | None = None) -> Path:
    """A READY job's directory as the leader leaves it (0700, endpoint.json, a 0600 key)."""
    root = tmp_path / "jobs"
    root.mkdir(mode=0o700, exist_ok=True)
    folder = root / JOB
    folder.mkdir(mode=0o700)
    key = folder / "api_key"
    key.write_text("sk-job\n")
    key.chmod(0o600)
    jobfiles.write(
        JobDir(str(folder)).endpoint,
        jobfiles.Endpoint(
            state="READY",
            job_id=JOB,
            leader_ip="10.0.0.1",
            port=8000,
            url=url or "http://10.0.0.1:8000/v1",
            model="m",
            api_key_file=str(key),
        ),
    )
    return folder


def refused(tmp_path: Path, command: str) -> str:
    code, out, err = run([command, JOB, "--job-root", str(tmp_path / "jobs")])
    assert_one_clear_line(code, out, err, "Error: ")
    return err.strip().removeprefix("Error: ")


def test_the_key_goes_to_the_recorded_endpoint_of_a_private_job_directory(
    tmp_path: Path, asked: list[tuple[str, str | None]]
) -> None:
    job_dir(tmp_path)
    job = Client(job_root=str(tmp_path / "jobs")).job(JOB)
    assert job.metrics_text() == METRICS
    assert job.report()["healthy"] is True
    assert asked == [
        ("http://10.0.0.1:8000/metrics", "sk-job"),
        ("http://10.0.0.1:8000/health", None),  # /health needs no key: none is sent
    ]


@pytest.mark.parametrize("command", ["status", "metrics"])
def test_a_job_directory_others_can_write_is_refused(
    tmp_path: Path, asked: list[tuple[str, str | None]], command: str
) -> None:
    folder = job_dir(tmp_path)
    folder.chmod(0o777)
    assert refused(tmp_path, command) == (
        f"job directory: {folder} can be written by other users (drwxrwxrwx) (chmod go-w {folder})"
    )
    assert asked == []


@pytest.mark.parametrize("command", ["status", "metrics"])
def test_a_job_directory_of_another_user_is_refused(
    tmp_path: Path,
    asked: list[tuple[str, str | None]],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    folder = job_dir(tmp_path)
    owner = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # as another user sees it
    # The job root (the same owner's) is refused first: nothing is trusted below it.
    assert refused(tmp_path, command) == (
        f"job root: {folder.parent} is owned by uid {owner}, not by you (uid {owner + 1}) "
        "(use a directory of your own (mkdir -m 700))"
    )
    assert asked == []


def test_an_endpoint_file_others_can_write_or_a_symlink_is_refused(
    tmp_path: Path, asked: list[tuple[str, str | None]]
) -> None:
    folder = job_dir(tmp_path)
    endpoint = folder / "endpoint.json"
    endpoint.chmod(0o666)
    assert refused(tmp_path, "metrics") == (
        f"endpoint.json: {endpoint} can be written by other users (-rw-rw-rw-) "
        f"(chmod go-w {endpoint})"
    )
    planted = tmp_path / "planted.json"
    endpoint.rename(planted)
    planted.chmod(0o600)
    endpoint.symlink_to(planted)
    assert refused(tmp_path, "status").startswith(f"endpoint.json: {endpoint} is a symlink")
    assert asked == []


@pytest.mark.parametrize("command", ["status", "metrics"])
def test_the_key_never_goes_to_a_url_the_leader_did_not_record(
    tmp_path: Path, asked: list[tuple[str, str | None]], command: str
) -> None:
    folder = job_dir(tmp_path, url="http://evil.example:8000/v1")
    assert refused(tmp_path, command) == (
        f"endpoint.json: {folder}/endpoint.json names http://evil.example:8000/v1, not the "
        "leader's http://10.0.0.1:8000/v1 (the job directory was changed: do not trust it "
        "(resubmit the job))"
    )
    assert asked == []


def test_a_key_file_others_can_read_is_not_sent(
    tmp_path: Path, asked: list[tuple[str, str | None]]
) -> None:
    folder = job_dir(tmp_path)
    (folder / "api_key").chmod(0o644)
    assert refused(tmp_path, "metrics") == (
        f"API key: {folder}/api_key can be read by other users (-rw-r--r--) "
        f"(chmod 600 {folder}/api_key)"
    )
    assert asked == []


def test_a_job_without_a_key_sends_none(
    tmp_path: Path, asked: list[tuple[str, str | None]]
) -> None:
    folder = job_dir(tmp_path)
    (folder / "api_key").unlink()
    job = Client(job_root=str(tmp_path / "jobs")).job(JOB)
    job.metrics_text()
    assert asked == [("http://10.0.0.1:8000/metrics", None)]
