"""The launch benchmark's parsing of a job directory (bench/launch/run.py), on a made-up job."""

from __future__ import annotations

from pathlib import Path

from bench.launch.run import Bench, read_phases, summary

from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.runtime.context import NodeLog


def test_runtime_stamps_read_the_leader_log(tmp_path: Path) -> None:
    for rank, when in ((0, 1000.0), (1, 1000.5)):  # the records as the runtime writes them
        record = jobfiles.NodeRecord(rank=rank, hostname=f"n{rank}", ip="10.0.0.1", time=when)
        jobfiles.write(JobDir(str(tmp_path)).node(rank), record)
    log = NodeLog(0, str(tmp_path / "node-0.log"))
    log("Ray head starting on 10.0.0.1:6379 (log x)")
    log("Ray head up after 2.0 s")
    log("vllm serve started (pid 9, log y)")
    log("1/2 Ray node(s) alive")
    log("2/2 Ray node(s) alive")
    jobfiles.write(
        JobDir(str(tmp_path)).endpoint,
        jobfiles.Endpoint(state="READY", started=1000.0, ready_seconds=30),
    )
    stamps = Bench.runtime_stamps(tmp_path)
    assert stamps["node0_runtime"] == 1000.0 and stamps["node1_runtime"] == 1000.5
    assert set(stamps) == {
        "node0_runtime", "node1_runtime", "head_start", "head_up", "serve_exec",
        "workers_joined_seen", "status_ready",
    }  # fmt: skip
    assert 1000.0 <= stamps["head_start"] <= stamps["workers_joined_seen"] < 1010.0
    assert stamps["status_ready"] == 1030.0


def test_phases_file_and_summary(tmp_path: Path) -> None:
    phases = tmp_path / "phases"
    phases.write_text("job_start 10.5\nhead_ip 10.77.0.11\n")
    assert read_phases(phases) == {"job_start": "10.5", "head_ip": "10.77.0.11"}
    assert read_phases(tmp_path / "missing") == {}
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
