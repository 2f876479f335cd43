from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.observe import benchrun
from launchers.observe.client import Client
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
