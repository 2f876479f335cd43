"""``vllm-hpc doctor --network`` on the login side: the nodes' pair rows drawn as one
table (what was measured, a row per pair, a failing pair marked), and a pair far below
the others warned about, as a row the exit code and ``--json`` see."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from launchers.defaults import DOCTOR_MARK
from launchers.observe import doctor_network, doctor_run
from launchers.observe.doctor_network import PairResult

HOSTS = {0: ("node1", "10.77.0.11"), 1: ("node2", "10.77.0.12"), 2: ("node3", "10.77.0.13")}
HOSTS |= {3: ("node4", "10.77.0.14")}


def _pair(a: int, b: int, outcome: str = "ok", rate: float | None = 2.0) -> PairResult:
    ok = outcome == "ok"
    return PairResult(
        a, b, HOSTS[a][0], HOSTS[b][0], HOSTS[a][1], HOSTS[b][1], outcome,
        rtt_ms=0.08 if ok else None, gb_per_s=rate if ok else None, mib=64,
    )  # fmt: skip


def _row(pair: PairResult, level: str = "ok") -> dict[str, Any]:
    """A pair's row as a node prints it (``runtime.doctor.check_pairs``)."""
    data = {"a": pair.a, "b": pair.b, "a_host": pair.a_host, "b_host": pair.b_host}
    data |= {"a_ip": pair.a_ip, "b_ip": pair.b_ip, "outcome": pair.outcome}
    data |= {"rtt_ms": pair.rtt_ms, "gb_per_s": pair.gb_per_s, "mib": pair.mib, "via": "tcp"}
    return {"rank": pair.a, "host": pair.a_host, "check": "pair", "level": level,
            "detail": "...", "fix": "", "pair": data}  # fmt: skip


def test_three_nodes_with_a_dropped_link_read_as_a_table() -> None:
    dropped = dataclasses.replace(
        _pair(1, 2, "timeout"),
        detail="to node3 (10.77.0.13) over TCP: connection timed out",
        fix="open TCP between them",
    )
    pairs = [_pair(0, 1, rate=2.31), _pair(0, 2, rate=2.28), dropped]
    assert doctor_network.table(pairs, 0.5) == (
        "network, every pair of nodes over TCP: latency = the median round trip of a small\n"
        "message, bandwidth = one 64 MiB transfer from the first node to the second\n"
        "pair           addresses                reach     latency  bandwidth\n"
        "node1 - node2  10.77.0.11 - 10.77.0.12  ok       0.080 ms  2.31 GB/s\n"
        "node1 - node3  10.77.0.11 - 10.77.0.13  ok       0.080 ms  2.28 GB/s\n"
        "node2 - node3  10.77.0.12 - 10.77.0.13  timeout         -          -  FAILED\n"
        "3 pairs: 2 ok, 1 failed\n"
        "fail  node2 - node3: to node3 (10.77.0.13) over TCP: connection timed out  -> "
        "open TCP between them"
    )


def test_a_pair_under_half_the_median_is_marked_slow_and_warned_about() -> None:
    pairs = [_pair(0, 1, rate=2.0), _pair(0, 2, rate=2.1), _pair(1, 2, rate=0.4)]
    text = doctor_network.table(pairs, 0.5)
    assert "node2 - node3  10.77.0.12 - 10.77.0.13  ok     0.080 ms  0.40 GB/s  SLOW" in text
    assert "3 pairs: 3 ok, 0 failed; median 2.00 GB/s" in text
    assert text.splitlines()[-1].startswith(
        "warn  node2 - node3: 0.40 GB/s, under 0.5 x the median 2.00 GB/s of the 3 pairs "
        "that passed  -> a slower link"
    )
    [row] = doctor_network.warnings(pairs, 0.5)
    assert (row["level"], row["check"], row["rank"], row["pair"]) == (
        "warn", "pair speed", 1, {"a": 1, "b": 2},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rates", "slow"),
    [
        ([2.0, 2.1, 1.1], []),  # above half the median: fine
        ([2.0, 2.1, 0.9], [(1, 2)]),
        ([2.0, 0.4], []),  # two pairs: too few to say which is the odd one
        ([2.0, 2.0, 2.0, 2.0, 0.1, 0.1], [(1, 3), (2, 3)]),
    ],
)
def test_which_pairs_are_slow(rates: list[float], slow: list[tuple[int, int]]) -> None:
    order = {2: [(0, 1), (0, 2)], 3: [(0, 1), (0, 2), (1, 2)]}.get(len(rates)) or [
        (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)
    ]  # fmt: skip
    pairs = [_pair(a, b, rate=r) for (a, b), r in zip(order, rates, strict=True)]
    under, _ = doctor_network.slow(pairs, 0.5)
    assert [(p.a, p.b) for p in under] == slow


def test_failed_pairs_neither_count_in_the_median_nor_are_slow() -> None:
    pairs = [_pair(0, 1, rate=2.0), _pair(0, 2, rate=2.0), _pair(1, 2, rate=2.0)]
    pairs += [_pair(0, 3, "refused"), _pair(1, 3, "large"), _pair(2, 3, "timeout")]
    assert doctor_network.slow(pairs, 0.5) == ([], 2.0)
    assert doctor_network.warnings(pairs, 0.5) == []


def test_the_pairs_are_read_from_the_nodes_rows_in_rank_order() -> None:
    rows = [_row(_pair(1, 2)), _row(_pair(0, 2)), _row(_pair(0, 1))]
    rows += [{"rank": 0, "host": "node1", "check": "pair", "level": "ok", "pair": {"a": 0}}]
    rows += [{"rank": 0, "host": "node1", "check": "rdma", "level": "ok", "detail": "x"}]
    expected = [dataclasses.replace(_pair(a, b), detail="...") for a, b in ((0, 1), (0, 2), (1, 2))]
    assert doctor_network.pairs_of(rows) == expected


def test_the_doctor_prints_the_other_checks_as_lines_then_the_pair_table() -> None:
    pairs = [_pair(0, 1), _pair(0, 2), _pair(1, 2, "timeout")]
    rows = [{"rank": 0, "host": "node1", "check": "rdma", "level": "ok", "detail": "x"}]
    rows += [_row(p, "ok" if p.outcome == "ok" else "fail") for p in pairs]
    out = doctor_run.render(rows).splitlines()
    assert out[0] == "ok    node 0 node1      rdma           x"
    assert out[1] == ""
    assert out[2].startswith("network, every pair of nodes over TCP")
    assert out[-3].endswith("timeout         -          -  FAILED")
    assert out[-1] == "fail  node2 - node3: ..."
    assert doctor_run.worst(rows) == "fail"


def test_without_pair_rows_the_doctor_prints_no_table() -> None:
    rows = [{"rank": 0, "host": "node1", "check": "rdma", "level": "ok", "detail": "x"}]
    assert doctor_run.render(rows) == "ok    node 0 node1      rdma           x"


def test_a_node_that_reports_nothing_leaves_its_stderr_where_the_fix_says(
    tmp_path: Path,
) -> None:
    """The step's row tells the user to read a file: it exists and holds the traceback."""
    row = {"rank": 0, "host": "node1", "check": "gpus", "level": "ok", "detail": "", "fix": ""}
    script = (
        "import json, sys\n"
        f"print({DOCTOR_MARK!r} + json.dumps({row!r}))\n"
        "print('Traceback: DistNetworkError on node2', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    rows, _ = doctor_run.run([sys.executable, "-c", script], "{}", "python", str(tmp_path), 2, 30)
    [step] = [r for r in rows if r["check"] == "step"]
    assert "1 node(s) reported nothing" in step["detail"]
    where = step["fix"].removeprefix("read ")
    assert Path(where).read_text(encoding="utf-8").startswith("Traceback: DistNetworkError")
