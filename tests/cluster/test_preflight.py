"""The pre-flight of a multi-node job (issue: a broken link named in seconds): before vLLM
loads, every node joins a Gloo all-reduce over the job's interface; when it fails, the
nodes check every pair over TCP and the job fails with one line naming the pair.

- A healthy 3-node job (PP=3 in vLLM's own multi-node mode, of a 3-layer variant of the
  tiny model) passes it on every node, the time in each node's log, and answers.
- A link that carries the rendezvous and not the collectives: nftables in node2 and node3
  drop what each gets from the other (both still reach the leader): the job FAILS within
  60 s of its start naming both nodes and the interface, then what each node used (its
  NCCL/Gloo variables and VLLM_HOST_IP), vLLM never starts, and nothing
  is left; the same job with --no-preflight is not READY long after a healthy one would
  be (the hang the pre-flight turns into a line), and is cancelled.
- An MTU blackhole: node2 and node3 at MTU 9000 behind a bridge port of 1500 (the bridge
  drops their large frames, small ones pass): the job fails naming both and an MTU
  mismatch (the small all-reduce passes, the large one and the pair's large message not).

vLLM's own multi-node mode (`--runtime native`), not Ray: on these CPU-only nodes Ray
places all of vLLM-CPU's pipeline workers on one node (there is no GPU resource to spread
them), so a PP=3 job over Ray never sends a tensor between nodes here; the native mode
runs one rank per node, so its stages and its world group need every pair.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from launchers import waits
from launchers.errors import WaitTimeout

from . import api, bed
from .jobs import cancel_and_check_clean

READY_TIMEOUT, GONE_TIMEOUT = bed.READY_TIMEOUT, bed.GONE_TIMEOUT
FAIL_DEADLINE = 60.0  # the bound: the job fails within a minute of its start
# A healthy 3-node job of the tiny model is READY in ~40 s here: a job not READY after
# this long (twice that, and the pre-flight's whole deadline past it) hangs.
HANG_SECONDS = 90.0

pytestmark = pytest.mark.cluster


def _submit(env: dict[str, str], model: Path, *extra: str, timeout: float = 300) -> dict[str, Any]:
    """A 3-node job, PP=3, one vLLM rank per node (vLLM's own multi-node mode): the
    pipeline's stages and vLLM's world group need every pair of nodes."""
    args = ["--model", str(model), "--nodes", "3", "--gpus-per-node", "1", "--pp", "3",
            "--runtime", "native", "--partition", "debug", "--time", "00:05:00",
            "--via", "sbatch", "--json", *extra, "--", "--max-model-len", "512"]  # fmt: skip
    return dict(api.cli_json(env, "submit", *args, timeout=timeout))


def _endpoint(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / "endpoint.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fails_fast(
    cluster: bed.MiniCluster,
    env: dict[str, str],
    model: Path,
    job_ids: list[str],
    what: str,
    *extra: str,
) -> str:
    """Submit the 3-node job (``extra`` its options): it must end FAILED within
    FAIL_DEADLINE of its submission, before any vLLM started; its failure line."""
    submitted = time.monotonic()
    handle = _submit(env, model, *extra)
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    job_ids.append(job_id)
    state = cluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=FAIL_DEADLINE + 30)
    took = time.monotonic() - submitted
    final = _endpoint(job_dir)
    print(f"{what}: {state} after {took:.1f} s: {final.get('message')}")
    assert (state, final.get("state")) == ("FAILED", "FAILED"), (state, final)
    assert took < FAIL_DEADLINE, f"the job took {took:.0f} s to fail"
    assert not (job_dir / "vllm-0.log").exists(), "vLLM started before the pre-flight passed"
    return str(final.get("message"))


def test_a_healthy_three_node_job_passes_the_preflight_on_every_node(
    minicluster: bed.MiniCluster, env: dict[str, str], three_layers: Path, job_ids: list[str]
) -> None:
    handle = _submit(env, three_layers, "--wait", "--wait-timeout", str(READY_TIMEOUT),
                     timeout=READY_TIMEOUT + 60)  # fmt: skip
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    job_ids.append(job_id)
    nodes = minicluster.job_nodes(job_id)
    for rank in range(3):
        log = (job_dir / f"node-{rank}.log").read_text()
        passed = [line for line in log.splitlines() if "pre-flight passed" in line]
        assert passed and "Gloo all-reduce across 3 nodes" in passed[0], log[-2000:]
        print(passed[0])
    assert api.chat(_endpoint(job_dir), [{"role": "user", "content": "Hi"}])
    cancel_and_check_clean(minicluster, job_id, nodes)


def test_a_link_that_drops_the_collectives_fails_the_job_naming_both_nodes(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    three_layers: Path,
    job_ids: list[str],
    dropped_link: tuple[str, str],
) -> None:
    a, b = dropped_link
    message = _fails_fast(minicluster, env, three_layers, job_ids, "dropped link")
    # the leader's own verdict, or (SLURM ends the step when a rank fails first) a
    # follower's, which is the same line: "node node3 (rank 2) failed: pre-flight: ..."
    assert "pre-flight: the Gloo all-reduce across 3 nodes failed" in message, message
    for node in (a, b):
        assert f"{node} ({minicluster.addresses[node]}, ib0)" in message, message
    # node1 is not blamed: the line names a node as "host (address, interface)" and the
    # other failing pairs as "host-host"; what each node used follows, node1's included
    leader = "node1"
    blamed = f"{leader} ({minicluster.addresses[leader]}, ib0)", f"{leader}-", f"-{leader}"
    assert "cannot reach" in message and not any(b in message for b in blamed), message
    assert "GLOO_SOCKET_IFNAME=ib0" in message, message
    assert f"VLLM_HOST_IP {leader} {minicluster.addresses[leader]}" in message, message
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)


def test_an_mtu_blackhole_fails_the_large_all_reduce_and_is_named(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    three_layers: Path,
    job_ids: list[str],
    mtu_blackhole: tuple[str, str],
) -> None:
    """Jumbo frames dropped between node2 and node3 (``mtu_blackhole``): the small
    all-reduce passes, the large one does not, and the line says an MTU mismatch."""
    a, b = mtu_blackhole
    message = _fails_fast(minicluster, env, three_layers, job_ids, "MTU blackhole")
    assert "the Gloo all-reduce across 3 nodes failed" in message, message
    for node in (a, b):
        assert f"{node} ({minicluster.addresses[node]}, ib0)" in message, message
    assert "a small message passes, a large one does not (an MTU mismatch" in message, message
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)


def test_an_interface_that_reaches_no_other_node_fails_at_once(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    three_layers: Path,
    job_ids: list[str],
    unconnected_iface: str,
) -> None:
    """``--iface ib1`` where ib1 exists on every node and reaches none of the others: the
    followers cannot route to the leader's address, and say so within seconds (they
    waited for the whole 300 s arrival deadline before)."""
    message = _fails_fast(minicluster, env, three_layers, job_ids, "unconnected interface",
                          "--iface", unconnected_iface)  # fmt: skip
    assert "cannot reach the leader's pre-flight at 10.78.0.11:" in message, message
    assert "no route to host" in message and "--iface" in message, message
    assert "GLOO_SOCKET_IFNAME=ib1" in message, message  # what that node used
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)


def test_without_the_preflight_the_same_link_hangs_the_job(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    three_layers: Path,
    job_ids: list[str],
    dropped_link: tuple[str, str],
) -> None:
    handle = _submit(env, three_layers, "--no-preflight")
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    job_ids.append(job_id)
    minicluster.wait_for_state(job_id, ["RUNNING"], timeout=60)
    began = time.monotonic()

    def decided() -> str | None:
        state = _endpoint(job_dir).get("state")
        return str(state) if state in ("READY", "FAILED", "STOPPED") else None

    with pytest.raises(WaitTimeout):
        waits.wait_for(decided, what="READY or FAILED", timeout=HANG_SECONDS)
    state = _endpoint(job_dir).get("state")
    print(f"without the pre-flight: {state} after {time.monotonic() - began:.0f} s")
    assert state in ("WAITING_NODES", "LOADING"), _endpoint(job_dir)
    assert "pre-flight" not in (job_dir / "node-0.log").read_text()
    cancel_and_check_clean(minicluster, job_id, minicluster.nodes)
