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
from typing import Any, Literal

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


# What decides where a node's collectives go: the interface NCCL and Gloo use, the RDMA
# device NCCL uses, vLLM's own address. Each node says its values when the nodes meet,
# so a failure can say what every node used.
COMM_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA", "VLLM_HOST_IP")
VALUE_LIMIT = 40
SHOWN_NODES = 16  # nodes listed one by one in what each node used; the rest counted


@dataclass(frozen=True)
class Peer:
    """One node as the pre-flight knows it: its rank, host name, the address and
    interface the plan's network settings chose on it, the prefix length of that
    interface's subnet (None: unknown), and the ``COMM_VARS`` set on it (name, value)."""

    rank: int
    host: str
    ip: str
    iface: str
    prefix: int | None = None
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Peer:
        """A node as the meeting carries it (JSON); what an older node did not say is
        unknown."""
        prefix = data.get("prefix")
        return cls(
            rank=int(data["rank"]),
            host=str(data["host"]),
            ip=str(data["ip"]),
            iface=str(data["iface"]),
            prefix=prefix if isinstance(prefix, int) else None,
            env=tuple((str(k), str(v)) for k, v in data.get("env") or ()),
        )

    def named(self) -> str:
        return f"{self.host} ({self.ip}, {self.iface})"

    def var(self, name: str) -> str | None:
        """The value of ``name`` on this node (None: unset)."""
        return dict(self.env).get(name)

    @property
    def address(self) -> str:
        """The address with its prefix length, as ``ip addr`` shows it (``10.0.0.11/24``)."""
        return self.ip if self.prefix is None else f"{self.ip}/{self.prefix}"

    def subnet(self, guess: int = 24) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The subnet of the address: its own prefix, else ``guess`` (None: no address)."""
        try:
            return ipaddress.ip_network(
                f"{self.ip}/{guess if self.prefix is None else self.prefix}", strict=False
            )
        except ValueError:
            return None


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
    """Interfaces named differently, or addresses on different subnets (the likeliest
    cause, named first)."""
    return a.iface != b.iface or _other_subnets(a, b)


def outside(peer: Peer, ip: str) -> bool:
    """``ip`` is not in the subnet of ``peer``'s address (False when either is unknown)."""
    net = peer.subnet()
    try:
        return net is not None and ipaddress.ip_address(ip) not in net
    except ValueError:
        return False


def _other_subnets(a: Peer, b: Peer) -> bool:
    """Either address outside the other's subnet: each node's own prefix length when
    it said one, else /24."""
    return outside(a, b.ip) or outside(b, a.ip)


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


def _value(text: str) -> str:
    """A variable's value as a message shows it: printable, at most VALUE_LIMIT long."""
    text = "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 3] + "..."


def _setting(peer: Peer, name: str) -> str:
    value = peer.var(name)
    return f"{name} unset" if value is None else f"{name}={_value(value)}"


def _hosts(peers: Sequence[Peer]) -> str:
    return _listed([p.host for p in peers])


def _listed(items: Sequence[str]) -> str:
    """``items`` joined, the first SHOWN_NODES of them (a failure is one bounded line)."""
    more = len(items) - SHOWN_NODES
    return ", ".join(items[:SHOWN_NODES]) + (f" and {more} more" if more > 0 else "")


def environment(peers: Sequence[Peer], *, everyone: bool = True, leader: str = "") -> str:
    """What each node used, the second part of a failure: first, when the nodes chose
    different interface names or subnets, that (each node's interface and address); then
    the variables (``COMM_VARS``), one clause for those alike on every node and one for
    each group of nodes that set the others alike, and every node's ``VLLM_HOST_IP``
    with its prefix length. ``everyone``: ``peers`` are all the job's nodes (else only
    those that came); ``leader``: the leader's address, for a node that cannot reach it
    (said first when it is outside that node's subnet). Pure."""
    nodes = sorted(peers, key=lambda p: p.rank)
    if not nodes:
        return ""
    parts = []
    # by rank; in a list too long to show whole, the nodes whose choice fewer nodes share
    # first, so that the cut never hides the odd one
    choice = [(p.iface, str(p.subnet())) for p in nodes]
    order = sorted(range(len(nodes)), key=lambda i: (choice.count(choice[i]), i))
    shown = order if len(nodes) > SHOWN_NODES else range(len(nodes))
    where = _listed([f"{nodes[i].host} {nodes[i].iface} {nodes[i].address}" for i in shown])
    if len({p.iface for p in nodes}) > 1:
        parts.append(f"the nodes chose different interfaces: {where}")
    elif any(_other_subnets(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :]):
        parts.append(f"the nodes' addresses are on different subnets: {where}")
    me = nodes[0]
    if leader and len(nodes) == 1 and me.prefix is not None and outside(me, leader):
        parts.append(f"the leader's address {leader} is outside {me.host}'s subnet {me.subnet()}")
    names = [n for n in COMM_VARS if n != "VLLM_HOST_IP"]
    alike = [n for n in names if len({p.var(n) for p in nodes}) == 1]
    differ = [n for n in names if n not in alike]
    if differ:
        groups: dict[tuple[str | None, ...], list[Peer]] = {}
        for p in nodes:
            groups.setdefault(tuple(p.var(n) for n in differ), []).append(p)
        for group in groups.values():
            said = " ".join(_setting(group[0], n) for n in differ)
            parts.append(f"{said} on {_hosts(group)}")
    if alike:
        on = "every node" if everyone and len(nodes) > 1 else _hosts(nodes)
        parts.append(" ".join(_setting(nodes[0], n) for n in alike) + f" on {on}")
    parts.append("VLLM_HOST_IP " + _listed([f"{p.host} {p.address or 'unset'}" for p in nodes]))
    return "; ".join(parts)


__all__ = [
    "COMM_VARS",
    "Outcome",
    "Pair",
    "Peer",
    "all_pairs_rounds",
    "environment",
    "outside",
    "ring_rounds",
    "sentence",
    "why",
]
