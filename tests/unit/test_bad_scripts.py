"""Bad input at the third and fourth doors: the sbatch templates' environment and the
bash wrappers (multi-node-serving.sh, the expert-parallel guide's two scripts), run with
bash outside SLURM.

Every case must give exit status 2, exactly one line on stderr naming the field (or
variable) and the fix, no traceback, and nothing submitted or started. Fake ``srun``,
``vllm-hpc node run``, ``ray`` and ``vllm`` record any start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import assert_one_clear_line
from .helpers.scripts import REPO, SLURM_ENV, run_bash

# ---------------------------------------------------------------------------------------
# Doors 3 and 4: the sbatch templates and the bash wrappers, run with bash outside SLURM.
# A fake srun and a Python seam on VLLM_HPC_PYTHON record anything started in STARTED;
# `python -m launchers plan` and the wrapper's `node wrapper` run for real (they check,
# plan and probe the network before they start anything); `ray` and `vllm` are fakes
# that record a start and fail, so a bad case that went on to run could not pass. The
# seams are the ``shell_env`` fixture (conftest.py) and helpers/scripts.py.


def assert_nothing_started(env: dict[str, str]) -> None:
    started = Path(env["STARTED"])
    assert not started.exists(), started.read_text()
    root = Path(env["VLLM_HPC_JOB_ROOT"])
    assert not list(root.glob("**/plan*.json"))
    assert not list(root.glob("**/nodes/*.json")), "a node runtime started"


# (template, environment, exact stderr line); "{script}" is the template's path.
_NO_MODEL = "Error: MODEL is not set (sbatch --export=ALL,MODEL=llama-3.2-3b-instruct {script})"
_NO_VLLM_HPC = (
    "Error: VLLM_HPC_PYTHON: '{python}' cannot run vllm-hpc (set VLLM_HPC_PYTHON to the "
    "Python that has vllm-hpc, e.g. its venv's bin/python)"
)
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
        {**SLURM_ENV, "MODEL": "a/b", "VLLM_HPC_PYTHON": "/bin/false"},
        _NO_VLLM_HPC.format(python="/bin/false"),
        id="python-without-vllm-hpc",
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
        _NO_VLLM_HPC.format(python="/nonexistent/bin/python"),
        id="python-missing",
    ),
    pytest.param(
        _TP_PP,
        {**SLURM_ENV, "MODEL": "a/b"}
        | {"EXTRA_VLLM_ARGS": '--override-generation-config \'{"temperature": 0.5}'},
        "Error: EXTRA_VLLM_ARGS (--extra-vllm-args): no closing quotation in "
        "'--override-generation-config \\'{\"temperature\": 0.5}' (quote as in a shell, e.g. "
        "--override-generation-config '{\"temperature\": 0.5}', and close every quote)",
        id="extra-args-unbalanced-quote",
    ),
    pytest.param(
        "single_node_tp.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "EXTRA_VLLM_ARGS": "--enforce-eager \\"},
        "Error: EXTRA_VLLM_ARGS (--extra-vllm-args): no escaped character in "
        "'--enforce-eager \\\\' (quote as in a shell, e.g. --override-generation-config "
        "'{\"temperature\": 0.5}', and close every quote)",
        id="extra-args-dangling-backslash",
    ),
    pytest.param(
        "multinode_native.sbatch",
        {**SLURM_ENV, "MODEL": "a/b", "EXTRA_VLLM_ARGS": "--enforce-eager\n--seed 1"},
        "Error: EXTRA_VLLM_ARGS (--extra-vllm-args): contains a control character ('\\n' at "
        "position 15); remove it (got '--enforce-eager\\n--seed 1')",
        id="extra-args-newline",
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


# Bash evaluates a variable's value as an expression inside arithmetic, array subscripts
# included: a value such as 'HOME[$(cmd)]' runs cmd. SLURM's counts are checked as text
# first; the DP template computes DP from them when DP is not set.
@pytest.mark.parametrize("name", ["SLURM_GPUS_ON_NODE", "SLURM_JOB_NUM_NODES"])
@pytest.mark.parametrize("template", [_DP_EP, "single_gpu.sbatch"])
def test_slurm_counts_are_checked_as_text_before_any_arithmetic(
    name: str, template: str, shell_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = f"HOME[$(touch {marker})]"
    done = run_bash(shell_env, REPO / "slurm" / template, (), {**SLURM_ENV, "MODEL": "a/b",
                                                                name: hostile})  # fmt: skip
    assert not marker.exists(), "the value ran as a command"
    assert_one_clear_line(
        done.returncode, done.stdout, done.stderr,
        f"Error: {name} must be a positive whole number (got '{hostile}'",
    )  # fmt: skip
    assert_nothing_started(shell_env)
    assert not list(Path(shell_env["VLLM_HPC_JOB_ROOT"]).glob("**/*")), "a job directory"


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
    # A worker's token is there (the leader's, shared): the case is about its arguments.
    token = Path(shell_env["VLLM_HPC_JOB_ROOT"]).parent / "ray_token"
    token.write_text("t\n")
    token.chmod(0o600)
    done = run_bash(
        shell_env, REPO / "bin" / name, args, {"VLLM_HPC_RAY_TOKEN_FILE": str(token), **env}
    )
    assert_one_clear_line(done.returncode, done.stdout, done.stderr, expected)
    assert_nothing_started(shell_env)


def test_the_seams_record_a_good_start(shell_env: dict[str, str]) -> None:
    """The fakes the bad cases rely on do see a start when the input is good."""
    done = run_bash(
        shell_env, REPO / "slurm" / "single_gpu.sbatch", (), {**SLURM_ENV, "MODEL": "a/b"}
    )
    assert done.returncode == 0, done.stderr
    assert Path(shell_env["STARTED"]).read_text().startswith("srun ")
    assert (Path(shell_env["VLLM_HPC_JOB_ROOT"]) / "slurm-77" / "plan.json").is_file()
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
    plan = json.loads((Path(shell_env["VLLM_HPC_JOB_ROOT"]) / "slurm-77" / "plan.json").read_text())
    assert plan["runtime"] == runtime
    leader_argv = plan["roles"][0]["serve_argv"]
    assert ("--data-parallel-backend" in leader_argv) == (backend == "ray")
