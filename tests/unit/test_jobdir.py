from __future__ import annotations

import json
from pathlib import Path

import pytest

from launchers import jobdir
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.plan.launch import LaunchPlan


def test_node_failures_of_this_attempt_lowest_rank_first(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert jobfiles.failures(root, 0) == []
    for rank, attempt in ((3, 0), (1, 0), (2, 1)):
        jobfiles.write(
            JobDir(root).failure(rank),
            jobfiles.Failure(rank=rank, attempt=attempt, hostname=f"node{rank}", message="x"),
        )
    assert [f.rank for f in jobfiles.failures(root, 0)] == [1, 3]
    assert [f.rank for f in jobfiles.failures(root, 1)] == [2]


def test_remove_stale_forgets_the_previous_attempts_rendezvous(tmp_path: Path) -> None:
    root = str(tmp_path)
    jobfiles.write(JobDir(root).leader, jobfiles.Leader(job_id="7", attempt=0, ip="10.0.0.1"))
    jobfiles.write(
        JobDir(root).failure(1),
        jobfiles.Failure(rank=1, attempt=0, hostname="node1", message="x"),
    )
    jobfiles.write(JobDir(root).endpoint, jobfiles.Endpoint(state="READY"))
    jobdir.remove_stale(root)
    assert not Path(root, "leader.json").exists()
    assert jobfiles.failures(root, 0) == []
    assert Path(root, "endpoint.json").exists()  # status keeps showing the last state


@pytest.mark.parametrize(
    "text",
    [
        "",  # half-written
        "[1, 2]",  # not an object
        '{"state": "READY", "url": 7}',  # a wrong type
        '{"state": "DANCING"}',  # not a state
        '{"state": "READY", "format": 2}',  # a newer format than this reader knows
        '{"state": "READY", "colour": "red"}',  # an unknown key
    ],
)
def test_a_reader_gets_a_typed_record_or_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "endpoint.json"
    path.write_text(text)
    assert jobfiles.read(path, jobfiles.Endpoint) is None
    path.write_text('{"state": "READY", "url": "http://10.0.0.1:8000/v1", "format": 1}')
    record = jobfiles.read(path, jobfiles.Endpoint)
    assert record is not None and record.url == "http://10.0.0.1:8000/v1"


def test_every_file_writes_its_format(tmp_path: Path) -> None:
    jobfiles.write(tmp_path / "n.json", jobfiles.NodeRecord(rank=1, hostname="h", ip="10.0.0.2"))
    assert json.loads((tmp_path / "n.json").read_text())["format"] == jobfiles.FORMAT
    assert jobfiles.read(tmp_path / "n.json", jobfiles.LocalProcess) is None  # not that file
    assert jobfiles.read(tmp_path / "missing.json", LaunchPlan) is None
