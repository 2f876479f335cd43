"""The pre-flight's pair checks (runtime.pairs): schedules that try each pair once with no
node in two checks at a time, the one line that names a broken link, and the second part
that says what each node used (interfaces and subnets that differ first)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from launchers.runtime.pairs import (
    Outcome,
    Pair,
    Peer,
    all_pairs_rounds,
    environment,
    ring_rounds,
    sentence,
)

PEERS = [
    Peer(0, "node1", "10.0.0.11", "ib0"),
    Peer(1, "node2", "10.0.0.12", "ib0"),
    Peer(2, "node3", "10.0.0.13", "ib0"),
    Peer(3, "node4", "10.0.0.14", "ib0"),
]


def _disjoint(rounds: list[list[Pair]]) -> bool:
    return all(len({r for pair in now for r in pair}) == 2 * len(now) for now in rounds)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 16])
def test_the_ring_tries_each_neighbour_pair_once(n: int) -> None:
    rounds = ring_rounds(n)
    pairs = [p for now in rounds for p in now]
    want = {tuple(sorted((r, (r + 1) % n))) for r in range(n)}
    assert sorted(pairs) == sorted(want) and len(pairs) == len(set(pairs))
    assert _disjoint(rounds)
    assert len(rounds) == (1 if n == 2 else 2 if n % 2 == 0 else 3)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 16])
def test_all_pairs_in_the_fewest_rounds(n: int) -> None:
    rounds = all_pairs_rounds(n)
    pairs = [p for now in rounds for p in now]
    assert sorted(pairs) == list(itertools.combinations(range(n), 2))
    assert _disjoint(rounds)
    assert len(rounds) == (n - 1 if n % 2 == 0 else n)


def test_one_node_has_nothing_to_check() -> None:
    assert ring_rounds(1) == [] and all_pairs_rounds(1) == []


def ok(n: int) -> dict[Pair, Outcome]:
    return {p: "ok" for p in itertools.combinations(range(n), 2)}


def test_nothing_broken_says_nothing() -> None:
    assert sentence(PEERS, ok(4), backend="Gloo", seconds=10) is None


def test_one_broken_pair_is_named_with_what_failed() -> None:
    outcomes = {**ok(4), (1, 2): "timeout"}
    assert sentence(PEERS, outcomes, backend="Gloo", seconds=10) == (
        "node2 (10.0.0.12, ib0) cannot reach node3 (10.0.0.13, ib0) over Gloo: "
        "connection timed out after 10 s"
    )


def test_a_node_that_reaches_no_one_is_named_alone() -> None:
    outcomes = {**ok(4), (0, 3): "refused", (1, 3): "refused", (2, 3): "refused"}
    assert sentence(PEERS, outcomes, backend="NCCL", seconds=4) == (
        "node4 (10.0.0.14, ib0) cannot reach any other node over NCCL: connection refused after 4 s"
    )


def test_large_frames_dropped_say_mtu() -> None:
    line = sentence(PEERS, {**ok(4), (2, 3): "large"}, backend="Gloo", seconds=10)
    assert line is not None and "a small message passes, a large one does not" in line


def test_a_pair_whose_interfaces_differ_comes_first_and_the_rest_follow() -> None:
    peers = [*PEERS[:3], Peer(3, "node4", "10.0.0.14", "eth0")]
    outcomes = {**ok(4), (0, 1): "timeout", (2, 3): "timeout"}
    line = sentence(peers, outcomes, backend="Gloo", seconds=10)
    assert line == (
        "node3 (10.0.0.13, ib0) cannot reach node4 (10.0.0.14, eth0) over Gloo: connection "
        "timed out after 10 s (their interfaces differ: ib0 and eth0); also node1-node2"
    )


def test_a_pair_on_different_subnets_comes_first() -> None:
    peers = [*PEERS[:3], Peer(3, "node4", "10.0.1.14", "ib0")]
    outcomes = {**ok(4), (0, 1): "timeout", (2, 3): "timeout"}
    line = sentence(peers, outcomes, backend="Gloo", seconds=10)
    assert line is not None and line.startswith("node3 (10.0.0.13, ib0) cannot reach node4")
    assert "(their addresses are on different subnets)" in line


def test_ranks_that_stopped_answering_are_named() -> None:
    line = sentence(PEERS, ok(4), backend="Gloo", seconds=12, silent=[2])
    assert line == "node3 (10.0.0.13, ib0) stopped answering the pre-flight after 12 s"


def test_a_subnet_is_the_nodes_own_prefix_when_it_said_one() -> None:
    """10.0.0.13 and 10.0.1.14 are one /16: the pair is not called apart (a /24 guess
    would), and a pair on other /24s is when the nodes said no prefix."""
    peers = [*PEERS[:3], Peer(3, "node4", "10.0.1.14", "ib0", 16)]
    peers[2] = Peer(2, "node3", "10.0.0.13", "ib0", 16)
    outcomes = {**ok(4), (0, 1): "timeout", (2, 3): "timeout"}
    line = sentence(peers, outcomes, backend="Gloo", seconds=10)
    assert line is not None and line.startswith("node1 (10.0.0.11, ib0) cannot reach node2")
    assert "subnets" not in line


def node(rank: int, ip: str, iface: str = "ib0", prefix: int | None = 24, **env: str) -> Peer:
    """A node as it says itself at the meeting: the runtime's exports for ``iface`` (and
    ``env``: an RDMA device, a variable another way)."""
    said = {"NCCL_SOCKET_IFNAME": iface, "GLOO_SOCKET_IFNAME": iface, **env, "VLLM_HOST_IP": ip}
    return Peer(rank, f"node{rank + 1}", ip, iface, prefix, tuple(said.items()))


def test_a_node_said_at_the_meeting_is_read_back_whole() -> None:
    said = node(2, "10.0.0.13", NCCL_IB_HCA="mlx5_0")
    assert Peer.of(json.loads(json.dumps(dataclasses.asdict(said)))) == said
    older = {"rank": 1, "host": "node2", "ip": "10.0.0.12", "iface": "ib0"}  # no env, no prefix
    assert Peer.of(older) == Peer(1, "node2", "10.0.0.12", "ib0")


def test_different_subnets_are_said_first_then_the_variables() -> None:
    nodes = [node(0, "10.0.0.11"), node(1, "10.0.0.12"), node(2, "10.0.1.13")]
    assert environment(nodes) == (
        "the nodes' addresses are on different subnets: node1 ib0 10.0.0.11/24, node2 ib0 "
        "10.0.0.12/24, node3 ib0 10.0.1.13/24; NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 "
        "NCCL_IB_HCA unset on every node; VLLM_HOST_IP node1 10.0.0.11/24, node2 10.0.0.12/24, "
        "node3 10.0.1.13/24"
    )


def test_different_interface_names_are_said_first_and_who_set_what() -> None:
    nodes = [node(0, "10.0.0.11"), node(1, "10.0.0.12"), node(2, "192.168.1.13", "eth1")]
    assert environment(nodes) == (
        "the nodes chose different interfaces: node1 ib0 10.0.0.11/24, node2 ib0 10.0.0.12/24, "
        "node3 eth1 192.168.1.13/24; NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 on node1, "
        "node2; NCCL_SOCKET_IFNAME=eth1 GLOO_SOCKET_IFNAME=eth1 on node3; NCCL_IB_HCA unset on "
        "every node; VLLM_HOST_IP node1 10.0.0.11/24, node2 10.0.0.12/24, node3 192.168.1.13/24"
    )


def test_the_same_interface_everywhere_gives_only_the_variables() -> None:
    nodes = [node(r, f"10.0.0.1{r + 1}", NCCL_IB_HCA="mlx5_0") for r in range(3)]
    assert environment(nodes) == (
        "NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 NCCL_IB_HCA=mlx5_0 on every node; "
        "VLLM_HOST_IP node1 10.0.0.11/24, node2 10.0.0.12/24, node3 10.0.0.13/24"
    )


def test_one_node_says_its_own_and_a_leader_outside_its_subnet_first() -> None:
    me = node(1, "10.78.0.12", "ib1")
    assert environment([me], leader="10.77.0.11") == (
        "the leader's address 10.77.0.11 is outside node2's subnet 10.78.0.0/24; "
        "NCCL_SOCKET_IFNAME=ib1 GLOO_SOCKET_IFNAME=ib1 NCCL_IB_HCA unset on node2; "
        "VLLM_HOST_IP node2 10.78.0.12/24"
    )
    assert environment([me], leader="10.78.0.11").startswith("NCCL_SOCKET_IFNAME=ib1")
    unknown = node(1, "10.78.0.12", "ib1", prefix=None)  # no prefix: no guess about it
    assert environment([unknown], leader="10.77.0.11").startswith("NCCL_SOCKET_IFNAME=ib1")


def test_nodes_that_came_are_not_called_every_node_and_a_value_stays_one_word() -> None:
    nodes = [node(0, "10.0.0.11", NCCL_IB_HCA="mlx5_0\nx" + "y" * 60), node(1, "10.0.0.12")]
    said = environment(nodes, everyone=False)
    assert "NCCL_SOCKET_IFNAME=ib0 GLOO_SOCKET_IFNAME=ib0 on node1, node2" in said
    assert "NCCL_IB_HCA=mlx5_0?xyyy" in said and "\n" not in said
    assert "NCCL_IB_HCA unset on node2" in said and "every node" not in said


def test_many_nodes_are_counted_past_a_few_and_the_odd_one_is_never_cut() -> None:
    nodes = [node(r, f"10.0.0.{r + 11}") for r in range(40)]
    nodes[37] = node(37, "10.0.9.48", "eth1")
    said = environment(nodes)
    assert said.startswith("the nodes chose different interfaces: node38 eth1 10.0.9.48/24, ")
    assert " and 24 more; " in said  # of the 40 in the headline, and of the addresses
    assert said.endswith("node16 10.0.0.26/24 and 24 more")
    assert len(said) < 1200
