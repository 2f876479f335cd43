"""Every listener a job opens, accounted for, as a stranger on another node meets it.

For each node of a live job: the TCP and UDP sockets listening in the node's network
namespace (``ss -ltnupH``) and the process behind each; then, from another node (a free
compute node, else the login node), without any credential, each one that is not on
loopback is tried: a request line is sent and the first bytes of the answer read. Each
listener must then be one of the kinds README's "Every listener" table names:

- ``loopback``: reachable from its own node only;
- ``slurm``: SLURM's own (slurmd, slurmstepd, srun's I/O ports), not the job's;
- ``refuses``: HTTP that answers 401/403 without a key or token (vLLM's API, Ray's
  agents with token auth);
- ``ray-grpc``: a gRPC server of a Ray process (GCS, raylet, core workers, the Ray
  client server): Ray token auth (``api.assert_ray_refuses_a_stranger`` shows it refuses);
- ``ray-metrics``: Ray's read-only Prometheus exporters (per-node agent, head's
  dashboard and autoscaler metrics), which Ray binds to every interface;
- ``node-ip``: an unauthenticated upstream socket (vLLM's ZMQ queues, Gloo pairs, the DP
  coordinator) bound to the node's chosen address only, never a wildcard;
- ``front``: a service's front (its proxy answers 404 to a path it does not serve, 401
  to a client route without the key; the service test checks its routes);
- ``tcpstore``: torch.distributed's TCPStore, which binds every interface whatever it is
  told: upstream-open, said so in the table; proven here by reading it as a client.

Anything else (an HTTP route that answers a stranger, a wildcard socket that is none of
these, a UDP listener) fails the test with the list of what was found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass

from . import bed

SLURM_PROCESSES = ("slurmd", "slurmstepd", "srun")
LOOPBACK = ("127.", "::1", "[::1]", "[::ffff:127.")
WILDCARD = ("0.0.0.0", "*", "[::]", "::", "[::ffff:0.0.0.0]")
# Ray's processes (names as ss shows them; under Ray, vLLM's API server and engine are
# Ray drivers with a core worker's gRPC port of their own) and the head's two metrics
# ports (AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT), served by processes named
# "python".
RAY_PROCESSES = ("gcs_server", "raylet", "ray::", "python", "vllm", "VLLM::")
RAY_HEAD_METRICS_PORTS = (44217, 44227)

# Run by the stranger's Python (the test venv's, for torch), one thread per listener.
PROBE = r"""
import json, signal, socket, sys
signal.alarm(60)  # never outlive the test's own wait (a stuck connect, a stuck store)
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

def first_bytes(host, port):
    try:
        sock = socket.create_connection((host, port), timeout=2)
    except OSError as exc:
        return {"kind": "refused", "detail": str(exc)}
    sock.settimeout(2)
    data = b""
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    if data.startswith(b"HTTP/"):
        status = int(data.split(b" ", 2)[1])
        body = data.partition(b"\r\n\r\n")[2]
        metrics = b"# TYPE " in body or b"# HELP " in body
        return {"kind": "http", "status": status, "prometheus": metrics}
    if len(data) >= 9 and data[3] == 4 and data[:3] != b"\xff\x00\x00":
        return {"kind": "grpc"}
    if data[:1] == b"\xff" and data[9:10] == b"\x7f":
        return {"kind": "zmq"}
    return {"kind": "silent" if not data else "other", "detail": data[:40].hex()}

def tcpstore(host, port):
    try:
        from torch.distributed import TCPStore
        store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=3),
                         wait_for_workers=False)
        return store.num_keys() >= 0
    except Exception:
        return False

def answer(target):
    host, port, wildcard = target
    found = first_bytes(host, port)
    if wildcard and found["kind"] in ("silent", "other"):
        found["tcpstore"] = tcpstore(host, port)
    return found

with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(answer, json.loads(sys.argv[1])))))
"""

_SS_LINE = re.compile(
    r"^(?P<proto>tcp|udp)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+\S+\s*(?P<users>.*)$"
)
_USER = re.compile(r'\("(?P<name>[^"]*)",pid=(?P<pid>\d+)')


@dataclass(frozen=True)
class Listener:
    node: str
    proto: str
    address: str  # as ss prints it: 0.0.0.0, *, 10.77.0.11, [::ffff:10.77.0.11]
    port: int
    process: str
    pid: int

    @property
    def where(self) -> str:
        return f"{self.node} {self.proto} {self.address}:{self.port} ({self.process} {self.pid})"


def node_listeners(cluster: bed.MiniCluster, node: str) -> list[Listener]:
    """What listens in ``node``'s network namespace, one row per socket and process."""
    done = cluster.node_exec(node, ["ss", "-ltnupH"], check=True)
    out: list[Listener] = []
    for line in done.stdout.splitlines():
        found = _SS_LINE.match(line.strip())
        if not found:
            continue
        address, _, port = found["local"].rpartition(":")
        users = _USER.findall(found["users"]) or [("?", "0")]
        for name, pid in users:
            out.append(Listener(node, found["proto"], address, int(port), name, int(pid)))
    return out


def _stranger(cluster: bed.MiniCluster, job_nodes: list[str]) -> str | None:
    free = [n for n in cluster.nodes if n not in job_nodes]
    return free[0] if free else None  # None: the login node


def probe(
    cluster: bed.MiniCluster,
    python: str,
    targets: list[tuple[str, int, bool]],
    job_nodes: list[str],
) -> list[dict[str, object]]:
    """Try each (host, port, bound to a wildcard) from another node, without credentials
    (a silent wildcard listener is also read as a torch TCPStore)."""
    if not targets:
        return []
    argv = [python, "-c", PROBE, json.dumps(targets)]
    stranger = _stranger(cluster, job_nodes)
    if stranger is None:
        done = bed.run(argv, env=cluster.env, timeout=120, check=True)
    else:
        done = cluster.node_exec(stranger, argv, timeout=120, check=True)
    answers: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return answers


def kind_of(
    listener: Listener,
    answer: dict[str, object] | None,
    node_ip: str,
    fronts: Collection[tuple[str, int]] = (),
) -> str | None:
    """The table's kind for one listener, or None when it is none of them. ``fronts``:
    (node, port) of service fronts, which answer 404 to a path they do not serve before
    they ask for the key (the caller checks their routes)."""
    if listener.address.startswith(LOOPBACK):
        return "loopback"
    if listener.process in SLURM_PROCESSES:
        return "slurm"
    if listener.proto == "udp" or answer is None:
        return None
    kind = answer.get("kind")
    wildcard = listener.address in WILDCARD
    on_node_ip = listener.address.strip("[]").removeprefix("::ffff:") == node_ip
    if kind == "refused":
        return "refuses"
    if kind == "http":
        if answer.get("status") in (401, 403):
            return "refuses"
        if (listener.node, listener.port) in fronts and answer.get("status") == 404:
            return "front"
        ray = listener.process.startswith("ray::") or (
            listener.process == "python" and listener.port in RAY_HEAD_METRICS_PORTS
        )
        if ray and answer.get("status") == 200 and answer.get("prometheus"):
            return "ray-metrics"
        return None
    if kind == "grpc" and listener.process.startswith(RAY_PROCESSES):
        return "ray-grpc"
    if answer.get("tcpstore"):
        return "tcpstore"
    if on_node_ip and not wildcard:
        return "node-ip"
    return None


def audit(
    cluster: bed.MiniCluster,
    python: str,
    job_nodes: list[str],
    fronts: Collection[tuple[str, int]] = (),
) -> list[tuple[Listener, str | None, dict[str, object] | None]]:
    """Every listener on the job's nodes with its kind (None: unaccounted for)."""
    rows = [item for node in job_nodes for item in node_listeners(cluster, node)]
    tried = [
        r for r in rows if not r.address.startswith(LOOPBACK) and r.process not in SLURM_PROCESSES
    ]
    targets = [(cluster.addresses[r.node], r.port, r.address in WILDCARD) for r in tried]
    answers = probe(cluster, python, targets, job_nodes)
    by_row = dict(zip(tried, answers, strict=True))
    return [
        (r, kind_of(r, by_row.get(r), cluster.addresses[r.node], fronts), by_row.get(r))
        for r in rows
    ]


def assert_every_listener_accounted(
    cluster: bed.MiniCluster,
    python: str,
    job_nodes: list[str],
    fronts: Collection[tuple[str, int]] = (),
) -> dict[str, int]:
    """Fail with the list of listeners that are none of the table's kinds; return how
    many of each kind were found (for the notes)."""
    rows = audit(cluster, python, job_nodes, fronts)
    with (cluster.state / "logs" / "listeners.txt").open("a") as record:  # for the notes
        record.writelines(f"{kind} {r.where}\n" for r, kind, _ in rows)
        record.write("\n")
    unknown = [f"{r.where}: {answer}" for r, kind, answer in rows if kind is None]
    assert not unknown, "listeners not accounted for:\n" + "\n".join(unknown)
    counts: dict[str, int] = {}
    for _, kind, _ in rows:
        counts[str(kind)] = counts.get(str(kind), 0) + 1
    return counts
