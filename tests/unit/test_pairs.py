"""The pre-flight's pair checks (runtime.pairs): schedules that try each pair once with no
node in two checks at a time, and the one line that names a broken link."""

from __future__ import annotations

import itertools

import pytest

from launchers.runtime.pairs import Outcome, Pair, Peer, all_pairs_rounds, ring_rounds, sentence

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
