"""``vllm-hpc doctor --network`` on the 3-node bed (issue: the pre-flight's check on
demand): a short allocation of all three nodes, no vLLM started.

- Healthy: the table has a row for each of the 3 pairs, all ok, each with a latency and
  a bandwidth, and the doctor passes.
- A link that carries the rendezvous and not the data (``dropped_link``: nftables in
  node2 and node3 drop what each gets from the other; both still reach node1): the pair
  node2 - node3 is marked FAILED (a timeout), the two pairs with node1 stay ok, the
  all-reduce is not tried (on any node: it would only wait out Gloo's timeout), and the
  doctor exits 1.

Cost: one ``srun -N 3`` step each; the healthy one is torch's import and a few seconds
of checks (~20-30 s on the bed), the dropped one adds the pair's 5 s connection deadline
(~30 s; it waited ~300 s in CI while the all-reduce was still tried after a failed pair).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launchers.runtime.doctor import NOT_TRIED

from . import api, bed

pytestmark = pytest.mark.cluster

FAILED_PAIR = re.compile(r"^fail  node\d+ - node\d+: ")
ROW = re.compile(r"^(node\d+) - (node\d+)\s+\S+ - \S+\s+(\w+)\s+(\S+ ms|-)\s+(\S+ GB/s|-)\s*(\w*)$")


def _doctor(
    env: dict[str, str], model: Path
) -> tuple[int, str, dict[frozenset[str], tuple[str, ...]]]:
    """``doctor --network`` on the bed's 3 nodes: its exit code, its output, and the pair
    table's rows by the pair's two hosts (reach, latency, bandwidth, mark)."""
    done = api.cli(
        env, "doctor", "--network", "--model", str(model), "--nodes", "3",
        "--gpus-per-node", "1", "--pp", "3", "--partition", "debug", timeout=400,
    )  # fmt: skip
    rows = {}
    for line in done.stdout.splitlines():
        found = ROW.match(line)
        if found:
            a, b, *cells = found.groups()
            rows[frozenset((a, b))] = tuple(cells)
    print(done.stdout)
    return done.returncode, done.stdout + done.stderr, rows


def test_doctor_network_prints_every_pair_of_a_healthy_bed_ok(
    minicluster: bed.MiniCluster, env: dict[str, str], three_layers: Path
) -> None:
    code, out, rows = _doctor(env, three_layers)
    assert code == 0, out
    assert "network, every pair of nodes over TCP" in out, out
    assert set(rows) == {frozenset(p) for p in (("node1", "node2"), ("node1", "node3"),
                                                ("node2", "node3"))}, out  # fmt: skip
    for reach, latency, bandwidth, mark in rows.values():
        # a SLOW mark is a warning (the bed's veths share two busy cores), not a failure
        assert reach == "ok" and mark != "FAILED", out
        assert latency.endswith(" ms") and bandwidth.endswith(" GB/s"), out
    assert "3 pairs: 3 ok, 0 failed" in out, out
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=bed.GONE_TIMEOUT)


def test_doctor_network_marks_the_dropped_link(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    three_layers: Path,
    dropped_link: tuple[str, str],
) -> None:
    a, b = dropped_link
    code, out, rows = _doctor(env, three_layers)
    assert code == 1, out
    assert len(rows) == 3, out
    reach, latency, bandwidth, mark = rows[frozenset((a, b))]
    assert (reach, latency, bandwidth, mark) == ("timeout", "-", "-", "FAILED"), out
    for other in ("node2", "node3"):
        assert rows[frozenset(("node1", other))][0] == "ok", out
    assert "3 pairs: 2 ok, 1 failed" in out, out
    [why] = [line for line in out.splitlines() if FAILED_PAIR.match(line)]
    assert "over TCP: connection timed out" in why and a in why and b in why, out
    assert "firewall" in why, out
    skipped = [line for line in out.splitlines() if "all-reduce" in line and NOT_TRIED in line]
    assert len(skipped) == 3, out
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=bed.GONE_TIMEOUT)
