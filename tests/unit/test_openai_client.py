"""``Job.openai()``: the real ``openai`` client, pointed at the job's recorded endpoint with
the job's key, and never made without a key (the package would fall back to
``$OPENAI_API_KEY``), for a job that is not READY, or from an untrusted directory."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from launchers.client import Client, Job
from launchers.errors import InputError, RuntimeFailure
from launchers.jobdir import jobfiles
from launchers.jobdir.jobfiles import State
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import UnsafePathError

JOB = "local-7"


def fake_job(tmp_path: Path, *, state: State = "READY", key: str | None = "sk-job\n") -> Job:
    """A job directory as the leader leaves it (0700, endpoint.json, a 0600 key file)."""
    root = tmp_path / "jobs"
    root.mkdir(mode=0o700)
    folder = root / JOB
    folder.mkdir(mode=0o700)
    key_file = folder / "api_key"
    if key is not None:
        key_file.write_text(key)
        key_file.chmod(0o600)
    ready = state == "READY"
    jobfiles.write(
        JobDir(str(folder)).endpoint,
        jobfiles.Endpoint(
            state=state,
            job_id=JOB,
            leader_ip="10.0.0.1",
            port=8000,
            url="http://10.0.0.1:8000/v1" if ready else None,
            model="m",
            api_key_file=str(key_file),
        ),
    )
    return Client(job_root=str(root)).job(JOB)


@pytest.fixture(autouse=True)
def _a_stray_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the client must never pick up."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.example/v1")


def test_the_client_has_the_jobs_url_and_key(tmp_path: Path) -> None:
    job = fake_job(tmp_path)
    client = job.openai(max_retries=0)
    assert isinstance(client, openai.OpenAI)
    assert str(client.base_url) == "http://10.0.0.1:8000/v1/"
    assert client.api_key == "sk-job"
    assert client.max_retries == 0  # the caller's options reach the client
    aclient = job.async_openai()
    assert isinstance(aclient, openai.AsyncOpenAI)
    assert (str(aclient.base_url), aclient.api_key) == ("http://10.0.0.1:8000/v1/", "sk-job")


@pytest.mark.parametrize("key", [None, "", " \n"], ids=["no key file", "empty", "blank"])
def test_no_key_no_client(tmp_path: Path, key: str | None) -> None:
    """Fail closed: no client with an empty key, nor with $OPENAI_API_KEY instead."""
    job = fake_job(tmp_path, key=key)
    with pytest.raises(RuntimeFailure, match="has no API key"):
        job.openai()
    with pytest.raises(RuntimeFailure, match="has no API key"):
        job.async_openai()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    job = fake_job(tmp_path)
    (Path(job.job_dir) / "api_key").chmod(0o644)
    with pytest.raises(UnsafePathError, match="can be read by other users"):
        job.openai()


@pytest.mark.parametrize("state", ["LOADING", "FAILED", "STOPPED"])
def test_a_job_that_is_not_ready_gets_no_client(tmp_path: Path, state: State) -> None:
    job = fake_job(tmp_path, state=state)
    with pytest.raises(RuntimeFailure, match=f"is {state}, not READY"):
        job.openai()


def test_the_url_and_key_come_from_the_job_only(tmp_path: Path) -> None:
    job = fake_job(tmp_path)
    for given in ({"api_key": "sk-other"}, {"base_url": "http://elsewhere/v1"}):
        with pytest.raises(InputError, match="come from the job"):
            job.openai(**given)


def test_an_endpoint_that_is_not_the_leaders_is_refused(tmp_path: Path) -> None:
    """endpoint.json naming another server than the recorded leader: no key sent there."""
    job = fake_job(tmp_path)
    path = JobDir(job.job_dir).endpoint
    info = jobfiles.read(path, jobfiles.Endpoint)
    assert info is not None
    jobfiles.write(path, info.model_copy(update={"url": "http://10.9.9.9:8000/v1"}))
    with pytest.raises(InputError, match="not the leader's"):
        job.openai()


def test_without_the_package_one_line_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = fake_job(tmp_path)
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` raises ImportError
    with pytest.raises(InputError) as caught:
        job.openai()
    assert "pip install 'vllm-hpc[openai]'" in str(caught.value)
