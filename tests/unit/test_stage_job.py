"""``vllm-hpc stage --via sbatch`` (``render.stagejob``, ``submit.stagejob``,
``stage.run.node_stage``, ``Client.stage_job``): the script recorded whole; the node's
``stage`` resolved on the login node (hub id, store, hub, the token's file checked
there); the token only in its 0600 file, never in the script, argv or the job's
environment; the partition from ``--partition`` or the site's ``transfer_partition``;
the job waited for with the wait helper (state changes said) and what its ``stage``
printed shown; a failed job exits 1 with its error line.

SLURM is never asked: ``sbatch`` is a stand-in that runs the script as a job would (its
``--output``/``--error`` files, ``SLURM_JOB_ID``), against a hub on loopback, with this
repository's ``launchers`` on the job's Python; SLURM's state comes from a stand-in."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers import waits
from launchers.defaults import STAGE_JOB_ASK
from launchers.errors import InputError, WaitTimeout
from launchers.render.stagejob import StageJob, render_stage_script
from launchers.submit import slurm, slurmctl, stagejob

from .conftest import assert_one_clear_line
from .helpers.cli import run
from .helpers.fakehub import Hub, Repo, serve
from .helpers.runtime import FakeClock
from .helpers.scripts import REPO

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x05" * 500}
TOKEN = "hf_jobTOKEN0123456789abcdef"  # noqa: S105 - the test hub's

JOB = StageJob(
    model="meta-llama/Llama-3.2-3B-Instruct", revision="main",
    argv=("/shared/venv/bin/python", "-m", "launchers", "stage",
          "meta-llama/Llama-3.2-3B-Instruct", "--revision", "main", "--dest", "/shared/models",
          "--endpoint", "https://hf-mirror.example.org", "--token-file",
          "/home/alice/.cache/huggingface/token"),
    output="/home/alice/.vllm-hpc/jobs/stage/%j.out",
    errors="/home/alice/.vllm-hpc/jobs/stage/%j.err",
    time="02:00:00", partition="transfer", account="proj42",
)  # fmt: skip


def test_the_stage_jobs_script(golden: Callable[[str, str], None], tmp_path: Path) -> None:
    text = render_stage_script(JOB)
    golden("stage-job.sbatch", text)
    script = tmp_path / "stage.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    lines = text.splitlines()
    assert "#SBATCH --partition=transfer" in lines and "#SBATCH --account=proj42" in lines
    assert not any("qos" in line or "gres" in line or "gpus" in line for line in lines)
    assert "unset HF_TOKEN HUGGING_FACE_HUB_TOKEN" in lines


@pytest.mark.parametrize("field", ["partition", "account", "qos", "output", "model"])
def test_a_newline_in_a_value_is_refused(field: str) -> None:
    with pytest.raises(InputError, match="control character"):
        changes: dict[str, Any] = {field: "x\n#SBATCH --uid=0"}
        render_stage_script(dataclasses.replace(JOB, **changes))


def test_a_path_sbatch_would_misread_is_refused_and_an_argument_is_quoted() -> None:
    with pytest.raises(InputError, match="sbatch reads it unquoted"):
        render_stage_script(dataclasses.replace(JOB, output="/my jobs/stage/%j.out"))
    spaced = dataclasses.replace(JOB, argv=(*JOB.argv[:-1], "/home/alice/my token"))
    assert (
        render_stage_script(spaced).splitlines()[-1].endswith("--token-file '/home/alice/my token'")
    )


# --- waiting ---


def test_the_wait_says_each_state_and_returns_at_the_end() -> None:
    answers = iter([(None, ""), ("PENDING", "PENDING"), ("PENDING", "PENDING"),
                    ("RUNNING", "RUNNING"), ("ENDED", "COMPLETED")])  # fmt: skip
    said: list[str] = []
    fake = FakeClock()
    ended = stagejob.wait_ended(
        "42", timeout=600, log="/jobs/stage/42.out", said=said.append,
        state=lambda job: next(answers), pending=lambda job: slurmctl.Pending("Priority"),
        clock=fake.clock(),
    )  # fmt: skip
    assert ended == ("ENDED", "COMPLETED")
    assert said == [
        "stage job 42: not known to SLURM yet",
        "stage job 42: PENDING (Priority: other jobs are ahead of it in the queue)",
        "stage job 42: RUNNING",
        "stage job 42: ENDED",
    ]
    assert fake.slept == 4 * STAGE_JOB_ASK  # SLURM asked every STAGE_JOB_ASK seconds


def test_a_job_slurm_forgets_after_it_was_seen_has_ended() -> None:
    answers = iter([("RUNNING", "RUNNING"), (None, "")])
    ended = stagejob.wait_ended(
        "42", timeout=600, log="x", said=lambda line: None, state=lambda job: next(answers),
        clock=FakeClock().clock(),
    )  # fmt: skip
    assert ended == (None, "")


def test_the_wait_gives_up_after_its_timeout_and_says_the_job_keeps_running() -> None:
    with pytest.raises(WaitTimeout) as caught:
        stagejob.wait_ended("42", timeout=60, log="/jobs/stage/42.out", said=lambda line: None,
                            state=lambda job: ("PENDING", "PENDING"), pending=lambda job: None,
                            clock=FakeClock().clock())  # fmt: skip
    assert caught.value.one_line() == (
        "waited 60 s for stage job 42 to end (it keeps its place: read /jobs/stage/42.out "
        "later, or scancel 42)"
    )


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        ("Fetching 2 files:  50%|#\rFetching 2 files: 100%|##\nError: model x is gated\n",
         "Error: model x is gated"),
        ("100%|##\r\n", "100%|##"),
        ("", ""),
    ],
)  # fmt: skip
def test_the_error_line_is_found_among_progress_bars(stderr: str, line: str) -> None:
    assert stagejob.last_error(stderr) == line


# --- through `vllm-hpc stage --via sbatch` ---


@dataclasses.dataclass
class FakeSlurm:
    """``sbatch`` that runs the script now, as a job would, and SLURM's state after."""

    root: Path
    job_id: str = "42"
    submitted: list[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=list)
    code: int | None = None

    def sbatch(self, script: str, environ: dict[str, str]) -> str:
        self.submitted.append((script, dict(environ)))
        out = re.search(r"^#SBATCH --output=(.*)$", script, re.M)
        err = re.search(r"^#SBATCH --error=(.*)$", script, re.M)
        assert out and err
        with open(out[1].replace("%j", self.job_id), "w") as o, \
             open(err[1].replace("%j", self.job_id), "w") as e:  # fmt: skip
            env = {**environ, "SLURM_JOB_ID": self.job_id}
            self.code = subprocess.run(["bash", "-c", script], env=env, stdout=o, stderr=e,
                                       check=False, timeout=120).returncode  # fmt: skip
        return self.job_id

    def state(self, job_id: str) -> tuple[str | None, str]:
        assert job_id == self.job_id and self.code is not None
        return ("ENDED", "COMPLETED") if self.code == 0 else ("FAILED", "FAILED")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    repos = {"org/tiny": Repo(dict(FILES), commit=COMMIT),
             "org/gated": Repo(dict(FILES), commit=COMMIT, gated=True, token=TOKEN)}  # fmt: skip
    with serve(repos) as served:
        yield served


@pytest.fixture
def fake_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSlurm:
    fake = FakeSlurm(tmp_path)
    monkeypatch.setattr(slurm, "sbatch_text", fake.sbatch)
    monkeypatch.setattr(slurmctl, "job_state", fake.state)
    monkeypatch.setattr(stagejob, "STAGE_JOB_ASK", 0.0)
    return fake


@pytest.fixture
def nodes_python(tmp_path: Path) -> Path:
    """The job's Python: this one, with this repository's launchers importable."""
    python = tmp_path / "node-python"
    code = shlex.quote(str(REPO / "python"))
    python.write_text(f'#!/bin/sh\nPYTHONPATH={code} exec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    return python


def stage_job(hub: Hub, tmp_path: Path, python: Path, *args: str, env: dict[str, str] | None = None
              ) -> tuple[int, str, str]:  # fmt: skip
    base = {"VLLM_HPC_PYTHON": str(python), "VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs"),
            "PATH": os.environ.get("PATH", os.defpath)}  # fmt: skip
    return run(["stage", *args, "--via", "sbatch", "--dest", str(tmp_path / "store"),
                "--endpoint", hub.url], {**base, **(env or {})})  # fmt: skip


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "hf-token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def test_the_job_stages_on_the_node_and_its_output_is_printed(
    hub: Hub, fake_slurm: FakeSlurm, nodes_python: Path, tmp_path: Path
) -> None:
    token = token_file(tmp_path)
    code, out, err = stage_job(
        hub, tmp_path, nodes_python, "org/gated", "--token-file", str(token),
        "--partition", "xfer", env={"HF_TOKEN": TOKEN},
    )  # fmt: skip
    assert code == 0, err
    [(script, environ)] = fake_slurm.submitted
    # the token: in its file only, read by the node's stage
    assert TOKEN not in script and "HF_TOKEN" not in environ and TOKEN not in str(environ)
    assert f"--token-file {token}" in script and "#SBATCH --partition=xfer" in script
    assert f"staged org/gated at main (commit {COMMIT}) from {hub.url}" in out
    copy = tmp_path / "store" / "org--gated" / COMMIT
    assert (copy / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert {auth for _, _, auth in hub.seen} == {f"Bearer {TOKEN}"}  # only ever to the hub
    assert err.splitlines()[:2] == [
        f"stage job 42 submitted; its output: {tmp_path}/jobs/stage/42.out",
        "stage job 42: ENDED",
    ]
    assert stat_mode(tmp_path / "jobs" / "stage") == 0o700


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_partition_is_the_sites_transfer_partition_unless_given(
    hub: Hub, fake_slurm: FakeSlurm, nodes_python: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site:\n  transfer_partition: dtn\n  partition: gpu\n  qos: short\n")
    env = {"VLLM_HPC_SITE_CONFIG": str(site)}
    code, out, err = stage_job(hub, tmp_path, nodes_python, "org/tiny", "--dry-run", env=env)
    assert code == 0, err
    assert "#SBATCH --partition=dtn" in out.splitlines() and "#SBATCH --qos=short" in out
    assert "#SBATCH --time=04:00:00" in out.splitlines()  # the default limit
    assert fake_slurm.submitted == [] and not (tmp_path / "jobs").exists()
    code, out, _ = stage_job(hub, tmp_path, nodes_python, "org/tiny", "--dry-run",
                             "--partition", "xfer", env=env)  # fmt: skip
    assert "#SBATCH --partition=xfer" in out.splitlines()


def test_a_failed_job_exits_1_with_its_error_line_and_the_file_to_read(
    hub: Hub, fake_slurm: FakeSlurm, nodes_python: Path, tmp_path: Path
) -> None:
    code, _, err = stage_job(hub, tmp_path, nodes_python, "org/gated")  # no token
    assert code == 1
    last = err.splitlines()[-1]  # the node's own line, its fix included, and where to read
    assert last.startswith(
        "Error: stage job 42 ended FAILED: model org/gated is gated and no token was given "
        "(request access on the model's page"
    )
    assert last.endswith(f"(read {tmp_path}/jobs/stage/42.err)")


def test_a_bad_token_file_or_offline_login_is_refused_before_anything_is_queued(
    hub: Hub, fake_slurm: FakeSlurm, nodes_python: Path, tmp_path: Path
) -> None:
    token = token_file(tmp_path, 0o644)
    code, out, err = stage_job(hub, tmp_path, nodes_python, "org/gated", "--token-file", str(token))
    assert_one_clear_line(code, out, err, f"Error: --token-file: {token} can be read by other")
    code, out, err = stage_job(hub, tmp_path, nodes_python, "org/tiny",
                               env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert_one_clear_line(code, out, err, "Error: HF_HUB_OFFLINE is set")
    code, out, err = run(["stage", "org/tiny", "--partition", "xfer"])
    assert_one_clear_line(code, out, err, "Error: --partition: only with --via sbatch")
    code, out, err = run(["stage", "org/tiny", "--time", "04:00:00"])
    assert_one_clear_line(code, out, err, "Error: --time: only with --via sbatch")
    code, out, err = stage_job(hub, tmp_path, nodes_python, "org/tiny", "--time", "soon")
    assert_one_clear_line(code, out, err, "Error: --time: 'soon' is not a SLURM time")
    assert fake_slurm.submitted == []


def test_the_client_waits_with_the_wait_helper(
    hub: Hub, fake_slurm: FakeSlurm, nodes_python: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from launchers.client import Client
    from launchers.spec.staged import StageRequest, StageVia

    asked: list[dict[str, Any]] = []
    real = waits.wait_for

    def recorded(condition: Any, **kw: Any) -> Any:
        asked.append(kw)
        return real(condition, **kw)

    monkeypatch.setattr(waits, "wait_for", recorded)
    environ = {"VLLM_HPC_PYTHON": str(nodes_python), "HOME": str(tmp_path),
               "PATH": os.environ.get("PATH", os.defpath)}  # fmt: skip
    client = Client(job_root=str(tmp_path / "jobs"), environ=environ)
    request = StageRequest(model="org/tiny", dest=str(tmp_path / "store"), endpoint=hub.url)
    run_ = client.stage_job(request, StageVia(time="00:30:00"))
    assert run_.end is not None and run_.end.ok and "staged org/tiny" in run_.end.output
    [kw] = asked
    assert kw["what"] == "stage job 42 to end" and kw["timeout"] == 30 * 60 + 3600
