from __future__ import annotations

from pathlib import Path

from launchers import jobdir


def test_node_failures_of_this_attempt_lowest_rank_first(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert jobdir.node_failures(root, 0) == []
    for rank, attempt in ((3, 0), (1, 0), (2, 1)):
        jobdir.write_json(
            jobdir.failure_file(root, rank),
            {"rank": rank, "attempt": attempt, "hostname": f"node{rank}", "message": "x"},
        )
    assert [f["rank"] for f in jobdir.node_failures(root, 0)] == [1, 3]
    assert [f["rank"] for f in jobdir.node_failures(root, 1)] == [2]


def test_remove_stale_forgets_the_previous_attempts_rendezvous(tmp_path: Path) -> None:
    root = str(tmp_path)
    jobdir.write_json(f"{root}/leader.json", {"ip": "10.0.0.1"})
    jobdir.write_json(jobdir.failure_file(root, 1), {"rank": 1, "attempt": 0})
    jobdir.write_json(f"{root}/endpoint.json", {"state": "READY"})
    jobdir.remove_stale(root)
    assert not Path(root, "leader.json").exists()
    assert jobdir.node_failures(root, 0) == []
    assert Path(root, "endpoint.json").exists()  # status keeps showing the last state
