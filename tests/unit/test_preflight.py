"""The pre-flight's pieces that need no second node: one pair's TCP check against a
listener here, the leader's line from what failed, the nodes' meeting and a failed
check's whole run (threads at an in-memory store), what each node used said after the
line, and the runtime's reading of the check's verdict (the child faked by a log it
wrote)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launchers import _proc, health, installed, waits
from launchers.errors import RuntimeFailure
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.plan.commands import ServeStart
from launchers.plan.launch import Preflight
from launchers.runtime import collective, leader, preflight, ray_cluster
from launchers.runtime.follower import run_follower
from launchers.runtime.pairs import Peer

from .helpers.pairs import small_only_peer
from .helpers.runtime import FakeClock, ctx_for, leader_task, ray_follower, read_failure
from .helpers.torchfake import Distributed, install

PEERS = {
    0: Peer(0, "node1", "10.0.0.11", "ib0"),
    1: Peer(1, "node2", "10.0.0.12", "ib0"),
    2: Peer(2, "node3", "10.0.0.13", "ib0"),
}


def test_a_pair_that_answers_is_ok_and_a_closed_port_is_refused() -> None:
    server, port = collective.listen("127.0.0.1")
    try:
        assert collective.probe("127.0.0.1", ("127.0.0.1", port), 5, 1) == "ok"
    finally:
        server.close()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    assert collective.probe("127.0.0.1", ("127.0.0.1", free), 5, 1) == "refused"


def test_a_pair_that_passes_small_messages_and_not_large_ones_says_large() -> None:
    """A peer that acknowledges a small message and never reads a large one (what a
    smaller MTU on the way does to large frames)."""
    with small_only_peer() as target:
        assert collective.probe("127.0.0.1", target, 0.5, 8) == "large"


def test_the_leaders_line_names_the_pair_that_cannot_talk() -> None:
    coll = {r: {"backend": "gloo", "stage": "init", "error": "no answer after 10 s"} for r in PEERS}
    outcomes = {(0, 1): "ok", (0, 2): "ok", (1, 2): "timeout"}
    line = collective.leader_line(coll, PEERS, outcomes, [], 3, 5)  # type: ignore[arg-type]
    assert line.startswith("the Gloo all-reduce across 3 nodes failed (init: no answer after 10 s)")
    assert "node2 (10.0.0.12, ib0) cannot reach node3 (10.0.0.13, ib0) over TCP" in line
    assert "connection timed out after 5 s" in line and "firewall" in line
    assert "node1" not in line


def test_a_large_all_reduce_that_fails_while_every_pair_connects_says_mtu() -> None:
    coll = {r: {"backend": "gloo", "stage": "large", "error": "x", "large_mib": 8} for r in PEERS}
    outcomes = {(0, 1): "ok", (0, 2): "ok", (1, 2): "ok"}
    line = collective.leader_line(coll, PEERS, outcomes, [], 3, 5)  # type: ignore[arg-type]
    assert "the small all-reduce passed and the 8 MiB one did not" in line
    assert "MTU" in line


def test_a_pair_that_passes_small_messages_only_is_not_called_a_firewall() -> None:
    """The bed's MTU blackhole: node2 - node3 pass small messages and drop large ones; the
    line names the pair and an MTU mismatch, and does not point at a firewall."""
    coll = {r: {"backend": "gloo", "stage": "large", "error": "x", "large_mib": 8} for r in PEERS}
    outcomes = {(0, 1): "ok", (0, 2): "ok", (1, 2): "large"}
    line = collective.leader_line(coll, PEERS, outcomes, [], 3, 5)  # type: ignore[arg-type]
    assert "node2 (10.0.0.12, ib0) cannot reach node3 (10.0.0.13, ib0) over TCP" in line
    assert "a small message passes, a large one does not (an MTU mismatch" in line
    assert "firewall" not in line and line.endswith("small messages pass between every pair")


def test_a_result_line_is_read_back_and_anything_else_is_not() -> None:
    assert collective.parse('PREFLIGHT {"ok": true, "line": "x"}') == {"ok": True, "line": "x"}
    assert collective.parse("PREFLIGHT not json") is None
    assert collective.parse("torch warning") is None


class Child:
    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


def _finish(
    tmp_path: Path, log_text: str, code: int = 0, check: Preflight | None = None
) -> list[str]:
    log = tmp_path / "preflight-0.log"
    log.write_text(log_text)
    said: list[str] = []
    ctx: Any = SimpleNamespace(
        stopper=SimpleNamespace(check=lambda: None), clock=waits.REAL, log=said.append,
        files=JobDir(str(tmp_path)), attempt=0,
    )  # fmt: skip
    running = preflight.Running(
        child=Child(code),  # type: ignore[arg-type]
        log_path=str(log),
        check=check or Preflight(),
        arrive_seconds=30,
    )
    preflight.finish(ctx, running)
    return said


def test_a_pass_is_logged_with_its_line(tmp_path: Path) -> None:
    said = _finish(tmp_path, 'warning\nPREFLIGHT {"ok": true, "line": "Gloo all-reduce"}\n')
    assert len(said) == 1 and said[0].startswith("pre-flight passed in ")
    assert said[0].endswith(": Gloo all-reduce")


def test_a_failure_fails_the_node_with_the_checks_line(tmp_path: Path) -> None:
    text = 'PREFLIGHT {"ok": false, "line": "node2 cannot reach node3"}\n'
    with pytest.raises(RuntimeFailure) as failed:
        _finish(tmp_path, text, code=1)
    assert failed.value.one_line().startswith("pre-flight: node2 cannot reach node3")
    assert collective.DOCS in failed.value.one_line()
    assert "--no-preflight" in failed.value.one_line()


def test_a_check_that_ends_without_a_verdict_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="without a verdict"):
        _finish(tmp_path, "Traceback ...\n", code=-9)


def test_no_torch_skips_the_check_and_says_so(tmp_path: Path) -> None:
    said = _finish(tmp_path, 'PREFLIGHT {"ok": true, "skipped": "torch is not importable"}\n')
    assert said == ["pre-flight skipped: torch is not importable"]


def test_gloos_source_path_is_left_out_of_the_line() -> None:
    said = collective._said(RuntimeError(
        "[/__w/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
        "waiting 10000ms for recv operation to complete"
    ))  # fmt: skip
    assert said == "Timed out waiting 10000ms for recv operation to complete"


def test_a_node_that_never_arrived_is_named_with_why(tmp_path: Path) -> None:
    text = 'PREFLIGHT {"ok": false, "line": "2 of 3 nodes reached it", "missing": [1, 2]}\n'
    (tmp_path / "nodes").mkdir()
    jobfiles.write(
        JobDir(str(tmp_path)).node(2),
        jobfiles.NodeRecord(rank=2, hostname="node3", ip="10.0.0.13", attempt=0, pid=1,
                            time=0.0, processes=()),
    )  # fmt: skip
    with pytest.raises(RuntimeFailure) as failed:
        _finish(tmp_path, text, code=1)
    line = failed.value.one_line()
    assert "pre-flight: 2 of 3 nodes reached it: rank 1 never started its runtime" in line
    assert "node3 (10.0.0.13, rank 2) started but did not reach it" in line


def _meet_all(nodes: list[tuple[int, int, str, str]]) -> list[Any]:
    """``_meet`` of each (plan's rank, plan's world, job id, --leader) on a thread: its
    meeting, or the line it failed with."""
    dist = Distributed()  # every node's TCPStore: one in-memory store
    out: list[Any] = [None] * len(nodes)

    def node(i: int, rank: int, world: int, job_id: str, leader: str) -> None:
        args = collective.arguments([
            "--rank", str(rank), "--world", str(world), "--job-id", job_id,
            "--leader", leader, "--seconds", "5", "--pair-seconds", "1", "--large-mib", "1",
            "--arrive-seconds", "3",
        ])  # fmt: skip
        try:
            out[i] = collective._meet(args, dist)[1]
        except collective.Failed as failed:
            out[i] = str(failed)

    threads = [threading.Thread(target=node, args=(i, *n)) for i, n in enumerate(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return out


def test_nodes_that_plan_on_their_own_meet_at_the_leaders_address() -> None:
    """A wrapper's workers know neither the leader's job id nor the number of nodes, and
    each may call itself rank 1: given the leader's address, each takes the leader's keys
    and world and a rank of its own."""
    leader = "10.0.0.11:29510"
    out = _meet_all([(0, 3, "manual-1", leader), (1, 2, "manual-2", leader),
                     (1, 2, "manual-3", leader)])  # fmt: skip
    assert all(isinstance(m, collective.Meeting) for m in out), out
    assert sorted(m.rank for m in out) == [0, 1, 2]
    assert {m.world for m in out} == {3}
    assert {m.store.prefix for m in out} == {"manual-1.0"}


def test_a_node_beyond_the_leaders_world_is_told_so() -> None:
    leader = "10.0.0.11:29510"
    out = _meet_all([(0, 2, "manual-1", leader), (1, 2, "manual-2", leader),
                     (1, 2, "manual-3", leader)])  # fmt: skip
    lines = [m for m in out if isinstance(m, str)]
    assert lines == [
        "more nodes came to the pre-flight at 10.0.0.11:29510 than the leader's 2 (its "
        "--ray_cluster_size, or DP_TOTAL / DP_LOCAL)"
    ]


FIXED = Preflight(port=29510, port_fixed=True)  # the doors whose nodes plan on their own


class Passed:
    """A pre-flight's child (or a Ray worker) that has ended: 0, the check passed."""

    def __init__(self, name: str, argv: list[str], log_path: str) -> None:
        self.name, self.argv, self.log_path, self.pid = name, argv, log_path, 4242
        if name == "preflight":
            Path(log_path).write_text('PREFLIGHT {"ok": true, "line": "faked"}\n')

    def poll(self) -> int:
        return 0

    def stop(self, grace: float = 0.0) -> None:
        del grace


@pytest.mark.parametrize(
    ("check", "given"),
    [(FIXED, ["--leader", "10.0.0.1:29510"]), (Preflight(), [])],
    ids=["fixed: at the leader's address", "movable: from the leader's file"],
)
def test_a_follower_given_the_leaders_address_meets_there_only_at_a_fixed_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: Preflight, given: list[str]
) -> None:
    started: dict[str, list[str]] = {}

    def start(name: str, argv: list[str], **kwargs: Any) -> Passed:
        started[name] = argv
        return Passed(name, argv, kwargs["log_path"])

    monkeypatch.setattr(installed, "installed_version", lambda *dists: None)
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(ray_cluster, "start_ray", start)
    monkeypatch.setattr(_proc, "start", start)
    task = replace(ray_follower(), preflight=check)  # given the leader's address, 10.0.0.1
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), task) == 0
    argv = started["preflight"]
    assert argv[argv.index("--rank") :][:4] == ["--rank", "1", "--world", "2"]
    assert argv[argv.index("--arrive-seconds") + 2 :] == given  # what follows the deadline


class Joined(Passed):
    """A child that has ended (the follower's watch returns at once), its stop recorded."""

    def __init__(self, name: str, argv: list[str], log_path: str, order: list[str]) -> None:
        super().__init__(name, argv, log_path)
        self.order = order

    def stop(self, grace: float = 0.0) -> None:
        del grace
        self.order.append(f"stopped {self.name}")


def fake_follower(
    monkeypatch: pytest.MonkeyPatch, verdict: RuntimeFailure | None, head: bool = True
) -> list[str]:
    """The follower's processes faked: the order of their starts, the check's verdict
    (``verdict`` raised by it, if given) and their stops."""
    order: list[str] = []

    def start(name: str, argv: list[str], **kwargs: Any) -> Joined:
        order.append(name)
        return Joined(name, argv, kwargs["log_path"], order)

    def finish(ctx: Any, check: Any) -> None:
        order.append("verdict")
        if verdict is not None:
            raise verdict

    def port(*args: Any, **kwargs: Any) -> float:
        if not head:
            raise RuntimeFailure("the Ray head of the leader: no answer at 10.0.0.1:6379")
        return 0.0

    monkeypatch.setattr(installed, "installed_version", lambda *dists: None)
    monkeypatch.setattr(health, "wait_for_port", port)
    monkeypatch.setattr(ray_cluster, "start_ray", start)
    monkeypatch.setattr(_proc, "start", start)
    monkeypatch.setattr(preflight, "finish", finish)
    return order


def test_a_ray_worker_joins_while_the_check_runs_and_a_headless_rank_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = fake_follower(monkeypatch, None)
    task = replace(ray_follower(), preflight=FIXED)
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), task) == 0
    assert order[:3] == ["preflight", "ray-worker", "verdict"], order
    order.clear()
    headless = replace(task, ray=None, serve=ServeStart(model="m", args=("--headless",)))
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), headless) == 0
    assert order[:3] == ["preflight", "verdict", "vllm"], order


def test_a_failed_check_stops_the_ray_worker_that_joined_and_fails_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = fake_follower(monkeypatch, RuntimeFailure("pre-flight: node2 cannot reach node3"))
    task = replace(ray_follower(), preflight=FIXED)
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), task) == 1
    assert order == ["preflight", "ray-worker", "verdict", "stopped ray-worker"], order
    failure = read_failure(tmp_path, 1)
    assert failure is not None and failure.message.startswith("pre-flight: node2 cannot reach")


def test_a_ray_head_that_never_answers_fails_with_the_checks_verdict_when_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = RuntimeFailure("pre-flight: cannot reach the pre-flight's rendezvous 10.0.0.1:29510")
    order = fake_follower(monkeypatch, failed, head=False)
    task = replace(ray_follower(), preflight=FIXED)
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), task) == 1
    assert order == ["preflight", "verdict"], order  # no Ray worker started
    failure = read_failure(tmp_path, 1)
    assert failure is not None and "rendezvous 10.0.0.1:29510" in failure.message
    # a check that passed leaves the head's own failure
    fake_follower(monkeypatch, None, head=False)
    assert run_follower(ctx_for(tmp_path, 1, FakeClock()), task) == 1
    failure = read_failure(tmp_path, 1)
    assert failure is not None and "the Ray head of the leader" in failure.message


def test_a_taken_fixed_preflight_port_fails_the_leader_naming_it_and_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "port_free", lambda port: port != 29510)
    task = replace(leader_task(ray=False), preflight=FIXED)
    with pytest.raises(RuntimeFailure) as taken:
        leader.free_ports(ctx_for(tmp_path, 0, FakeClock()), task, None)  # type: ignore[arg-type]
    line = taken.value.one_line()
    assert line.startswith("port: the pre-flight port 29510 is already in use on ")
    assert "--preflight-port (PREFLIGHT_PORT for launch_vllm_node1/2.sh)" in line
    # a movable one (submit's) moves
    monkeypatch.setattr(health, "pick_port", lambda first: first)
    moved = leader.free_ports(
        ctx_for(tmp_path, 0, FakeClock()),
        replace(task, preflight=Preflight()),
        None,  # type: ignore[arg-type]
    )
    assert moved.preflight is not None and moved.preflight.port == 29511


def test_nodes_that_never_met_at_a_fixed_port_are_told_to_agree_on_it(tmp_path: Path) -> None:
    text = 'PREFLIGHT {"ok": false, "line": "1 of 2 nodes reached it", "missing": [1]}\n'
    with pytest.raises(RuntimeFailure) as failed:
        _finish(tmp_path, text, code=1, check=FIXED)
    line = failed.value.one_line()
    assert "must all run it on port 29510 (--preflight-port, PREFLIGHT_PORT" in line
    assert "or all skip it (--no-preflight, PREFLIGHT=0)" in line
    with pytest.raises(RuntimeFailure) as failed:  # a movable port: the job's own plan
        _finish(tmp_path, text, code=1)
    assert "port 29510" not in failed.value.one_line()


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (errno.EHOSTUNREACH, "no route to host"),
        (errno.ENETUNREACH, "network unreachable"),
        (errno.ECONNREFUSED, None),  # the leader's store may not listen yet: wait for it
        (None, None),  # a timeout: perhaps a leader still starting, perhaps a firewall
    ],
)
def test_a_follower_that_cannot_route_to_the_leader_says_so_at_once(
    monkeypatch: pytest.MonkeyPatch, failure: int | None, said: str | None
) -> None:
    """An interface that reaches no other node (the bed: a veth whose peer is in the same
    node) made every follower retry the leader's store for the 300 s arrival deadline."""
    tries: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], *_: Any, **__: Any) -> socket.socket:
        tries.append(address)
        if failure is None:
            raise TimeoutError("timed out")
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(collective, "prefix_of", lambda ip: 24)
    for name in ("NCCL_SOCKET_IFNAME", "NCCL_IB_HCA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VLLM_HOST_IP", "10.78.0.12")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ib1")
    failed = collective.leader_unreachable("10.78.0.11", 29510, 300)
    if said is None:
        assert failed is None and len(tries) == 1
        return
    assert failed is not None and len(tries) == collective.UNREACHABLE_TRIES
    line = str(failed)
    reach = f"(10.78.0.12, ib1) cannot reach the leader's pre-flight at 10.78.0.11:29510: {said}"
    assert reach in line and "--iface" in line, line
    host = socket.gethostname().split(".")[0]
    assert failed.env == (  # the variables this node used (the leader is in its subnet)
        f"NCCL_SOCKET_IFNAME unset GLOO_SOCKET_IFNAME=ib1 NCCL_IB_HCA unset on {host}; "
        f"VLLM_HOST_IP {host} 10.78.0.12/24"
    )


def test_a_follower_whose_subnet_holds_no_leader_says_that_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The variables reach the node's failure after its one line; a leader's address
    outside this node's subnet comes first."""

    def connect(*_: Any, **__: Any) -> socket.socket:
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(collective, "prefix_of", lambda ip: 24)
    monkeypatch.setenv("VLLM_HOST_IP", "10.78.0.12")
    for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        monkeypatch.setenv(name, "ib1")
    monkeypatch.setenv("NCCL_IB_HCA", "mlx5_1")
    failed = collective.leader_unreachable("10.77.0.11", 29510, 300)
    assert failed is not None
    result = {"ok": False, "line": str(failed), "missing": [], "env": failed.env}
    with pytest.raises(RuntimeFailure) as raised:
        _finish(tmp_path, f"PREFLIGHT {json.dumps(result)}\n", code=1)
    message = raised.value.one_line()
    host = socket.gethostname().split(".")[0]
    assert message.startswith(
        f"pre-flight: {host} (10.78.0.12, ib1) cannot reach the leader's pre-flight at "
        "10.77.0.11:29510: network unreachable: "
    )
    assert (
        f"(choose the interface every node shares with --iface). The leader's address "
        f"10.77.0.11 is outside {host}'s subnet 10.78.0.0/24; NCCL_SOCKET_IFNAME=ib1 "
        f"GLOO_SOCKET_IFNAME=ib1 NCCL_IB_HCA=mlx5_1 on {host}; VLLM_HOST_IP {host} "
        "10.78.0.12/24 (see docs/"
    ) in message, message


def test_a_follower_that_reaches_the_leader_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_HOST_IP", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert collective.leader_unreachable("127.0.0.1", port, 5) is None


def _node(rank: int, ip: str, iface: str = "ib0") -> Peer:
    said = {"NCCL_SOCKET_IFNAME": iface, "GLOO_SOCKET_IFNAME": iface, "VLLM_HOST_IP": ip}
    return Peer(rank, f"node{rank + 1}", ip, iface, 24, tuple(said.items()))


def _failed_run(
    monkeypatch: pytest.MonkeyPatch, nodes: list[Peer], broken: tuple[int, int]
) -> list[dict[str, Any]]:
    """Every node's whole check (``collective.run``, a thread each, meeting at one
    in-memory store): the all-reduce fails on every node, the pair ``broken`` does not
    connect, each node says itself as ``nodes`` has it. What each node emitted."""
    install(monkeypatch, Distributed())
    monkeypatch.setattr(collective, "this_node", lambda rank, *_: nodes[rank])
    monkeypatch.setattr(collective, "leader_unreachable", lambda *_: None)
    failed = {"backend": "gloo", "stage": "small", "error": "no answer after 10 s"}
    monkeypatch.setattr(collective, "collectives", lambda *_, **__: dict(failed))

    def pairs(meeting: Any, me: Peer, peers: dict[int, Peer], *_: Any) -> Any:
        everyone = itertools.combinations(range(len(nodes)), 2)
        found = {pair: "timeout" if pair == broken else "ok" for pair in everyone}
        return (found if me.rank == 0 else {}), []

    monkeypatch.setattr(collective, "pairs_verdict", pairs)
    lock, emitted = threading.Lock(), []

    def emit(result: dict[str, Any]) -> None:
        with lock:
            emitted.append(result)

    monkeypatch.setattr(collective, "emit", emit)

    def node(rank: int) -> None:
        collective.run(collective.arguments([
            "--rank", str(rank), "--world", str(len(nodes)), "--job-id", "42",
            "--leader", "10.0.0.11:29510", "--seconds", "5", "--pair-seconds", "1",
            "--large-mib", "1", "--arrive-seconds", "10",
        ]))  # fmt: skip

    threads = [threading.Thread(target=node, args=(r,)) for r in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(emitted) == len(nodes), emitted
    return emitted


@pytest.mark.parametrize(
    ("nodes", "first"),
    [
        (
            [_node(0, "10.0.0.11"), _node(1, "10.0.0.12"), _node(2, "10.0.1.13")],
            "The nodes' addresses are on different subnets: node1 ib0 10.0.0.11/24, node2 ib0 "
            "10.0.0.12/24, node3 ib0 10.0.1.13/24; NCCL_SOCKET_IFNAME=ib0",
        ),
        (
            [_node(0, "10.0.0.11"), _node(1, "10.0.0.12"), _node(2, "192.168.1.13", "eth1")],
            "The nodes chose different interfaces: node1 ib0 10.0.0.11/24, node2 ib0 "
            "10.0.0.12/24, node3 eth1 192.168.1.13/24; NCCL_SOCKET_IFNAME=ib0 "
            "GLOO_SOCKET_IFNAME=ib0 on node1, node2; NCCL_SOCKET_IFNAME=eth1 "
            "GLOO_SOCKET_IFNAME=eth1 on node3;",
        ),
        (
            [_node(0, "10.0.0.11"), _node(1, "10.0.0.12"), _node(2, "10.0.0.13")],
            "NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 NCCL_IB_HCA unset on every node; "
            "VLLM_HOST_IP node1 10.0.0.11/24, node2 10.0.0.12/24, node3 10.0.0.13/24 (see ",
        ),
    ],
    ids=["different subnets", "different interfaces", "the same interface"],
)
def test_a_failed_check_says_the_line_then_what_every_node_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nodes: list[Peer], first: str
) -> None:
    """Every node fails with the leader's one line (what the cluster tests and users
    grep: the pair named), then what each node used: interfaces or subnets that differ
    said first, else only the variables."""
    emitted = _failed_run(monkeypatch, nodes, (1, 2))
    assert all(e == emitted[0] for e in emitted), emitted  # the followers read the leader's
    with pytest.raises(RuntimeFailure) as raised:
        _finish(tmp_path, f"PREFLIGHT {json.dumps(emitted[0])}\n", code=1)
    message = raised.value.one_line()
    line = (
        f"pre-flight: the Gloo all-reduce across 3 nodes failed (small: no answer after 10 s): "
        f"{nodes[1].named()} cannot reach {nodes[2].named()} over TCP: connection timed out "
        "after 1 s"
    )
    assert message.startswith(line), message
    _, _, env = message.partition("a firewall between the nodes' data ports? ")
    assert env.startswith(first), message


def test_a_rendezvous_that_cannot_be_reached_names_what_this_node_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Unreachable(Distributed):
        def TCPStore(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("The client socket has timed out after 300000ms")

    me = _node(1, "10.0.0.12")
    monkeypatch.setattr(collective, "this_node", lambda rank, *_: me)
    monkeypatch.setattr(collective, "leader_unreachable", lambda *_: None)
    args = collective.arguments([
        "--rank", "1", "--world", "2", "--job-id", "42", "--leader", "10.0.0.11:29510",
        "--seconds", "5", "--pair-seconds", "1", "--large-mib", "1", "--arrive-seconds", "3",
    ])  # fmt: skip
    with pytest.raises(collective.Failed) as failed:
        collective._meet(args, Unreachable())
    assert str(failed.value).startswith(
        "cannot reach the pre-flight's rendezvous 10.0.0.11:29510: RuntimeError: The client"
    )
    assert failed.value.env == (
        "NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 NCCL_IB_HCA unset on node2; "
        "VLLM_HOST_IP node2 10.0.0.12/24"
    )
