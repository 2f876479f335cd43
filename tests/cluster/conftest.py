"""Session fixtures for the cluster test bed: `testenv`, `tiny_model`, `tiny_moe`,
`three_layers`, `minicluster`; and `dropped_link` (a firewall between node2 and node3).

The tests here need root and `ip netns`; on a machine without them they are skipped with the
reason, never passed. See tests/cluster/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from . import bed

CLUSTER_NODES = 3
NFT_TABLE = "vllm_hpc_test"
_ACTIVE: list[bed.MiniCluster] = []


def _require_bed() -> None:
    reason = bed.cannot_host_reason()
    if reason is not None:
        pytest.skip(f"cluster test bed unavailable: {reason}")


@pytest.fixture(scope="session")
def testenv() -> bed.TestEnv:
    """The heavy test virtualenv (built or updated by testenv.sh) and the job environment."""
    _require_bed()
    return bed.make_testenv()


@pytest.fixture(scope="session")
def tiny_model(testenv: bed.TestEnv) -> Path:
    """A tiny random Llama with a local tokenizer, in a directory every node reads."""
    return bed.ensure_tiny_model(testenv, bed.state_dir() / "models" / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_moe(testenv: bed.TestEnv) -> Path:
    """A tiny random Mixtral-style MoE (4 experts, 2 per token), same tokenizer."""
    return bed.ensure_tiny_model(testenv, bed.state_dir() / "models" / "tiny-mixtral", moe=True)


@pytest.fixture(scope="session")
def three_layers(testenv: bed.TestEnv) -> Path:
    """The tiny model with 3 layers: one pipeline stage per node of a 3-node job."""
    out = bed.state_dir() / "models" / "tiny-llama-3"
    return bed.ensure_tiny_model(testenv, out, layers=3)


@pytest.fixture(scope="session")
def minicluster() -> Iterator[bed.MiniCluster]:
    """The mini SLURM cluster: brought up with 3 nodes unless already up with >= 3.

    Torn down at the end of the session when this session brought it up (set
    VLLM_HPC_MC_KEEP=1 to keep it running for inspection).
    """
    _require_bed()
    state = bed.state_dir()
    running = bed.cluster_node_count(state)
    started = False
    if running == 0:
        bed.minicluster_up(state, CLUSTER_NODES)
        started = True
    elif running < CLUSTER_NODES:
        raise bed.BedError(
            f"a mini cluster with {running} nodes is already up in {state}; the tests need "
            f"{CLUSTER_NODES}: run tests/cluster/minicluster.sh down"
        )
    cluster = bed.MiniCluster.attach(state, started_here=started)
    _ACTIVE.append(cluster)
    try:
        yield cluster
    finally:
        _ACTIVE.remove(cluster)
        if started and os.environ.get("VLLM_HPC_MC_KEEP") != "1":
            bed.minicluster_down(state)


@pytest.fixture(autouse=True)
def _cancel_jobs_left_by_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that uses the cluster, cancel the jobs it left running or pending."""
    if "minicluster" not in request.fixturenames:
        yield
        return
    cluster: bed.MiniCluster = request.getfixturevalue("minicluster")
    first = len(cluster.jobs)
    yield
    cluster.cancel_jobs(cluster.jobs[first:])


@pytest.fixture(scope="session")
def env(testenv: bed.TestEnv, minicluster: bed.MiniCluster) -> dict[str, str]:
    """What a user's shell would hold: the test venv's Python, vllm-hpc's bin/ on PATH,
    a job root on the bed's shared storage."""
    root = minicluster.job_root / "vllm-hpc"
    root.mkdir(parents=True, exist_ok=True)
    return {
        **testenv.env,
        "PATH": f"{bed.REPO_ROOT / 'bin'}{os.pathsep}{testenv.env['PATH']}",
        "VLLM_HPC_PYTHON": str(testenv.python),
        "VLLM_HPC_JOB_ROOT": str(root),
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """On a failed cluster test, attach the SLURM logs and job outputs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _ACTIVE and item.get_closest_marker("cluster") is not None:
        text = _ACTIVE[-1].collect_logs()
        dump = bed.state_dir() / "logs" / f"failure-{item.name}.txt"
        dump.write_text(text)
        report.sections.append(("cluster logs", f"(also in {dump})\n{text}"))


@pytest.fixture
def job_ids(minicluster: bed.MiniCluster) -> Iterator[list[str]]:
    """Job ids a test submits: cancelled when it ends, however it ends."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        minicluster.slurm(["scancel", job_id], check=False)


def _nft(cluster: bed.MiniCluster, node: str, *words: str) -> None:
    done = cluster.node_exec(node, ["nft", *words])
    assert done.returncode == 0, f"nft {' '.join(words)} on {node}: {done.stderr}"


@pytest.fixture
def dropped_link(minicluster: bed.MiniCluster) -> Iterator[tuple[str, str]]:
    """node2 and node3 drop every packet from each other (a firewall between them);
    both still reach node1, the leader, where Ray's head and the rendezvous are."""
    assert shutil.which("nft"), "nft is missing: minicluster.sh up installs nftables"
    a, b = "node2", "node3"
    pairs = ((a, minicluster.addresses[b]), (b, minicluster.addresses[a]))
    try:
        for node, other in pairs:
            _nft(minicluster, node, "add", "table", "inet", NFT_TABLE)
            _nft(minicluster, node, "add", "chain", "inet", NFT_TABLE, "input",
                 "{ type filter hook input priority 0 ; policy accept ; }")  # fmt: skip
            _nft(minicluster, node, "add", "rule", "inet", NFT_TABLE, "input",
                 "ip", "saddr", other, "drop")  # fmt: skip
        yield a, b
    finally:
        for node, _ in pairs:
            minicluster.node_exec(node, ["nft", "delete", "table", "inet", NFT_TABLE])


JUMBO, STANDARD = "9000", "1500"


def _mtu(cluster: bed.MiniCluster, node: str, mtu: str, *, outer: bool) -> None:
    """``ib0`` in ``node``, and with ``outer`` its veth's end on the bridge, set to ``mtu``;
    at a jumbo MTU its segmentation offloads go off (on again at 1500): a veth hands the
    bridge 64 KiB TCP super-packets otherwise, which no MTU check drops."""
    offload = "off" if mtu == JUMBO else "on"
    for argv in (["ip", "link", "set", "ib0", "mtu", mtu],
                 ["ethtool", "-K", "ib0", "tso", offload, "gso", offload]):  # fmt: skip
        done = cluster.node_exec(node, argv)
        assert done.returncode == 0, f"{' '.join(argv)} on {node}: {done.stderr}"
    if outer:
        subprocess.run(["ip", "link", "set", f"vh-{node}", "mtu", mtu], check=True)


@pytest.fixture
def mtu_blackhole(minicluster: bed.MiniCluster) -> Iterator[tuple[str, str]]:
    """node2 and node3 both think their link carries 9000-byte frames (ib0 at MTU 9000
    in each, offloads off, so TCP between them agrees on 8960-byte segments and sends
    them as frames of that size), but node3's end of the bridge carries 1500: the bridge
    drops the large frames both ways and says nothing (no ICMP), while small messages
    pass; each still talks to node1 (MTU 1500: TCP sizes its segments to it). A
    jumbo-frame setting missing on one switch port, as sites meet it."""
    a, b = "node2", "node3"
    assert shutil.which("ethtool"), "ethtool is missing: minicluster.sh up installs it"
    try:
        _mtu(minicluster, a, JUMBO, outer=True)
        _mtu(minicluster, b, JUMBO, outer=False)
        yield a, b
    finally:
        for node in (a, b):
            _mtu(minicluster, node, STANDARD, outer=True)


@pytest.fixture
def unconnected_iface(minicluster: bed.MiniCluster) -> Iterator[str]:
    """``ib1`` on every node, 10.78.0.1N/24, that reaches no other node: a veth whose
    peer stays in the same node (an interface that exists everywhere and is not cabled,
    as a wrong ``--iface`` meets it). Gone when the test ends."""
    nodes = list(minicluster.nodes)
    try:
        for n, node in enumerate(nodes, start=1):
            for argv in (["ip", "link", "add", "ib1", "type", "veth", "peer", "name", "ib1p"],
                         ["ip", "addr", "add", f"10.78.0.1{n}/24", "dev", "ib1"],
                         ["ip", "link", "set", "ib1", "up"],
                         ["ip", "link", "set", "ib1p", "up"]):  # fmt: skip
                done = minicluster.node_exec(node, argv)
                assert done.returncode == 0, f"{' '.join(argv)} on {node}: {done.stderr}"
        yield "ib1"
    finally:
        for node in nodes:
            minicluster.node_exec(node, ["ip", "link", "del", "ib1"])
