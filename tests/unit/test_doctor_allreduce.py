"""``vllm-hpc doctor``'s all-reduce across the nodes: the pre-flight's collectives
(``runtime.collective.collectives``) timed, with their deadline, and the row each node
prints; a node whose all-reduce was left blocked leaves at once. torch is a stand-in
(``helpers.torchfake``): a process group that sums, sums wrong, or blocks."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner

from launchers import cli
from launchers.runtime import collective, doctor

from .helpers.torchfake import Distributed, install


def _rows(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out.splitlines()
    return [json.loads(line[len(doctor.MARK) :]) for line in out if line.startswith(doctor.MARK)]


def _all_reduce(dist: Distributed, seconds: float = 5) -> None:
    """Rank 0 of 2 nodes runs the doctor's all-reduce at the stand-in's store."""
    report = doctor.Report(0, "node1")
    doctor.check_allreduce(report, dist.store, "10.0.0.11:40000", 0, 2, False, seconds)


def test_the_all_reduce_row_is_the_pre_flights_collectives_timed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = Distributed()
    install(monkeypatch, dist)
    _all_reduce(dist)
    [row] = _rows(capsys)
    assert (row["check"], row["level"], row["fix"]) == ("all-reduce", "ok", "")
    detail = r"gloo across 2 nodes: 16 MiB in \d+\.\d ms, bus bandwidth \d+\.\d\d GB/s"
    assert re.fullmatch(detail, row["detail"]), row["detail"]
    # the small one, the large one (checked), then 5 timed; the group left behind it
    assert dist.calls == 1 + 1 + doctor.ALLREDUCE_ROUNDS and dist.destroyed
    [group] = dist.groups
    assert (group["backend"], group["rank"], group["world_size"]) == ("gloo", 0, 2)
    assert group["store"].prefix == "pg"


def test_a_hanging_all_reduce_ends_at_the_deadline_with_a_clear_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collective over a dropped link can block past torch's own timeout (NCCL's
    does): the doctor's row comes at its deadline, saying where it stopped."""
    hang = threading.Event()
    dist = Distributed(hang=hang)
    install(monkeypatch, dist)
    began = time.monotonic()
    checking = threading.Thread(target=_all_reduce, args=(dist, 0.3), daemon=True)
    try:
        checking.start()
        checking.join(20)
        took = time.monotonic() - began
        assert not checking.is_alive(), "the doctor waited past its all-reduce's deadline"
        assert 0.3 <= took < 10, took
        assert collective.left_running()  # the stuck collective: the node leaves with _exit
    finally:
        hang.set()
    [row] = _rows(capsys)
    assert (row["check"], row["level"]) == ("all-reduce", "fail")
    assert row["detail"] == "gloo over 10.0.0.11:40000 (the 4 B all-reduce): no answer after 0.3 s"
    assert "GLOO/NCCL_SOCKET_IFNAME" in row["fix"] and "doctor --network" in row["fix"]


def test_a_wrong_sum_fails_the_row_and_blames_the_fabric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = Distributed(sums=3.0)
    install(monkeypatch, dist)
    _all_reduce(dist)
    [row] = _rows(capsys)
    assert row["level"] == "fail" and row["detail"].endswith(", WRONG SUM"), row
    assert "the small all-reduce summed to 3.0, not 2" in row["detail"]
    assert row["fix"] == "the fabric corrupts data: report it to the site"


def test_the_pre_flights_large_all_reduce_that_hangs_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same collectives in the pre-flight: the small one passes, the large one
    blocks (an MTU that drops large frames), and the stage says which."""
    hang = threading.Event()
    dist = Distributed(hang=hang, hang_after=1)
    install(monkeypatch, dist)
    try:
        found = collective.collectives(0, 2, dist.store, 0.2, 8)
    finally:
        hang.set()
    assert found == {"backend": "gloo", "stage": "large", "error": "no answer after 0.2 s"}
    assert collective.stage_said(found, 8) == "the 8 MiB all-reduce"


@pytest.mark.parametrize("stuck", [True, False])
def test_a_node_whose_all_reduce_was_left_blocked_leaves_at_once(
    monkeypatch: pytest.MonkeyPatch, stuck: bool
) -> None:
    """A process group whose collective is still blocked may hang the interpreter's
    exit in its destructors: the node's doctor then ends with os._exit and its code."""
    exits: list[int] = []

    def hard_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(doctor, "run_node", lambda *_, **__: 1)
    monkeypatch.setattr("launchers.runtime.run.load_plan", lambda _: object())
    monkeypatch.setattr(collective, "left_running", lambda: stuck)
    monkeypatch.setattr(os, "_exit", hard_exit)
    monkeypatch.setenv("SLURM_NNODES", "2")
    result = CliRunner().invoke(cli.cli, ["node", "doctor", "--plan", "p", "--dir", "d"])
    assert exits == ([1] if stuck else []), result.output
