from __future__ import annotations

import json
from pathlib import Path

from launchers.observe.client import Client


def test_jobs_lists_job_directories_only(tmp_path: Path) -> None:
    for name in ("7", "12", ".doctor-20261123-161215"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps({}))
    (tmp_path / "9").mkdir()  # a directory with no plan: not a job
    (tmp_path / "stray.txt").write_text("x")
    assert [job.job_id for job in Client(job_root=str(tmp_path)).jobs()] == ["7", "12"]


def test_jobs_on_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert Client(job_root=str(tmp_path / "none")).jobs() == []
