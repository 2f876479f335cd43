"""Hostile input at every door: flags, environment variables, registry and site files,
and vLLM arguments after ``--``. On a shared cluster the people who write a lab's
registry are not the people who submit from it, and a value with a newline, a space or
a leading '-' is how a rendered sbatch script or a command line gets injected.

Every refused case: exit status 2, exactly this one line on stderr, nothing submitted,
no job directory. The accepted-but-odd cases: the rendered sbatch passes ``bash -n``,
has nothing outside its header, body and plan heredoc, and carries the value exactly.
"""

# ruff: noqa: E501  (a table of exact one-line messages)
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from launchers.errors import shown

from .conftest import assert_one_clear_line
from .helpers.cli import run
from .helpers.scripts import DP_STUB, run_dp

BASE = ["submit", "-m", "org/model"]
ID_HINT = "give a Hugging Face id (org/name), a registry id or a model directory"
CONTROL = "contains a control character"
SLURM_NAME = "is not a SLURM name (letters, digits, _ . + -; a comma-separated list for several)"
PATH_CHARS = (
    "has characters other than letters, digits and . _ / + @ : = , ~ - (no spaces, quotes or %)"
)
PLAN_TP = "use --tp (registry: tensor_parallel_size): it is checked against the GPUs"


def case(argv: list[str], expected: str, env: dict[str, str] | None = None, *, id: str) -> object:
    return pytest.param(argv, env or {}, expected, id=id)


# (argv, extra environment, the exact stderr line)
HOSTILE_FLAGS = [
    # -- the model: never a shell line, never a flag
    case(
        ["submit", "-m", "org/x\ntouch PWNED #"],
        f"Error: --model: {CONTROL} ('\\n' at position 5); remove it ({ID_HINT})",
        id="model-newline",
    ),
    case(
        ["submit"],
        f"Error: MODEL_NAME: {CONTROL} ('\\n' at position 5); remove it ({ID_HINT})",
        {"MODEL_NAME": "org/x\ntouch PWNED"},
        id="model-env-newline",
    ),
    case(
        ["submit", "--model=--api-key=abc/def"],
        f"Error: --model: starts with '-', so a command would read it as an option ({ID_HINT})",
        id="model-is-a-flag",
    ),
    case(
        ["submit", "--model=-x/y"],
        f"Error: --model: starts with '-', so a command would read it as an option ({ID_HINT})",
        id="model-leading-dash",
    ),
    case(
        ["submit"],
        f"Error: MODEL_NAME: starts with '-', so a command would read it as an option ({ID_HINT})",
        {"MODEL_NAME": "--trust-remote-code"},
        id="model-env-is-a-flag",
    ),
    case(
        ["submit", "-m", "org/x\tb"],
        f"Error: --model: {CONTROL} ('\\t' at position 5); remove it ({ID_HINT})",
        id="model-tab",
    ),
    case(
        ["submit", "-m", "org/x\rb"],
        f"Error: --model: {CONTROL} ('\\r' at position 5); remove it ({ID_HINT})",
        id="model-carriage-return",
    ),
    case(
        ["submit", "-m", "org/\x1b[2Jx"],
        f"Error: --model: {CONTROL} ('\\x1b' at position 4); remove it ({ID_HINT})",
        id="model-escape",
    ),
    case(
        ["submit", "-m", "org/x\u2028y"],
        f"Error: --model: {CONTROL} ('\\u2028' at position 5); remove it ({ID_HINT})",
        id="model-line-separator",
    ),
    case(
        ["submit", "-m", "org/" + "x" * 5000],
        f"Error: --model: is 5004 characters long (at most 4096) ({ID_HINT})",
        id="model-5000-characters",
    ),
    # -- SLURM names: one word each, never a second directive
    case(
        [*BASE, "-p", "gpu\ntouch PWNED"],
        f"Error: --partition: {CONTROL} ('\\n' at position 3); remove it (got 'gpu\\ntouch PWNED')",
        id="partition-newline",
    ),
    case(
        [*BASE, "-A", "proj --exclusive"],
        f"Error: --account: {SLURM_NAME} (got 'proj --exclusive')",
        id="account-adds-a-directive",
    ),
    case(
        [*BASE, "-A", "proj\n#SBATCH --exclusive"],
        f"Error: --account: {CONTROL} ('\\n' at position 4); remove it (got 'proj\\n#SBATCH --exclusive')",
        id="account-newline",
    ),
    case(
        [*BASE, "--qos", "high prio"],
        f"Error: --qos: {SLURM_NAME} (got 'high prio')",
        id="qos-space",
    ),
    case(
        [*BASE, "-p", "gpu;id"],
        f"Error: --partition: {SLURM_NAME} (got 'gpu;id')",
        id="partition-semicolon",
    ),
    case(
        [*BASE, "-p", "gpu,"],
        f"Error: --partition: {SLURM_NAME} (got 'gpu,')",
        id="partition-trailing-comma",
    ),
    case([*BASE, "-p", ""], f"Error: --partition: {SLURM_NAME} (got '')", id="partition-empty"),
    case(
        [*BASE, "-A", "$(id)"],
        f"Error: --account: {SLURM_NAME} (got '$(id)')",
        id="account-command-substitution",
    ),
    case(
        [*BASE, "-A", "`id`"],
        f"Error: --account: {SLURM_NAME} (got '`id`')",
        id="account-backticks",
    ),
    case(
        [*BASE, "-A", "-x"], f"Error: --account: {SLURM_NAME} (got '-x')", id="account-leading-dash"
    ),
    case(
        [*BASE, "-A", "a" * 300],
        f"Error: --account: is 300 characters long (at most 256) (got {shown('a' * 300)})",
        id="account-300-characters",
    ),
    # -- time
    case(
        [*BASE, "--time", "0"],
        "Error: --time: 0 asks SLURM for no time limit; give a limit such as "
        "04:00:00, or leave the time out for the partition's default (got '0')",
        id="time-zero",
    ),
    case(
        [*BASE, "--time", "00:00:00"],
        "Error: --time: 0 asks SLURM for no time limit; give a limit such as "
        "04:00:00, or leave the time out for the partition's default (got '00:00:00')",
        id="time-zero-hms",
    ),
    case(
        [*BASE, "--time", "04:00:00\n"],
        f"Error: --time: {CONTROL} ('\\n' at position 8); remove it (got '04:00:00\\n')",
        id="time-trailing-newline",
    ),
    case(
        [*BASE, "--time", "1-"],
        "Error: --time: '1-' is not a SLURM time (use MM, HH:MM:SS or D-HH:MM:SS) (got '1-')",
        id="time-incomplete",
    ),
    case(
        [*BASE, "--time", "\u0664:00:00"],
        "Error: --time: '\u0664:00:00' is not a SLURM time (use MM, HH:MM:SS or "
        "D-HH:MM:SS) (got '\u0664:00:00')",
        id="time-non-ascii-digit",
    ),
    case(
        [*BASE, "--time", "999999999"],
        "Error: --time: '999999999' is more than a year; give a limit such as "
        "2-00:00:00 (got '999999999')",
        id="time-too-long",
    ),
    # -- job name, job root, python
    case(
        [*BASE, "--job-name", "a\nb"],
        f"Error: --job-name: {CONTROL} ('\\n' at position 1); remove it (got 'a\\nb')",
        id="job-name-newline",
    ),
    case(
        [*BASE, "--job-name", "a b"],
        "Error: --job-name: 'a b' is not a job name (lowercase letters, digits, '.', "
        "'_', '-') (got 'a b')",
        id="job-name-space",
    ),
    case(
        [*BASE, "--job-name", "-x"],
        "Error: --job-name: '-x' is not a job name (lowercase letters, digits, '.', "
        "'_', '-') (got '-x')",
        id="job-name-leading-dash",
    ),
    case(
        [*BASE, "--job-name", "j" * 200],
        f"Error: --job-name: is 200 characters long (at most 128) (got {shown('j' * 200)})",
        id="job-name-200-characters",
    ),
    case(
        [*BASE, "--job-root", "/tmp/x\ntouch PWNED"],
        f"Error: --job-root: {CONTROL} ('\\n' at position 6); remove it (got '/tmp/x\\ntouch PWNED')",
        id="job-root-newline",
    ),
    case(
        BASE,
        f"Error: --job-root: {CONTROL} ('\\n' at position 6); remove it (got '/tmp/x\\ntouch PWNED')",
        {"VLLM_HPC_JOB_ROOT": "/tmp/x\ntouch PWNED"},
        id="job-root-env-newline",
    ),
    case(
        [*BASE, "--job-root", "/tmp/a b"],
        f"Error: --job-root: '/tmp/a b' {PATH_CHARS} (got '/tmp/a b')",
        id="job-root-space",
    ),
    case(
        [*BASE, "--job-root", "/tmp/%j"],
        f"Error: --job-root: '/tmp/%j' {PATH_CHARS} (got '/tmp/%j')",
        id="job-root-percent",
    ),
    case(
        [*BASE, "--job-root", "/tmp/a'b"],
        f'Error: --job-root: "/tmp/a\'b" {PATH_CHARS} (got "/tmp/a\'b")',
        id="job-root-quote",
    ),
    case(
        [*BASE, "--job-root", "/tmp/$(id)"],
        f"Error: --job-root: '/tmp/$(id)' {PATH_CHARS} (got '/tmp/$(id)')",
        id="job-root-command-substitution",
    ),
    case(
        [*BASE, "--job-root", "jobs"],
        "Error: --job-root: 'jobs' must be an absolute path (got 'jobs')",
        id="job-root-relative",
    ),
    case(
        BASE,
        f"Error: VLLM_HPC_PYTHON: {CONTROL} ('\\n' at position 8); remove it (got '/usr/bin\\nid')",
        {"VLLM_HPC_PYTHON": "/usr/bin\nid"},
        id="python-env-newline",
    ),
    case(
        BASE,
        f"Error: VLLM_HPC_PYTHON: '/opt/my env/bin/python' {PATH_CHARS} (got '/opt/my env/bin/python')",
        {"VLLM_HPC_PYTHON": "/opt/my env/bin/python"},
        id="python-env-space",
    ),
    # -- container images
    case(
        [*BASE, "--container", "apptainer:-x.sif"],
        "Error: --container: the image '-x.sif' starts with '-', "
        "so a command would read it as an option",
        id="image-leading-dash",
    ),
    case(
        [*BASE, "--container", "apptainer:/x.sif\nrm -rf ~"],
        "Error: --container: the image '/x.sif\\nrm -rf ~' "
        f"{CONTROL} ('\\n' at position 6); remove it",
        id="image-newline",
    ),
    case(
        [*BASE, "--container", "apptainer:/a b.sif"],
        "Error: --container: the image '/a b.sif' contains "
        "whitespace, which an image reference cannot hold",
        id="image-space",
    ),
    case(
        [*BASE, "--container", "docker:/x"],
        "Error: --container: 'docker:/x' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="image-unknown-runtime",
    ),
    # -- sizes
    case(
        [*BASE, "--nodes", "100000000000000000000"],
        "Error: Invalid value for '--nodes' / '-N': "
        "100000000000000000000 is not in the range 1<=x<=4096. (see 'vllm-hpc submit --help')",
        id="nodes-1e20",
    ),
    case(
        [*BASE, "--tp", "100000000000000000000"],
        "Error: Invalid value for '--tp': 100000000000000000000 is not "
        "in the range 1<=x<=65536. (see 'vllm-hpc submit --help')",
        id="tp-1e20",
    ),
    case(
        [*BASE, "--dp", "70000"],
        "Error: Invalid value for '--dp': 70000 is not in the range 1<=x<=65536. (see "
        "'vllm-hpc submit --help')",
        id="dp-70000",
    ),
    case(
        [*BASE, "-G", "1000"],
        "Error: Invalid value for '--gpus-per-node' / '-G': 1000 is not in the range "
        "1<=x<=64. (see 'vllm-hpc submit --help')",
        id="gpus-per-node-1000",
    ),
    case(
        [*BASE, "--api-server-count", "100000000000000000000"],
        "Error: Invalid value for '--api-server-count': "
        "100000000000000000000 is not in the range 1<=x<=512. (see 'vllm-hpc submit --help')",
        id="api-servers-1e20",
    ),
    case(
        [*BASE, "--tp", "64", "--pp", "64"],
        "Error: layout: TP x PP x DP = 4096 GPUs would need 1 node(s) x "
        "4096 GPU(s); vllm-hpc plans at most 4096 nodes of 64 GPUs (give --nodes and --gpus-per-node, or a "
        "smaller layout)",
        id="layout-past-a-node",
    ),
    case(
        [*BASE, "--gpu-memory-gib", "nan"],
        "Error: Invalid value for '--gpu-memory-gib': nan is not a number "
        "(see 'vllm-hpc submit --help')",
        id="gpu-memory-nan",
    ),
    case(
        [*BASE, "--gpu-memory-gib", "inf"],
        "Error: Invalid value for '--gpu-memory-gib': inf is not in the range "
        "0<x<=4096.0. (see 'vllm-hpc submit --help')",
        id="gpu-memory-inf",
    ),
    case(
        [*BASE, "--gpu-memory-gib", "1e20"],
        "Error: Invalid value for '--gpu-memory-gib': 1e+20 is not in the "
        "range 0<x<=4096.0. (see 'vllm-hpc submit --help')",
        id="gpu-memory-1e20",
    ),
    case(
        [*BASE, "--gpu-memory-gib", "-1"],
        "Error: Invalid value for '--gpu-memory-gib': -1.0 is not in the range "
        "0<x<=4096.0. (see 'vllm-hpc submit --help')",
        id="gpu-memory-negative",
    ),
    # -- ports and runtimes
    case(
        [
            *BASE,
            "-N",
            "2",
            "-G",
            "1",
            "--tp",
            "1",
            "--pp",
            "2",
            "--runtime",
            "native",
            "--ray-port",
            "7000",
        ],
        "Error: --ray-port: the native runtime starts no Ray (drop --ray-port, or pass --runtime ray)",
        id="ray-port-under-native",
    ),
    case(
        [*BASE, "--ray-port", "7000"],
        "Error: --ray-port: the single runtime starts no Ray (drop --ray-port, or "
        "pass --runtime ray)",
        id="ray-port-on-one-gpu",
    ),
    case(
        [*BASE, "--host", "x y"],
        "Error: --host: 'x y' is not an address (give 0.0.0.0 (every interface), node "
        "(the interface vllm-hpc picks), 127.0.0.1, or an IP address of the leader)",
        id="host-not-an-address",
    ),
    # -- vLLM arguments after --: read as vLLM's parser reads them
    case(
        [*BASE, "--", "--api-key", "SECRET"],
        "Error: vllm serve arguments: --api-key would put the API key on a "
        "command line (write the key into a file (chmod 600) and pass --api-key-file FILE)",
        id="extra-api-key",
    ),
    case(
        [*BASE, "--", "--api-ke", "SECRET"],
        "Error: vllm serve arguments: --api-ke (vLLM reads it as --api-key) "
        "would put the API key on a command line (write the key into a file (chmod 600) and pass --api-key-file "
        "FILE)",
        id="extra-api-key-abbreviated",
    ),
    case(
        [*BASE, "--", "--api_key=SECRET"],
        "Error: vllm serve arguments: --api_key (vLLM reads it as --api-key) would put "
        "the API key on a command line (write the key into a file (chmod 600) and pass --api-key-file FILE)",
        id="extra-api-key-underscore",
    ),
    case(
        [*BASE, "--", "--tensor-parallel-siz", "8"],
        "Error: vllm serve arguments: --tensor-parallel-siz 8 would "
        f"override the plan's --tensor-parallel-size 1 ({PLAN_TP})",
        id="extra-tp-abbreviated",
    ),
    case(
        [*BASE, "--", "--por", "9000"],
        "Error: vllm serve arguments: --por 9000 would override the plan's --port "
        "8000 (use --port before `--`)",
        id="extra-port-abbreviated",
    ),
    case(
        [*BASE, "--", "-dpl", "16"],
        "Error: vllm serve arguments: -dpl 16 conflicts with the plan, which leaves "
        "--data-parallel-size-local out here (use --dp and --nodes: the plan splits DP over the nodes)",
        id="extra-dp-local-alias",
    ),
    case(
        [*BASE, "--", "-tp", "8"],
        f"Error: vllm serve arguments: -tp 8 would override the plan's "
        f"--tensor-parallel-size 1 ({PLAN_TP})",
        id="extra-tp-alias",
    ),
    case(
        [*BASE, "--", "-t", "8"],
        f"Error: vllm serve arguments: -t 8 would override the plan's "
        f"--tensor-parallel-size 1 ({PLAN_TP})",
        id="extra-tp-alias-abbreviated",
    ),
    case(
        [*BASE, "--", "-tp=8"],
        f"Error: vllm serve arguments: -tp=8 would override the plan's "
        f"--tensor-parallel-size 1 ({PLAN_TP})",
        id="extra-tp-alias-equals",
    ),
    case(
        [*BASE, "--", "-n2"],
        "Error: vllm serve arguments: -n2 conflicts with the plan, which leaves --nnodes "
        "out here (use --nodes)",
        id="extra-nnodes-attached",
    ),
    case(
        [*BASE, "--", "--host", "0.0.0.0", "--host", "10.0.0.1"],
        "Error: vllm serve arguments: --host is given "
        "twice (vLLM would read the last, vllm-hpc the first) (use --host before `--`)",
        id="extra-host-twice",
    ),
    case(
        [*BASE, "--", "--model", "other/model"],
        "Error: vllm serve arguments: --model would replace the plan's "
        "model (give the model with --model before `--`)",
        id="extra-model",
    ),
    case(
        [*BASE, "--", "--mod", "other/model"],
        "Error: vllm serve arguments: --mod (vLLM reads it as --model) "
        "would replace the plan's model (give the model with --model before `--`)",
        id="extra-model-abbreviated",
    ),
    case(
        [*BASE, "--", "--no-enable-expert-parallel"],
        "Error: vllm serve arguments: --no-enable-expert-parallel "
        "conflicts with the plan, which leaves --enable-expert-parallel out here (use --ep (registry: "
        "enable_expert_parallel))",
        id="extra-no-ep",
    ),
    case(
        [*BASE, "--", "--disable-expert-parallel"],
        "Error: vllm serve arguments: --disable-expert-parallel "
        "conflicts with the plan, which leaves --enable-expert-parallel out here (use --ep (registry: "
        "enable_expert_parallel))",
        id="extra-disable-ep-vllm-0.33",
    ),
    case(
        [*BASE, "--", "--served-model-name", "x"],
        "Error: vllm serve arguments: --served-model-name x would "
        "override the plan's --served-model-name model (set served_model_name in a registry entry)",
        id="extra-served-name",
    ),
    case(
        [*BASE, "--", "--data-parallel-size-loc", "4"],
        "Error: vllm serve arguments: --data-parallel-size-loc 4 "
        "conflicts with the plan, which leaves --data-parallel-size-local out here (use --dp and --nodes: the plan "
        "splits DP over the nodes)",
        id="extra-dp-local-abbreviated",
    ),
    case(
        [*BASE, "--", "--seed\n1"],
        "Error: vllm serve arguments: contains a control character ('\\n' at "
        "position 6); remove it (got '--seed\\n1')",
        id="extra-newline",
    ),
]


def _registry(tmp_path: Path, text: str) -> Path:
    reg = tmp_path / "registry.yaml"
    reg.write_text(text)
    return reg


def _ran(argv: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str, str]:
    jobs = tmp_path / "jobs"
    return run(argv, {"VLLM_HPC_JOB_ROOT": str(jobs), **env})


@pytest.mark.parametrize(("argv", "env", "expected"), HOSTILE_FLAGS)
def test_hostile_flag_is_refused_in_one_line(
    argv: list[str], env: dict[str, str], expected: str, tmp_path: Path, submissions: list[str]
) -> None:
    code, out, err = _ran(argv, env, tmp_path)
    assert_one_clear_line(code, out, err, expected)
    assert err == expected + "\n"
    assert submissions == []
    assert not (tmp_path / "jobs").exists()


# -- Registry and site files: the people who write them are not the people who submit.
# (file text, the variable naming the file, the start of the stderr line; "{reg}" is the
# file). The submit is `submit -m x` for a registry, `submit -m a/b` for a site file.
def reg_case(text: str, expected: str, *, site: bool = False, id: str) -> object:
    return pytest.param(text, site, expected, id=id)


HOSTILE_FILES = [
    reg_case(
        'site:\n  partition: "gpu\\ntouch PWNED"\n',
        f"Error: {{reg}}: site.partition: {CONTROL} ('\\n' at position 3); remove it",
        site=True,
        id="site-partition-newline",
    ),
    reg_case(
        "site:\n  account: proj --exclusive\n",
        f"Error: {{reg}}: site.account: {SLURM_NAME}",
        site=True,
        id="site-account-directive",
    ),
    reg_case(
        'site:\n  qos: "$(id)"\n',
        f"Error: {{reg}}: site.qos: {SLURM_NAME}",
        site=True,
        id="site-qos-subst",
    ),
    reg_case(
        'site:\n  mem: "64G\\n"\n',
        f"Error: {{reg}}: site.mem: {CONTROL} ('\\n' at position 3); remove it",
        site=True,
        id="site-mem-newline",
    ),
    reg_case(
        "site:\n  mem: lots\n",
        "Error: {reg}: site.mem: is not a SLURM memory size (e.g. 0, 64G or 500000M)",
        site=True,
        id="site-mem-words",
    ),
    reg_case(
        'site:\n  job_root: "/tmp/x\\nid"\n',
        f"Error: {{reg}}: site.job_root: {CONTROL} ('\\n' at position 6)",
        site=True,
        id="site-job-root-newline",
    ),
    reg_case(
        'site:\n  container: "apptainer:/x.sif\\nid"\n',
        f"Error: {{reg}}: site.container: {CONTROL}",
        site=True,
        id="site-container-newline",
    ),
    reg_case(
        'site:\n  setup: ["module load cuda\\nid"]\n',
        f"Error: {{reg}}: site.setup: {CONTROL}",
        site=True,
        id="site-setup-line-with-newline",
    ),
    reg_case(
        'site:\n  vllm_version: "0.32 lol"\n',
        "Error: {reg}: site.vllm_version: '0.32 lol' is not a "
        "version (use a version such as 0.11.1)",
        site=True,
        id="site-version-free-text",
    ),
    reg_case(
        'site:\n  vllm_version: "0.32\\n"\n',
        f"Error: {{reg}}: site.vllm_version: {CONTROL} ('\\n' at "
        "position 4); remove it (got '0.32\\n')",
        site=True,
        id="site-version-newline",
    ),
    reg_case(
        "site:\n  gpus_per_node: 100000000000000000000\n",
        "Error: {reg}: site.gpus_per_node: Input should be less than or equal to 64",
        site=True,
        id="site-gpus-1e20",
    ),
    reg_case(
        "site:\n  gpu_memory_gib: .nan\n",
        "Error: {reg}: site.gpu_memory_gib: Input should be a finite number",
        site=True,
        id="site-gpu-memory-nan",
    ),
    reg_case(
        "site:\n  gpu_memory_gib: .inf\n",
        "Error: {reg}: site.gpu_memory_gib: Input should be a finite number",
        site=True,
        id="site-gpu-memory-inf",
    ),
    reg_case(
        'site:\n  time: "0"\n',
        "Error: {reg}: site.time: 0 asks SLURM for no time limit",
        site=True,
        id="site-time-zero",
    ),
    reg_case(
        "site:\n  env:\n    PATH;x: y\n",
        "Error: {reg}: site.env: 'PATH;x' is not a valid environment variable name",
        site=True,
        id="site-env-name",
    ),
    reg_case(
        'site:\n  env:\n    NCCL_DEBUG: "INFO\\nid"\n',
        f"Error: {{reg}}: site.env: the value of NCCL_DEBUG "
        f"{CONTROL} ('\\n' at position 4); remove it",
        site=True,
        id="site-env-value-newline",
    ),
    reg_case(
        "site:\n  cpus_per_task: 100000\n",
        "Error: {reg}: site.cpus_per_task: Input should be less than or equal to 4096",
        site=True,
        id="site-cpus-100000",
    ),
    reg_case(
        'models:\n  x:\n    model: "--api-key=x/y"\n',
        "Error: {reg}: models.x.model: starts with '-', so a command would read it as an option",
        id="entry-model-is-a-flag",
    ),
    reg_case(
        'models:\n  x:\n    model: "org/x\\ntouch PWNED"\n',
        f"Error: {{reg}}: models.x.model: {CONTROL}",
        id="entry-model-newline",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    served_model_name: "a\\rb"\n',
        f"Error: {{reg}}: models.x.served_model_name: {CONTROL} ('\\r' at position 1)",
        id="entry-served-name-cr",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    served_model_name: -x\n",
        "Error: {reg}: "
        "models.x.served_model_name: starts with '-', so a command would read it as an option",
        id="entry-served-name-dash",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    env:\n      HF_HOME: "/x\\nid"\n',
        f"Error: {{reg}}: models.x.env: the value of HF_HOME {CONTROL}",
        id="entry-env-value-newline",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    env:\n      A-B: c\n",
        "Error: {reg}: models.x.env: 'A-B' is not a valid environment variable name",
        id="entry-env-name-dash",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    extra_args: ["--seed\\n1"]\n',
        f"Error: {{reg}}: models.x.extra_args: {CONTROL}",
        id="entry-extra-arg-newline",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    tensor_parallel_size: 100000000000000000000\n",
        "Error: {reg}: models.x.tensor_parallel_size: Input should be less than or equal to 65536",
        id="entry-tp-1e20",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    description: "one\\ntwo"\n',
        f"Error: {{reg}}: models.x.description: {CONTROL}",
        id="entry-description-newline",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    api_server_count: 100000\n",
        "Error: {reg}: models.x.api_server_count: Input should be less than or equal to 512",
        id="entry-api-servers",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    gpu_memory_utilization: .nan\n",
        "Error: {reg}: models.x.gpu_memory_utilization: Input should be a finite number",
        id="entry-utilization-nan",
    ),
    reg_case(
        "models:\n  x:\n    model: a/b\n    max_model_len: 100000000000\n",
        "Error: {reg}: models.x.max_model_len: Input should be less than or equal to 67108864",
        id="entry-context-1e11",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    container: "apptainer:-x"\n',
        "Error: {reg}: "
        "models.x.container: the image '-x' starts with '-', so a command would read it as an option",
        id="entry-container-dash",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    extra_args: ["--api-ke", "k"]\n',
        "Error: vllm serve "
        "arguments: --api-ke (vLLM reads it as --api-key) would put the API key on a command line",
        id="entry-extra-api-key-abbreviated",
    ),
    reg_case(
        'models:\n  x:\n    model: a/b\n    extra_args: ["-dpl", "16"]\n',
        "Error: vllm serve arguments: -dpl 16 conflicts with the plan",
        id="entry-extra-dp-local",
    ),
]


@pytest.mark.parametrize(("text", "site", "expected"), HOSTILE_FILES)
def test_hostile_file_is_refused_in_one_line(
    text: str, site: bool, expected: str, tmp_path: Path, submissions: list[str]
) -> None:
    reg = _registry(tmp_path, text)
    if site:
        argv, env = ["submit", "-m", "a/b"], {"VLLM_HPC_SITE_CONFIG": str(reg)}
    else:
        argv, env = ["submit", "-m", "x"], {"VLLM_HPC_REGISTRY": str(reg)}
    code, out, err = _ran(argv, env, tmp_path)
    assert_one_clear_line(code, out, err, expected.replace("{reg}", str(reg)))
    assert submissions == []
    assert not (tmp_path / "jobs").exists()


# -- Accepted, but odd: values a shell would read specially where they are allowed.
ODD_DIR = "my 'model' $(touch PWNED) `touch PWNED` ; touch PWNED #"
ODD_SITE = (
    "site:\n"
    "  env:\n"
    '    NCCL_DEBUG: "$(touch PWNED)"\n'
    "    GLOO_X: \"'; touch PWNED; '\"\n"
    "models:\n"
    "  odd:\n"
    "    model: {model}\n"
    '    description: "$(touch PWNED) `touch PWNED`"\n'
    '    served_model_name: "odd:v1"\n'
)
_SRUN_STUB = '#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGV"\n'


def _odd_model(tmp_path: Path) -> Path:
    model = tmp_path / ODD_DIR
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "hidden_size": 128, "vocab_size": 2048,
    }))  # fmt: skip
    return model


def _split_script(script: str) -> tuple[list[str], str, list[str]]:
    """(lines outside the plan heredoc, the heredoc's text, the header lines)."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("<<'VLLM_HPC_PLAN'"))
    end = lines.index("VLLM_HPC_PLAN", start + 1)
    header = lines[: lines.index("")]
    return lines[: start + 1] + lines[end:], "\n".join(lines[start + 1 : end]), header


@pytest.mark.parametrize("door", ["flag", "registry"])
def test_odd_values_stay_data_in_the_sbatch_script(
    door: str, tmp_path: Path, tiny_model: object, submissions: list[str]
) -> None:
    model = _odd_model(tmp_path)
    reg = _registry(tmp_path, ODD_SITE.replace("{model}", json.dumps(str(model))))
    jobs = tmp_path / "jobs"
    env = {"VLLM_HPC_REGISTRY": str(reg), "VLLM_HPC_JOB_ROOT": str(jobs)}
    which = ["-m", str(model)] if door == "flag" else ["-m", "odd"]
    code, script, err = run(["render", "sbatch", *which], env)
    assert code == 0, err
    code, plain, err = run(["render", "sbatch", "-m", "org/model"], env)
    assert code == 0, err

    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    outside, heredoc, header = _split_script(script)
    # The header is the shebang, comments and one-word directives, nothing else.
    assert header[0] == "#!/bin/bash"
    for line in header[1:]:
        assert re.fullmatch(r"#SBATCH --[a-z-]+(=\S+)?|# .*", line), line
    # Outside the header and the heredoc the script is the plain model's, line for line.
    plain_outside, _, _ = _split_script(plain)
    body = [line for line in outside if not line.startswith("#")]
    assert body == [line for line in plain_outside if not line.startswith("#")]
    # The plan carries the values exactly.
    plan = json.loads(heredoc)
    assert plan["model"] == str(model)
    assert plan["env"]["NCCL_DEBUG"] == "$(touch PWNED)"
    assert plan["env"]["GLOO_X"] == "'; touch PWNED; '"

    # Run it as sbatch would (srun stubbed): nothing the values hold is executed.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(_SRUN_STUB)
    (bin_dir / "srun").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    jobs.mkdir(mode=0o700)
    done = subprocess.run(
        ["bash", "-s"], input=script, text=True, cwd=work, capture_output=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1",
             "SLURM_JOB_NODELIST": "n1", "SRUN_ARGV": str(tmp_path / "srun.argv"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("PWNED"))
    srun_argv = (tmp_path / "srun.argv").read_text().splitlines()
    assert srun_argv[-3:] == [
        "run",
        "--plan",
        plan["paths"]["plan"].replace("@JOB_KEY@", "slurm-7"),
    ]
    assert submissions == []


def test_dp_scripts_read_leading_zeros_as_decimal(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(DP_STUB)
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "VLLM_HPC_PYTHON": str(python), "STUB_LOG": str(tmp_path / "log"),
           "VLLM_HPC_JOB_ROOT": "/jobs"}  # fmt: skip
    done, calls = run_dp(env, "launch_vllm_node2.sh", "10.1.59.30", "13345", "org/m", "016", "08",
                         "08")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = calls[0]
    assert plan[plan.index("--dp") + 1] == "16"
    assert plan[plan.index("--gpus-per-node") + 1] == "8"


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "x.yaml"
    code, out, err = run(["render", "k8s", "-m", "org/model", "-o", str(target)])
    assert_one_clear_line(
        code,
        out,
        err,
        f"Error: --output: cannot write {target}: No such file or directory (choose a writable path)",
    )
