"""Bad input at each of the four doors: CLI flags, registry files, the sbatch templates'
environment and the bash wrappers.

Every case must give exit status 2, exactly one line on stderr naming the field (or
variable) and the fix, no traceback, and nothing submitted or started: the SLURM seam
records any submission, and fake ``srun``, ``vllm-hpc node run``, ``ray`` and ``vllm``
record any start.
Property tests check that the layout and registry validators either accept their input
or raise the project's one-line ``InputError``, never another exception.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launchers.errors import InputError
from launchers.input import probe as probe_module
from launchers.input.probe import VllmProbe
from launchers.input.registry import merge_layers, parse_registry_text
from launchers.input.resolve import validated
from launchers.plan.layout import LayoutRequest, check_layout, resolve_layout
from launchers.spec.config import ModelArch, ModelSpec, SiteSpec

from .test_cli import run

REPO = Path(__file__).resolve().parents[2]


def assert_one_clear_line(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, (code, out, err)
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), err
    assert "Traceback" not in err, err
    assert err.startswith(expected), err


# ---------------------------------------------------------------------------------------
# Door 1: CLI flags. (args as shell words, extra env, expected start of the stderr line);
# "{model}", "{tmp}", "{big}", "{kv4}", "{file}", "{badjson}" are filled in by the test.

BAD_FLAGS = [
    pytest.param(
        "submit",
        {},
        "Error: --model: no model given (pass --model NAME or set MODEL_NAME; "
        "`vllm-hpc models list` shows names)",
        id="no-model",
    ),
    pytest.param(
        "submit -m llama-3-70b",
        {},
        "Error: model: unknown model 'llama-3-70b' (did you mean llama-3.1-70b-instruct? see "
        "`vllm-hpc models list`, or pass a path or Hugging Face id containing '/')",
        id="unknown-model",
    ),
    pytest.param(
        "submit -m llama-3-70b",
        {},
        "Error: model: unknown model 'llama-3-70b' (did you mean",
        id="unknown-model-without-dry-run",
    ),
    pytest.param(
        "submit",
        {"MODEL_NAME": "gpt4"},
        "Error: model: unknown model 'gpt4' (see `vllm-hpc models list`, or pass a path "
        "or Hugging Face id containing '/')",
        id="unknown-model-from-env",
    ),
    pytest.param(
        "submit -m /nonexistent/models/llama",
        {},
        "Error: model: /nonexistent/models/llama does not exist (give a model directory on "
        "shared storage, a Hugging Face id (org/name) or a registry id (`vllm-hpc models list`))",
        id="nonexistent-model-path",
    ),
    pytest.param(
        "submit -m ./no-such-model-dir",
        {},
        "Error: model: ./no-such-model-dir does not exist (give a model directory",
        id="nonexistent-relative-model-path",
    ),
    pytest.param(
        "submit -m {file}",
        {},
        "Error: model: {file} is not a directory (point --model at the model directory that "
        "holds config.json)",
        id="model-path-is-a-file",
    ),
    pytest.param(
        "submit -m {tmp}",
        {},
        "Error: model: {tmp} has no config.json (point --model at a Hugging Face model dir)",
        id="model-dir-without-config",
    ),
    pytest.param(
        "submit -m {badjson}",
        {},
        "Error: model: {badjson}/config.json:1: not valid JSON: Expecting property name "
        "enclosed in double quotes (fix or re-download the model's config.json)",
        id="model-config-not-json",
    ),
    pytest.param(
        "submit -m a/b --nodes 0",
        {},
        "Error: Invalid value for '--nodes' / '-N': 0 is not in the range x>=1. "
        "(see 'vllm-hpc submit --help')",
        id="zero-nodes",
    ),
    pytest.param(
        "submit -m a/b --nodes two",
        {},
        "Error: Invalid value for '--nodes' / '-N': 'two' is not a valid integer range. "
        "(see 'vllm-hpc submit --help')",
        id="nodes-not-int",
    ),
    pytest.param(
        "submit -m a/b --tp two",
        {},
        "Error: Invalid value for '--tp': 'two' is not a valid integer range. "
        "(see 'vllm-hpc submit --help')",
        id="tp-not-int",
    ),
    pytest.param(
        "submit -m a/b --gpu-memory-gib 0",
        {},
        "Error: Invalid value for '--gpu-memory-gib': 0.0 is not in the range x>0. "
        "(see 'vllm-hpc submit --help')",
        id="zero-gpu-memory",
    ),
    pytest.param(
        "submit -m a/b --frobnicate",
        {},
        "Error: No such option '--frobnicate'. Did you mean '--job-name'? (see 'vllm-hpc "
        "submit --help')",
        id="unknown-option",
    ),
    pytest.param(
        "submit -m a/b --executor k8s",
        {},
        "Error: Invalid value for '--executor': 'k8s' is not one of 'slurm', 'local'. "
        "(see 'vllm-hpc submit --help')",
        id="bad-executor",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --tp 3 --nodes 2 --gpus-per-node 4",
        {},
        "Error: layout: TP=3 x PP=1 x DP=1 = 3 GPUs, but the allocation is 2 node(s) x "
        "4 GPU(s) = 8 (request 3 GPUs in all (nodes x gpus-per-node))",
        id="layout-mismatch",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --nodes 4",
        {},
        "Error: layout: TP=4 x PP=2 x DP=1 = 8 GPUs, but the allocation is 4 node(s) x "
        "4 GPU(s) = 16 (make the product 16 (e.g. --pp 4) or request 8 GPUs in all)",
        id="registry-layout-vs-nodes",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --nodes 4",
        {},
        "Error: layout: TP=4 x PP=2 x DP=1 = 8 GPUs, but the allocation is 4 node(s)",
        id="registry-layout-vs-nodes-without-dry-run",
    ),
    pytest.param(
        "submit -m a/b --tp 2 --pp 2 --nodes 1 -G 2",
        {},
        "Error: layout: TP=2 x PP=2 x DP=1 = 4 GPUs, but the allocation is 1 node(s) x "
        "2 GPU(s) = 2 (make the product 2 (e.g. --pp 1) or request 4 GPUs in all)",
        id="more-gpus-than-allocated",
    ),
    pytest.param(
        "submit -m a/b --tp 8 --nodes 2 --gpus-per-node 4",
        {},
        "Error: tp: TP=8 is larger than the 4 GPUs of one node (use --tp 4 --pp 2, or "
        "--allow-cross-node-tp if the nodes share InfiniBand/RoCE)",
        id="cross-node-tp",
    ),
    pytest.param(
        "submit -m a/b --tp 4 --pp 3 --nodes 4 -G 3 --allow-cross-node-tp",
        {},
        "Error: tp: cross-node TP=4 must be a multiple of the 3 GPUs per node (use a TP that "
        "is a multiple of 3, or --tp 3 with PP across the nodes)",
        id="cross-node-tp-not-a-multiple",
    ),
    pytest.param(
        "submit -m a/b --tp 2 --dp 3 --nodes 2 -G 3",
        {},
        "Error: tp: TP=2 does not divide the 3 GPUs of a node (choose a TP that divides "
        "GPUs per node)",
        id="tp-not-dividing-node",
    ),
    pytest.param(
        "submit -m a/b --pp 2 --dp 3 --nodes 2 -G 3",
        {},
        "Error: dp: DP=3 cannot be spread evenly over 2 nodes (use a DP that is a multiple of 2)",
        id="dp-uneven",
    ),
    pytest.param(
        "submit -m llama-3.2-3b-instruct --ep",
        {},
        "Error: ep: expert parallel needs DP or TP > 1 to have something to spread "
        "experts over (add --dp N (usually one rank per GPU))",
        id="ep-alone",
    ),
    pytest.param(
        "submit -m {model} --tp 8",
        {},
        "Error: tp: 4 attention heads cannot be split TP=8 ways (use --tp 4 (divides "
        "both the heads and the GPUs per node))",
        id="tp-vs-heads",
    ),
    pytest.param(
        "submit -m {kv4} --tp 3 --gpus-per-node 3",
        {},
        "Error: tp: 4 KV heads cannot be split TP=3 ways (use a TP that divides the KV heads)",
        id="tp-vs-kv-heads",
    ),
    pytest.param(
        "submit -m {model} --pp 3",
        {},
        "Error: pp: PP=3 is more than the model's 2 layers (use --pp 2 or fewer)",
        id="pp-vs-layers",
    ),
    pytest.param(
        "submit -m {model} --dp 2 --ep",
        {},
        "Error: ep: expert parallel needs an MoE model; llama has no experts (drop --ep)",
        id="ep-dense-model",
    ),
    pytest.param(
        "submit -m {big} --gpu-memory-gib 24",
        {},
        "Error: memory: needs ~",
        id="model-too-big",
    ),
    pytest.param(
        "submit -m a/b --port 0",
        {},
        "Error: --port: 0 is not a usable port (choose a port from 1024 to 65535, e.g. 8000)",
        id="port-zero",
    ),
    pytest.param(
        "submit -m a/b --port 80",
        {},
        "Error: --port: 80 is not a usable port (choose a port from 1024 to 65535, e.g. 8000)",
        id="privileged-port",
    ),
    pytest.param(
        "submit -m a/b --port 70000",
        {},
        "Error: --port: 70000 is not a usable port (choose a port from 1024 to 65535, e.g. 8000)",
        id="port-too-high",
    ),
    pytest.param(
        "submit -m a/b --port http",
        {},
        "Error: Invalid value for '--port': 'http' is not a valid integer. "
        "(see 'vllm-hpc submit --help')",
        id="port-not-int",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --port 12000",
        {},
        "Error: --port: port 12000 is inside Ray's worker port range 10002-19999 "
        "(choose a port outside it, e.g. 8000 or 6379)",
        id="port-in-ray-range",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --ray-port 19999",
        {},
        "Error: --ray-port: port 19999 is inside Ray's worker port range 10002-19999 "
        "(choose a port outside it, e.g. 8000 or 6379)",
        id="ray-port-in-ray-range",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --ray-port 70000",
        {},
        "Error: --ray-port: 70000 is not a usable port (choose a port from 1024 to 65535, "
        "e.g. 6379)",
        id="ray-port-too-high",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --ray-port 8000",
        {},
        "Error: --ray-port: port 8000 is also used for --port (give --ray-port another port)",
        id="port-clash",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --runtime native --port 29501",
        {},
        "Error: master port: port 29501 is also used for --port (give --port another port)",
        id="port-clash-native-master-port",
    ),
    pytest.param(
        "submit -m a/b --dp 2 --nodes 2 --dp-rpc-port 80",
        {},
        "Error: --dp-rpc-port: 80 is not a usable port (choose a port from 1024 to 65535, "
        "e.g. 13345)",
        id="dp-rpc-port-privileged",
    ),
    pytest.param(
        "submit -m a/b --iface 'ib0 eth0'",
        {},
        "Error: --iface: 'ib0 eth0' is not a network interface name (use a name such as ib0 "
        "or eth0 (`ip -br link` on a node lists them), or leave --iface out to detect the "
        "fast network)",
        id="bad-interface-name",
    ),
    pytest.param(
        "submit -m a/b --iface infiniband-fabric0",
        {},
        "Error: --iface: 'infiniband-fabric0' is not a network interface name",
        id="interface-name-too-long",
    ),
    pytest.param(
        "submit -m a/b --iface ''",
        {},
        "Error: --iface: '' is not a network interface name",
        id="empty-interface-name",
    ),
    pytest.param(
        "submit -m a/b --time 4h",
        {},
        "Error: --time: '4h' is not a SLURM time (use MM, HH:MM:SS or D-HH:MM:SS) (got '4h')",
        id="bad-time",
    ),
    pytest.param(
        "submit -m a/b --job-name 'My Job'",
        {},
        "Error: --job-name: 'My Job' is not a job name (lowercase letters, "
        "digits, '.', '_', '-') (got 'My Job')",
        id="bad-job-name",
    ),
    pytest.param(
        "submit -m a/b --job-root jobs/here",
        {},
        "Error: --job-root: 'jobs/here' must be an absolute path (got 'jobs/here')",
        id="relative-job-root",
    ),
    pytest.param(
        "submit -m a/b --container docker:vllm",
        {},
        "Error: --container: 'docker:vllm' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="bad-container",
    ),
    pytest.param(
        "submit -m a/b --container apptainer:",
        {},
        "Error: --container: 'apptainer:' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="container-without-image",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --nodes 2 --gpus-per-node 4 --runtime native "
        "--vllm-version 0.10.2 --dry-run",
        {},
        "Error: vllm_version: multi-node without Ray (--runtime native) needs vLLM >= "
        "0.11.1, the target is 0.10.2 (upgrade vLLM to 0.11.1 or newer, or set "
        "vllm_version if the nodes have it)",
        id="native-on-old-vllm",
    ),
    pytest.param(
        "submit -m a/b --dp 2 --nodes 2 --vllm-version 0.8.0",
        {},
        "Error: vllm_version: multi-node data parallel needs vLLM >= 0.9.0, the target is "
        "0.8.0 (upgrade vLLM to 0.9.0 or newer, or set vllm_version if the nodes have it)",
        id="multi-node-dp-on-old-vllm",
    ),
    pytest.param(
        "submit -m a/b --vllm-version latest",
        {},
        "Error: vllm_version: 'latest' is not a version (use a version such as 0.11.1)",
        id="bad-vllm-version",
    ),
    pytest.param(
        "submit -m a/b --runtime mpi",
        {},
        "Error: Invalid value for '--runtime': 'mpi' is not one of 'auto', 'ray', "
        "'native'. (see 'vllm-hpc submit --help')",
        id="bad-runtime",
    ),
    pytest.param(
        "submit -m a/b --tp 4 --token-parallel-size 2 -G 8",
        {},
        "Error: token_parallel_size: the nodes' vLLM 0.32.0 (/opt/venv/bin/python) has no "
        "--enable-token-parallel / --token-parallel-size: upstream vLLM has no token "
        "parallelism (only research builds such as github.com/susavlsh10/vllm-tknp have it: "
        "install one for the nodes' Python, else drop --token-parallel-size)",
        id="token-parallel",
    ),
    pytest.param(
        "submit -m a/b --tp 4 --token-parallel-size 2 -G 8",
        {},
        "Error: token_parallel_size: the nodes' vLLM 0.32.0 (/opt/venv/bin/python) has no "
        "--enable-token-parallel / --token-parallel-size: upstream vLLM has no token",
        id="token-parallel-without-dry-run",
    ),
    pytest.param(
        "submit -m a/b -- --token-parallel-size 2",
        {},
        "Error: vllm serve arguments: --token-parallel-size 2 conflicts with the plan, which "
        "leaves --token-parallel-size out here (use --token-parallel-size before `--` "
        "(registry: token_parallel_size): it is checked against the GPUs and the nodes' vLLM)",
        id="extra-args-token-parallel",
    ),
    pytest.param(
        "submit -m a/b --dp 2 -G 2 --ep --all2all-backend pplx",
        {},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all-pplx",
    ),
    pytest.param(
        "submit -m a/b --dp 2 -G 2 --ep --all2all-backend naive",
        {},
        "Error: all2all_backend: 'naive' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all-naive",
    ),
    pytest.param(
        "submit -m a/b --all2all-backend fastest",
        {},
        "Error: all2all_backend: unknown backend 'fastest' (choose one of "
        "allgather_reducescatter, deepep_high_throughput,",
        id="unknown-all2all",
    ),
    pytest.param(
        "submit -m a/b --api-key-file /nonexistent/key",
        {},
        "Error: --api-key-file: /nonexistent/key is not a file (write the key into a "
        "file readable only by you (chmod 600))",
        id="missing-key-file",
    ),
    pytest.param(
        "submit -m a/b --no-api-key --api-key-file {file}",
        {},
        "Error: --no-api-key: cannot be combined with --api-key-file (drop one)",
        id="no-api-key-with-key-file",
    ),
    pytest.param(
        "submit -m a/b --registry /nonexistent.yaml",
        {},
        "Error: registry: /nonexistent.yaml does not exist (check the --registry / env path)",
        id="missing-registry",
    ),
    pytest.param(
        "submit -m a/b -- --tensor-parallel-size 4",
        {},
        "Error: vllm serve arguments: --tensor-parallel-size 4 would override the plan's "
        "--tensor-parallel-size 1 (use --tp (registry: tensor_parallel_size): it is checked "
        "against the GPUs)",
        id="extra-args-override-tp",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --nodes 2 --gpus-per-node 4 -- -pp=4",
        {},
        "Error: vllm serve arguments: -pp=4 would override the plan's "
        "--pipeline-parallel-size 2 (use --pp",
        id="extra-args-override-pp",
    ),
    pytest.param(
        "submit -m a/b -- --port 9000",
        {},
        "Error: vllm serve arguments: --port 9000 would override the plan's --port 8000 "
        "(use --port before `--`)",
        id="extra-args-override-port",
    ),
    pytest.param(
        "submit -m a/b -- --host 10.9.9.9",
        {},
        "Error: vllm serve arguments: --host 10.9.9.9 would override the plan's --host "
        "0.0.0.0 (use --host before `--`)",
        id="extra-args-override-host",
    ),
    pytest.param(
        "submit -m a/b -- --api-key s3cret",
        {},
        "Error: vllm serve arguments: --api-key would put the API key on a command line "
        "(write the key into a file (chmod 600) and pass --api-key-file FILE)",
        id="extra-args-api-key",
    ),
    pytest.param(
        "submit -m llama-3.1-70b-instruct --nodes 2 --gpus-per-node 4 -- --headless",
        {},
        "Error: vllm serve arguments: --headless conflicts with the plan, which leaves "
        "--headless out here (drop it: nodes after the first run headless)",
        id="extra-args-headless",
    ),
    pytest.param(
        "plan -m nope",
        {},
        "Error: model: unknown model 'nope' (see `vllm-hpc models list`",
        id="plan-unknown-model",
    ),
    pytest.param(
        "plan -m a/b --out {file}/plan.json",
        {},
        "Error: --out: cannot write {file}/plan.json: Not a directory (choose a writable path)",
        id="plan-out-not-writable",
    ),
    pytest.param(
        "render sbatch -m a/b -o {file}/job.sbatch",
        {},
        "Error: --output: cannot write {file}/job.sbatch: Not a directory (choose a writable path)",
        id="render-output-not-writable",
    ),
    pytest.param(
        "render sbatch -m llama-3.1-70b-instruct --nodes 4",
        {},
        "Error: layout: TP=4 x PP=2 x DP=1 = 8 GPUs, but the allocation is 4 node(s)",
        id="render-sbatch-bad-layout",
    ),
    pytest.param(
        "render k8s -m a/b --port 1",
        {},
        "Error: --port: 1 is not a usable port (choose a port from 1024 to 65535, e.g. 8000)",
        id="render-k8s-bad-port",
    ),
    pytest.param(
        "submit -m a/b --host ib0",
        {},
        "Error: --host: 'ib0' is not an address (give 0.0.0.0 (every interface), node (the "
        "interface vllm-hpc picks), 127.0.0.1, or an IP address of the leader)",
        id="submit-host-not-an-address",
    ),
    pytest.param(
        "submit -m a/b -N 2 -G 1 --dp-backend ray",
        {},
        "Error: --dp-backend: ray places data-parallel ranks, but the layout has none (add "
        "--dp N (N > 1) across the nodes, or drop --dp-backend)",
        id="dp-backend-ray-without-dp",
    ),
    pytest.param(
        "submit -m a/b -N 2 -G 1 --dp 2 -- --data-parallel-backend ray",
        {},
        "Error: vllm serve arguments: --data-parallel-backend ray conflicts with the plan, "
        "which leaves --data-parallel-backend out here (use --dp-backend)",
        id="dp-backend-after-dashes",
    ),
    pytest.param(
        "submit -m a/b -N 2 -G 1 --dp 2 --dp-backend ray --vllm-version 0.9.2",
        {},
        "Error: vllm_version: --dp-backend ray needs vLLM >= 0.10.0, the target is 0.9.2 "
        "(upgrade vLLM to 0.10.0 or newer, or set vllm_version if the nodes have it)",
        id="dp-backend-ray-old-vllm",
    ),
    pytest.param(
        "models show nope",
        {},
        "Error: model: unknown model 'nope' (see `vllm-hpc models list`, or pass a path "
        "or Hugging Face id containing '/')",
        id="models-show-unknown",
    ),
    pytest.param(
        "models show",
        {},
        "Error: Missing argument 'NAME'. (see 'vllm-hpc models show --help')",
        id="models-show-no-name",
    ),
]


@pytest.fixture
def upstream_vllm(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nodes' vLLM, as the capability probe would find an upstream 0.32 (no token
    parallelism): the interpreters it was asked about are recorded."""
    asked: list[str] = []

    def probe(python: str, **_: object) -> VllmProbe:
        asked.append(python)
        return VllmProbe("0.32.0", frozenset({"--tensor-parallel-size", "--port"}))

    monkeypatch.setattr(probe_module, "probe_vllm_flags", probe)
    return asked


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every way the CLI submits or starts a job, recorded instead of done."""
    from launchers.submit import slurm

    calls: list[str] = []
    for name in ("submit_submitit", "submit_sbatch", "start_local"):
        monkeypatch.setattr(slurm, name, lambda *a, _n=name, **k: calls.append(_n))
    yield calls


@pytest.mark.parametrize(("args", "env", "expected"), BAD_FLAGS)
def test_bad_flag_is_one_clear_line(
    args: str,
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    submissions: list[str],
    upstream_vllm: list[str],
) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    plain = tmp_path / "a-file"
    plain.write_text("not a model\n")
    badjson = tmp_path / "bad-json-model"
    badjson.mkdir()
    (badjson / "config.json").write_text("{num_attention_heads: 4}\n")
    big = tiny_model(
        hidden_size=8192,
        intermediate_size=28672,
        num_attention_heads=64,
        num_key_value_heads=8,
        num_hidden_layers=80,
        vocab_size=128256,
    )
    values = {
        "{model}": str(tiny_model()),
        "{kv4}": str(tiny_model(num_attention_heads=12, num_key_value_heads=4)),
        "{big}": str(big),
        "{tmp}": str(empty),
        "{file}": str(plain),
        "{badjson}": str(badjson),
    }

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    jobs = tmp_path / "jobs"
    env = {"VLLM_HPC_JOB_ROOT": str(jobs), **env}
    code, out, err = run([fill(a) for a in shlex.split(args)], {k: fill(v) for k, v in env.items()})
    assert_one_clear_line(code, out, err, fill(expected))
    # Bad input stops before anything is submitted or written (the cases submit for real,
    # without --dry-run, so this could fail).
    assert submissions == []
    assert not list(jobs.glob("*/plan.json"))


# ---------------------------------------------------------------------------------------
# Door 2: registry files. (file text, args, env, expected start of the line); "{reg}" is
# the file's path. Without args: `vllm-hpc submit -m x --registry FILE --dry-run`.

BAD_REGISTRIES = [
    pytest.param(
        "models:\n  x:\n    model: a/b\n   bad: [\n",
        None,
        {},
        "Error: {reg}:4: YAML syntax error:",
        id="yaml-syntax",
    ),
    pytest.param(
        "models:\n\tx:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}:2: YAML syntax error: found character that cannot start any token "
        "(fix the YAML at that line)",
        id="yaml-tab",
    ),
    pytest.param(
        'models:\n  x:\n    model: "a/b\n',
        None,
        {},
        "Error: {reg}:4: YAML syntax error: found unexpected end of stream",
        id="yaml-unclosed-quote",
    ),
    pytest.param(
        "models:\n  x: *base\n",
        None,
        {},
        "Error: {reg}:2: YAML syntax error: found undefined alias",
        id="yaml-undefined-alias",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max_num_seqs: 4\n    max_num_seqs: 8\n",
        None,
        {},
        "Error: {reg}:5: duplicate key 'max_num_seqs' (keep one: YAML would silently use the last)",
        id="duplicate-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor-parallel-size: 2\n    tensor_parallel_size: 4\n",
        None,
        {},
        "Error: {reg}: models.x: 'tensor-parallel-size' and 'tensor_parallel_size' are the "
        "same key (keep one of them)",
        id="same-key-two-spellings",
    ),
    pytest.param(
        b"models:\n  x:\n    model: caf\xe9/b\n",
        None,
        {},
        "Error: registry: {reg} is not UTF-8 text (byte 27) (save it as UTF-8)",
        id="not-utf8",
    ),
    pytest.param(
        "- llama\n- mistral\n",
        None,
        {},
        "Error: {reg}: the top level must be a mapping with 'site' and/or 'models'",
        id="top-level-list",
    ),
    pytest.param(
        "model:\n  x:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}: unknown top-level key 'model' (valid keys: site, models)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tp: 2\n",
        None,
        {},
        "Error: {reg}: models.x: unknown key 'tp' (valid keys: model, description, "
        "served_model_name, dtype, tensor_parallel_size,",
        id="unknown-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max-model-length: 4096\n",
        None,
        {},
        "Error: {reg}: models.x: unknown key 'max_model_length' (did you mean "
        "'max_model_len'? valid keys: model,",
        id="unknown-key-close-match",
    ),
    pytest.param(
        "site:\n  partitions: gpu\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site: unknown key 'partitions' (did you mean 'partition'? valid "
        "keys: partition,",
        id="site-unknown-key",
    ),
    pytest.param(
        "models: [llama, mistral]\n",
        None,
        {},
        "Error: {reg}: 'models' must be a mapping from model id to settings",
        id="models-not-a-mapping",
    ),
    pytest.param(
        "models:\n  x: a/b\n",
        None,
        {},
        "Error: {reg}: models.x must be a mapping of settings",
        id="entry-not-a-mapping",
    ),
    pytest.param(
        "models:\n  Llama3:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}: model id 'Llama3' is not valid (use lowercase letters, digits, '.', "
        "'_' and '-')",
        id="bad-model-id",
    ),
    pytest.param(
        "models:\n  x: {}\n",
        None,
        {},
        "Error: {reg}: models.x: required key 'model' is missing (add it (the model path or "
        "Hugging Face id))",
        id="empty-entry",
    ),
    pytest.param(
        "models:\n  x:\n    max_num_seqs: 4\n",
        None,
        {},
        "Error: {reg}: models.x: required key 'model' is missing (add it (the model path or "
        "Hugging Face id))",
        id="missing-model",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max_model_len: long\n",
        None,
        {},
        "Error: {reg}: models.x.max_model_len: Input should be a valid integer, "
        "unable to parse string as an integer (got 'long')",
        id="wrong-type-int",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor_parallel_size: 2.5\n",
        None,
        {},
        "Error: {reg}: models.x.tensor_parallel_size: Input should be a valid integer, got "
        "a number with a fractional part (got 2.5)",
        id="wrong-type-fraction",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    trust_remote_code: maybe\n",
        None,
        {},
        "Error: {reg}: models.x.trust_remote_code: Input should be a valid boolean, unable "
        "to interpret input (got 'maybe')",
        id="wrong-type-bool",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    extra_args: --seed 1\n",
        None,
        {},
        "Error: {reg}: models.x.extra_args: give the arguments as a list, e.g. ['--seed', "
        "'1'], not as one string (got '--seed 1')",
        id="extra-args-as-string",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor_parallel_size: 0\n",
        None,
        {},
        "Error: {reg}: models.x.tensor_parallel_size: Input should be greater than or equal "
        "to 1 (got 0)",
        id="zero-tp",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    gpu_memory_utilization: 1.5\n",
        None,
        {},
        "Error: {reg}: models.x.gpu_memory_utilization: Input should be less than or equal "
        "to 1 (got 1.5)",
        id="utilization-above-one",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    dtype: int4\n",
        None,
        {},
        "Error: {reg}: models.x.dtype: Input should be 'auto', 'bfloat16', 'float16', "
        "'half', 'float32' or 'float' (got 'int4')",
        id="bad-dtype",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    runtime: mpi\n",
        None,
        {},
        "Error: {reg}: models.x.runtime: Input should be 'auto', 'ray' or 'native' (got 'mpi')",
        id="bad-runtime",
    ),
    pytest.param(
        'models:\n  x:\n    model: ""\n',
        None,
        {},
        "Error: {reg}: models.x.model: String should have at least 1 character (got '')",
        id="empty-model",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    env:\n      1BAD: x\n",
        None,
        {},
        "Error: {reg}: models.x.env: '1BAD' is not a valid environment variable name",
        id="bad-env-name",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    env:\n      NCCL_DEBUG:\n",
        None,
        {},
        "Error: {reg}: models.x.env.NCCL_DEBUG: the value has no value (give one value, "
        'quoted, e.g. NCCL_DEBUG: "1")',
        id="env-value-missing",
    ),
    pytest.param(
        "site:\n  env:\n    CUDA_VISIBLE_DEVICES: [0, 1]\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.env.CUDA_VISIBLE_DEVICES: the value is a list, not text (give "
        'one value, quoted, e.g. CUDA_VISIBLE_DEVICES: "1")',
        id="env-value-list",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    container: docker:vllm\n",
        None,
        {},
        "Error: {reg}: models.x.container: 'docker:vllm' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="bad-container",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    data_parallel_size: 2\n"
        "    enable_expert_parallel: true\n    all2all_backend: pplx\n",
        "submit -m x --registry {reg} --nodes 1 -G 2 --dry-run",
        {},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    extra_args: [--tensor-parallel-size, '2']\n",
        None,
        {},
        "Error: vllm serve arguments: --tensor-parallel-size 2 would override the plan's "
        "--tensor-parallel-size 1 (use --tp (registry: tensor_parallel_size)",
        id="extra-args-override-tp",
    ),
    pytest.param(
        "site:\n  time: soon\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.time: 'soon' is not a SLURM time",
        id="site-bad-time",
    ),
    pytest.param(
        "site:\n  vllm_version: banana\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.vllm_version: 'banana' is not a version (use a version such as 0.11.1)",
        id="site-bad-vllm-version",
    ),
    pytest.param(
        "site:\n  vllm_version: 0.10\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.vllm_version: Input should be a valid string (got 0.1) (quote the "
        "value: YAML read it as the number 0.1)",
        id="site-vllm-version-as-number",
    ),
    pytest.param(
        "site:\n  gpus_per_node: four\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_REGISTRY": "{reg}"},
        "Error: {reg}: site.gpus_per_node: Input should be a valid integer, unable to parse "
        "string as an integer (got 'four')",
        id="site-gpus-not-int",
    ),
    pytest.param(
        "site:\n  gres_style: gpu\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.gres_style: Input should be 'gpus-per-node', 'gres' or 'none' "
        "(got 'gpu')",
        id="site-bad-gres-style",
    ),
    pytest.param(
        "site:\n  vllm_features: [magic]\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.vllm_features: Input should be 'token_parallel' (got 'magic')",
        id="site-unknown-feature",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    dtype: int4\n",
        "models show x --registry {reg}",
        {},
        "Error: {reg}: models.x.dtype: Input should be",
        id="models-show-bad-entry",
    ),
    pytest.param(
        "models:\n\tx:\n",
        "models list --registry {reg}",
        {},
        "Error: {reg}:2: YAML syntax error:",
        id="models-list-bad-file",
    ),
]


@pytest.mark.parametrize(("text", "args", "env", "expected"), BAD_REGISTRIES)
def test_bad_registry_is_one_clear_line(
    text: str | bytes,
    args: str | None,
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    submissions: list[str],
) -> None:
    reg = tmp_path / "registry.yaml"
    if isinstance(text, bytes):
        reg.write_bytes(text)
    else:
        reg.write_text(text)
    argv = shlex.split(args or "submit -m x --registry {reg} --dry-run")
    code, out, err = run(
        [a.replace("{reg}", str(reg)) for a in argv],
        {k: v.replace("{reg}", str(reg)) for k, v in env.items()},
    )
    assert_one_clear_line(code, out, err, expected.replace("{reg}", str(reg)))
    assert submissions == []


# ---------------------------------------------------------------------------------------
# Doors 3 and 4: the sbatch templates and the bash wrappers, run with bash outside SLURM.
# A fake srun and a Python seam on VLLM_HPC_PYTHON record anything started in STARTED;
# `python -m launchers plan` and the wrapper's `node wrapper` run for real (they check,
# plan and probe the network before they start anything); `ray` and `vllm` are fakes
# that record a start and fail, so a bad case that went on to run could not pass.

SEAM = """#!/bin/bash
if [[ "$1 $2 $3 $4" == "-m launchers node run" ]]; then echo "python $*" >> "$STARTED"; exit 0; fi
if [[ "$1 $3" == "-c ray" ]]; then exit 0; fi  # the planner asks: has the nodes' Python Ray?
exec {python} "$@"
"""
FAKE_SRUN = '#!/bin/bash\necho "srun $*" >> "$STARTED"\n'
FAKE_START = '#!/bin/bash\necho "$(basename "$0") $*" >> "$STARTED"\nexit 1\n'
SLURM_ENV = {"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "n[1-2]"}


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """A login-node environment: the repo's bin/ on PATH, fake srun before it, no SLURM."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_SRUN)
    for name in ("ray", "vllm"):
        (fake / name).write_text(FAKE_START)
    (fake / "python").write_text(SEAM.format(python=sys.executable))
    for tool in fake.iterdir():
        tool.chmod(0o755)
    return {
        "PATH": f"{fake}:{REPO / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "VLLM_HPC_PYTHON": str(fake / "python"),
        "VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs"),
        "STARTED": str(tmp_path / "started"),
    }


def run_bash(
    env: dict[str, str], script: Path, args: tuple[str, ...], extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def assert_nothing_started(env: dict[str, str]) -> None:
    started = Path(env["STARTED"])
    assert not started.exists(), started.read_text()
    root = Path(env["VLLM_HPC_JOB_ROOT"])
    assert not list(root.glob("**/plan*.json"))
    assert not list(root.glob("**/nodes/*.json")), "a node runtime started"


# (template, environment, exact stderr line); "{script}" is the template's path.
_NO_MODEL = "Error: MODEL is not set (sbatch --export=ALL,MODEL=llama-3.2-3b-instruct {script})"
_TP_PP = "multinode_tp_pp.sbatch"
_DP_EP = "multinode_dp_ep.sbatch"

BAD_SBATCH_ENV = [
    *(
        pytest.param(name, {}, _NO_MODEL, id=f"no-model-{name.split('.')[0]}")
        for name in sorted(p.name for p in (REPO / "slurm").glob("*.sbatch"))
    ),
    pytest.param("single_gpu.sbatch", {"MODEL": ""}, _NO_MODEL, id="empty-model"),
    pytest.param(
        "single_gpu.sbatch",
        {"MODEL": "llama-3.2-3b-instruct"},
        "Error: SLURM_JOB_ID is not set: this is a SLURM batch script (submit it: sbatch "
        "--export=ALL,MODEL=llama-3.2-3b-instruct {script})",
        id="outside-slurm",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "a/b", "PATH": "/usr/bin:/bin"},
        "Error: multi-node-serving.sh is not on PATH (module load vllm-hpc, or add its bin/)",
        id="wrapper-not-on-path",
    ),
    pytest.param(
        "single_node_tp.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "TP": "four"},
        "Error: TP must be a positive whole number (got 'four'; unset it for the default)",
        id="tp-not-a-number",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "a/b", "PP": "0"},
        "Error: PP must be a positive whole number (got '0'; unset it for the default)",
        id="pp-zero",
    ),
    pytest.param(
        "multinode_native.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "TP": "-2"},
        "Error: TP must be a positive whole number (got '-2'; unset it for the default)",
        id="tp-negative",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "DP": "all"},
        "Error: DP must be a positive whole number (got 'all'; unset it for the default)",
        id="dp-not-a-number",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "EP": "yes"},
        "Error: EP must be 0 (dense model) or 1 (expert parallel) (got 'yes')",
        id="ep-not-0-or-1",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "DP_BACKEND": "nccl"},
        "Error: DP_BACKEND must be mp (headless ranks) or ray (got 'nccl'; unset it for mp)",
        id="dp-backend-not-mp-or-ray",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "API_SERVERS": "0"},
        "Error: API_SERVERS must be a positive whole number (got '0'; unset it for the default)",
        id="api-servers-zero",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "DP_RPC_PORT": "rpc"},
        "Error: DP_RPC_PORT must be a port number 1024-65535 (got 'rpc'; unset it for the default)",
        id="dp-rpc-port-not-a-number",
    ),
    pytest.param(
        "single_gpu.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "PORT": "80"},
        "Error: PORT must be a port number 1024-65535 (got '80'; unset it for the default)",
        id="port-privileged",
    ),
    pytest.param(
        "single_gpu.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "PORT": "70000"},
        "Error: PORT must be a port number 1024-65535 (got '70000'; unset it for the default)",
        id="port-too-high",
    ),
    pytest.param(
        "single_gpu.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "REGISTRY": "/nonexistent/models.yaml"},
        "Error: REGISTRY: /nonexistent/models.yaml is not a readable file (give a registry "
        "YAML file on shared storage, or unset REGISTRY)",
        id="registry-missing",
    ),
    pytest.param(
        "single_gpu.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "VLLM_HPC_PYTHON": "/nonexistent/bin/python"},
        "Error: VLLM_HPC_PYTHON: no Python interpreter '/nonexistent/bin/python' (set "
        "VLLM_HPC_PYTHON to the Python that has vllm-hpc)",
        id="python-missing",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "llama-3-70b"},
        "Error: model: unknown model 'llama-3-70b' (did you mean llama-3.1-70b-instruct? see "
        "`vllm-hpc models list`, or pass a path or Hugging Face id containing '/')",
        id="unknown-model",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "/nonexistent/models/llama"},
        "Error: model: /nonexistent/models/llama does not exist (give a model directory on "
        "shared storage, a Hugging Face id (org/name) or a registry id (`vllm-hpc models "
        "list`))",
        id="nonexistent-model-path",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "a/b", "TP": "3", "PP": "2", "SLURM_GPUS_ON_NODE": "4"},
        "Error: layout: TP=3 x PP=2 x DP=1 = 6 GPUs, but the allocation is 2 node(s) x 4 "
        "GPU(s) = 8 (request 6 GPUs in all (nodes x gpus-per-node))",
        id="layout-vs-allocation",
    ),
    pytest.param(
        "single_gpu.sbatch",
        {**SLURM_ENV, "SLURM_JOB_NUM_NODES": "1", "MODEL": "a/b"}
        | {"EXTRA_VLLM_ARGS": "--tensor-parallel-size 2"},
        "Error: vllm serve arguments: --tensor-parallel-size 2 would override the plan's "
        "--tensor-parallel-size 1 (use --tp (registry: tensor_parallel_size): it is checked "
        "against the GPUs)",
        id="extra-args-override-tp",
    ),
    pytest.param(
        _DP_EP,
        {**SLURM_ENV, "MODEL": "a/b", "SLURM_GPUS_ON_NODE": "2", "ALL2ALL": "pplx"},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all",
    ),
    pytest.param(
        _TP_PP,
        {
            **SLURM_ENV,
            "MODEL": "llama-3.1-70b-instruct",
            "PORT": "12000",
            "SLURM_GPUS_ON_NODE": "4",
        },
        "Error: --port: port 12000 is inside Ray's worker port range 10002-19999 (choose a "
        "port outside it, e.g. 8000 or 6379)",
        id="port-in-ray-range",
    ),
]


@pytest.mark.parametrize(("name", "env", "expected"), BAD_SBATCH_ENV)
def test_bad_sbatch_environment_is_one_clear_line(
    name: str, env: dict[str, str], expected: str, shell_env: dict[str, str]
) -> None:
    script = REPO / "slurm" / name
    done = run_bash(shell_env, script, (), env)
    assert_one_clear_line(
        done.returncode, done.stdout, done.stderr, expected.replace("{script}", str(script))
    )
    assert done.stderr == expected.replace("{script}", str(script)) + "\n"
    assert_nothing_started(shell_env)


# (script, args, environment, expected start of the stderr line)
_MNS = "multi-node-serving.sh"
_NODE1, _NODE2 = "launch_vllm_node1.sh", "launch_vllm_node2.sh"
_SEED = ("10.1.59.30", "13345", "deepseek-ai/DeepSeek-V3-0324", "16", "8", "8")

BAD_WRAPPER_ARGS = [
    pytest.param(
        _MNS,
        ("head",),
        {},
        "Error: unknown mode 'head' (use leader, worker or slurm)",
        id="bad-role",
    ),
    pytest.param(
        _MNS,
        ("leader", "stray"),
        {},
        "Error: unexpected argument 'stray' (write options as --name=value and vLLM arguments "
        "after --; see multi-node-serving.sh -h)",
        id="unexpected-argument",
    ),
    pytest.param(
        _MNS,
        ("worker",),
        {},
        "Error: worker needs --ray_address=LEADER_IP (the leader node's IP address; see "
        "multi-node-serving.sh -h)",
        id="worker-without-address",
    ),
    pytest.param(
        _MNS,
        ("leader", "--num-gpus=four"),
        {},
        "Error: --num-gpus must be a number (got 'four'; give this node's GPU count, e.g. "
        "--num-gpus=4)",
        id="num-gpus-not-a-number",
    ),
    pytest.param(
        _MNS,
        ("worker", "--ray_address="),
        {},
        "Error: --ray_address needs a value (write --ray_address=VALUE; see "
        "multi-node-serving.sh -h)",
        id="empty-ray-address",
    ),
    pytest.param(
        _MNS,
        ("slurm", "--plan="),
        {},
        "Error: --plan needs a value (write --plan=VALUE; see multi-node-serving.sh -h)",
        id="empty-plan",
    ),
    pytest.param(
        _MNS,
        ("leader", "--ray_port=12000"),
        {},
        "Error: --ray_port 12000 is inside Ray's worker port range 10002-19999 (choose a port "
        "outside it, e.g. 6379)",
        id="ray-port-in-ray-range",
    ),
    pytest.param(
        _MNS,
        ("worker", "--ray_address=10.0.0.1", "--ray_port=80"),
        {},
        "Error: --ray_port 80 is a privileged port (choose 1024-65535, e.g. 6379)",
        id="ray-port-privileged",
    ),
    pytest.param(
        _MNS,
        ("leader", "--model=llama-3.2-3b-instruct", "--port=15000"),
        {},
        "Error: --port 15000 is inside Ray's worker port range 10002-19999 (choose a port "
        "outside it, e.g. 8000)",
        id="port-in-ray-range",
    ),
    pytest.param(
        _MNS,
        ("leader", "--model=llama-3.2-3b-instruct", "--port=0"),
        {},
        "Error: --port must be a port number 1024-65535, e.g. 8000 (got '0')",
        id="port-zero",
    ),
    pytest.param(
        _MNS,
        ("leader", "--nodes-timeout=soon"),
        {},
        "Error: --nodes-timeout must be seconds, e.g. --nodes-timeout=300 (got 'soon')",
        id="bad-nodes-timeout",
    ),
    pytest.param(
        _MNS,
        ("worker", "--ray_address=10.0.0.1", "--", "--enforce-eager"),
        {},
        "Error: vLLM arguments after -- belong on the leader (with --model=NAME)",
        id="vllm-args-on-worker",
    ),
    pytest.param(
        _MNS,
        ("leader", "--", "--enforce-eager"),
        {},
        "Error: vLLM arguments after -- need --model=NAME on the leader",
        id="vllm-args-without-model",
    ),
    pytest.param(
        _MNS,
        ("leader", "--iface=nosuch0"),
        {},
        "Error: --iface: no interface named 'nosuch0' on ",
        id="bad-interface-name",
    ),
    pytest.param(
        _MNS,
        ("worker", "--ray_address=10.0.0.1"),
        {"VLLM_HPC_IFACE": "nosuch1"},
        "Error: --iface: no interface named 'nosuch1' on ",
        id="bad-interface-from-env",
    ),
    pytest.param(
        _MNS,
        ("worker", "--ray_address=10.0.0.1", "--node-ip-address=999.1.1.1"),
        {},
        "Error: --node-ip-address: '999.1.1.1' is not an IP address (give this node's own "
        "address (ip -4 addr), or leave it out to detect it)",
        id="bad-node-ip",
    ),
    pytest.param(
        _MNS,
        ("leader",),
        {"VLLM_HPC_PYTHON": "/nonexistent/bin/python"},
        "Error: no Python interpreter '/nonexistent/bin/python' (set VLLM_HPC_PYTHON)",
        id="python-missing",
    ),
    pytest.param(
        _NODE1,
        ("10.1.59", *_SEED[1:]),
        {},
        "Error: NODE1_IP must be an IP address (got '10.1.59'; see launch_vllm_node1.sh -h)",
        id="node1-ip-three-octets",
    ),
    pytest.param(
        _NODE1,
        _SEED[:5],
        {},
        "Error: expected 6 arguments, got 5 (NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL "
        "API_SERVERS; see launch_vllm_node1.sh -h)",
        id="node1-five-arguments",
    ),
    pytest.param(
        _NODE2,
        ("310.1.59.30", *_SEED[1:]),
        {},
        "Error: NODE1_IP must be an IP address (got '310.1.59.30'; see launch_vllm_node2.sh -h)",
        id="node2-ip-octet-too-big",
    ),
    pytest.param(
        _NODE2,
        (_SEED[0], "70000", *_SEED[2:]),
        {},
        "Error: RPC_PORT must be a port number 1024-65535 (got '70000'; see "
        "launch_vllm_node2.sh -h)",
        id="rpc-port-too-high",
    ),
    pytest.param(
        _NODE1,
        (*_SEED[:3], "sixteen", *_SEED[4:]),
        {},
        "Error: DP_TOTAL must be a positive number (got 'sixteen'; see launch_vllm_node1.sh -h)",
        id="dp-total-not-a-number",
    ),
    pytest.param(
        _NODE1,
        (*_SEED[:4], "0", _SEED[5]),
        {},
        "Error: DP_LOCAL must be a positive number (got '0'; see launch_vllm_node1.sh -h)",
        id="dp-local-zero",
    ),
    pytest.param(
        _NODE2,
        (*_SEED[:5], "rank8"),
        {},
        "Error: START_RANK must be a multiple of DP_LOCAL between 8 and 8 (got 'rank8'; see "
        "launch_vllm_node2.sh -h)",
        id="start-rank-not-a-number",
    ),
    pytest.param(
        _NODE1,
        _SEED,
        {"TP": "two"},
        "Error: TP must be a positive number of GPUs per DP rank (got 'two'; unset it for 1)",
        id="tp-env-not-a-number",
    ),
    pytest.param(
        _NODE2,
        _SEED,
        {"EP": "true"},
        "Error: EP must be 0 (dense model) or 1 (expert parallel) (got 'true')",
        id="ep-env-not-0-or-1",
    ),
    pytest.param(
        _NODE1,
        _SEED,
        {"ALL2ALL": "pplx"},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all-env",
    ),
    pytest.param(
        _NODE2,
        _SEED,
        {"VLLM_ALL2ALL_BACKEND": "naive"},
        "Error: all2all_backend: 'naive' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all-old-env",
    ),
    pytest.param(
        _NODE1,
        ("10.1.59.30", "13345", "deepseek-v9", "16", "8", "8"),
        {},
        "Error: model: unknown model 'deepseek-v9' (did you mean",
        id="unknown-model",
    ),
    pytest.param(
        _NODE2,
        _SEED,
        {"VLLM_HPC_PYTHON": "/nonexistent/bin/python"},
        "Error: no Python interpreter '/nonexistent/bin/python' (set VLLM_HPC_PYTHON)",
        id="dp-python-missing",
    ),
]


@pytest.mark.parametrize(("name", "args", "env", "expected"), BAD_WRAPPER_ARGS)
def test_bad_wrapper_arguments_are_one_clear_line(
    name: str,
    args: tuple[str, ...],
    env: dict[str, str],
    expected: str,
    shell_env: dict[str, str],
) -> None:
    done = run_bash(shell_env, REPO / "bin" / name, args, env)
    assert_one_clear_line(done.returncode, done.stdout, done.stderr, expected)
    assert_nothing_started(shell_env)


def test_the_seams_record_a_good_start(shell_env: dict[str, str]) -> None:
    """The fakes the bad cases rely on do see a start when the input is good."""
    done = run_bash(
        shell_env, REPO / "slurm" / "single_gpu.sbatch", (), {**SLURM_ENV, "MODEL": "a/b"}
    )
    assert done.returncode == 0, done.stderr
    assert Path(shell_env["STARTED"]).read_text().startswith("srun ")
    assert (Path(shell_env["VLLM_HPC_JOB_ROOT"]) / "77" / "plan.json").is_file()
    os.remove(shell_env["STARTED"])
    done = run_bash(shell_env, REPO / "bin" / _NODE1, _SEED, {})
    assert done.returncode == 0, done.stderr
    assert Path(shell_env["STARTED"]).read_text().startswith("python -m launchers node run")
    os.remove(shell_env["STARTED"])
    if (Path(sys.executable).parent / "ray").exists():
        pytest.skip("this venv has ray: the runtime would start it, not the fake on PATH")
    done = run_bash(shell_env, REPO / "bin" / _MNS, ("leader", "--ray_port=6390"), {})
    assert done.returncode == 1, done.stderr
    assert Path(shell_env["STARTED"]).read_text().startswith("ray start --head")
    assert list(Path(shell_env["VLLM_HPC_JOB_ROOT"]).glob("*/nodes/0.json"))


@pytest.mark.parametrize(("backend", "runtime"), [("", "dp"), ("mp", "dp"), ("ray", "ray")])
def test_dp_ep_template_chooses_the_dp_backend(
    backend: str, runtime: str, shell_env: dict[str, str]
) -> None:
    """DP_BACKEND=ray in multinode_dp_ep.sbatch plans the Ray bootstrap, as --dp-backend ray."""
    env = {**SLURM_ENV, "MODEL": "a/b", "DP": "2", "EP": "0", "DP_BACKEND": backend}
    done = run_bash(shell_env, REPO / "slurm" / _DP_EP, (), env)
    assert done.returncode == 0, done.stderr
    plan = json.loads((Path(shell_env["VLLM_HPC_JOB_ROOT"]) / "77" / "plan.json").read_text())
    assert plan["runtime"] == runtime
    leader_argv = plan["roles"][0]["serve_argv"]
    assert ("--data-parallel-backend" in leader_argv) == (backend == "ray")


# ---------------------------------------------------------------------------------------
# Properties: the validators accept or refuse with the project's one-line error.

_sizes = st.one_of(st.none(), st.integers(min_value=1, max_value=64))
_archs = st.one_of(
    st.none(),
    st.builds(
        lambda heads, kv_div, layers, experts: ModelArch(
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // kv_div),
            num_hidden_layers=layers,
            hidden_size=heads * 64,
            num_experts=experts,
        ),
        st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 32, 64]),
        st.sampled_from([1, 2, 4, 8]),
        st.integers(min_value=1, max_value=96),
        st.sampled_from([0, 8, 64]),
    ),
)
_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line_input_error(exc: InputError, starts: tuple[str, ...]) -> None:
    text = str(exc)
    assert exc.exit_code == 2
    assert text and "\n" not in text and text == exc.one_line(), text
    assert text.startswith(starts), text


@_PROPERTY
@given(
    tp=_sizes,
    pp=_sizes,
    dp=_sizes,
    ep=st.booleans(),
    nodes=_sizes,
    gpus_per_node=_sizes,
    site_gpus=_sizes,
    cross_node=st.booleans(),
    arch=_archs,
)
def test_layout_is_valid_or_one_clear_error(
    tp: int | None,
    pp: int | None,
    dp: int | None,
    ep: bool,
    nodes: int | None,
    gpus_per_node: int | None,
    site_gpus: int | None,
    cross_node: bool,
    arch: ModelArch | None,
) -> None:
    req = LayoutRequest(
        tp=tp,
        pp=pp,
        dp=dp,
        ep=ep,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        site_gpus_per_node=site_gpus,
        allow_cross_node_tp=cross_node,
    )
    try:
        layout, reason = resolve_layout(req, arch)
        check_layout(layout, arch)
    except InputError as exc:
        assert_one_line_input_error(exc, ("layout: ", "tp: ", "pp: ", "dp: ", "ep: "))
        return
    assert reason
    assert layout.world_size == layout.total_gpus == layout.nodes * layout.gpus_per_node
    if nodes is not None:
        assert layout.nodes == nodes
    for asked, got in ((tp, layout.tp), (pp, layout.pp), (dp, layout.dp)):
        assert asked is None or asked == got
    if arch is not None:
        assert arch.num_attention_heads % layout.tp == 0
        assert layout.pp <= arch.num_hidden_layers


_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["a/b", "auto", "ray", "bfloat16", "04:00:00", "0.11.1", "gpu", "x.sif"]),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), st.none()), max_size=2),
)


def _keys(model: type[ModelSpec] | type[SiteSpec]) -> st.SearchStrategy[str]:
    names = list(model.model_fields)
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from([n.replace("_", "-") for n in names]),
        st.text(min_size=1, max_size=12),
    )


_entries = st.dictionaries(_keys(ModelSpec), _values, max_size=6)
_ids = st.one_of(st.sampled_from(["x", "llama-3.2-3b-instruct", "m.1"]), st.text(max_size=8))
_documents = st.fixed_dictionaries(
    {},
    optional={
        "models": st.one_of(st.dictionaries(_ids, st.one_of(_entries, _values), max_size=3)),
        "site": st.one_of(st.dictionaries(_keys(SiteSpec), _values, max_size=5), _values),
    },
)


@_PROPERTY
@given(document=_documents)
def test_registry_file_is_valid_or_one_clear_error(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    try:
        registry = merge_layers([("F.yaml", parse_registry_text(text, "F.yaml"))])
    except InputError as exc:
        assert_one_line_input_error(exc, ("F.yaml: ", "F.yaml:"))
        return
    assert set(registry.models) == set(document.get("models") or {})
    assert all(isinstance(spec, ModelSpec) for spec in registry.models.values())


@_PROPERTY
@given(entry=_entries)
def test_model_entry_is_valid_or_one_clear_error(entry: dict[str, Any]) -> None:
    fields = {k.replace("-", "_"): v for k, v in entry.items()}
    try:
        spec = validated(ModelSpec, fields)
    except InputError as exc:
        quoted = (*map(repr, fields), *(f"'{name}." for name in ModelSpec.model_fields))
        assert_one_line_input_error(exc, (*ModelSpec.model_fields, *fields, *quoted))
        return
    assert spec.model == fields["model"]
