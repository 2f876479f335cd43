"""Which nodes of a job cannot talk to which: the schedules of the pair checks and the one
line that names a broken link. Pure: the checks themselves (TCP to a peer, a two-rank
Gloo/NCCL group) are the caller's; this module says which pairs to try in which round
and what their outcomes mean.

A multi-node job's collectives fail as a hang when one link carries Ray and not the
data (a firewall between data ports, an interface that differs, an MTU that drops large
frames). When the whole group's all-reduce fails, the pre-flight tries pairs: first the
ring ``(r, r + 1)``, in rounds of disjoint pairs, then, if the ring passes, every pair.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# What one pair check found: both ways fine; no answer in time; refused; a small message
# passes and a large one does not (frames over some MTU dropped on the way); no route.
Outcome = Literal["ok", "timeout", "refused", "large", "unreachable"]
_WHY: dict[str, str] = {
    "timeout": "connection timed out",
    "refused": "connection refused",
    "unreachable": "no route to the address",
    "large": "a small message passes, a large one does not (an MTU mismatch on the way?)",
}

Pair = tuple[int, int]


def why(outcome: Outcome) -> str:
    """What a failed pair check's outcome means, in words."""
    return _WHY.get(outcome, outcome)


@dataclass(frozen=True)
class Peer:
    """One node as the pre-flight knows it: its rank, host name, the address and
    interface the plan's network settings chose on it."""

    rank: int
    host: str
    ip: str
    iface: str

    def named(self) -> str:
        return f"{self.host} ({self.ip}, {self.iface})"


def _rounds(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """Greedy rounds of disjoint pairs (no rank twice in a round), in the given order."""
    left = list(pairs)
    rounds: list[list[Pair]] = []
    while left:
        busy: set[int] = set()
        now = []
        for pair in list(left):
            if busy.isdisjoint(pair):
                now.append(pair)
                busy.update(pair)
                left.remove(pair)
        rounds.append(now)
    return rounds


def ring_rounds(n: int) -> list[list[Pair]]:
    """The ring's pairs ``(r, r + 1 mod n)``, each once, in rounds of disjoint pairs
    (2 rounds for an even ``n``, 3 for an odd one; 1 for two nodes)."""
    if n < 2:
        return []
    edges = sorted({tuple(sorted((r, (r + 1) % n))) for r in range(n)})
    return _rounds([(a, b) for a, b in edges])


def all_pairs_rounds(n: int) -> list[list[Pair]]:
    """Every pair once, in ``n - 1`` rounds of disjoint pairs for an even ``n`` (``n``
    for an odd one): the round-robin of a tournament."""
    if n < 2:
        return []
    players: list[int | None] = list(range(n)) + ([None] if n % 2 else [])
    m = len(players)
    rounds = []
    for _ in range(m - 1):
        now = []
        for i in range(m // 2):
            a, b = players[i], players[m - 1 - i]
            if a is not None and b is not None:
                now.append((min(a, b), max(a, b)))
        rounds.append(sorted(now))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def _apart(a: Peer, b: Peer) -> bool:
    """Interfaces named differently, or addresses on different /24s (the likeliest
    cause, named first)."""
    if a.iface != b.iface:
        return True
    try:
        net_a = ipaddress.ip_network(f"{a.ip}/24", strict=False)
        return ipaddress.ip_address(b.ip) not in net_a
    except ValueError:
        return False


def sentence(
    peers: Sequence[Peer],
    outcomes: Mapping[Pair, Outcome],
    *,
    backend: str,
    seconds: float,
    silent: Sequence[int] = (),
) -> str | None:
    """The one line that names what is broken (None: nothing is): a node that answered
    no one, or else the failing pairs, the likeliest first (a pair whose interfaces or
    subnets differ), with what failed and after how long. ``silent``: ranks that
    stopped answering the pre-flight altogether."""
    by_rank = {p.rank: p for p in peers}
    if silent:
        names = ", ".join(by_rank[r].named() for r in sorted(silent))
        return f"{names} stopped answering the pre-flight after {seconds:.0f} s"
    failed = {pair: why for pair, why in outcomes.items() if why != "ok"}
    if not failed:
        return None
    counts: dict[int, int] = {}
    for a, b in failed:
        counts[a] = counts.get(a, 0) + 1
        counts[b] = counts.get(b, 0) + 1
    others = len(peers) - 1
    cut_off = [r for r, n in sorted(counts.items()) if others > 1 and n == others]
    if len(cut_off) == 1:
        node = by_rank[cut_off[0]]
        whys = {failed[p] for p in failed if cut_off[0] in p}
        why = _WHY[whys.pop()] if len(whys) == 1 else "several causes"
        return (
            f"{node.named()} cannot reach any other node over {backend}: {why} "
            f"after {seconds:.0f} s"
        )
    ordered = sorted(failed, key=lambda p: (not _apart(by_rank[p[0]], by_rank[p[1]]), p))
    a, b = ordered[0]
    first, second = by_rank[a], by_rank[b]
    line = (
        f"{first.named()} cannot reach {second.named()} over {backend}: "
        f"{_WHY[failed[(a, b)]]} after {seconds:.0f} s"
    )
    if first.iface != second.iface:
        line += f" (their interfaces differ: {first.iface} and {second.iface})"
    elif _apart(first, second):
        line += " (their addresses are on different subnets)"
    rest = [f"{by_rank[x].host}-{by_rank[y].host}" for x, y in ordered[1:]]
    if rest:
        line += f"; also {', '.join(rest)}"
    return line


__all__ = ["Outcome", "Pair", "Peer", "all_pairs_rounds", "ring_rounds", "sentence", "why"]
