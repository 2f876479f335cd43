"""bin/multi-node-serving.sh argument handling, with a stub Python on VLLM_HPC_PYTHON
that prints what it was asked to run (no Ray, no network probing)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

WRAPPER = Path(__file__).resolve().parents[2] / "bin" / "multi-node-serving.sh"
STUB = """#!/bin/bash
if [[ "$1 $2" == "-m launchers.network" ]]; then
  shift 2
  echo "network $*" >> "$STUB_LOG"
  if [[ "$*" == *bad0* ]]; then echo "Error: --iface: no interface named 'bad0'" >&2; exit 2; fi
  echo "VLLM_HOST_IP=${STUB_IP:-10.9.9.9}"
  echo "NCCL_SOCKET_IFNAME=ib0"
  exit 0
fi
python3 -c 'import json, os, sys
env = os.environ.get
print(json.dumps({"argv": sys.argv[1:], "ip": env("VLLM_HOST_IP"),
                  "nccl": env("NCCL_SOCKET_IFNAME")}))' "$@"
"""


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    python = tmp_path / "python"
    python.write_text(STUB)
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SLURM_"))}
    env.update({"VLLM_HPC_PYTHON": str(python), "STUB_LOG": str(tmp_path / "log")})
    return env


def wrap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WRAPPER), *args], env=env, capture_output=True, text=True, check=False
    )


def test_leader_documented_interface(stub: dict[str, str]) -> None:
    done = wrap(
        stub,
        "leader",
        "--ray_port=6379",
        "--ray_cluster_size=2",
        "--node-ip-address=172.17.1.1",
        "--num-gpus=4",
        "--temp-dir=/tmp/ray",
        "--include-dashboard=False",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["argv"] == [
        "-m",
        "launchers.node",
        "leader",
        "--ray-port",
        "6379",
        "--cluster-size",
        "2",
        "--include-dashboard",
        "False",
        "--node-ip-address",
        "10.9.9.9",
        "--num-gpus",
        "4",
        "--temp-dir",
        "/tmp/ray",
    ]
    assert Path(stub["STUB_LOG"]).read_text() == "network --node-ip-address 172.17.1.1\n"


def test_worker_and_forwarded_ray_options(stub: dict[str, str]) -> None:
    done = wrap(
        stub,
        "worker",
        "--ray_address=172.17.1.1",
        "--ray_port",
        "6380",
        "--num-gpus=4",
        "--object-store-memory=1000000",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["argv"][2:7] == ["worker", "--ray-address", "172.17.1.1", "--ray-port", "6380"]
    assert "--ray-arg=--object-store-memory=1000000" in out["argv"]
    assert out["ip"] == "10.9.9.9" and out["nccl"] == "ib0"


def test_leader_with_model_and_vllm_args(stub: dict[str, str]) -> None:
    done = wrap(
        stub,
        "leader",
        "--ray_cluster_size=2",
        "--model=llama-3.1-70b-instruct",
        "--port=8001",
        "--iface=ib1",
        "--",
        "--enable-prefix-caching",
    )
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)["argv"]
    assert argv[-2:] == ["--", "--enable-prefix-caching"]
    assert argv[argv.index("--model") : argv.index("--model") + 2] == [
        "--model",
        "llama-3.1-70b-instruct",
    ]
    assert Path(stub["STUB_LOG"]).read_text() == "network --iface ib1\n"


def test_slurm_mode(stub: dict[str, str]) -> None:
    done = wrap(stub, "slurm", "--plan=/jobs/1/plan.json")
    assert json.loads(done.stdout)["argv"] == [
        "-m",
        "launchers.node",
        "run",
        "--plan",
        "/jobs/1/plan.json",
    ]


def test_help(stub: dict[str, str]) -> None:
    done = wrap(stub, "-h")
    assert done.returncode == 0 and "Usage:" in done.stdout and "leader" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (),
            "Error: missing mode (start with leader, worker or slurm; see "
            "multi-node-serving.sh -h)",
        ),
        (("boss",), "Error: unknown mode 'boss' (use leader, worker or slurm)"),
        (
            ("worker",),
            "Error: worker needs --ray_address=LEADER_IP (the leader node's IP address; see "
            "multi-node-serving.sh -h)",
        ),
        (
            ("leader", "--ray_port=abc"),
            "Error: --ray_port must be a port number 1024-65535, e.g. 6379 (got 'abc')",
        ),
        (
            ("leader", "--ray_port=70000"),
            "Error: --ray_port must be a port number 1024-65535, e.g. 6379 (got '70000')",
        ),
        (
            ("leader", "--ray_cluster_size=0"),
            "Error: --ray_cluster_size must be a positive number of nodes, e.g. "
            "--ray_cluster_size=2 (got '0')",
        ),
        (
            ("leader", "--num-gpus=four"),
            "Error: --num-gpus must be a number (got 'four'; give this node's GPU count, e.g. "
            "--num-gpus=4)",
        ),
        (
            ("leader", "stray"),
            "Error: unexpected argument 'stray' (write options as --name=value and vLLM "
            "arguments after --; see multi-node-serving.sh -h)",
        ),
        (
            ("leader", "--ray_address=1.2.3.4"),
            "Error: --ray_address belongs on workers (drop it: the leader starts the Ray head)",
        ),
        (
            ("worker", "--ray_address=1.2.3.4", "--model=x"),
            "Error: --model belongs on the leader (drop it here; give it to "
            "multi-node-serving.sh leader)",
        ),
        (
            ("slurm",),
            "Error: slurm mode needs --plan=FILE (write one with: vllm-hpc plan --out FILE; "
            "see multi-node-serving.sh -h)",
        ),
        (("leader", "--iface=bad0"), "Error: --iface: no interface named 'bad0'"),
    ],
)
def test_bad_arguments(stub: dict[str, str], args: tuple[str, ...], message: str) -> None:
    done = wrap(stub, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == message
    assert done.stdout == ""
