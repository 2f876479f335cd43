from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.client import Client
from launchers.jobdir.paths import JobDir
from launchers.observe import benchrun
from launchers.plan.launch import LaunchPlan


def test_jobs_lists_job_directories_only(tmp_path: Path) -> None:
    for name in ("7", "12", ".doctor-20261123-161215"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps({}))
    (tmp_path / "9").mkdir()  # a directory with no plan: not a job
    (tmp_path / "stray.txt").write_text("x")
    assert [job.job_id for job in Client(job_root=str(tmp_path)).jobs()] == ["7", "12"]


def test_jobs_on_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert Client(job_root=str(tmp_path / "none")).jobs() == []


def test_bench_tries_the_plans_python_where_the_job_runs(
    make_plan: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench`` reads the job's typed plan: its Python on the leader, and never an
    ``srun`` into a container job (vLLM is the image's there)."""
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    bare = make_plan(model="llama-3.2-3b-instruct")
    assert benchrun.places("local-1", bare, None) == [("the job's Python", [bare.python])]
    on_leader = benchrun.places("42", bare, "node1")
    assert on_leader[0][0] == "the leader node1" and on_leader[0][1][-1] == bare.python
    boxed = make_plan(model="llama-3.2-3b-instruct", container="apptainer:/x.sif")
    assert benchrun.places("42", boxed, "node1") == []
    assert benchrun.places("local-1", None, None) == [("the job's Python", ["python3"])]


def test_report_and_summary_read_the_typed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `status` and `jobs` print comes from the client, read from the job's records."""
    from launchers import jobdir
    from launchers.jobdir import jobfiles
    from launchers.observe import job as client

    monkeypatch.setattr(client, "_slurm_state", lambda job_id: ("FAILED", "FAILED"))
    job_dir = tmp_path / "42"
    jobdir.ensure_dir(job_dir)
    jobfiles.write(
        JobDir(str(job_dir)).endpoint,
        jobfiles.Endpoint(state="FAILED", message="vllm serve exited with code 1", job_id="42",
                          model="m", nodes=2, started=1.0, log_tail=("boom",)),
    )  # fmt: skip
    for rank, host in ((0, "n1"), (1, "n2")):
        jobfiles.write(
            JobDir(str(job_dir)).node(rank),
            jobfiles.NodeRecord(rank=rank, hostname=host, ip=f"10.0.0.{rank + 1}"),
        )
    job = Client(job_root=str(tmp_path)).job("42")
    report = job.report()
    assert (report["state"], report["healthy"], report["log_tail"]) == ("FAILED", None, ["boom"])
    assert [(n["rank"], n["host"], n["role"]) for n in report["nodes"]] == [
        (0, "n1", "leader"),
        (1, "n2", "worker"),
    ]
    summary = job.summary()
    assert (summary["model"], summary["nodes"], summary["state"]) == ("m", 2, "FAILED")
    assert summary["started"] == 1.0
