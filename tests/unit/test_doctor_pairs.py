"""``vllm-hpc doctor --network`` on the nodes: one pair measured against a listener here
(round trip, rate, and the pre-flight's outcomes when it fails), every pair of a few
nodes (threads here, meeting at an in-memory store) measured once in rounds of disjoint
pairs, the rows each node prints, and the options that carry ``--network`` down to the
nodes."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launchers import cli
from launchers.observe import doctor_run
from launchers.runtime import collective, doctor
from launchers.runtime.collective import Measured, Meeting
from launchers.runtime.pairs import Peer

from .helpers.pairs import small_only_peer
from .helpers.store import Store


@pytest.fixture
def listener() -> Iterator[int]:
    server, port = collective.listen("127.0.0.1")
    try:
        yield port
    finally:
        server.close()


def test_a_pair_that_answers_is_measured(listener: int) -> None:
    found = collective.measure("127.0.0.1", ("127.0.0.1", listener), 5, 4, pings=5, limit=30)
    assert found.outcome == "ok"
    assert found.rtt_ms is not None and 0 < found.rtt_ms < 1000
    assert found.gb_per_s is not None and found.gb_per_s > 0.001  # 4 MiB over loopback


def test_a_closed_port_is_refused_and_measures_nothing() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    found = collective.measure("127.0.0.1", ("127.0.0.1", free), 5, 1, pings=3, limit=30)
    assert found == Measured("refused")


def test_a_peer_that_never_reads_the_large_message_is_large_with_its_round_trip() -> None:
    """Small messages acknowledged, the large one never read: the transfer stalls (what
    a smaller MTU on the way does), and the round trip is still reported."""
    with small_only_peer(answers=3) as target:  # the 3 pings
        found = collective.measure("127.0.0.1", target, 0.5, 16, pings=3, limit=30)
    assert found.outcome == "large" and found.rtt_ms is not None and found.gb_per_s is None


def _nodes(world: int, run: Any) -> dict[int, Any]:
    """``run(meeting, peer)`` on ``world`` threads, one per node: what each returned."""
    store, out = Store(), {}

    def node(rank: int) -> None:
        me = Peer(rank, f"node{rank + 1}", "127.0.0.1", "lo")
        try:
            out[rank] = run(Meeting(store, rank, world), me)
        except RuntimeError as exc:
            out[rank] = exc
        if rank == 0:
            store.closed = True  # rank 0 holds the store: it goes when rank 0 is done

    threads = [threading.Thread(target=node, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


def test_every_pair_is_measured_once_by_its_lower_rank() -> None:
    def run(meeting: Meeting, me: Peer) -> Any:
        return collective.measure_pairs(meeting, me, 5, 1, pings=2, limit=30, arrive=10)

    out = _nodes(3, run)
    measured = {(r, b): found for r, (mine, _, _) in out.items() for b, (_, found) in mine.items()}
    assert sorted(measured) == [(0, 1), (0, 2), (1, 2)]
    assert {m.outcome for m in measured.values()} == {"ok"}
    assert all(silent == [] and failed == 0 for _, silent, failed in out.values())
    assert out[0][0][2][0] == Peer(2, "node3", "127.0.0.1", "lo")


def test_no_node_is_in_two_transfers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four nodes: two transfers at a time at most, never two on one node (a node's link
    shared by two transfers would halve both and mark them slow)."""
    lock, most = threading.Lock(), [0]
    busy: list[int] = []
    clashes: list[int] = []
    ports: dict[int, int] = {}

    def fake_measure(source: str, target: tuple[str, int], *_: Any, **__: Any) -> Measured:
        ranks = {_rank_of(source), ports[target[1]]}
        with lock:
            clashes.extend(r for r in ranks if r in busy)
            busy.extend(ranks)
            most[0] = max(most[0], len(busy) // 2)
        threading.Event().wait(0.05)  # a transfer that takes a while
        with lock:
            for r in ranks:
                busy.remove(r)
        return Measured("ok", 0.1, 1.0)

    names = threading.local()

    def _rank_of(_: str) -> int:
        return int(names.rank)

    real_listen = collective.listen

    def listen(ip: str) -> tuple[socket.socket, int]:
        server, port = real_listen(ip)
        ports[port] = int(names.rank)
        return server, port

    monkeypatch.setattr(collective, "measure", fake_measure)
    monkeypatch.setattr(collective, "listen", listen)

    def run(meeting: Meeting, me: Peer) -> Any:
        names.rank = me.rank
        return collective.measure_pairs(meeting, me, 5, 1, pings=2, limit=30, arrive=10)

    out = _nodes(4, run)
    assert sum(len(mine) for mine, _, _ in out.values()) == 6
    assert clashes == [] and most[0] <= 2


def test_a_node_prints_a_row_per_pair_it_sends_on_and_fails_a_pair_that_does_not_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    two, three = Peer(1, "node2", "10.0.0.12", "ib0"), Peer(2, "node3", "10.0.0.13", "ib0")
    found = {1: (two, Measured("ok", 0.12, 2.5)), 2: (three, Measured("timeout"))}
    monkeypatch.setattr(doctor, "measure_pairs", lambda *_, **__: (found, [], 1))
    report = doctor.Report(0, "node1")
    me = Peer(0, "node1", "10.0.0.11", "ib0")
    doctor.check_pairs(report, Meeting(Store(), 0, 3), me, 30)
    rows = [json.loads(line[len(doctor.MARK) :]) for line in capsys.readouterr().out.splitlines()]
    assert [(r["check"], r["level"]) for r in rows] == [("pair", "ok"), ("pair", "fail")]
    assert (
        rows[0]["detail"]
        == "to node2 (10.0.0.12): 0.120 ms round trip, 2.50 GB/s (64 MiB over TCP)"
    )
    assert rows[1]["detail"] == "to node3 (10.0.0.13) over TCP: connection timed out"
    assert "firewall" in rows[1]["fix"]
    assert rows[1]["pair"] == {
        "a": 0, "b": 2, "a_host": "node1", "b_host": "node3", "a_ip": "10.0.0.11",
        "b_ip": "10.0.0.13", "outcome": "timeout", "rtt_ms": None, "gb_per_s": None,
        "mib": 64, "via": "tcp",
    }  # fmt: skip
    assert report.failed


def test_doctor_network_reaches_the_nodes_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor_run.doctor_argv("py", "p.json", "/d", 120, network=True)[-1] == "--network"
    assert "--network" not in doctor_run.doctor_argv("py", "p.json", "/d", 120)
    seen: dict[str, Any] = {}

    def run_node(*args: Any, **kwargs: Any) -> int:
        seen["network"] = args[-1]
        return 0

    monkeypatch.setattr(doctor, "run_node", run_node)
    monkeypatch.setattr("launchers.runtime.run.load_plan", lambda _: object())
    monkeypatch.setenv("SLURM_NNODES", "3")
    result = CliRunner().invoke(
        cli.cli, ["node", "doctor", "--plan", "p", "--dir", "d", "--network"]
    )
    assert result.exit_code == 0, result.output
    assert seen == {"network": True}


def test_doctor_help_offers_network() -> None:
    result = CliRunner().invoke(cli.cli, ["doctor", "--help"])
    assert "--network" in result.output and "Measure every pair of nodes" in result.output


def test_the_login_side_passes_network_to_the_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def run(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        seen.update(kwargs)
        return [], ""

    monkeypatch.setattr(doctor_run, "run", run)
    argv = ["doctor", "-m", "meta-llama/Llama-3.2-3B-Instruct", "--job-root", str(tmp_path)]
    argv += ["--network", "--json"]
    result = CliRunner().invoke(cli.cli, argv)
    assert seen.get("network") is True, result.output


@pytest.mark.parametrize(("broken", "passed"), [(None, True), ((1, 2), False)])
def test_every_node_reads_whether_any_pair_failed_anywhere(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    broken: tuple[int, int] | None,
    passed: bool,
) -> None:
    """node1 has no failed pair of its own when node2 - node3 fails, yet it must skip the
    all-reduce with the others: one that starts it alone waits out the timeout."""
    ports: dict[int, int] = {}
    names = threading.local()
    real_listen = collective.listen

    def listen(ip: str) -> tuple[socket.socket, int]:
        server, port = real_listen(ip)
        ports[port] = int(names.rank)
        return server, port

    def fake_measure(source: str, target: tuple[str, int], *_: Any, **__: Any) -> Measured:
        pair = (int(names.rank), ports[target[1]])
        return Measured("timeout") if pair == broken else Measured("ok", 0.1, 1.0)

    monkeypatch.setattr(collective, "measure", fake_measure)
    monkeypatch.setattr(collective, "listen", listen)

    def run(meeting: Meeting, me: Peer) -> Any:
        names.rank = me.rank
        return doctor.check_pairs(doctor.Report(me.rank, me.host), meeting, me, 10)

    assert _nodes(3, run) == {0: passed, 1: passed, 2: passed}
    capsys.readouterr()


def test_no_node_closes_its_listener_before_the_others_have_probed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pre-flight's pair checks: the highest rank probes no one, so it is done first;
    its listener must still answer rank 0's late probe (it refused it: the bed's MTU
    test named node3 as cut off from every node)."""
    real_probe = collective.probe

    def late_probe(source: str, target: tuple[str, int], *rest: Any) -> Any:
        threading.Event().wait(0.5)  # rank 0 gets to its pairs last
        return real_probe(source, target, *rest)

    monkeypatch.setattr(collective, "probe", late_probe)
    peers = {r: Peer(r, f"node{r + 1}", "127.0.0.1", "lo") for r in range(3)}

    def run(meeting: Meeting, me: Peer) -> Any:
        return collective.pairs_verdict(meeting, me, peers, 5, 1)

    out = _nodes(3, run)
    outcomes, silent = out[0]
    assert silent == [] and outcomes == {(0, 1): "ok", (0, 2): "ok", (1, 2): "ok"}, outcomes
