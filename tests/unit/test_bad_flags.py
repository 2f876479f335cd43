"""Bad input at the first door, the CLI's flags (`vllm-hpc submit`, `plan`, `render`).

Every case must give exit status 2, exactly one line on stderr naming the field (or
variable) and the fix, no traceback, and nothing submitted or started. The SLURM
seam records any submission; the cases submit for real (no --dry-run), so "nothing
submitted" and "no plan written" can fail.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import assert_one_clear_line
from .helpers.cli import run

REPO = Path(__file__).resolve().parents[2]


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
        "Error: Invalid value for '--nodes' / '-N': 0 is not in the range 1<=x<=4096. "
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
        "Error: Invalid value for '--gpu-memory-gib': 0.0 is not in the range 0<x<=4096.0. "
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
        "Error: --tp 8: larger than the 4 GPUs of one node (use --tp 4 --pp 2, or "
        "--allow-cross-node-tp if the nodes share InfiniBand/RoCE)",
        id="cross-node-tp",
    ),
    pytest.param(
        "submit -m a/b --tp 4 --pp 3 --nodes 4 -G 3 --allow-cross-node-tp",
        {},
        "Error: --tp 4: tensor parallel across nodes must be a multiple of the 3 GPUs per "
        "node (use a TP that is a multiple of 3, or --tp 3 with PP across the nodes)",
        id="cross-node-tp-not-a-multiple",
    ),
    pytest.param(
        "submit -m a/b --tp 2 --dp 3 --nodes 2 -G 3",
        {},
        "Error: --tp 2: does not divide the 3 GPUs of a node (choose a TP that divides "
        "GPUs per node)",
        id="tp-not-dividing-node",
    ),
    pytest.param(
        "submit -m a/b --pp 2 --dp 3 --nodes 2 -G 3",
        {},
        "Error: --dp 3: cannot be spread evenly over 2 nodes (use a DP that is a multiple of 2)",
        id="dp-uneven",
    ),
    pytest.param(
        "submit -m llama-3.2-3b-instruct --ep",
        {},
        "Error: --ep: expert parallel needs DP or TP > 1 to have something to spread "
        "experts over (add --dp N (usually one rank per GPU))",
        id="ep-alone",
    ),
    pytest.param(
        "submit -m {model} --tp 8",
        {},
        "Error: --tp 8: the model's 4 attention heads cannot be split 8 ways (use --tp 4 "
        "(divides both the heads and the GPUs per node))",
        id="tp-vs-heads",
    ),
    pytest.param(
        "submit -m {kv4} --tp 3 --gpus-per-node 3",
        {},
        "Error: --tp 3: the model's 4 KV heads cannot be split 3 ways (use a TP that divides "
        "the KV heads)",
        id="tp-vs-kv-heads",
    ),
    pytest.param(
        "submit -m {model} --pp 3",
        {},
        "Error: --pp 3: more than the model's 2 layers (use --pp 2 or fewer)",
        id="pp-vs-layers",
    ),
    pytest.param(
        "submit -m {model} --dp 2 --ep",
        {},
        "Error: --ep: expert parallel needs an MoE model; llama has no experts (drop --ep)",
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
        "plan -m a/b --print-node-argv",
        {},
        "Error: --print-node-argv needs --out FILE (the plan the nodes read) (see 'vllm-hpc "
        "plan --help')",
        id="plan-node-argv-without-out",
    ),
    pytest.param(
        "plan -m a/b --out {tmp}/plan.json --print-node-argv",
        {},
        "Error: SLURM_JOB_ID: '' is not a job id",
        id="plan-node-argv-outside-a-job",
    ),
    pytest.param(
        'plan -m a/b --extra-vllm-args "--served-model-name \'x"',
        {},
        "Error: EXTRA_VLLM_ARGS (--extra-vllm-args): no closing quotation in",
        id="plan-extra-args-unbalanced",
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
