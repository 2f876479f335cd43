from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.errors import InputError, SubmitError
from launchers.jobdir.jobfiles import Endpoint
from launchers.observe.status import combine
from launchers.plan.launch import LaunchPlan, plan
from launchers.spec.config import ClusterSpec, ServeConfig
from launchers.submit import slurm, slurmctl
from launchers.submit.slurm import parse_sbatch_parsable, slurm_minutes
from launchers.submit.slurmctl import parse_scontrol_record, parse_state

from .helpers.cli import run

NOT_SLURM = (
    "{via}: no srun/sbatch here: this is not a SLURM login node "
    "(submit from the login node, or use --dry-run / --executor local)"
)


def test_sbatch_parsable() -> None:
    assert parse_sbatch_parsable("1234\n") == "1234"
    assert parse_sbatch_parsable("1234;cluster2\n") == "1234"
    with pytest.raises(SubmitError, match="sbatch printed no job id"):
        parse_sbatch_parsable("sbatch: error: bad\n")


def test_scontrol_record_and_states() -> None:
    rec = parse_scontrol_record(
        "JobId=7 JobName=vllm JobState=CANCELLED Reason=None NodeList=node[1-2]"
    )
    assert rec["JobState"] == "CANCELLED" and rec["NodeList"] == "node[1-2]"
    assert parse_state("CANCELLED by 0") == "CANCELLED"
    assert parse_state("RUNNING") == "RUNNING"
    assert parse_state("COMPLETED+") == "ENDED"
    assert parse_state("") is None
    assert parse_state("WEIRD") is None


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("04:00:00", 240),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("10:30", 11),
        ("01:00:01", 61),
    ],
)
def test_slurm_minutes(text: str, minutes: int) -> None:
    assert slurm_minutes(text) == minutes


def test_slurm_minutes_rejects() -> None:
    with pytest.raises(InputError):
        slurm_minutes("4h")


def test_combine_states() -> None:
    assert combine("1", "PENDING", "PENDING", None).state == "PENDING"
    assert combine("1", "RUNNING", "RUNNING", None).state == "STARTING"
    ready = combine("1", "RUNNING", "RUNNING", Endpoint(state="READY", message="serving", url="u"))
    assert (ready.state, ready.url) == ("READY", "u")
    gone = combine("1", "CANCELLED", "CANCELLED by 0", Endpoint(state="READY", message="serving"))
    assert gone.state == "STOPPED" and "CANCELLED" in gone.message
    died = combine("1", "FAILED", "FAILED", Endpoint(state="LOADING", message="x"))
    assert died.state == "FAILED"
    assert combine("1", "TIMEOUT", "TIMEOUT", None).state == "FAILED"
    failed = combine("1", "RUNNING", "RUNNING", Endpoint(state="FAILED", message="vllm exited"))
    assert failed.final and failed.message == "vllm exited"


def test_a_stop_under_way_is_draining_and_a_job_has_ended_only_when_slurm_agrees() -> None:
    draining = Endpoint(state="DRAINING", message="stopping on SIGUSR1 (time limit near)")
    now = combine("1", "RUNNING", "RUNNING", draining)
    assert now.state == "DRAINING" and not now.final and not now.ended
    for slurm_state, raw in (("ENDED", "COMPLETED"), ("TIMEOUT", "TIMEOUT")):
        cut = combine("1", slurm_state, raw, draining)  # a stop cut short is a stop
        assert (cut.state, cut.ended) == ("STOPPED", True), cut
    stopped = Endpoint(state="STOPPED", message="stopped by SIGUSR1 (time limit near)")
    still = combine("1", "RUNNING", "COMPLETING", stopped)  # the file first, SLURM after
    assert still.final and not still.ended
    assert combine("1", "ENDED", "COMPLETED", stopped).ended
    assert combine("1", None, "", stopped).ended  # SLURM no longer knows it


def test_waiting_for_ready_stops_at_a_job_that_is_draining() -> None:
    from launchers.errors import RuntimeFailure
    from launchers.observe.status import JobStatus, wait_ready

    status = JobStatus("1", "DRAINING", "stopping on SIGTERM (scancel or shutdown)")
    with pytest.raises(RuntimeFailure, match="job 1 DRAINING: stopping on SIGTERM"):
        wait_ready(lambda: status, what="job 1", timeout=60, on_change=lambda s: None,
                   log_hint="node-0.log")  # fmt: skip


# --- submitting from a machine without SLURM ---------------------------------------------


@pytest.fixture
def no_slurm_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PATH holding the usual tools but neither sbatch nor srun."""
    fake = tmp_path / "bin-without-slurm"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\nexit 0\n")  # a SLURM tool that is not sbatch
    (fake / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    return str(fake)


def _plan(make_config: Callable[..., ServeConfig], job_root: Path) -> LaunchPlan:
    config = make_config(model="llama-3.2-3b-instruct", job_root=str(job_root))
    return plan(config, ClusterSpec(nodes=1, gpus_per_node=1))


def test_submitit_without_slurm_is_one_clear_error(
    no_slurm_path: str, make_config: Callable[..., ServeConfig], tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    with pytest.raises(SubmitError) as caught:
        slurm.submit_submitit(_plan(make_config, root))
    assert str(caught.value) == NOT_SLURM.format(via="submitit")
    assert not root.exists()  # refused before the job directory was made


def test_sbatch_without_slurm_is_one_clear_error(
    no_slurm_path: str, make_config: Callable[..., ServeConfig], tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    launch = _plan(make_config, root)
    with pytest.raises(SubmitError) as caught:
        slurm.submit_sbatch(launch, "#!/bin/bash\n", {"PATH": no_slurm_path})
    assert str(caught.value) == NOT_SLURM.format(via="sbatch")
    assert not root.exists()


def test_slurm_client_found_on_path(tmp_path: Path) -> None:
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sbatch").chmod(0o755)
    slurm.require_slurm_client("submitit", {"PATH": str(fake)})
    with pytest.raises(SubmitError, match="no srun/sbatch here"):
        slurm.require_slurm_client("submitit", {"PATH": str(tmp_path)})


def test_submit_command_off_slurm_says_so(no_slurm_path: str, tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    code, out, err = run(
        ["submit", "-m", "llama-3.2-3b-instruct", "--job-root", str(root), "--no-wait"],
        {"PATH": no_slurm_path},
    )
    assert (code, out) == (1, "")
    assert err == f"Error: {NOT_SLURM.format(via='submitit')}\n"
    assert not root.exists()


NO_SQUEUE = (
    "Error: {tool}: not found here, so SLURM cannot be asked about job 123 (this is not a "
    "SLURM login node) (run vllm-hpc on the login node of the cluster that ran the job)\n"
)


@pytest.mark.parametrize(("command", "tool"), [("status", "squeue"), ("stop", "squeue")])
def test_status_and_stop_off_slurm_say_so(tmp_path: Path, command: str, tool: str) -> None:
    root = tmp_path / "jobs"
    (root / "123").mkdir(parents=True)
    (root / "123" / "endpoint.json").write_text('{"state": "READY", "job_id": "123"}')
    empty = tmp_path / "no-slurm"
    empty.mkdir()
    code, out, err = run([command, "123", "--job-root", str(root)], {"PATH": str(empty)})
    assert (code, out, err) == (1, "", NO_SQUEUE.format(tool=tool))


def test_a_site_without_accounting_is_asked_what_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # squeue and scontrol know nothing of an old job and there is no sacct: unknown, no crash.
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    for tool in ("squeue", "scontrol"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert slurmctl.job_state("123") == (None, "")
    (fake / "squeue").write_text("#!/bin/sh\necho RUNNING\n")
    assert slurmctl.job_state("123") == ("RUNNING", "RUNNING")


# --- a pending job: why SLURM has not started it, and when it expects to ----------------


@pytest.mark.parametrize(
    ("out", "reason", "detail", "start", "meaning"),
    [
        ("Priority|2026-12-02T15:30:00\n", "Priority", "", "2026-12-02T15:30:00",
         "other jobs are ahead of it in the queue"),
        ("Resources|N/A", "Resources", "", None, "it is next, waiting for nodes to free up"),
        ("QOSMaxGRESPerUser|N/A", "QOSMaxGRESPerUser", "", None,
         "your QOS's GPU limit is reached (your other jobs hold it)"),
        ("ReqNodeNotAvail, UnavailableNodes:gpu[01-02]|Unknown", "ReqNodeNotAvail",
         "UnavailableNodes:gpu[01-02]", None, "a node it needs is down, drained or reserved"),
        ("PartitionTimeLimit|N/A", "PartitionTimeLimit", "", None,
         "the time asked exceeds the partition's limit: it will never start as asked"),
        ("AssocGrpMemLimit|N/A", "AssocGrpMemLimit", "", None,
         "a limit your account shares is reached"),  # a family, not named one by one
        ("SomethingNew|N/A", "SomethingNew", "", None, None),
        ("None|N/A", "None", "", None, "just submitted, SLURM has not looked at it yet"),
        ("Priority", "Priority", "", None, "other jobs are ahead of it in the queue"),
        ("Prio\x1b[31mrity|2026-12-02T15:30:00\x07", "Prio[31mrity", "", "2026-12-02T15:30:00",
         None),  # no control character reaches a terminal
    ],
)  # fmt: skip
def test_parse_pending(
    out: str, reason: str, detail: str, start: str | None, meaning: str | None
) -> None:
    found = slurmctl.parse_pending(out)
    assert found == slurmctl.Pending(reason, detail, start)
    assert found.meaning == meaning
    assert slurmctl.parse_pending("") is None  # not pending (squeue --start lists none)


def test_a_job_slurm_gave_no_reason_yet_is_described_without_its_word_none() -> None:
    """squeue says ``None`` for a job just submitted: a user must not read a Python None."""
    described = slurmctl.Pending("None").describe()
    assert described == "just submitted, SLURM has not looked at it yet"
    assert slurmctl.Pending("Priority").describe().startswith("Priority: other jobs")


def test_every_reason_meant_to_be_explained_is() -> None:
    for reason in ("Priority", "Resources", "QOSMaxGRESPerUser", "ReqNodeNotAvail",
                   "AssocGrpGRES", "Dependency", "BeginTime", "PartitionTimeLimit",
                   "JobHeldUser"):  # fmt: skip
        assert slurmctl.PENDING_REASONS[reason], reason
    never = [r for r, text in slurmctl.PENDING_REASONS.items() if slurmctl.NEVER in text]
    assert "PartitionTimeLimit" in never and "Priority" not in never


def fake_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str, start: str) -> Path:
    """A PATH whose squeue answers as SLURM does for job 123 (``--start``: the reason and
    the expected start; else the state), and logs each call."""
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    calls = tmp_path / "squeue-calls"
    (fake / "squeue").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        f"  *--start*) echo '{start}' ;;\n"
        f"  *) echo {state} ;;\n"
        "esac\n"
    )
    (fake / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    return calls


def pending_job(root: Path, endpoint: str | None = None) -> None:
    from launchers.jobdir.safe import private_dir

    private_dir(root, "job root")
    job = private_dir(root / "123", "job directory")
    (job / "plan.json").write_text("{}")
    if endpoint is not None:
        (job / "endpoint.json").write_text(endpoint)


def test_status_of_a_pending_job_says_why_and_when(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_squeue(tmp_path, monkeypatch, "PENDING", "Priority|2099-01-01T00:00:00")
    pending_job(tmp_path / "jobs")
    code, out, err = run(["status", "123", "--job-root", str(tmp_path / "jobs")],
                         {"PATH": str(tmp_path / "slurm-bin")})  # fmt: skip
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == (
        "job 123: PENDING - waiting for an allocation "
        "(Priority: other jobs are ahead of it in the queue)"
    )
    assert lines[1] == "  slurm     PENDING"
    assert lines[2].startswith("  start     expected start 2099-01-01T00:00:00 (in "), lines
    assert calls.read_text().splitlines() == [
        "-h -j 123 -o %T",
        "--start -h -j 123 -o %r|%S",
    ]  # one call for the state, one for the reason and the start


def test_status_json_of_a_pending_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    fake_squeue(tmp_path, monkeypatch, "PENDING", "ReqNodeNotAvail, UnavailableNodes:n1|N/A")
    pending_job(tmp_path / "jobs")
    _, out, _ = run(["status", "123", "--job-root", str(tmp_path / "jobs"), "--json"],
                    {"PATH": str(tmp_path / "slurm-bin")})  # fmt: skip
    assert json.loads(out)["pending"] == {
        "reason": "ReqNodeNotAvail",
        "detail": "UnavailableNodes:n1",
        "meaning": "a node it needs is down, drained or reserved",
        "expected_start": None,
    }


def test_jobs_shows_a_pending_jobs_reason_under_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_squeue(tmp_path, monkeypatch, "PENDING", "QOSMaxGRESPerUser|N/A")
    pending_job(tmp_path / "jobs")
    code, out, err = run(["jobs", "--job-root", str(tmp_path / "jobs")],
                         {"PATH": str(tmp_path / "slurm-bin")})  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "123     -      -      PENDING  -         -",
        "        pending: QOSMaxGRESPerUser: your QOS's GPU limit is reached (your other jobs "
        "hold it); no expected start yet (SLURM's scheduler has not estimated one)",
    ]


def test_a_running_job_costs_no_second_squeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_squeue(tmp_path, monkeypatch, "RUNNING", "Priority|N/A")
    pending_job(tmp_path / "jobs", '{"state": "LOADING", "message": "loading"}')
    _, out, _ = run(["status", "123", "--job-root", str(tmp_path / "jobs")],
                    {"PATH": str(tmp_path / "slurm-bin")})  # fmt: skip
    assert out.splitlines()[0] == "job 123: LOADING - loading"
    assert calls.read_text().splitlines() == ["-h -j 123 -o %T"]


def test_the_wait_line_says_why_a_job_is_pending() -> None:
    from launchers.observe.progress import Progress, line

    why = slurmctl.parse_pending("Resources|2026-12-02T15:30:00")
    status = combine("1", "PENDING", "PENDING", None, why)
    assert status.pending == why
    shown = line(Progress(status.state, status.message), 12.5)
    assert shown == (
        "[  12.5s] PENDING: waiting for an allocation "
        "(Resources: it is next, waiting for nodes to free up)"
    )
    assert combine("1", "PENDING", "PENDING", None).message == "waiting for an allocation (PENDING)"


@pytest.mark.parametrize("job_id", ["manual-20250101-120000", "dp-0a0b-8000", "local-12"])
def test_a_job_outside_slurm_is_not_asked_of_slurm(
    monkeypatch: pytest.MonkeyPatch, job_id: str
) -> None:
    # The wrapper outside SLURM (a Ray cluster, compose): status reads its leader alone.
    from launchers.observe import job as observed

    def no_slurm(job_id: str) -> tuple[str | None, str]:
        raise AssertionError(f"SLURM asked about {job_id}")

    monkeypatch.setattr(slurmctl, "job_state", no_slurm)
    assert observed._slurm_state(job_id) == ("RUNNING", "local")
    with pytest.raises(AssertionError, match="SLURM asked about 42"):
        observed._slurm_state("42")
