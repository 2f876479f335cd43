"""The pre-flight's work on one node, as a child of the node runtime
(``python -m launchers.runtime.collective``), in the job's Python and environment (its
``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME``, ``VLLM_HOST_IP``, the image when there is
one), so it checks what vLLM's collectives will use.

Started first thing on every node, it imports torch while the runtime starts Ray, then
finds the leader (the leader's file, or ``--leader IP:PORT``: a node that planned on its
own then takes the leader's world and a rank in the order the nodes came), meets the
other nodes at a TCPStore on the leader, and runs a small and a large all-reduce (Gloo
on CPU nodes, NCCL on GPU nodes) with a deadline. When they fail, every node checks every
pair over plain TCP from its own address (a small message, then a large one), and the
leader turns what failed into the one line ``runtime.pairs.sentence`` writes, and what each
node used (its interface, subnet and ``NCCL_*``/``GLOO_*``/``VLLM_HOST_IP``, which every
node says when the nodes meet) into a second part, ``runtime.pairs.environment``. The
result is the last line of stdout: ``PREFLIGHT {"ok": ..., "line": ..., "env": ...}``;
exit code 0 when the check passed (or could not run: no torch), 1 when it failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from launchers import waits
from launchers.errors import WaitTimeout
from launchers.jobdir import jobfiles
from launchers.runtime.network import prefix_of
from launchers.runtime.pairs import (
    COMM_VARS,
    Outcome,
    Pair,
    Peer,
    all_pairs_rounds,
    environment,
    sentence,
)

MARK = "PREFLIGHT "
SOURCE_REF = re.compile(r"\[[^\]]*\.(?:cc|cpp|h|py):\d+\] ")  # [/.../unbound_buffer.cc:78]
DOCS = "docs/failure-modes.md#a-link-that-carries-ray-but-not-the-collectives"
MEETING = "meeting"  # the leader's job keys and world, for nodes that plan on their own
T = TypeVar("T")


def emit(result: dict[str, Any]) -> None:
    print(MARK + json.dumps(result, sort_keys=True), flush=True)


def parse(line: str) -> dict[str, Any] | None:
    """The result of a ``PREFLIGHT`` line, or None."""
    if not line.startswith(MARK):
        return None
    try:
        data = json.loads(line[len(MARK) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _until(what: str, seconds: float, look: Callable[[], T | None]) -> T | None:
    """``look()`` until it gives a value, None after ``seconds``."""
    try:
        return waits.wait_for(look, what=what, timeout=seconds, interval=0.05).value
    except WaitTimeout:
        return None


def _leader(args: argparse.Namespace) -> tuple[str, int] | None:
    if args.leader:
        ip, _, port = args.leader.rpartition(":")
        return ip, int(port)

    def written() -> tuple[str, int] | None:
        leader = jobfiles.read(args.leader_file, jobfiles.Leader)
        if leader is None or leader.job_id != args.job_id or leader.attempt != args.attempt:
            return None
        return None if leader.preflight_port is None else (leader.ip, leader.preflight_port)

    return _until("the leader's file", args.arrive_seconds, written)


# ------------------------------------------------------------------ the collectives
# What each stage of ``collectives`` does, for a line that says where it stopped.
STAGES = {
    "init": "joining the process group",
    "small": "the 4 B all-reduce",
    "large": "the {mib} MiB all-reduce",
    "repeat": "{repeat} more {mib} MiB all-reduces",
}
_LEFT: list[threading.Thread] = []  # collectives past their deadline, still blocked


def collectives(
    rank: int,
    world: int,
    store: Any,
    seconds: float,
    large_mib: int,
    *,
    repeat: int = 0,
    gpus: bool = True,
) -> dict[str, Any]:
    """A small and a large all-reduce over the job's backend (NCCL on a node with GPUs,
    Gloo otherwise or when ``gpus`` is False), their sums checked, then ``repeat`` more
    large ones timed together (``vllm-hpc doctor``'s bandwidth, ``repeat_ms`` each, and
    the group destroyed). All of it in a thread with a deadline of ``seconds`` (and up to
    2 s more for torch's own timeout to speak first): a collective over a dropped link blocks
    until its own timeout, or longer, and a thread past the deadline is left behind
    (``left_running``). What happened: the backend, the stage reached, ``error`` when
    it failed (``wrong_sum`` when the sums were wrong), ``large_ms`` and ``repeat_ms``."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if gpus and torch.cuda.is_available() else "gloo"
    out: dict[str, Any] = {"backend": backend, "stage": "init"}

    def summed(tensor: Any, what: str) -> None:
        if tensor[0].item() != world or tensor[-1].item() != world:
            out["wrong_sum"] = True
            raise ValueError(f"the {what} all-reduce summed to {tensor[0].item()}, not {world}")

    def run() -> None:
        try:
            dist.init_process_group(
                backend,
                store=dist.PrefixStore("pg", store),
                rank=rank,
                world_size=world,
                timeout=timedelta(seconds=seconds),
            )
            device = "cuda" if backend == "nccl" else "cpu"
            out["stage"] = "small"
            small = torch.ones(1, device=device)
            dist.all_reduce(small)
            summed(small, "small")
            out["stage"] = "large"
            large = torch.ones(large_mib * 2**18, dtype=torch.float32, device=device)
            began = time.perf_counter()
            dist.all_reduce(large)
            if device == "cuda":
                torch.cuda.synchronize()
            out["large_ms"] = (time.perf_counter() - began) * 1000
            summed(large, "large")
            if repeat:
                out["stage"] = "repeat"
                dist.barrier()
                began = time.perf_counter()
                for _ in range(repeat):
                    dist.all_reduce(large)
                if device == "cuda":
                    torch.cuda.synchronize()
                out["repeat_ms"] = (time.perf_counter() - began) * 1000 / repeat
                dist.barrier()
                dist.destroy_process_group()
            out["stage"] = "done"
        except Exception as exc:  # torch raises many types: the verdict says which
            out["error"] = f"{type(exc).__name__}: {_said(exc)}"

    worker = threading.Thread(target=run, name="all-reduce", daemon=True)
    worker.start()
    worker.join(seconds + min(2.0, seconds))
    if worker.is_alive():
        _LEFT.append(worker)
        out["error"] = f"no answer after {seconds:g} s"
    return dict(out)  # a thread left behind may still write to its own


def left_running() -> bool:
    """A collective past its deadline still blocks a thread of this process: the
    process group's destructors may then hang its exit (leave with ``os._exit``)."""
    return any(thread.is_alive() for thread in _LEFT)


def stage_said(result: dict[str, Any], large_mib: int, repeat: int = 0) -> str:
    """Where ``collectives`` stopped, in words (``the 4 B all-reduce``)."""
    stage = str(result.get("stage", "init"))
    return STAGES.get(stage, stage).format(mib=large_mib, repeat=repeat)


# ------------------------------------------------------------------ the pair checks
def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)
    if sock.recv(1) != b"k":
        raise ConnectionResetError("no acknowledgement")


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _drain(conn: socket.socket, size: int) -> bool:
    """Read ``size`` bytes and keep none of them (a large message costs no copy); False
    when the peer closed first."""
    buffer = memoryview(bytearray(min(size, 1 << 20) or 1))
    left = size
    while left:
        got = conn.recv_into(buffer, min(left, len(buffer)))
        if not got:
            return False
        left -= got
    return True


def _answer(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(60)
        try:
            while True:
                head = _recv_exact(conn, 4)
                if head is None:
                    return
                (size,) = struct.unpack("!I", head)
                if not _drain(conn, size):
                    return
                conn.sendall(b"k")
        except OSError:
            return


def listen(ip: str) -> tuple[socket.socket, int]:
    """A listener on this node's own address that acknowledges every message."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((ip, 0))
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, name="pair-listener", daemon=True).start()
    return server, int(server.getsockname()[1])


def probe(source: str, target: tuple[str, int], seconds: float, large_mib: int) -> Outcome:
    """One pair over TCP from ``source`` (this node's address): a small message, then a
    large one (frames a smaller MTU on the way drops)."""
    try:
        with socket.create_connection(target, timeout=seconds, source_address=(source, 0)) as s:
            s.settimeout(seconds)
            _send(s, b"pre-flight")
            try:
                _send(s, bytes(large_mib * 2**20))
            except TimeoutError:
                return "large"
            return "ok"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unreachable"


@dataclasses.dataclass(frozen=True)
class Measured:
    """One pair as ``vllm-hpc doctor --network`` measures it: the outcome ``probe`` gives,
    the median round trip of a small message and the rate of a large one-way transfer
    (bytes / seconds until the peer acknowledged it), when the pair is ok."""

    outcome: Outcome
    rtt_ms: float | None = None
    gb_per_s: float | None = None


def _push(sock: socket.socket, payload: bytes, stall: float, limit: float) -> None:
    """``payload`` as one message, then its acknowledgement: TimeoutError when no byte
    moves for ``stall`` seconds (frames dropped on the way) or all of it takes longer
    than ``limit``. A slow link that moves is not a failure."""
    sock.settimeout(stall)
    sock.sendall(struct.pack("!I", len(payload)))
    data = memoryview(payload)
    ends = time.monotonic() + limit
    while data:
        if time.monotonic() > ends:
            raise TimeoutError(f"not sent within {limit:.0f} s")
        data = data[sock.send(data[: 1 << 20]) :]
    if sock.recv(1) != b"k":
        raise ConnectionResetError("no acknowledgement")


def measure(
    source: str,
    target: tuple[str, int],
    seconds: float,
    large_mib: int,
    *,
    pings: int,
    limit: float,
) -> Measured:
    """One pair over TCP from ``source``, as ``probe`` checks it, measured: ``pings``
    small messages one at a time (their median round trip), then ``large_mib`` MiB one
    way (its rate). ``seconds``: the deadline of the connection, of each small message
    and of a stall in the transfer; ``limit``: of the whole transfer."""
    try:
        with socket.create_connection(target, timeout=seconds, source_address=(source, 0)) as s:
            s.settimeout(seconds)
            trips = []
            for _ in range(pings):
                began = time.perf_counter()
                _send(s, b"pre-flight")
                trips.append(time.perf_counter() - began)
            trips.sort()
            rtt_ms = trips[len(trips) // 2] * 1000 if trips else None
            payload = bytes(large_mib * 2**20)
            try:
                began = time.perf_counter()
                _push(s, payload, seconds, limit)
                took = time.perf_counter() - began
            except TimeoutError:
                return Measured("large", rtt_ms)
            return Measured("ok", rtt_ms, large_mib * 2**20 / took / 1e9)
    except TimeoutError:
        return Measured("timeout")
    except ConnectionRefusedError:
        return Measured("refused")
    except OSError:
        return Measured("unreachable")


# ------------------------------------------------------------------ the node's part
class Meeting:
    """The store on the leader, as this node uses it (keys of this attempt only)."""

    def __init__(self, store: Any, rank: int, world: int) -> None:
        self.store, self.rank, self.world = store, rank, world

    def put(self, key: str, value: Any) -> None:
        self.store.set(key, json.dumps(value))

    def get(self, key: str) -> Any:
        if not self.store.check([key]):
            return None
        return json.loads(self.store.get(key))

    def count(self, key: str, add: int = 0) -> int:
        return int(self.store.add(key, add))

    def all_of(self, prefix: str, ranks: Sequence[int], seconds: float) -> dict[int, Any]:
        """``prefix/<rank>`` of each of ``ranks``: as many as came within ``seconds``."""

        def complete() -> bool | None:
            return True if self.store.check([f"{prefix}/{r}" for r in ranks]) else None

        _until(prefix, seconds, complete)
        return {r: v for r in ranks if (v := self.get(f"{prefix}/{r}")) is not None}


def pairs_verdict(
    meeting: Meeting,
    me: Peer,
    peers: dict[int, Peer],
    seconds: float,
    large_mib: int,
) -> tuple[dict[Pair, Outcome], list[int]]:
    """Every node checks its pairs with the higher ranks; the outcomes and the ranks
    that never answered (on the leader: every pair; elsewhere: its own)."""
    rank, world = me.rank, meeting.world
    server, port = listen(me.ip)
    meeting.put(f"tcp/{rank}", port)
    ports = meeting.all_of("tcp", range(world), seconds + 5)
    silent = sorted(set(range(world)) - set(ports) - {rank})
    outcomes: dict[Pair, Outcome] = {}
    threads = []

    def check(other: int) -> None:
        outcome = probe(me.ip, (peers[other].ip, int(ports[other])), seconds, large_mib)
        outcomes[(rank, other)] = outcome
        meeting.put(f"pair/{rank}-{other}", outcome)

    for other in range(rank + 1, world):
        if other in ports and other in peers:
            threads.append(threading.Thread(target=check, args=(other,), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds * 2 + 2)
    meeting.count("probed", 1)
    # Every listener stays until every node that listened has probed (the highest rank
    # probes no one: closing at once, it refused the others' probes).
    done = len(ports)
    _until("probes", seconds * 2 + 5, lambda: True if meeting.count("probed") >= done else None)
    if rank == 0:
        for a in range(world):
            for b in range(a + 1, world):
                if a in silent or b in silent:
                    continue
                found = meeting.get(f"pair/{a}-{b}")
                outcomes[(a, b)] = found if found is not None else "timeout"
    server.close()
    return outcomes, silent


def _all_at(meeting: Meeting, key: str, count: int, seconds: float) -> None:
    """Count this node in at ``key``, then wait until ``count`` nodes have (or
    ``seconds`` have passed)."""
    meeting.count(key, 1)
    _until(key, seconds, lambda: True if meeting.count(key) >= count else None)


def measure_pairs(
    meeting: Meeting,
    me: Peer,
    seconds: float,
    large_mib: int,
    *,
    pings: int,
    limit: float,
    arrive: float,
) -> tuple[dict[int, tuple[Peer, Measured]], list[int], int]:
    """Every pair measured (``measure``) in rounds of disjoint pairs, each node the
    sender of its pairs with higher ranks, so no transfer shares a node with another and
    the nodes wait for each other between rounds. This node's pairs (the other node, what
    was measured), the ranks that never came within ``arrive`` seconds, and how many pairs
    failed on any node (each node adds its own before the last wait, so every node reads
    the same count; rank 0, whose store it is, leaves only once every node has read it)."""
    rank, world = me.rank, meeting.world
    server, port = listen(me.ip)
    try:
        meeting.put(f"net/{rank}", {**dataclasses.asdict(me), "port": port})
        came = meeting.all_of("net", range(world), arrive)
        peers = {r: Peer.of(v) for r, v in came.items()}
        silent = sorted(set(range(world)) - set(came))
        step = seconds * (pings + 2) + limit + 5  # the longest one pair can take
        mine: dict[int, tuple[Peer, Measured]] = {}
        for n, pairs in enumerate(all_pairs_rounds(world)):
            for a, b in pairs:
                if a == rank and b in came:
                    target = (peers[b].ip, int(came[b]["port"]))
                    found = measure(me.ip, target, seconds, large_mib, pings=pings, limit=limit)
                    mine[b] = (peers[b], found)
            _all_at(meeting, f"round/{n}", len(came), step)
        meeting.count("failed", sum(found.outcome != "ok" for _, found in mine.values()))
        _all_at(meeting, "measured", len(came), step)  # every listener stays until then
        failed = meeting.count("failed")
        meeting.count("read", 1)
        if rank == 0:  # the store's holder stays until every node has read the count
            _until("read", step, lambda: True if meeting.count("read") >= len(came) else None)
        return mine, silent, failed
    finally:
        server.close()


def leader_line(
    coll: dict[int, dict[str, Any]],
    peers: dict[int, Peer],
    outcomes: dict[Pair, Outcome],
    silent: list[int],
    world: int,
    pair_seconds: float,
) -> str:
    """The leader's verdict when the collectives failed somewhere."""
    first = coll.get(0) or next(iter(coll.values()), {})
    backend = "NCCL" if first.get("backend") == "nccl" else "Gloo"
    stage = first.get("stage", "init")
    why = first.get("error", "failed")
    head = f"the {backend} all-reduce across {world} nodes failed ({stage}: {why})"
    line = sentence(
        list(peers.values()), outcomes, backend="TCP", seconds=pair_seconds, silent=silent
    )
    if line is not None and all(o in ("ok", "large") for o in outcomes.values()):
        return f"{head}: {line}; small messages pass between every pair"
    if line is not None:
        return (
            f"{head}: {line}; every node reaches the leader's port: a firewall between the "
            "nodes' data ports?"
        )
    if stage == "large":
        return (
            f"{head}: the small all-reduce passed and the {first.get('large_mib')} MiB one "
            "did not, while every pair connects over TCP: an MTU mismatch on the data "
            "network?"
        )
    return f"{head}, though every pair of nodes connects over TCP"


class Failed(Exception):
    """The check failed before the nodes could compare notes: its one line, the ranks
    that never arrived (the runtime says why, from the job directory), and what the
    nodes that did used (``runtime.pairs.environment``)."""

    def __init__(self, line: str, missing: Sequence[int] = (), env: str = "") -> None:
        super().__init__(line)
        self.missing = list(missing)
        self.env = env


def this_node(rank: int, environ: Mapping[str, str] = os.environ) -> Peer:
    """This node as it tells the others: its address and interface as the runtime chose
    them (``VLLM_HOST_IP``, ``GLOO_SOCKET_IFNAME``), the prefix length of that address's
    subnet, and the communication variables set here."""
    ip = environ.get("VLLM_HOST_IP", "")
    return Peer(
        rank=rank,
        host=socket.gethostname().split(".")[0],
        ip=ip,
        iface=environ.get("GLOO_SOCKET_IFNAME") or environ.get("NCCL_SOCKET_IFNAME", "?"),
        prefix=prefix_of(ip),
        env=tuple((name, environ[name]) for name in COMM_VARS if name in environ),
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_said(exc)}"


def _said(exc: BaseException) -> str:
    """An exception's text on one line, without the source path Gloo puts first."""
    return SOURCE_REF.sub("", " ".join(str(exc).split()))[:200]


def _joined(args: argparse.Namespace, store: Any, where: str) -> tuple[str, int, int]:
    """This node's keys, rank and world. The leader says them (its job's keys and its
    world) to nodes that plan on their own (``--leader``): their plans need not agree on
    the job id or the number of nodes (a wrapper's worker knows neither), so such a node
    takes the leader's and a rank in the order the nodes came."""
    key = f"{args.job_id}.{args.attempt}"
    if args.rank == 0:
        store.set(MEETING, json.dumps({"key": key, "world": args.world}))
        return key, 0, args.world
    if not args.leader:
        return key, args.rank, args.world

    def told() -> Any:
        return json.loads(store.get(MEETING)) if store.check([MEETING]) else None

    said = _until("the leader's meeting", args.arrive_seconds, told)
    if not isinstance(said, dict):
        raise Failed(f"the leader at {where} said nothing within {args.arrive_seconds:.0f} s")
    key, world = str(said["key"]), int(said["world"])
    rank = int(store.add(f"{key}/joined", 1))
    if rank >= world:
        raise Failed(
            f"more nodes came to the pre-flight at {where} than the leader's {world} "
            "(its --ray_cluster_size, or DP_TOTAL / DP_LOCAL)"
        )
    return key, rank, world


# A connection to the leader's address that fails with one of these will not succeed by
# waiting: no host answers for that address on this node's network (an interface that
# reaches no other node, addresses on different networks). A refusal or a timeout may
# be a leader still starting: those wait for the arrival deadline.
UNREACHABLE = {errno.EHOSTUNREACH: "no route to host", errno.ENETUNREACH: "network unreachable"}
UNREACHABLE_TRIES = 3


def leader_unreachable(ip: str, port: int, seconds: float) -> Failed | None:
    """Whether this node's own address (``VLLM_HOST_IP``, the chosen interface) can reach
    the leader's: None while it can (or may yet: refused, timed out), else the failure
    that says it never will, at once instead of after the arrival deadline, with what
    this node used (its variables; first, a leader's address outside its subnet)."""
    me = this_node(0)
    source, iface = me.ip, me.iface
    why = None
    for _ in range(UNREACHABLE_TRIES):  # a neighbour table still filling fails once
        try:
            with socket.create_connection(
                (ip, port), timeout=min(seconds, 5.0),
                source_address=(source, 0) if source else None,
            ):  # fmt: skip
                return None
        except OSError as exc:
            why = UNREACHABLE.get(exc.errno or 0)
            if why is None:
                return None
    line = (
        f"{me.host} ({source or '?'}, {iface}) cannot reach the leader's pre-flight at "
        f"{ip}:{port}: {why}: the interface {iface} reaches no other node, or the nodes' "
        "addresses are on networks that do not meet (choose the interface every node "
        "shares with --iface)"
    )
    return Failed(line, env=environment([me], leader=ip))


def _meet(args: argparse.Namespace, dist: Any) -> tuple[Any, Meeting, Peer]:
    """The store on the leader (rank 0 opens it), and this node's entry in it."""
    found = _leader(args)
    if found is None:
        raise Failed(f"the leader gave no pre-flight port within {args.arrive_seconds:.0f} s")
    ip, port = found
    if args.rank != 0:
        unreachable = leader_unreachable(ip, port, args.arrive_seconds)
        if unreachable is not None:
            raise unreachable
    try:
        store = dist.TCPStore(
            ip, port, None, args.rank == 0, timedelta(seconds=args.arrive_seconds),
            wait_for_workers=False,
        )  # fmt: skip
    except Exception as exc:  # a taken port, an unreachable leader: say which
        what = "open" if args.rank == 0 else "reach"
        raise Failed(
            f"cannot {what} the pre-flight's rendezvous {ip}:{port}: {_short(exc)}",
            env=environment([this_node(args.rank)], leader="" if args.rank == 0 else ip),
        ) from None
    key, rank, world = _joined(args, store, f"{ip}:{port}")
    store = dist.PrefixStore(key, store)
    meeting = Meeting(store, rank, world)
    me = this_node(rank)
    meeting.put(f"peer/{rank}", dataclasses.asdict(me))
    meeting.count("arrived", 1)
    everyone = _until(
        "the nodes",
        args.arrive_seconds,
        lambda: True if meeting.count("arrived") >= world else None,
    )
    if everyone is None:
        here = meeting.count("arrived")
        missing = [r for r in range(world) if not store.check([f"peer/{r}"])]
        came = [Peer.of(v) for r in range(world) if (v := meeting.get(f"peer/{r}")) is not None]
        meeting.count("left", 1)
        raise Failed(
            f"{here} of {world} nodes reached the pre-flight at {ip}:{port} "
            f"within {args.arrive_seconds:.0f} s",
            missing,
            environment(came, everyone=False),
        )
    return store, meeting, me


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    try:
        import torch.distributed as dist
    except ImportError as exc:
        emit({"ok": True, "skipped": f"torch is not importable here ({exc})"})
        return 0
    try:
        store, meeting, me = _meet(args, dist)
    except Failed as failed:
        emit({"ok": False, "line": str(failed), "missing": failed.missing, "env": failed.env})
        return 1
    rank, world = meeting.rank, meeting.world
    met = time.monotonic()
    peers = {r: Peer.of(v) for r, v in meeting.all_of("peer", range(world), 5).items()}
    mine = collectives(rank, world, store, args.seconds, args.large_mib)
    mine["large_mib"] = args.large_mib
    meeting.put(f"coll/{rank}", mine)
    coll = meeting.all_of("coll", range(world), args.seconds + 10)
    if len(coll) == world and all(c.get("stage") == "done" for c in coll.values()):
        backend = "NCCL" if mine["backend"] == "nccl" else "Gloo"
        slowest = max(float(c.get("large_ms", 0)) for c in coll.values())
        line = (
            f"{backend} all-reduce across {world} nodes: 4 B and {args.large_mib} MiB "
            f"({slowest:.0f} ms), {time.monotonic() - met:.1f} s after all {world} met "
            f"({met - began:.1f} s after start)"
        )
        emit({"ok": True, "line": line})
        return _leave(meeting, rank, 0)
    outcomes, silent = pairs_verdict(meeting, me, peers, args.pair_seconds, args.large_mib)
    if rank == 0:
        silent = sorted(set(silent) | (set(range(world)) - set(coll)))
        line = leader_line(coll, peers, outcomes, silent, world, args.pair_seconds)
        env = environment(list(peers.values()), everyone=len(peers) == world)
        meeting.put("verdict", {"line": line, "env": env})
    else:
        told = _until("the verdict", args.pair_seconds * 3 + 10, lambda: meeting.get("verdict"))
        if isinstance(told, dict):
            line, env = str(told.get("line")), str(told.get("env") or "")
        else:
            line = (
                f"the all-reduce failed here ({mine.get('stage')}: {mine.get('error')}) "
                "and the leader gave no verdict"
            )
            env = environment([me])
    emit({"ok": False, "line": line, "env": env})
    return _leave(meeting, rank, 1)


def _leave(meeting: Meeting, rank: int, code: int) -> int:
    """The leader holds the store: it stays until every node has read what it needs."""
    meeting.count("left", 1)
    if rank == 0:  # those that arrived; one that never did reads nothing
        everyone = meeting.count("arrived")
        _until("the others", 10, lambda: True if meeting.count("left") >= everyone else None)
    return code


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launchers.runtime.collective")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--attempt", type=int, default=0)
    parser.add_argument("--leader-file", default="")
    parser.add_argument("--leader", default="", help="IP:PORT (no leader's file to read)")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--pair-seconds", type=float, required=True)
    parser.add_argument("--large-mib", type=int, required=True)
    parser.add_argument("--arrive-seconds", type=float, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    code = run(arguments(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a failed process group's threads and destructors may hang: go


if __name__ == "__main__":
    main()
